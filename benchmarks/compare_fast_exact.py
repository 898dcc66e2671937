"""Fast versus exact: the atlas's reference statistic against exact `maxact sample`, unit by unit.

    python benchmarks/compare_fast_exact.py [--seq 128 --batch 16 --samples 500 --seed 0]
        [--atlas-dir PATH] [--units L2.resid_pre:* --units L1.mlp_post:*] [--k auto]

On the embedded model (smollm2-135m, Through the Looking-Glass) it
  1. builds an atlas of the needed sites (or reuses one in --atlas-dir that matches) with the atlas
     --seq equal to the sample --seq, --ref-batch = --batch, --ref-samples = --samples;
  2. runs the exact reference procedure for every requested unit from shared forward passes (one
     `maxact.api.sample` call), timed;
  3. per unit compares the exact top token and its share of batches with the atlas's expected top
     token and share (refstat.npy, exact over random starts) and with a seeded atlas simulation that
     draws the very same batch starts as the exact run (so batches can be compared one by one);
  4. selects the units whose exact top token wins >= 40% of batches with fewer than half of all
     exact wins at window position 0, and reports how often the top token agrees there (the
     requirement: >= 90%) and over all units, per site, with the mean |share difference|.

Also per unit: the total variation distance between the exact tally's shares and the atlas's
expected shares (`tv`, the expected miss mass counted as disagreement), printed for `--watch`
units and averaged over all units (`mean_tv`). `--context-pass` builds the atlas with
`maxact atlas --context-pass`; `--exact-cache FILE` keeps the exact result so that a second run
(with and without the option) compares against the same exact batches (docs/METHOD.md, "Context").

Prints a table, then one JSON line. Exit status 1 if the agreement on the selection is below 0.9
(or nothing was selected). See docs/FAST_VS_EXACT.md for a measured run and what it means.

Notes
- `L{N}.resid_pre` (N >= 1) is the same tensor as `L{N-1}.resid_post` (the input of block N is the
  output of block N-1; checked on a batch before use). The atlas is built with the resid_post name
  so that `--layers` need not add a block the comparison does not use: for the default units the
  atlas holds exactly L1.resid_post and L1.mlp_post and its pass runs blocks 0-1, as sampling does.
- `--k auto` keeps enough top positions per unit that a batch almost never misses all of them:
  the smallest multiple of 64 with (1 - batch * seq / n_starts) ** K <= 0.02 (64 at the reference
  geometry 32 x 256, 128 at 16 x 128, 384 at 8 x 64 on this book). With K = 64 at 8 x 64 about
  half the simulated batches would be won outside the top-K, and the expected shares would be halved.
- The defaults (16 x 128, 500 batches) take about 4 minutes on 2 shared CPU cores (atlas included);
  `--batch 8 --seq 64 --samples 300` about 1 minute on idle cores. Both pass; see the doc.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from maxact.config import DEFAULT_CORPUS, DEFAULT_DEVICE, DEFAULT_MODEL, AtlasConfig

MISS_TARGET = 0.02  # --k auto: estimated P(no top-K position in a batch) at most this
MIN_SHARE = 0.40  # selection: exact top token wins at least this share of batches
MAX_POS0 = 0.50  # selection: fewer than this share of exact wins at window position 0
REQUIRED = 0.90  # agreement the requirement asks for on the selection


def parse_args(argv=None) -> argparse.Namespace:
    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    p = argparse.ArgumentParser(description=__doc__, formatter_class=Formatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help="model preset, as for maxact sample")
    p.add_argument("--corpus", default=DEFAULT_CORPUS, help="named corpus or text file")
    p.add_argument("--seq", type=int, default=128, help="tokens per window (atlas --seq = sample --seq)")
    p.add_argument("--batch", type=int, default=16, help="windows per batch (= atlas --ref-batch)")
    p.add_argument("--samples", type=int, default=500, help="batches (= atlas --ref-samples)")
    p.add_argument("--seed", type=int, default=0, help="seed of the exact run and the simulation")
    p.add_argument("--units", action="append", default=None,
                   help="unit or whole site, repeatable; unset: L2.resid_pre:* and L1.mlp_post:*")
    p.add_argument("--atlas-dir", type=Path, default=None,
                   help="atlas to reuse if it matches, else build there; unset: a folder under "
                        "the system temp dir named after the geometry, reused by later runs")
    p.add_argument("--rebuild", action="store_true", help="rebuild the atlas even if --atlas-dir matches")
    p.add_argument("--k", default="auto", help="atlas top-K per unit, or 'auto' (see the notes)")
    p.add_argument("--device", default=DEFAULT_DEVICE, help="torch device for the atlas and the exact run")
    p.add_argument("--show", type=int, default=12, help="selected units listed beside the disagreements")
    p.add_argument("--rows", type=Path, default=None, help="write every unit's comparison here (JSON)")
    p.add_argument("--watch", action="append", default=[],
                   help="unit whose total variation distance and batch agreement are printed on their own (repeatable)")
    p.add_argument("--exact-cache", type=Path, default=None,
                   help="keep the exact result in this file and reuse it when the geometry, seed and units match "
                        "(compare atlases with and without --context-pass against one exact run)")
    p.add_argument("--context-pass", action="store_true",
                   help="build the atlas with its context pass (maxact atlas --context-pass)")
    p.add_argument("--no-alias", action="store_true",
                   help="build L{N}.resid_pre under its own name (may add a block to the atlas pass)")
    return p.parse_args(argv)


# ---- which atlas answers which unit ------------------------------------------------------------
def atlas_unit_of(unit, alias: bool):
    """The atlas unit holding the same tensor as ``unit`` (see the notes on resid_pre)."""
    from maxact.units import UnitId

    if alias and unit.site == "resid_pre" and unit.layer is not None and unit.layer >= 1:
        return UnitId("resid_post", unit.layer - 1, unit.index)
    return unit


def atlas_sites_layers(atlas_units) -> tuple[tuple[str, ...], tuple[int, ...]]:
    sites = tuple(sorted({u.site for u in atlas_units}))
    layers = tuple(sorted({u.layer for u in atlas_units if u.layer is not None})) or (0,)
    return sites, layers


def alias_holds(lm, tokens: np.ndarray, units) -> bool:
    """True if every aliased resid_pre site equals its resid_post twin on a small batch."""
    import torch

    from maxact.capture import capture

    pairs = {(u.site_ref, atlas_unit_of(u, True).site_ref) for u in units}
    pairs = [(a, b) for a, b in pairs if a != b]
    if not pairs:
        return True
    ids = torch.from_numpy(tokens[: 2 * 32].astype(np.int64)).view(2, 32).to(lm.device)
    refs = sorted({r for pair in pairs for r in pair}, key=str)
    got = capture(lm.adapter, ids, refs)
    return all(torch.equal(got[a], got[b]) for a, b in pairs)


def auto_k(batch: int, seq: int, n_tokens: int) -> int:
    frac = batch * seq / max(n_tokens - seq, 1)
    if frac >= 1:
        return 64
    k = math.log(MISS_TARGET) / math.log1p(-frac)
    return max(64, 64 * math.ceil(k / 64))


# ---- the atlas ---------------------------------------------------------------------------------
def atlas_mismatch(path: Path, want: dict, site_names: list[str], n_tokens: int, corpus_sha: str) -> str | None:
    """Why the atlas at ``path`` cannot answer this comparison (None: it can)."""
    from maxact.errors import MaxactError
    from maxact.store.reader import Atlas

    if not (path / "manifest.json").is_file():
        return "no finished atlas there"
    try:
        atlas = Atlas(path)
        cfg = atlas.config
    except (MaxactError, OSError, ValueError) as e:
        return f"unreadable ({e})"
    for key, value in want.items():
        have = bool(cfg.get(key)) if key == "context_pass" else cfg.get(key)  # absent in older atlases: off
        if have != value:
            return f"{key} is {have!r}, need {value!r}"
    if atlas.manifest.corpus.sha256 != corpus_sha or atlas.manifest.corpus.n_tokens != n_tokens:
        return "made from another corpus text"
    held = {s.name for s in atlas.sites}
    missing = [s for s in site_names if s not in held]
    return f"lacks {', '.join(missing)}" if missing else None


def ensure_atlas(lm, source, args, k: int, atlas_units) -> tuple[Path, float, bool]:
    """(atlas dir, build seconds (recorded pass time if reused), reused?)."""
    from maxact.pipeline import build_atlas

    sites, layers = atlas_sites_layers(atlas_units)
    site_names = sorted({str(u.site_ref) for u in atlas_units})
    if args.atlas_dir is None:
        tag = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{Path(args.model).name}-{Path(args.corpus).name}")
        args.atlas_dir = (Path(tempfile.gettempdir()) / "maxact-fast-vs-exact"
                          / f"{tag}-s{args.seq}-b{args.batch}-k{k}")
    out = Path(args.atlas_dir)
    want = {"model": args.model, "corpus": args.corpus, "seq": args.seq, "ref_seq": args.seq,
            "ref_batch": args.batch, "k": k, "max_tokens": None, "strip_gutenberg": False,
            "context_pass": args.context_pass}
    why = "--rebuild" if args.rebuild else atlas_mismatch(out, want, site_names, len(source), source.info.sha256)
    if why is None:
        from maxact.store.reader import Atlas

        recorded = (Atlas(out).manifest.timing or {}).get("seconds", float("nan"))
        log(f"reusing the atlas in {out} (its pass took {recorded} s when built)")
        return out, float(recorded), True
    if (out / "manifest.json").exists() and not args.rebuild and args.atlas_dir_given:
        raise SystemExit(f"{out} holds an atlas that does not match ({why}); pass --rebuild to replace "
                         f"it, or another --atlas-dir")
    log(f"building the atlas in {out} ({why}): sites {','.join(sites)}, layers {layers}, k {k}")
    config = AtlasConfig(model=args.model, corpus=args.corpus, seq=args.seq, sites=sites, layers=layers,
                         k=k, ref_batch=args.batch, ref_samples=args.samples, seed=args.seed,
                         device=args.device, context_pass=args.context_pass)
    t0 = time.perf_counter()
    build_atlas(lm, source, config, out, overwrite=True, progress=sys.stderr.isatty(), echo=log)
    return out, time.perf_counter() - t0, False


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- per unit ----------------------------------------------------------------------------------
def compare_unit(atlas, row: int, us, starts: np.ndarray, args) -> dict:
    """Exact (``us``, a UnitSample) against the atlas row: expected statistic and seeded simulation."""
    from maxact.analysis.pages import simulate_unit
    from maxact.analysis.refstat import token_shares

    S = len(us.token_ids)
    t = us.tally
    exact_top = int(t.token_ids[0])
    exact_share = t.counts[0] / S
    exact_second = t.counts[1] / S if len(t.counts) > 1 else 0.0
    exact_count = dict(zip(t.token_ids.tolist(), t.counts.tolist()))

    ref = atlas["refstat.npy"][row]
    positions = np.asarray(atlas["ref_positions.npy"][row])
    probs = np.asarray(atlas["ref_probs.npy"][row], dtype=np.float64)
    toks = atlas.tokens
    tok_at = np.where(positions >= 0, toks[np.clip(positions, 0, len(toks) - 1)], -1)
    (ids, shares), = token_shares(probs[None], tok_at[None])
    expected = dict(zip(ids.tolist(), shares.tolist()))
    atlas_top = int(ref["top_token"])

    sim = simulate_unit(atlas, row, args.batch, args.seq, args.samples, args.seed, skip_pos0=False)
    sim_starts, wrow, cols, sim_tally, sim_toks = sim.starts, sim.rows, sim.cols, sim.tally, sim.token_ids
    if not np.array_equal(sim_starts, starts):
        raise SystemExit("the atlas simulation drew other starts than the exact run: seeded "
                         "batches are no longer comparable (maxact.windows.StartSpace.draw changed?)")
    exact_pos = starts[np.arange(S), us.rows] + us.cols
    # total variation distance between the exact tally's shares and the expected shares (the
    # expected "miss" mass, batches won outside the top-K, counts as disagreement)
    tv = 0.5 * (sum(abs(exact_count.get(t, 0) / S - expected.get(t, 0.0)) for t in set(exact_count) | set(expected))
                + float(ref["miss"]))
    hit = sim_toks >= 0
    sim_pos = np.where(hit, sim_starts[np.arange(S), wrow] + cols, -1)
    return {
        "unit": str(us.unit), "site": us.unit.site_ref.name,
        "exact_top": exact_top, "exact_share": float(exact_share),
        "exact_second_share": float(exact_second),
        "exact_tied": bool(len(t.counts) > 1 and t.counts[1] == t.counts[0]),
        "exact_pos0": t.pos0_wins / S,
        "exact_share_of_atlas_top": exact_count.get(atlas_top, 0) / S,
        "atlas_top": atlas_top, "atlas_share": float(ref["top_share"]),
        "atlas_share_of_exact_top": float(expected.get(exact_top, 0.0)),
        "atlas_pos0": float(ref["pos0_share"]), "atlas_miss": float(ref["miss"]), "tv": float(tv),
        "sim_top": int(sim_tally.token_ids[0]) if sim_tally.distinct else -1,
        "sim_share": float(sim_tally.counts[0] / S) if sim_tally.distinct else 0.0,
        # batch by batch, same starts: same winning token / same winning corpus position
        "batch_token_agree": float((sim_toks == us.token_ids).mean()),
        "batch_position_agree": float((sim_pos == exact_pos).mean()),
    }


def summarize(rows: list[dict]) -> dict:
    sel = [r for r in rows if r["exact_share"] >= MIN_SHARE and r["exact_pos0"] < MAX_POS0]
    agree = sum(r["exact_top"] == r["atlas_top"] for r in sel)

    def mean(xs):
        xs = list(xs)
        return float(np.mean(xs)) if xs else None

    return {
        "units": len(rows), "selected": len(sel), "agree": agree,
        "agreement": agree / len(sel) if sel else None,
        "agreement_all": mean(r["exact_top"] == r["atlas_top"] for r in rows),
        "mean_abs_share_diff": mean(abs(r["exact_share"] - r["atlas_share_of_exact_top"]) for r in sel),
        "sim_agreement": mean(r["exact_top"] == r["sim_top"] for r in sel),
        "batch_token_agree": mean(r["batch_token_agree"] for r in sel),
        "batch_position_agree": mean(r["batch_position_agree"] for r in sel),
        "atlas_miss": mean(r["atlas_miss"] for r in sel),
        "mean_tv": mean(r["tv"] for r in rows),
        "mean_tv_selected": mean(r["tv"] for r in sel),
        "batch_position_agree_all": mean(r["batch_position_agree"] for r in rows),
        "pos0_dominated": sum(r["exact_pos0"] >= MAX_POS0 for r in rows),
    }


SHARE_BINS = (0.0, 0.1, 0.2, 0.4, 1.01)


def by_share(rows: list[dict]) -> list[dict]:
    """Top-token agreement by the exact top token's share (units away from position 0), and for the
    units whose exact wins sit mostly at position 0."""
    out = []
    away = [r for r in rows if r["exact_pos0"] < MAX_POS0]
    for lo, hi in zip(SHARE_BINS, SHARE_BINS[1:]):
        rs = [r for r in away if lo <= r["exact_share"] < hi]
        out.append({"bin": f"{lo:.1f}-{min(hi, 1.0):.1f}", "units": len(rs),
                    "agreement": float(np.mean([r["exact_top"] == r["atlas_top"] for r in rs])) if rs else None,
                    "ties": sum(r["exact_tied"] for r in rs)})
    rs = [r for r in rows if r["exact_pos0"] >= MAX_POS0]
    out.append({"bin": "pos0>=0.5", "units": len(rs),
                "agreement": float(np.mean([r["exact_top"] == r["atlas_top"] for r in rs])) if rs else None,
                "ties": sum(r["exact_tied"] for r in rs)})
    return out


def fmt(x, spec=".3f") -> str:
    return "-" if x is None else format(x, spec)


def print_report(rows: list[dict], per_site: dict, total: dict, text, args, k: int) -> None:
    print(f"\nfast vs exact: {args.model} on {args.corpus}, batch {args.batch} x seq {args.seq}, "
          f"{args.samples} batches, seed {args.seed}, atlas top-K {k}")
    print(f"selection: exact top token wins >= {MIN_SHARE:.0%} of batches and < {MAX_POS0:.0%} of "
          f"exact wins sit at window position 0\n")
    head = (f"{'site':<14}{'units':>6}{'pos0>=.5':>9}{'selected':>9}{'agree':>6}{'agreement':>10}"
            f"{'all units':>10}{'|dshare|':>9}{'sim agr':>8}{'batch tok':>10}{'batch pos':>10}{'miss':>7}")
    print(head)
    print("-" * len(head))
    for name, s in [*per_site.items(), ("all", total)]:
        print(f"{name:<14}{s['units']:>6}{s['pos0_dominated']:>9}{s['selected']:>9}{s['agree']:>6}"
              f"{fmt(s['agreement']):>10}{fmt(s['agreement_all']):>10}{fmt(s['mean_abs_share_diff']):>9}"
              f"{fmt(s['sim_agreement']):>8}{fmt(s['batch_token_agree']):>10}"
              f"{fmt(s['batch_position_agree']):>10}{fmt(s['atlas_miss']):>7}")
    print("\ntop-token agreement by exact top share (units with < 50% of wins at position 0), and"
          " for position-0 units\n  (ties: units whose exact top two tokens won equally often)")
    for b in by_share(rows):
        print(f"  {b['bin']:<10}{b['units']:>6} units  agreement {fmt(b['agreement']):>6}  ties {b['ties']}")
    sel = [r for r in rows if r["exact_share"] >= MIN_SHARE and r["exact_pos0"] < MAX_POS0]
    bad = [r for r in sel if r["exact_top"] != r["atlas_top"]]
    good = sorted((r for r in sel if r["exact_top"] == r["atlas_top"]), key=lambda r: -r["exact_share"])
    cols = (f"{'unit':<18}{'exact top':<14}{'share':>6}{'2nd':>6}{'pos0':>6}  {'atlas top':<14}"
            f"{'share':>6}{'of ex.':>7}{'ex. of':>7}{'pos0':>6}{'miss':>6}  {'sim top':<14}")

    def line(r):
        return (f"{r['unit']:<18}{text(r['exact_top'])!r:<14.14}{r['exact_share']:>6.2f}"
                f"{r['exact_second_share']:>6.2f}{r['exact_pos0']:>6.2f}  {text(r['atlas_top'])!r:<14.14}"
                f"{r['atlas_share']:>6.2f}{r['atlas_share_of_exact_top']:>7.2f}"
                f"{r['exact_share_of_atlas_top']:>7.2f}{r['atlas_pos0']:>6.2f}{r['atlas_miss']:>6.2f}  "
                f"{text(r['sim_top'])!r:<14.14}")

    print(f"\nselected units where the top token disagrees ({len(bad)}):"
          "\n  exact: share, 2nd = runner-up share, pos0 = share of wins at window position 0;"
          "\n  atlas (expected): share, 'of ex.' = its share of the exact top, 'ex. of' = exact share"
          " of the atlas top, pos0, miss = P(batch won outside the top-K); sim top: seeded simulation")
    if bad:
        print(cols)
        for r in bad:
            print(line(r))
    if args.show and good:
        print(f"\nselected units that agree, by exact share (first {min(args.show, len(good))} of {len(good)}):")
        print(cols)
        for r in good[: args.show]:
            print(line(r))


def main(argv=None) -> int:
    args = parse_args(argv)
    args.atlas_dir_given = args.atlas_dir is not None
    units_spec = args.units or ["L2.resid_pre:*", "L1.mlp_post:*"]

    import torch

    from maxact import api
    from maxact.models.adapters.base import resolve_units
    from maxact.store.reader import Atlas

    t0 = time.perf_counter()
    lm = api.load_model(args.model, device=args.device)
    source = api.load_source(args.corpus, lm.tokenizer)
    tokens = source.tokens  # (n_tokens,) int32
    units = resolve_units(lm.adapter, units_spec)
    log(f"loaded {args.model} and {len(tokens)} tokens of {args.corpus} in {time.perf_counter() - t0:.1f} s "
        f"({len(units)} units, torch threads {torch.get_num_threads()})")

    alias = not args.no_alias and alias_holds(lm, tokens, units)
    if not args.no_alias and not alias:
        log("note: L{N}.resid_pre differs from L{N-1}.resid_post on this model; building it by name")
    atlas_units = [atlas_unit_of(u, alias) for u in units]
    k = auto_k(args.batch, args.seq, len(tokens)) if args.k == "auto" else int(args.k)

    atlas_dir, build_s, reused = ensure_atlas(lm, source, args, k, atlas_units)
    atlas = Atlas(atlas_dir)

    cache_key = (args.model, args.corpus, args.batch, args.seq, args.samples, args.seed, tuple(units_spec))
    cached = None
    if args.exact_cache is not None and args.exact_cache.is_file():
        with open(args.exact_cache, "rb") as f:
            cached = pickle.load(f)  # a file this script wrote (see --exact-cache)
        cached = cached if cached[0] == cache_key else None
    if cached is not None:
        _, result, exact_s = cached
        log(f"exact result read from {args.exact_cache} (it took {exact_s:.1f} s)")
    else:
        log(f"exact sampling: {args.samples} batches of {args.batch} x {args.seq} for {len(units)} units ...")
        t0 = time.perf_counter()
        result = api.sample(lm, source, units_spec, batch=args.batch, seq=args.seq, samples=args.samples,
                            seed=args.seed, progress=sys.stderr.isatty())
        exact_s = time.perf_counter() - t0
        log(f"exact sampling took {exact_s:.1f} s")
        if args.exact_cache is not None:
            with open(args.exact_cache, "wb") as f:
                pickle.dump((cache_key, result, exact_s), f)

    t0 = time.perf_counter()
    rows = [compare_unit(atlas, atlas.row(au), result.unit(u), result.starts, args)
            for u, au in zip(units, atlas_units)]
    query_s = time.perf_counter() - t0

    by_site = defaultdict(list)
    for r in rows:
        by_site[r["site"]].append(r)
    per_site = {name: summarize(rs) for name, rs in by_site.items()}
    total = summarize(rows)
    print_report(rows, per_site, total, atlas.token_text, args, k)

    if args.rows is not None:
        args.rows.write_text(json.dumps(
            [{**r, "exact_top_text": atlas.token_text(r["exact_top"]), "atlas_top_text": atlas.token_text(r["atlas_top"])}
             for r in rows], ensure_ascii=False, indent=0))
    ok = total["agreement"] is not None and total["agreement"] >= REQUIRED
    print(f"\ntiming: exact {exact_s:.1f} s ({args.samples * args.batch * args.seq} token-forwards); atlas "
          f"pass+write {build_s:.1f} s{' (recorded when built; reused now)' if reused else ''} "
          f"({len(tokens)} tokens) + expected/simulated statistics for all units {query_s:.1f} s")
    for r in rows:
        if r["unit"] in args.watch:
            print(f"watch {r['unit']}: total variation {r['tv']:.3f}, exact top {atlas.token_text(r['exact_top'])!r} "
                  f"{r['exact_share']:.3f} (atlas {r['atlas_share_of_exact_top']:.3f}), same winning position "
                  f"in {r['batch_position_agree']:.3f} of batches")
    print(f"mean total variation (exact shares vs expected), all {total['units']} units: {fmt(total['mean_tv'])}; "
          f"same winning position batch by batch: {fmt(total['batch_position_agree_all'])}")
    print(f"result: top token agrees for {total['agree']} of {total['selected']} selected units "
          f"({fmt(total['agreement'])}; required >= {REQUIRED}): {'PASS' if ok else 'FAIL'}\n")
    print(json.dumps({
        "selected_units": total["selected"], "agree": total["agree"],
        "agreement": None if total["agreement"] is None else round(total["agreement"], 4),
        "all_units": total["units"],
        "agreement_all": round(total["agreement_all"], 4),
        "mean_abs_share_diff": None if total["mean_abs_share_diff"] is None else round(total["mean_abs_share_diff"], 4),
        "exact_seconds": round(exact_s, 1), "atlas_seconds": round(build_s + query_s, 1),
        "geometry": {"model": args.model, "corpus": args.corpus, "batch": args.batch, "seq": args.seq,
                     "samples": args.samples, "seed": args.seed, "n_tokens": int(len(tokens)), "k": k},
        "atlas_build_seconds": round(build_s, 1), "atlas_query_seconds": round(query_s, 1),
        "atlas_reused": reused, "atlas_dir": str(atlas_dir), "context_pass": args.context_pass,
        "mean_tv": total["mean_tv"], "batch_position_agree_all": total["batch_position_agree_all"],
        "watch": [{key: r[key] for key in ("unit", "tv", "exact_share", "atlas_share_of_exact_top",
                                           "batch_token_agree", "batch_position_agree")}
                  for r in rows if r["unit"] in args.watch],
        "sim_agreement": total["sim_agreement"], "batch_token_agree": total["batch_token_agree"],
        "per_site": {name: {key: (round(v, 4) if isinstance(v, float) else v) for key, v in s.items()}
                     for name, s in per_site.items()},
        "by_share": by_share(rows),
        "disagree": [r["unit"] for r in rows if r["exact_share"] >= MIN_SHARE
                     and r["exact_pos0"] < MAX_POS0 and r["exact_top"] != r["atlas_top"]],
    }))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
