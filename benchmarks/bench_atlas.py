"""Atlas pass against a bare forward pass, side by side in one run, on the embedded model.

    python benchmarks/bench_atlas.py [--tokens 8192] [--threads 2] [--device cpu]

For each batch of 16 windows x 256 tokens it times (alternating, so drift hits both alike):
  bare      model(input_ids): the full causal-LM forward, what the original procedure runs per batch
  base      the decoder stack alone, without the LM head (the atlas does not need logits)
  atlas     the atlas pass over the same windows: every unit of resid_pre, ln_final and mlp_post
Then peak RSS of an atlas run over N and 2N tokens, each in a fresh process (memory must not grow
with corpus length). Prints a table, then one JSON line with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

from maxact.config import DEFAULT_CORPUS, DEFAULT_DEVICE, DEFAULT_MODEL, SAMPLE, AtlasConfig

ATLAS = AtlasConfig()  # the defaults of `maxact atlas`


def rss_child(tokens: int, device: str, threads: int, model: str, corpus: str) -> float:
    """Peak RSS (MB) of a fresh process that runs the atlas pass over the first `tokens` tokens."""
    code = (
        "import sys, torch, resource\n"
        f"torch.set_num_threads({threads})\n"
        "from maxact.models import load_model\n"
        "from maxact.corpus import load_source\n"
        "from maxact.engine.runner import AtlasRun\nfrom maxact.config import AtlasConfig\n"
        f"lm = load_model({model!r}, device='{device}')\n"
        f"source = load_source({corpus!r}, lm.tokenizer, max_tokens={tokens})\n"
        f"AtlasRun(lm, source, AtlasConfig(device='{device}')).run(progress=False)\n"
        "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')) / 1024)\n"  # not ru_maxrss: it carries the parent's size over fork and exec
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=0, help="tokens timed (0: the whole corpus, in whole batches)")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--corpus", default=DEFAULT_CORPUS)
    p.add_argument("--windows-per-batch", type=int, default=ATLAS.windows_per_batch)
    p.add_argument("--fuse-sites", choices=("auto", "yes", "no"), default="auto",
                   help="one accumulator over all units (auto: on CUDA only)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default=DEFAULT_DEVICE)
    p.add_argument("--rss-tokens", type=int, default=16384, help="N for the memory check (N and 2N; 0: skip)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from maxact.corpus import TokenSource, load_source
    from maxact.engine.runner import AtlasRun
    from maxact.models import load_model

    lm = load_model(args.model, device=args.device)
    book = load_source(args.corpus, lm.tokenizer)
    seq = ATLAS.seq
    per_batch = args.windows_per_batch * seq
    n_timed = (args.tokens or len(book)) // per_batch * per_batch
    timed_source = book.head(n_timed)
    fuse = {"auto": None, "yes": True, "no": False}[args.fuse_sites]
    config = AtlasConfig(model=args.model, device=args.device, windows_per_batch=args.windows_per_batch,
                         fuse_sites=fuse)
    run = AtlasRun(lm, timed_source, config)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    ids_all = torch.from_numpy(timed_source.tokens.astype(np.int64)).view(-1, args.windows_per_batch, seq).to(args.device)
    last_batch = TokenSource(book.tokens[-per_batch:], np.zeros(1, dtype=np.int64), book.info)
    with torch.inference_mode():  # warm-up (allocator, kernels) on a batch not timed
        lm.model(ids_all[0])
        lm.adapter.base_model()(input_ids=ids_all[0])
        AtlasRun(lm, last_batch, config).run(progress=False)
    t = {"bare": 0.0, "base": 0.0, "atlas": 0.0}

    def timed(name, fn) -> None:
        sync()
        start = time.perf_counter()
        fn()
        sync()
        t[name] += time.perf_counter() - start

    for ids in ids_all:  # alternate the three on each batch, so drift hits all alike
        with torch.inference_mode():
            timed("bare", lambda ids=ids: lm.model(ids))
            timed("base", lambda ids=ids: lm.adapter.base_model()(input_ids=ids))
        timed("atlas", lambda: run.run(progress=False, stop_after_batches=1))
    n = ids_all.numel()
    units = sum(run.widths)
    n_book = len(book)
    fig = {
        "device": args.device if args.device != "cuda" else torch.cuda.get_device_name(),
        "threads": args.threads, "tokens": n, "units": units, "fused_sites": run.fused,
        "bare_tokens_per_s": round(n / t["bare"], 1),
        "base_tokens_per_s": round(n / t["base"], 1),
        "atlas_tokens_per_s": round(n / t["atlas"], 1),
        "atlas_over_bare": round(t["atlas"] / t["bare"], 3),
        "atlas_over_base": round(t["atlas"] / t["base"], 3),
        # the reference question (one unit's tally): 1000 batches x 32 x 256 token-forwards, against
        # one pass over the book that answers every unit at once
        "forward_tokens_original": SAMPLE.samples * SAMPLE.batch * SAMPLE.seq,
        "forward_tokens_atlas": n_book,
        "forward_ratio": round(SAMPLE.samples * SAMPLE.batch * SAMPLE.seq / n_book, 1),
    }
    if args.rss_tokens:
        r1 = rss_child(args.rss_tokens, args.device, args.threads, args.model, args.corpus)
        r2 = rss_child(2 * args.rss_tokens, args.device, args.threads, args.model, args.corpus)
        fig.update({"rss_mb_n": round(r1), "rss_mb_2n": round(r2), "rss_ratio": round(r2 / r1, 3),
                    "rss_tokens_n": args.rss_tokens})
    print(f"{'':<8}{'tokens/s':>10}{'seconds':>9}")
    for k in ("bare", "base", "atlas"):
        print(f"{k:<8}{n / t[k]:>10.1f}{t[k]:>9.2f}")
    print(f"atlas / bare wall time: {fig['atlas_over_bare']:.3f}   (atlas / base: {fig['atlas_over_base']:.3f}), "
          f"{units} units")
    print(f"forward tokens for one unit's tally: original {fig['forward_tokens_original']:,} vs atlas "
          f"{n_book:,} for every unit ({fig['forward_ratio']}x fewer)")
    if args.rss_tokens:
        print(f"peak RSS: {fig['rss_mb_n']} MB at {args.rss_tokens} tokens, {fig['rss_mb_2n']} MB at "
              f"{2 * args.rss_tokens} ({fig['rss_ratio']}x)")
    print(json.dumps(fig))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
