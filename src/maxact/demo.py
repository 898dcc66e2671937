"""`make demo`: the atlas of the embedded model over Through the Looking-Glass (cached for the next
run), then the reference tally of a striking unit and the most selective units."""

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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--atlas", type=Path, required=True, help="where the cached demo atlas lives")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--corpus", default=DEFAULT_CORPUS)
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
    except MaxactError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
