"""What a unit's page shows and what a token search finds: plain dicts built from an atlas, shared
by `maxact show --json`, `maxact find --json` and the viewer's JSON API (numpy only)."""

from __future__ import annotations

from dataclasses import asdict
from typing import NamedTuple

import numpy as np

from maxact.analysis.bands import activation_bands
from maxact.analysis.context_shares import context_segments, context_simulate, measured_contexts
from maxact.analysis.floats import json_float
from maxact.analysis.refstat import seeded_draws, simulate, token_shares
from maxact.errors import MaxactError, choices_text
from maxact.store import format as F
from maxact.store.reader import Atlas
from maxact.tally import Tally, tally_winners
from maxact.units import SITE_KINDS, UnitId, parse_unit


def examples(atlas: Atlas, row: int, part: str, limit: int | None = None) -> list[dict]:
    """Ranked examples of one unit: position in the corpus stream, token, value; with context
    (token ids and the unit's stored activation on each) where the atlas kept it."""
    files = F.RANKED[part]
    # whole rows as Python lists first: element-wise reads of memory-mapped arrays are slow
    vals = np.asarray(atlas[files.values][row]).tolist()  # (K,) float
    poss = np.asarray(atlas[files.positions][row]).tolist()  # (K,) int, -1 = empty
    ctx = np.asarray(atlas[files.context][row], dtype=np.float32) if files.context is not None else None
    before = atlas.manifest.context.before
    toks = atlas.tokens
    window_start, _ = atlas.window_bounds(np.asarray(poss, dtype=np.int64))  # (K,) -1 for empty slots
    out = []
    for r, (v, p) in enumerate(zip(vals, poss)):
        if p < 0 or (limit is not None and r >= limit):
            break
        tok = int(toks[p])
        # the context holds only the example's window (NaN outside it), so never another document
        item = {"position": p, "token_id": tok, "token": atlas.token_text(tok), "value": v,
                "window_pos": p - int(window_start[r])}
        if ctx is not None and r < ctx.shape[0]:
            c = ctx[r]  # (C,) the unit's activation around the example, NaN outside its window
            lo = p - before
            keep = ~np.isnan(c)
            idx = np.nonzero(keep)[0]
            start = lo + int(idx[0])
            ids = np.asarray(toks[start : lo + int(idx[-1]) + 1]).tolist()
            item["context"] = {"start": start, "focus": p - start, "token_ids": ids,
                               "tokens": [atlas.token_text(t) for t in ids],
                               "values": c[keep].tolist()}
        out.append(item)
    return out


def reference_tally(atlas: Atlas, row: int) -> dict:
    """Expected shares (exact over random starts) and a seeded simulated tally, reference geometry."""
    ref = atlas.manifest.reference
    positions = np.asarray(atlas[F.REF_POSITIONS][row])
    probs = np.asarray(atlas[F.REF_PROBS][row], dtype=np.float64)
    toks = atlas.tokens
    tok_at = np.where(positions >= 0, toks[np.clip(positions, 0, len(toks) - 1)], -1)
    (ids, shares), = token_shares(probs[None], tok_at[None])
    sim = simulate_unit(atlas, row, ref.batch, ref.seq, ref.samples, ref.seed, False).tally
    counts = dict(zip(sim.token_ids.tolist(), sim.counts.tolist()))
    occ = atlas.token_counts
    rows = []
    for t in dict.fromkeys(list(ids) + list(sim.token_ids)):
        t = int(t)
        share = float(shares[list(ids).index(t)]) if t in ids else 0.0
        n = int(occ[t])
        exp_wins = share * ref.samples
        rows.append({"token_id": t, "token": atlas.token_text(t), "count": int(counts.get(t, 0)),
                     "share": counts.get(t, 0) / ref.samples, "expected_share": share,
                     "occurrences": n, "wins_per_occurrence": exp_wins / n if n else None})
    # drop tokens that neither won a simulated batch nor have a visible expected share
    rows = [r for r in rows if r["count"] > 0 or r["expected_share"] >= 1e-4]
    rows.sort(key=lambda r: (-r["expected_share"], -r["count"], r["token_id"]))
    r = atlas[F.REF][row]
    return {"geometry": asdict(ref), "tally": rows, "miss_prob": float(r["miss"]),
            "pos0_share": float(r["pos0_share"]), "distinct": sim.distinct,
            "excluding_pos0": {"top_token": int(r["x_top_token"]), "top_token_text": atlas.token_text(int(r["x_top_token"])),
                               "top_share": float(r["x_top_share"]), "miss_prob": float(r["x_miss"])}}


class SimulatedBatches(NamedTuple):
    """Seeded batches of the reference procedure answered from one unit's top-K (S batches of B
    windows); a batch that no top-K position reaches is missed: -1 ids and positions, NaN value."""

    starts: np.ndarray  # (S, B) int64 window starts
    rows: np.ndarray  # (S,) int64 window of the batch holding the winner
    cols: np.ndarray  # (S,) int64 winner's offset in that window
    tally: Tally
    token_ids: np.ndarray  # (S,) int64 winning token
    values: np.ndarray  # (S,) float32 winning activation
    window_pos: np.ndarray  # (S,) int64 where the atlas pass computed that value (sinks live at 0); with
    # two contexts per candidate (--context-pass), the winner's position in its drawn window


def simulate_unit(atlas: Atlas, row: int, batch: int, seq: int, samples: int, seed: int,
                  skip_pos0: bool) -> SimulatedBatches:
    """The reference statistic of one unit by simulation over its top-K, each candidate valued with its
    one measured context, or with the two of an atlas made with --context-pass (docs/METHOD.md)."""
    if skip_pos0:
        positions = np.asarray(atlas[F.TOP_POSITIONS][row])
        values = np.asarray(atlas[F.TOP_VALUES][row])
    else:
        positions = np.asarray(atlas[F.REF_POSITIONS][row])
        vals_all = np.concatenate([atlas[F.TOP_VALUES][row], atlas[F.TOP0_VALUES][row]])
        pos_all = np.concatenate([atlas[F.TOP_POSITIONS][row], atlas[F.TOP0_POSITIONS][row]])
        lookup = dict(zip(pos_all.tolist(), vals_all.tolist()))
        values = np.array([lookup.get(int(p), np.nan) for p in positions], dtype=np.float32)
    space = atlas.start_space(seq)
    if atlas.manifest.reference.contexts == 2:  # two measured contexts per candidate (--context-pass)
        shift = np.asarray(atlas[F.TOP_SHIFT_VALUES if skip_pos0 else F.REF_SHIFT_VALUES][row])  # (K,)
        measured = measured_contexts(positions[None], values[None], shift[None], atlas.doc_starts,
                                     atlas.windowing.length)
        index = seeded_draws(space, batch, samples, seed)  # (S, B) start numbers
        rank, wrow, won = context_simulate(context_segments(positions[None], measured, space, skip_pos0), index,
                                          space.n_starts)
        starts = space.starts_at(index)
    else:
        starts, rank, wrow = simulate(positions, space, batch, samples, seed)
        won = values[np.maximum(rank, 0)]
    hit = rank >= 0
    pos = np.where(hit, positions[np.maximum(rank, 0)], -1)
    cols = np.where(hit, pos - starts[np.arange(samples), wrow], 0)
    toks = np.where(hit, np.asarray(atlas.tokens)[np.maximum(pos, 0)], -1).astype(np.int64)
    vals = np.where(hit, won, np.nan).astype(np.float32)
    if atlas.manifest.reference.contexts == 2:  # the drawn window's position, as an exact run counts it
        window_pos = np.where(hit, cols, -1)
    else:  # the window position where the atlas pass computed the winning value (sinks live at 0)
        window_pos = np.where(hit, pos - atlas.window_bounds(pos)[0], -1)
    tally = tally_winners(toks, window_pos, vals)
    return SimulatedBatches(starts, wrow, cols, tally, toks, vals, window_pos)


def stats(atlas: Atlas, row: int) -> dict:
    """The unit's moments, its eta squared (the share of its variance that the token's identity
    explains: tracked types and the rest as one group; None in atlases made before per-type moments)
    and its histogram."""
    s = atlas[F.STATS][row]
    hist = atlas[F.HIST][row]
    bounds = atlas[F.HIST_BOUNDS]
    nz = np.nonzero(hist)[0]
    lo, hi = (int(nz[0]), int(nz[-1]) + 1) if len(nz) else (0, 0)
    eta2 = json_float(atlas[F.TYPE_STATS][row]["eta2"]) if F.TYPE_STATS in atlas.manifest.files else None
    return {k: json_float(s[k]) if k != "count" else int(s[k]) for k in s.dtype.names} | {
        "eta2": eta2,
        "hist": {"counts": [int(c) for c in hist[lo:hi]], "bounds": [[float(a), float(b)] for a, b in bounds[lo:hi]],
                 "stride": atlas.manifest.hist_stride}}


def tuning(atlas: Atlas, row: int, top: int = 15) -> dict:
    """Token types with the highest and lowest mean activation (seen >= min count), with z."""
    ids = np.asarray(atlas[F.TUNING_IDS])
    counts = np.asarray(atlas[F.TUNING_COUNTS])
    means = np.asarray(atlas[F.TUNING_MEANS][:, row], dtype=np.float64)  # (V+1,)
    s = atlas[F.STATS][row]
    ok = counts[:-1] >= atlas.manifest.min_tuning_count
    order = np.argsort(-means[:-1])
    def rows(idx):
        return [{"token_id": int(ids[i]), "token": atlas.token_text(int(ids[i])), "count": int(counts[i]),
                 "mean": float(means[i]), "z": json_float((means[i] - s["mean"]) / s["std"]) if s["std"] > 0 else None}
                for i in idx]
    good = [i for i in order if ok[i]]
    return {"highest": rows(good[:top]), "lowest": rows(good[::-1][:top]),
            "tracked_types": int(len(ids)), "min_count": atlas.manifest.min_tuning_count,
            "other": {"count": int(counts[-1]), "mean": json_float(means[-1])}}


def logit_effects(atlas: Atlas, row: int) -> dict | None:
    ti = atlas[F.LOGIT_TOP_IDS][row]
    if ti[0] < 0:
        return None
    def rows(ids, vals):
        return [{"token_id": int(i), "token": atlas.token_text(int(i)), "value": float(v)} for i, v in zip(ids, vals)]
    return {"promoted": rows(ti, atlas[F.LOGIT_TOP_VALUES][row]),
            "suppressed": rows(atlas[F.LOGIT_BOTTOM_IDS][row], atlas[F.LOGIT_BOTTOM_VALUES][row])}


def neighbours(atlas: Atlas, unit: UnitId) -> dict:
    site = atlas.site_of(unit)
    out = {"prev": str(UnitId(unit.site, unit.layer, unit.index - 1)) if unit.index > 0 else None,
           "next": str(UnitId(unit.site, unit.layer, unit.index + 1)) if unit.index + 1 < site.width else None,
           "same_index": []}
    for s in atlas.sites:
        if s.name != site.name and unit.index < s.width and (s.site == unit.site or s.layer == unit.layer):
            out["same_index"].append(f"{s.name}:{unit.index}")
    return out


def unit_page(atlas: Atlas, unit_text: str, limit: int | None = None) -> dict:
    """The object of `maxact show --json` and `/api/unit/<unit>`."""
    unit = parse_unit(unit_text)
    row = atlas.row(unit)
    site = atlas.site_of(unit)
    info = {"site": unit.site, "layer": unit.layer, "index": unit.index, "hf_module": site.hf_module,
            "reads": site.reads, "tl_hook": site.tl_hook}
    if SITE_KINDS[unit.site].per_head:
        d_head = atlas.manifest.model.d_head
        info["head"], info["head_dim"] = unit.index // d_head, unit.index % d_head
    reference = reference_tally(atlas, row)
    return {
        "unit": str(unit), "info": info,
        "top": examples(atlas, row, "top", limit), "bottom": examples(atlas, row, "bottom", limit),
        "top_pos0": examples(atlas, row, "top0", 8), "bottom_pos0": examples(atlas, row, "bottom0", 8),
        "stats": stats(atlas, row), "reference": {k: v for k, v in reference.items() if k != "tally"},
        "tally": reference["tally"],
        "tuning": tuning(atlas, row), "logit_effects": logit_effects(atlas, row),
        "neighbours": neighbours(atlas, unit), "bands": activation_bands(atlas, row),
        "derived": derived_info(atlas, unit, row),
    }


def derived_info(atlas: Atlas, unit: UnitId, row: int) -> dict | None:
    """A derived unit's definition, density and nearest neurons (docs/DIRECTIONS.md); None for a
    unit of the model's own sites."""
    spec = next((d for d in atlas.manifest.derived if d.name == unit.site), None)
    if spec is None:
        return None
    ids = atlas[F.near_units_file(spec.name)][unit.index]  # (N,) unit ids, nearest first
    cosines = atlas[F.near_cosines_file(spec.name)][unit.index]  # (N,) signed
    held = {s.name for s in atlas.sites}
    return {
        "name": spec.name, "kind": spec.kind, "architecture": spec.architecture, "k": spec.k,
        "base": spec.base, "width": spec.width, "path": spec.path, "sha256": spec.sha256,
        "density": float(atlas[F.STATS]["frac_pos"][row]),  # share of tokens where the unit is > 0
        "nearest_neurons": [{"unit": str(u), "cosine": float(c), "in_atlas": str(u).rsplit(":", 1)[0] in held}
                            for u, c in zip(ids, cosines)],
    }


def find_units(atlas: Atlas, token: str, limit: int = 20, site: str | None = None) -> dict:
    """Units that prefer a token, ranked by selectivity: the z-score of the token's mean activation
    (how far above the unit's own mean, in its own standard deviations), not by raw win counts.
    ``site``: only units of this site kind ("mlp_post"); ``limit``: at most this many units (>= 1)."""
    if limit < 1:
        raise MaxactError(f"limit must be 1 or more, got {limit}")
    kinds = list(dict.fromkeys(s.site for s in atlas.sites))
    if site is not None and site not in kinds:
        raise MaxactError(f"site {site!r} is not in this atlas; its site kinds are {choices_text(kinds)}")
    ids = atlas.find_token_ids(token)
    if not ids:
        raise MaxactError(f"token {token!r} is not in the vocabulary of {atlas.manifest.model.name}; "
                          f"tokens carry their leading space, e.g. ' before'")
    tracked = np.asarray(atlas[F.TUNING_IDS])
    counts = np.asarray(atlas[F.TUNING_COUNTS])
    hits = [i for i in ids if i in set(tracked.tolist())]
    if not hits:
        n = int(atlas.token_counts[ids[0]])
        raise MaxactError(f"token {token!r} occurs {n} times in the corpus and is not among the "
                          f"{len(tracked)} token types the atlas tracks (raise --max-types)")
    tid = hits[0]
    v = int(np.nonzero(tracked == tid)[0][0])
    means = np.asarray(atlas[F.TUNING_MEANS][v], dtype=np.float64)  # (U,) contiguous: type-major
    st = atlas[F.STATS]
    std = np.where(st["std"] > 0, st["std"], np.nan)
    z = (means - st["mean"]) / std
    if site is not None:
        keep = np.zeros(atlas.n_units, dtype=bool)
        for s in atlas.sites:
            if s.site == site:
                keep[s.rows] = True
        z = np.where(keep, z, np.nan)
    order = np.argsort(-np.nan_to_num(z, nan=-np.inf))
    order = list(order[~np.isnan(z[order])][:limit])  # NaN z (constant units, other sites) last, dropped
    # win share of this token in each listed unit's reference statistic
    pos = np.asarray(atlas[F.REF_POSITIONS][order]) if order else np.zeros((0, 1), dtype=np.int64)
    probs = np.asarray(atlas[F.REF_PROBS][order]) if order else np.zeros((0, 1))
    toks = atlas.tokens
    tok_at = np.where(pos >= 0, toks[np.clip(pos, 0, len(toks) - 1)], -1)
    share = (probs * (tok_at == tid)).sum(1)
    n_occ = int(counts[v])
    samples = atlas.manifest.reference.samples
    ref = atlas[F.REF]
    units = [{"unit": str(atlas.unit_at(int(r))), "z": float(z[r]), "mean_on_token": float(means[r]),
              "unit_mean": float(st["mean"][r]), "unit_std": float(st["std"][r]),
              "win_share": float(s), "wins_per_occurrence": float(s) * samples / n_occ,
              "top_token": atlas.token_text(int(ref["top_token"][r])), "top_share": float(ref["top_share"][r])}
             for r, s in zip(order, share)]
    return {"token": token, "token_id": int(tid), "occurrences": n_occ, "units": units}
