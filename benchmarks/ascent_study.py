"""The study behind docs/ASCENT.md: gradient ascent against data sampling on the embedded model.

    python benchmarks/ascent_study.py --atlas ~/.cache/maxact/atlas/smollm2-135m-looking-glass \
        [--selective 4] [--diffuse 2] [--site mlp_post] [--steps 200] [--seeds 3] [--length 8]

Picks, at one site, the most selective units of the atlas (highest selectivity score, away from
window position 0) and some diffuse ones (selectivity score 0, most wins away from window
position 0, the smallest reference top share), runs both methods (gcg and relax) from the same seeds on each, and prints per
unit and method: the data maximum (over every token of the corpus), each seed's exact value of
its decoded input (a plain forward pass) and its ratio to the data maximum, the decoded inputs,
seed-to-seed agreement (mean pairwise Jaccard of token sets) and how many of the data top tokens
the optimised inputs contain. Also the time of one seed. Ends with one JSON line of everything.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from maxact.analysis.overview import unit_scores
from maxact.ascent.runs import ascend
from maxact.commands.ascend_cmd import data_from_atlas
from maxact.models import load_model
from maxact.store.reader import Atlas


def pick_units(atlas: Atlas, site: str, n_selective: int, n_diffuse: int) -> list[tuple[str, str]]:
    scores = unit_scores(atlas)
    rows = [r for r in range(atlas.n_units) if atlas.unit_at(r).site_ref.site == site]
    rows = np.asarray(rows)
    by_score = rows[np.argsort(-scores.score[rows], kind="stable")]
    chosen = [(str(atlas.unit_at(int(r))), "selective") for r in by_score[:n_selective]]
    # diffuse: no selectivity, wins mostly away from window position 0, the smallest reference top share
    diffuse = rows[(scores.score[rows] == 0) & (scores.pos0_share[rows] < 0.5)]
    for r in diffuse[np.argsort(scores.top_share[diffuse], kind="stable")][:n_diffuse]:
        chosen.append((str(atlas.unit_at(int(r))), "diffuse"))
    return chosen


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--atlas", required=True, type=Path)
    p.add_argument("--site", default="mlp_post")
    p.add_argument("--selective", type=int, default=4)
    p.add_argument("--diffuse", type=int, default=2)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--length", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    atlas = Atlas(args.atlas)
    lm = load_model(atlas.manifest.model.name)
    out = []
    for unit, kind in pick_units(atlas, args.site, args.selective, args.diffuse):
        _, data = data_from_atlas(args.atlas, unit)
        for method in ("gcg", "relax"):
            t0 = time.perf_counter()
            r = ascend(lm, atlas.unit_at(atlas.row(unit)), method, args.length, args.steps,
                       list(range(args.seeds)), data).to_json()
            per_seed = (time.perf_counter() - t0) / args.seeds
            best = max(run["hard_value"] for run in r["runs"])
            print(f"\n{unit} ({kind}) {method}: data max {data.data_max:.3f}; best exact {best:.3f} "
                  f"= {best / data.data_max:.2f}x; {per_seed:.1f} s per seed; Jaccard "
                  f"{r['agreement']['mean_jaccard']:.2f}; data top tokens found {r['agreement']['data_tokens_found']}"
                  f"/{r['agreement']['data_tokens']}")
            print("  data top tokens:", " ".join(json.dumps(t["token"]) for t in r["data_top_tokens"][:6]))
            for run in r["runs"]:
                print(f"  seed {run['seed']}: {run['hard_value']:.3f}  {json.dumps(run['text'], ensure_ascii=False)}")
            out.append({"unit": unit, "kind": kind, "method": method, "data_max": data.data_max,
                        "values": [run["hard_value"] for run in r["runs"]],
                        "texts": [run["text"] for run in r["runs"]], "seconds_per_seed": round(per_seed, 1),
                        "agreement": r["agreement"]})
    print(json.dumps({"atlas": str(args.atlas), "steps": args.steps, "length": args.length, "results": out}))


if __name__ == "__main__":
    main()
