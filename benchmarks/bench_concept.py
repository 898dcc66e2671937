"""The concept pass against a bare forward of the same tokens, on the embedded model.

    python benchmarks/bench_concept.py [--tokens 16384] [--rounds 3] [--threads 2] [--device cpu]

Each round times, one after the other (so drift hits both alike):
  bare     model(input_ids) over the same windows and batches: the full causal-LM forward
  concept  the concept pass (pipeline/concept_pass.py) over the same tokens, every unit of the
           default sites (resid_pre, ln_final, mlp_post: 63,936 units), category = the token " not"
The figure is the median over rounds of concept / bare. Then peak RSS of a concept pass over N and
2N tokens, each in a fresh process (memory must not grow with corpus length). Prints a table, then
one JSON line with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from maxact.config import DEFAULT_CORPUS, DEFAULT_DEVICE, DEFAULT_MODEL, AtlasConfig

CATEGORY = " not"


def labels_for(lm, tokens: np.ndarray):
    from maxact.analysis.categories import token_ids_for, token_labels
    from maxact.pipeline.finalize import vocab_texts

    vocab = vocab_texts(lm, len(lm.tokenizer))
    return token_labels(tokens, token_ids_for(vocab, [CATEGORY]))


def rss_child(tokens: int, device: str, threads: int, model: str, corpus: str) -> float:
    """Peak RSS (MB) of a fresh process that runs the concept pass over the first ``tokens`` tokens."""
    code = (
        "import sys, torch, resource\n"
        f"torch.set_num_threads({threads})\n"
        "sys.path.insert(0, 'benchmarks')\n"
        "from bench_concept import labels_for\n"
        "from maxact.models import load_model\nfrom maxact.corpus import load_source\n"
        "from maxact.config import AtlasConfig\n"
        "from maxact.pipeline.concept_pass import PassRequest, run_concept_pass\n"
        f"lm = load_model({model!r}, device='{device}')\n"
        f"source = load_source({corpus!r}, lm.tokenizer, max_tokens={tokens})\n"
        "labels = labels_for(lm, source.tokens)\n"
        f"run_concept_pass(lm, source, AtlasConfig(device='{device}'), PassRequest(labels, False), progress=False)\n"
        "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')) / 1024)\n"  # not ru_maxrss: it carries the parent's size over fork and exec
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=16384, help="tokens timed (whole batches of 16 x 256)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--corpus", default=DEFAULT_CORPUS)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default=DEFAULT_DEVICE)
    p.add_argument("--rss-tokens", type=int, default=8192, help="N for the memory check (N and 2N; 0: skip)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from maxact.corpus import load_source
    from maxact.engine.runner import ordered_refs
    from maxact.models import load_model
    from maxact.pipeline.concept_pass import PassRequest, run_concept_pass

    config = AtlasConfig(model=args.model, corpus=args.corpus, device=args.device)
    lm = load_model(args.model, device=args.device)
    per_batch = config.windows_per_batch * config.seq
    source = load_source(args.corpus, lm.tokenizer, max_tokens=args.tokens // per_batch * per_batch)
    labels = labels_for(lm, np.asarray(source.tokens))
    ids_all = torch.from_numpy(source.tokens.astype(np.int64)).view(-1, config.windows_per_batch, config.seq)
    ids_all = ids_all.to(args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    request = PassRequest(labels, False)

    def bare() -> None:
        with torch.inference_mode():
            for ids in ids_all:
                lm.model(ids)

    def concept() -> None:
        run_concept_pass(lm, source, config, request, progress=False)

    with torch.inference_mode():  # warm-up (allocator, kernels), not timed
        lm.model(ids_all[0])
    times = {"bare": [], "concept": []}
    for _ in range(args.rounds):
        for name, fn in (("bare", bare), ("concept", concept)):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    n = ids_all.numel()
    ratios = [c / b for b, c in zip(times["bare"], times["concept"])]
    units = sum(lm.adapter.width(r) for r in ordered_refs(lm.adapter, config))
    fig = {
        "device": args.device if args.device != "cuda" else torch.cuda.get_device_name(),
        "threads": args.threads, "tokens": n, "units": units, "rounds": args.rounds,
        "bare_tokens_per_s": round(n / statistics.median(times["bare"]), 1),
        "concept_tokens_per_s": round(n / statistics.median(times["concept"]), 1),
        "concept_over_bare": round(statistics.median(ratios), 3),
        "concept_over_bare_rounds": [round(r, 3) for r in ratios],
    }
    if args.rss_tokens:
        r1 = rss_child(args.rss_tokens, args.device, args.threads, args.model, args.corpus)
        r2 = rss_child(2 * args.rss_tokens, args.device, args.threads, args.model, args.corpus)
        fig.update({"rss_mb_n": round(r1), "rss_mb_2n": round(r2), "rss_ratio": round(r2 / r1, 3),
                    "rss_tokens_n": args.rss_tokens})
    print(f"{'':<8}{'tokens/s':>10}{'seconds':>9}   (median of {args.rounds} rounds)")
    for k in ("bare", "concept"):
        print(f"{k:<8}{n / statistics.median(times[k]):>10.1f}{statistics.median(times[k]):>9.2f}")
    print(f"concept / bare wall time: {fig['concept_over_bare']:.3f} (rounds: {fig['concept_over_bare_rounds']}), "
          f"{units} units")
    if args.rss_tokens:
        print(f"peak RSS: {fig['rss_mb_n']} MB at {args.rss_tokens} tokens, {fig['rss_mb_2n']} MB at "
              f"{2 * args.rss_tokens} ({fig['rss_ratio']}x)")
    print(json.dumps(fig))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
