"""A unit's examples across activation levels, read from the atlas's activation bands (docs/STORE.md,
"Activation bands"): per band, a few examples drawn uniformly from a fixed 1-in-N subsample of
corpus positions, and a uniform random sample of the unit's candidates (numpy only)."""

from __future__ import annotations

import numpy as np

from maxact.analysis.floats import json_float
from maxact.store import format as F
from maxact.store.reader import Atlas

CONTEXT_BEFORE, CONTEXT_AFTER = 12, 4  # tokens of text shown around a band example (its window only)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def position_hash(positions: np.ndarray, seed: int) -> np.ndarray:
    """(...) int64 positions -> (...) uint64: the p-th output of splitmix64 seeded with ``seed``, the
    hash the atlas drew its band examples by (arithmetic modulo 2**64)."""
    z = (positions.astype(np.uint64) + np.uint64(1)) * _GOLDEN + np.uint64(seed % (1 << 64))
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def _example(atlas: Atlas, position: int, value: float) -> dict:
    """One band example: the token, its value, and the text around it inside its atlas window (so
    never across a document start)."""
    toks = atlas.tokens
    bounds = atlas.window_bounds(np.array([position], dtype=np.int64))
    window_start, window_end = int(bounds[0][0]), int(bounds[1][0])
    lo = max(window_start, position - CONTEXT_BEFORE)
    hi = min(window_end, position + CONTEXT_AFTER + 1)
    ids = np.asarray(toks[lo:hi]).tolist()
    tok = int(toks[position])
    return {"position": position, "token_id": tok, "token": atlas.token_text(tok), "value": json_float(value),
            "window_pos": position - window_start,
            "context": {"start": lo, "focus": position - lo, "token_ids": ids,
                        "tokens": [atlas.token_text(t) for t in ids]}}


def activation_bands(atlas: Atlas, row: int) -> dict | None:
    """Bands from the highest activation down, each with its examples; None for an atlas made
    before activation bands."""
    sampling = atlas.manifest.bands
    if sampling is None:
        return None
    edges = np.asarray(atlas[F.BAND_EDGES])  # (B + 1,)
    positions = np.asarray(atlas[F.BAND_POSITIONS][row])  # (B, R) -1: empty
    values = np.asarray(atlas[F.BAND_VALUES][row])  # (B, R)
    levels = []
    for b in range(len(edges) - 2, -1, -1):
        kept = [(int(p), float(v)) for p, v in zip(positions[b].tolist(), values[b].tolist()) if p >= 0]
        if kept:
            levels.append({"band": b, "low": json_float(edges[b]), "high": json_float(edges[b + 1]),
                           "examples": [_example(atlas, p, v) for p, v in kept]})
    # the R smallest hashes over all of the unit's candidates are always among the kept ones (each
    # band keeps its R smallest), so a uniform sample of the candidates needs no other state
    flat_pos, flat_val = positions.reshape(-1), values.reshape(-1)
    ok = flat_pos >= 0
    order = np.argsort(position_hash(flat_pos[ok], sampling.seed), kind="stable")[: sampling.per_band]
    random = [_example(atlas, int(flat_pos[ok][i]), float(flat_val[ok][i])) for i in order]
    return {"sampling": {"one_in": sampling.one_in, "per_band": sampling.per_band, "hash": sampling.hash,
                         "seed": sampling.seed},
            "levels": levels, "random": random}
