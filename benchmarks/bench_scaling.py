"""Does the atlas pass scale with corpus length? Time per token and peak memory at 1x, 2x and 4x
tokens of a document corpus, each pass in a fresh process, side by side in one run.

    python benchmarks/bench_scaling.py [--corpus ../shared/corpora/sotu.jsonl.gz] [--tokens 8192]

First the corpus is tokenized twice in this process with an empty token cache: the first call
streams and tokenizes every document (reported as tokenization time and tokens/s), the second reads
the on-disk cache. Then one child process per size N, 2N, 4N loads the model and the (cached)
token source and runs the atlas pass with the default sites over the first N tokens; it reports
the seconds of the pass alone (model load and token loading excluded) and its peak RSS (VmHWM of
its own address space: ru_maxrss would carry over this process's size at fork).
Prints a table, then one JSON line: seconds per 1,000 tokens at each size, their ratios to 1x
(flat: within 1.10), and peak RSS ratios (flat: 4x within 1.10x of 1x).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from maxact.config import DEFAULT_DEVICE, DEFAULT_MODEL

SOTU = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "sotu.jsonl.gz"

CHILD = """
import json, sys, time, torch
torch.set_num_threads({threads})
from maxact.config import AtlasConfig
from maxact.corpus import load_source
from maxact.engine.runner import AtlasRun
from maxact.models import load_model
lm = load_model({model!r}, device={device!r})
source = load_source({corpus!r}, lm.tokenizer, max_tokens={tokens})
run = AtlasRun(lm, source, AtlasConfig(model={model!r}, corpus={corpus!r}, max_tokens={tokens}, device={device!r}))
t0 = time.perf_counter()
run.run(progress=False)
seconds = time.perf_counter() - t0
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({{"seconds": seconds, "tokens": len(source), "peak_rss_mb": hwm / 1024}}))
"""


def tokenize_twice(corpus: str, model: str) -> dict:
    """Tokenization alone: a cold call (streams and tokenizes every document), then a cached one."""
    from maxact.corpus import load_source
    from maxact.models import load_model

    tokenizer = load_model(model, device="cpu").tokenizer
    t0 = time.perf_counter()
    source = load_source(corpus, tokenizer)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = load_source(corpus, tokenizer)
    cached = time.perf_counter() - t0
    assert len(again) == len(source)
    n_docs = len(source.doc_starts)
    return {"tokens": len(source), "documents": n_docs, "cold_s": round(cold, 2), "cached_s": round(cached, 3),
            "cold_tokens_per_s": round(len(source) / cold), "cached_tokens_per_s": round(len(source) / max(cached, 1e-9))}


def run_child(corpus: str, model: str, device: str, threads: int, tokens: int, env: dict) -> dict:
    code = CHILD.format(threads=threads, model=model, device=device, corpus=corpus, tokens=tokens)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"child for {tokens} tokens failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default=str(SOTU))
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--tokens", type=int, default=8192, help="N: the sizes run are N, 2N and 4N tokens")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default=DEFAULT_DEVICE)
    args = p.parse_args()

    from maxact.paths import cache_dir

    models = cache_dir() / "models"  # the converted model stays; only the token cache starts empty
    with tempfile.TemporaryDirectory(prefix="maxact-scaling-") as cache:
        if models.is_dir():
            os.symlink(models, Path(cache) / "models")
        env = dict(os.environ, MAXACT_CACHE=cache)  # an empty token cache: the first load tokenizes
        os.environ["MAXACT_CACHE"] = cache
        tok = tokenize_twice(args.corpus, args.model)
        print(f"tokenization: {tok['tokens']} tokens in {tok['documents']} documents, cold {tok['cold_s']} s "
              f"({tok['cold_tokens_per_s']} tokens/s), cached {tok['cached_s']} s")
        sizes = [args.tokens * m for m in (1, 2, 4)]
        if sizes[-1] > tok["tokens"]:
            raise SystemExit(f"--tokens {args.tokens}: 4x is {sizes[-1]} tokens, the corpus has {tok['tokens']}")
        runs = [run_child(args.corpus, args.model, args.device, args.threads, n, env) for n in sizes]

    base = runs[0]
    per_k = [1000 * r["seconds"] / r["tokens"] for r in runs]
    print(f"{'tokens':>8} {'pass s':>8} {'s/1k tok':>9} {'ratio':>6} {'peak RSS MB':>12} {'ratio':>6}")
    for r, pk in zip(runs, per_k):
        print(f"{r['tokens']:>8} {r['seconds']:>8.1f} {pk:>9.3f} {pk / per_k[0]:>6.3f} {r['peak_rss_mb']:>12.0f} "
              f"{r['peak_rss_mb'] / base['peak_rss_mb']:>6.3f}")
    print(json.dumps({
        "corpus": Path(args.corpus).name, "tokenization": tok, "sizes": sizes,
        "seconds_per_1k_tokens": [round(x, 4) for x in per_k],
        "time_per_token_ratio": [round(x / per_k[0], 3) for x in per_k],
        "peak_rss_mb": [round(r["peak_rss_mb"]) for r in runs],
        "peak_rss_ratio": [round(r["peak_rss_mb"] / base["peak_rss_mb"], 3) for r in runs],
    }))


if __name__ == "__main__":
    main()
