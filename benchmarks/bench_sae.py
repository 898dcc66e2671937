"""What does encoding an SAE on the fly cost in the atlas pass? Side by side in one run, each pass in a
fresh process over the same tokens:

    python benchmarks/bench_sae.py [--sae examples/sae/smollm2-135m-L6-resid_pre-topk] [--tokens 8192]

1. ``base``: the SAE's base site alone (``L6.resid_pre``, 576 units; the forward stops after block 6);
2. ``sae``: the same site plus the SAE's latents (2,048 more units, encoded from it on the fly);
3. ``sae_chunked``: as 2, with ``DERIVED.encode_rows`` set to 256 tokens (bounded temporaries).

Each child reports the seconds of the pass alone (model and tokens loaded first) and its peak RSS
(VmHWM of its own address space). Prints a table and one JSON line with the ratios to ``base``.
The time per unit is not the question (an SAE latent costs its share of the encoder's matmul and
the same statistics as a neuron): the question is whether the latents stay within a small factor of
their base site and whether chunking holds memory without changing the cost.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from maxact.config import DEFAULT_MODEL

SAE = Path(__file__).resolve().parents[1] / "examples" / "sae" / "smollm2-135m-L6-resid_pre-topk"

CHILD = """
import json, time, torch
torch.set_num_threads({threads})
from dataclasses import replace
from maxact import dictionaries
from maxact.config import AtlasConfig, DerivedDefaults
from maxact.corpus import load_source
from maxact.engine.runner import AtlasRun
from maxact.models import load_model
if {encode_rows}:
    dictionaries.DERIVED = DerivedDefaults(encode_rows={encode_rows})
lm = load_model({model!r})
source = load_source({corpus!r}, lm.tokenizer, max_tokens={tokens})
derived = tuple(dictionaries.load_options((), ({sae!r},))) if {with_sae} else ()
config = AtlasConfig(model={model!r}, corpus={corpus!r}, max_tokens={tokens}, sites=("resid_pre",) +
                     tuple(d.name for d in derived), layers=({layer},), derived=derived)
run = AtlasRun(lm, source, config)
t0 = time.perf_counter()
run.run(progress=False)
seconds = time.perf_counter() - t0
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({{"seconds": seconds, "tokens": len(source), "units": sum(run.widths), "peak_rss_mb": hwm / 1024}}))
"""


def run_child(args, with_sae: bool, encode_rows: int) -> dict:
    code = CHILD.format(threads=args.threads, model=args.model, corpus=args.corpus, tokens=args.tokens,
                        sae=f"feat={args.sae}", with_sae=with_sae, encode_rows=encode_rows, layer=args.layer)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sae", type=Path, default=SAE)
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--corpus", default="looking-glass")
    p.add_argument("--tokens", type=int, default=8192)
    p.add_argument("--layer", type=int, default=6, help="the block of the SAE's base site L{layer}.resid_pre")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    runs = {"base": run_child(args, False, 0), "sae": run_child(args, True, 0),
            "sae_chunked": run_child(args, True, 256)}
    base = runs["base"]
    print(f"{'pass':<12} {'units':>6} {'tokens':>7} {'seconds':>8} {'tokens/s':>9} {'ratio':>6} {'peak RSS MB':>12} {'ratio':>6}")
    for name, r in runs.items():
        print(f"{name:<12} {r['units']:>6} {r['tokens']:>7} {r['seconds']:>8.2f} {r['tokens'] / r['seconds']:>9.0f} "
              f"{r['seconds'] / base['seconds']:>6.2f} {r['peak_rss_mb']:>12.0f} {r['peak_rss_mb'] / base['peak_rss_mb']:>6.3f}")
    print(json.dumps({"tokens": base["tokens"], "runs": runs,
                      "time_ratio": {k: round(r["seconds"] / base["seconds"], 3) for k, r in runs.items()},
                      "rss_ratio": {k: round(r["peak_rss_mb"] / base["peak_rss_mb"], 3) for k, r in runs.items()}}))


if __name__ == "__main__":
    main()
