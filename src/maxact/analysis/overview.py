"""Where the selective units are: one summary per site of an atlas, and each site's units ranked by
selectivity (numpy only; the viewer's home page and site listings read these).

A unit is *selective* when its reference winner is one token that also stands out in the unit's
mean activation per token type, away from window position 0:

    top_token_z > 3  and  top_share > 0.5  and  pos0_share < 0.5

Units are ranked by ``score = top_share * (1 - pos0_share) * clip(top_token_z, 0, 10)``, zero when
the top token occurs fewer than ``min_tuning_count`` times in the corpus (its mean is no evidence).
"""

from __future__ import annotations

from dataclasses import asdict
from functools import lru_cache

import numpy as np

from maxact.analysis.floats import json_float
from maxact.errors import MaxactError, choices_text
from maxact.store import format as F
from maxact.store.reader import Atlas

SELECTIVE_Z = 3.0
SELECTIVE_SHARE = 0.5
POS0_LIMIT = 0.5  # units with more of their wins at window position 0 are sink artefacts


class UnitScores:
    """Per-unit arrays (U,) derived once from an atlas's reference summary."""

    def __init__(self, atlas: Atlas):
        ref = np.asarray(atlas[F.REF])
        self.top_token = ref["top_token"].astype(np.int64)
        self.top_share = ref["top_share"].astype(np.float64)
        self.pos0_share = ref["pos0_share"].astype(np.float64)
        self.z = ref["top_token_z"].astype(np.float64)
        self.best_token = ref["best_token"].astype(np.int64)
        self.best_z = ref["best_z"].astype(np.float64)
        self.x_top_token = ref["x_top_token"].astype(np.int64)
        self.x_top_share = ref["x_top_share"].astype(np.float64)
        counts = atlas.token_counts
        occ = np.where(self.top_token >= 0, counts[np.clip(self.top_token, 0, len(counts) - 1)], 0)
        self.clean = self.pos0_share < POS0_LIMIT
        z0 = np.nan_to_num(self.z, nan=0.0)
        self.selective = (z0 > SELECTIVE_Z) & (self.top_share > SELECTIVE_SHARE) & self.clean
        score = self.top_share * (1.0 - self.pos0_share) * np.clip(z0, 0.0, 10.0)
        score[occ < atlas.manifest.min_tuning_count] = 0.0
        self.score = score


@lru_cache(maxsize=4)
def _scores(atlas: Atlas) -> UnitScores:
    return UnitScores(atlas)


def unit_scores(atlas: Atlas) -> UnitScores:
    """The per-unit arrays of an atlas, computed once per Atlas object."""
    return _scores(atlas)


def unit_row_summary(atlas: Atlas, row: int, s: UnitScores | None = None) -> dict:
    """One unit as the overview and site listings show it."""
    s = s or unit_scores(atlas)
    return {
        "unit": str(atlas.unit_at(row)), "score": float(s.score[row]), "selective": bool(s.selective[row]),
        "top_token_id": int(s.top_token[row]), "top_token": atlas.token_text(int(s.top_token[row])),
        "top_share": float(s.top_share[row]), "pos0_share": float(s.pos0_share[row]),
        "top_token_z": json_float(s.z[row]),
        "x_top_token": atlas.token_text(int(s.x_top_token[row])), "x_top_share": float(s.x_top_share[row]),
        "best_token": atlas.token_text(int(s.best_token[row])), "best_z": json_float(s.best_z[row]),
    }


def overview(atlas: Atlas, top: int = 12) -> dict:
    """Run metadata, one cell per site (site kind x layer) and the most selective units overall."""
    s = unit_scores(atlas)
    m = atlas.manifest
    # eta squared per unit (the share of its variance the token's identity explains); None in
    # atlases made before per-type moments
    eta2 = np.asarray(atlas[F.TYPE_STATS]["eta2"]) if F.TYPE_STATS in m.files else None
    cells = []
    for site in atlas.sites:
        rows = site.rows
        clean = s.clean[rows]
        shares = s.top_share[rows][clean]
        score = s.score[rows]
        best = rows.start + int(_ranked(s, rows)[0])
        n = site.width
        cells.append({
            "site": site.name, "kind": site.site, "layer": site.layer, "n_units": n,
            "n_clean": int(clean.sum()),
            "mean_top_share": json_float(shares.mean()) if len(shares) else None,
            "median_top_share": json_float(np.median(shares)) if len(shares) else None,
            "n_selective": int(s.selective[rows].sum()),
            "frac_selective": float(s.selective[rows].sum() / max(n, 1)),
            "mean_eta2": json_float(np.nanmean(eta2[rows])) if eta2 is not None and np.isfinite(eta2[rows]).any() else None,
            "best": unit_row_summary(atlas, best, s) if score.max() > 0 else None,
        })
    order = _ranked(s, slice(0, len(s.score)))[:top]
    return {
        "model": asdict(m.model), "corpus": asdict(m.corpus), "seq": m.seq, "k": m.k,
        "reference": asdict(m.reference), "n_units": atlas.n_units, "created": m.created,
        "timing": m.timing, "config": _config(atlas),
        "kinds": list(dict.fromkeys(site.site for site in atlas.sites)),
        "layers": sorted({site.layer for site in atlas.sites if site.layer is not None}),
        "criteria": {"selective_z": SELECTIVE_Z, "selective_share": SELECTIVE_SHARE, "pos0_limit": POS0_LIMIT},
        "cells": cells,
        "top_units": [unit_row_summary(atlas, int(r), s) for r in order if s.score[r] > 0],
    }


def _ranked(s: UnitScores, rows: slice) -> np.ndarray:
    """Offsets within ``rows``, by score, then z, then win share (all descending), then index."""
    z = np.nan_to_num(s.z[rows], nan=-np.inf)
    score = np.round(s.score[rows], 3)  # float32 shares of 0.99999 and 1.0 tie
    return np.lexsort((-s.top_share[rows], -z, -score))


def _config(atlas: Atlas) -> dict | None:
    try:
        return atlas.config
    except (OSError, ValueError):
        return None


def site_units(atlas: Atlas, name: str, page: int = 1, per_page: int = 50) -> dict:
    """The units of one site, most selective first, one page at a time (pages count from 1)."""
    site = atlas.manifest.site(name)
    if site is None:
        names = [s.name for s in atlas.sites]
        raise MaxactError(f"site {name!r} is not in this atlas; it holds {choices_text(names, 8)}")
    if page < 1 or not 1 <= per_page <= 1000:
        raise MaxactError(f"page must be 1 or more and per_page 1..1000, got page={page}, per_page={per_page}")
    s = unit_scores(atlas)
    rows = site.rows
    order = rows.start + _ranked(s, rows)
    total = len(order)
    pages = max(1, -(-total // per_page))
    chunk = order[(page - 1) * per_page : page * per_page]
    return {"site": name, "info": asdict(site), "total": total, "page": page, "per_page": per_page, "pages": pages,
            "n_selective": int(s.selective[rows].sum()),
            "units": [unit_row_summary(atlas, int(r), s) for r in chunk]}
