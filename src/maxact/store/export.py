"""`maxact export DIR --parquet OUT`: Parquet tables that DuckDB and pandas query directly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from maxact.store import format as F
from maxact.store.reader import Atlas


def _unit_columns(atlas: Atlas) -> dict[str, np.ndarray]:
    names, sites, layers, index = [], [], [], []
    for s in atlas.sites:
        for i in range(s["width"]):
            names.append(f"{s['name']}:{i}")
            sites.append(s["site"])
            layers.append(-1 if s["layer"] is None else s["layer"])
            index.append(i)
    return {"unit": np.array(names), "site": np.array(sites), "layer": np.array(layers), "index": np.array(index)}


def export_parquet(atlas: Atlas, out: Path) -> list[Path]:
    """units.parquet (one row per unit: stats + reference statistic), examples.parquet (one row per
    top/bottom example), tokens.parquet (the corpus stream with token text)."""
    out.mkdir(parents=True, exist_ok=True)
    cols = _unit_columns(atlas)
    st, ref = atlas[F.STATS], atlas[F.REF]
    table = {**cols, **{n: np.asarray(st[n]) for n in st.dtype.names},
             **{f"ref_{n}": np.asarray(ref[n]) for n in ref.dtype.names}}
    table["ref_top_token_text"] = np.array([atlas.token_text(int(t)) for t in ref["top_token"]])
    written = []
    p = out / "units.parquet"
    pq.write_table(pa.table(table), p)
    written.append(p)

    rows = []
    U = atlas.n_units
    for part in ("top", "bottom", "top0", "bottom0"):
        v = np.asarray(atlas[f"{part}_values.npy"])
        pos = np.asarray(atlas[f"{part}_positions.npy"])
        K = v.shape[1]
        ok = pos >= 0
        uidx = np.repeat(np.arange(U), K).reshape(U, K)[ok]
        rows.append({"unit": cols["unit"][uidx], "kind": np.full(ok.sum(), part),
                     "rank": np.tile(np.arange(K), U).reshape(U, K)[ok], "value": v[ok],
                     "position": pos[ok], "token_id": np.asarray(atlas.tokens)[pos[ok]].astype(np.int64)})
    ex = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    p = out / "examples.parquet"
    pq.write_table(pa.table(ex), p)
    written.append(p)

    toks = np.asarray(atlas.tokens)
    p = out / "tokens.parquet"
    pq.write_table(pa.table({"position": np.arange(len(toks)), "token_id": toks,
                             "token": np.array([atlas.token_text(int(t)) for t in toks])}), p)
    written.append(p)
    return written
