"""`maxact export DIR --parquet OUT`: Parquet tables that DuckDB and pandas query directly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from maxact.errors import MaxactError
from maxact.fsio import atomic_file
from maxact.store import format as F
from maxact.store.reader import Atlas

UNITS_TABLE, EXAMPLES_TABLE, TOKENS_TABLE = "units.parquet", "examples.parquet", "tokens.parquet"


def _unit_columns(atlas: Atlas) -> dict[str, np.ndarray]:
    names, sites, layers, index = [], [], [], []
    for s in atlas.sites:
        for i in range(s.width):
            names.append(f"{s.name}:{i}")
            sites.append(s.site)
            layers.append(-1 if s.layer is None else s.layer)
            index.append(i)
    return {"unit": np.array(names), "site": np.array(sites), "layer": np.array(layers), "index": np.array(index)}


def export_parquet(atlas: Atlas, out: Path, overwrite: bool = False) -> list[Path]:
    """units.parquet (one row per unit: stats + reference statistic), examples.parquet (one row per
    top/bottom example), tokens.parquet (the corpus stream with token text). Existing tables are
    replaced only with ``overwrite``; each table appears whole or not at all."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MaxactError(f"--parquet {out} is a file; give a folder for the Parquet tables")
    targets = [out / UNITS_TABLE, out / EXAMPLES_TABLE, out / TOKENS_TABLE]
    existing = [p.name for p in targets if p.exists()]
    if existing and not overwrite:
        raise MaxactError(f"{out} already holds {', '.join(existing)}; use --overwrite to replace them, "
                          f"or another folder")
    out.mkdir(parents=True, exist_ok=True)
    cols = _unit_columns(atlas)
    st, ref = atlas[F.STATS], atlas[F.REF]
    units = {**cols, **{n: np.asarray(st[n]) for n in st.dtype.names},
             **{f"ref_{n}": np.asarray(ref[n]) for n in ref.dtype.names}}
    units["ref_top_token_text"] = np.array([atlas.token_text(int(t)) for t in ref["top_token"]])
    _write(out / UNITS_TABLE, units)

    rows = []
    U = atlas.n_units
    for part, files in F.RANKED.items():
        v = np.asarray(atlas[files.values])
        pos = np.asarray(atlas[files.positions])
        K = v.shape[1]
        ok = pos >= 0
        uidx = np.repeat(np.arange(U), K).reshape(U, K)[ok]
        rows.append({"unit": cols["unit"][uidx], "kind": np.full(ok.sum(), part),
                     "rank": np.tile(np.arange(K), U).reshape(U, K)[ok], "value": v[ok],
                     "position": pos[ok], "token_id": np.asarray(atlas.tokens)[pos[ok]].astype(np.int64)})
    _write(out / EXAMPLES_TABLE, {k: np.concatenate([r[k] for r in rows]) for k in rows[0]})

    toks = np.asarray(atlas.tokens)
    _write(out / TOKENS_TABLE, {"position": np.arange(len(toks)), "token_id": toks,
                                "token": np.array([atlas.token_text(int(t)) for t in toks])})
    return targets


def _write(path: Path, columns: dict[str, np.ndarray]) -> None:
    """One Parquet table, whole or not at all."""
    with atomic_file(path) as f:
        pq.write_table(pa.table(columns), f)
