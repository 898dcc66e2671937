"""What the bundled SAE's latents find, next to the neurons they sit among (docs/DIRECTIONS.md).

    MAXACT_DATA=../shared/corpora .venv/bin/python examples/sae_vs_neurons.py \\
        --sae examples/sae/smollm2-135m-L6-resid_pre-topk --tokens 20000 --out /tmp/sae-atlas

Builds one atlas of the embedded model (SmolLM2-135M) over the first ``--tokens`` tokens of a corpus
(default *Through the Looking-Glass*) with the residual stream the SAE reads (``L6.resid_pre``), the
MLP neurons of the block before it (``L5.mlp_post``, among those that write into it) and the SAE's
latents (``--sae feat=DIR``), all from the same single pass. Then, for each group of units, from the
atlas alone, it prints:

- dead: units that never exceed 0 (an SAE latent that never fires; a neuron that is never positive);
- density: the median share of tokens where the unit is above 0;
- eta squared: the median share of a unit's variance explained by the token's identity (near 1: a
  token detector; near 0: a unit that depends on context), and the share of units above 0.5;
- top-token share: the median share of the reference statistic's batch wins (window position 0
  excluded) that go to the unit's most frequent winning token, and the share of units whose top
  token takes over half of the wins;
- the most token-selective latents, each with its top token, its density and its nearest neuron.

Nothing here is tuned to look good: the figures are whatever the atlas holds.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from maxact.store import format as F
from maxact.store.reader import Atlas


def build(args) -> Atlas:
    if not (args.out / F.MANIFEST).exists():
        cmd = [sys.executable, "-m", "maxact.cli", "atlas", "--corpus", args.corpus, "--out", str(args.out),
               "--max-tokens", str(args.tokens), "--sites", "resid_pre,mlp_post", "--layers", f"{args.layer - 1},{args.layer}",
               "--sae", f"feat={args.sae}"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        print(f"atlas built in {time.perf_counter() - t0:.0f} s: {' '.join(cmd[2:])}")
    return Atlas(args.out)


def group_rows(atlas: Atlas, name: str) -> slice:
    return atlas.site_rows(name)


def describe(atlas: Atlas, label: str, rows: slice) -> None:
    st = atlas[F.STATS][rows]
    eta2 = atlas[F.TYPE_STATS][rows]["eta2"]
    ref = atlas[F.REF][rows]
    dead = st["max"] <= 0
    live = ~dead
    share = ref["x_top_share"][live]
    e = eta2[live & np.isfinite(eta2)]
    print(f"{label:<24} {len(st):>6} {int(dead.sum()):>6} {np.median(st['frac_pos'][live]):>9.3f} "
          f"{np.median(e):>7.3f} {np.mean(e > 0.5):>8.1%} {np.median(share):>9.1%} {np.mean(share > 0.5):>9.1%}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sae", type=Path, default=Path("examples/sae/smollm2-135m-L6-resid_pre-topk"))
    p.add_argument("--corpus", default="looking-glass")
    p.add_argument("--tokens", type=int, default=20000)
    p.add_argument("--layer", type=int, default=6, help="the block whose resid_pre the SAE reads")
    p.add_argument("--out", type=Path, required=True, help="the atlas folder (reused when it exists)")
    p.add_argument("--top", type=int, default=12)
    args = p.parse_args(argv)
    atlas = build(args)
    m = atlas.manifest
    print(f"\n{m.model.name}, {m.corpus.name}: {m.corpus.n_tokens} tokens; reference statistic "
          f"{m.reference.samples} batches of {m.reference.batch} x {m.reference.seq}\n")
    print(f"{'units':<24} {'n':>6} {'dead':>6} {'density':>9} {'eta2':>7} {'eta2>.5':>8} "
          f"{'top share':>9} {'share>.5':>9}")
    for label, name in ((f"neurons L{args.layer}.resid_pre", f"L{args.layer}.resid_pre"),
                        (f"neurons L{args.layer - 1}.mlp_post", f"L{args.layer - 1}.mlp_post"),
                        ("SAE latents feat", "feat")):
        describe(atlas, label, group_rows(atlas, name))

    rows = group_rows(atlas, "feat")
    ref = atlas[F.REF][rows]
    st = atlas[F.STATS][rows]
    eta2 = atlas[F.TYPE_STATS][rows]["eta2"]
    near = atlas[F.near_units_file("feat")]
    cos = atlas[F.near_cosines_file("feat")]
    order = np.argsort(-np.nan_to_num(ref["x_top_share"] * (st["max"] > 0), nan=0.0))[: args.top]
    print(f"\nthe {args.top} most token-selective latents (top-token share of the reference wins, position 0 excluded):")
    print(f"{'latent':<10} {'top token':<16} {'share':>6} {'density':>8} {'eta2':>6}  nearest neuron (cosine)")
    for i in order:
        token = atlas.token_text(int(ref["x_top_token"][i]))
        print(f"feat:{i:<5} {token!r:<16} {ref['x_top_share'][i]:>6.1%} {st['frac_pos'][i]:>8.4f} {eta2[i]:>6.2f}  "
              f"{near[i][0]} ({cos[i][0]:+.2f})")
    best = np.abs(cos[:, 0])
    print(f"\n|cosine| of each latent's nearest L0-L{args.layer - 1} MLP neuron: median {np.median(best):.3f}, "
          f"max {best.max():.3f} (random unit vectors in {m.model.d_model} dimensions against "
          f"{args.layer * m.model.d_mlp} neurons reach about {np.sqrt(2 * np.log(args.layer * m.model.d_mlp) / m.model.d_model):.2f})")


if __name__ == "__main__":
    main()
