"""`make demo`: the atlas of the embedded model over Through the Looking-Glass (cached for the next
run), then the reference tally of a striking unit and the most selective units; with ``--sae DIR``,
a second, smaller atlas of the bundled SAE's latents (docs/DIRECTIONS.md) and its most selective
latent."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from maxact.config import DEFAULT_CORPUS, DEFAULT_MODEL, AtlasConfig
from maxact.errors import MaxactError
from maxact.store import format as F


def pick_striking(atlas, n: int = 10) -> list[int]:
    """Rows of units whose reference winner is one token, away from position 0, and selective:
    the token's mean activation stands far above the unit's mean (z), and it is not frequent."""
    ref = atlas[F.REF]
    counts = atlas.token_counts
    tt = np.asarray(ref["top_token"])
    occ = np.where(tt >= 0, counts[np.clip(tt, 0, None)], 0)
    z = np.nan_to_num(np.asarray(ref["top_token_z"]), nan=0.0)
    score = np.asarray(ref["top_share"]) * (1 - np.asarray(ref["pos0_share"])) * np.minimum(z, 10)
    score[(occ < 5) | (np.asarray(ref["pos0_share"]) > 0.2)] = -1
    return [int(r) for r in np.argsort(-score)[:n]]


DEMO_SAE_TOKENS = 8192  # the SAE atlas's corpus tokens: a minute or two on a laptop's CPU


def sae_demo(args) -> None:
    """The SAE's latents from one pass over the first tokens of the corpus (cached beside the
    atlas), and the page of its most token-selective latent."""
    from maxact.analysis.pages import unit_page
    from maxact.commands.atlas_cmd import run_atlas
    from maxact.dictionaries import load_options
    from maxact.report import unit_page_text
    from maxact.store.reader import Atlas

    out = args.atlas.with_name(args.atlas.name + "-sae")
    if not (out / F.MANIFEST).exists():
        spec = load_options((), (f"feat={args.sae}",))[0]
        print(f"\nbuilding the SAE atlas ({spec.width} latents of {spec.base}, first {args.sae_tokens} tokens) "
              f"into {out}")
        t0 = time.perf_counter()
        run_atlas(AtlasConfig(model=args.model, corpus=args.corpus, sites=("feat",), derived=(spec,),
                              max_tokens=args.sae_tokens), out, resume=(out / F.RUN_DIR).exists(),
                  echo=lambda m, err=False: print(m))
        print(f"SAE atlas built in {time.perf_counter() - t0:.0f} s")
    atlas = Atlas(out)
    ref, st = atlas[F.REF], atlas[F.STATS]
    live = st["max"] > 0
    share = np.where(live, np.asarray(ref["x_top_share"]), -1.0)
    best = int(np.argmax(share))
    print(f"\n=== SAE latents: {int(live.sum())} of {len(live)} fire on these {atlas.manifest.corpus.n_tokens} tokens; "
          f"median density {np.median(st['frac_pos'][live]):.4f} ===")
    unit = str(atlas.unit_at(best))
    print(f"the most token-selective latent: {unit}  (maxact show {out} {unit})\n")
    print(unit_page_text(unit_page(atlas, unit), atlas.manifest, top=6))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--atlas", type=Path, required=True, help="where the cached demo atlas lives")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--corpus", default=DEFAULT_CORPUS)
    p.add_argument("--sae", type=Path, default=None, help="an SAE in SAELens's format: its latents too")
    p.add_argument("--sae-tokens", type=int, default=DEMO_SAE_TOKENS, help="corpus tokens of the SAE atlas")
    args = p.parse_args(argv)

    from maxact.analysis.pages import find_units, unit_page
    from maxact.report import find_text, unit_page_text
    from maxact.store.reader import Atlas

    try:
        if not (args.atlas / F.MANIFEST).exists():
            from maxact.commands.atlas_cmd import run_atlas

            print(f"building the atlas of {args.model} over {args.corpus} into {args.atlas} (cached for next time)")
            t0 = time.perf_counter()
            run_atlas(AtlasConfig(model=args.model, corpus=args.corpus), args.atlas,
                      resume=(args.atlas / F.RUN_DIR).exists(),
                      echo=lambda m, err=False: print(m))
            print(f"atlas built in {time.perf_counter() - t0:.0f} s")
        else:
            print(f"using the cached atlas {args.atlas} (delete it to rebuild)")
        atlas = Atlas(args.atlas)
        m = atlas.manifest
        print(f"\n{m.n_units} units of {m.model.name} over {m.corpus.name} "
              f"({m.corpus.n_tokens} tokens) from one pass")
        rows = pick_striking(atlas)
        unit = str(atlas.unit_at(rows[0]))
        print(f"\n=== a striking unit: {unit} ===  (maxact show {args.atlas} {unit})\n")
        print(unit_page_text(unit_page(atlas, unit), m, top=8))
        print("\n=== the most selective units (reference winner share x selectivity, position 0 excluded) ===")
        ref = atlas[F.REF]
        for r in rows:
            t = int(ref["top_token"][r])
            print(f"{str(atlas.unit_at(r)):<22} wins {ref['top_share'][r]:6.1%} with {atlas.token_text(t)!r:<16} "
                  f"z {ref['top_token_z'][r]:5.1f}  ({int(atlas.token_counts[t])} in corpus)")
        print()
        print(find_text(find_units(atlas, " before", limit=8)))
        print(f"\nnext: maxact serve {args.atlas}   (browse every unit)   |   "
              f"maxact sample --atlas {args.atlas} --unit {unit}")
        if args.sae is not None:
            sae_demo(args)
    except MaxactError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
