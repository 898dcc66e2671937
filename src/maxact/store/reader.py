"""Read an atlas directory: numpy and the standard library only (no torch), arrays memory-mapped.

``Atlas(path)`` validates the manifest and every file's shape before serving anything, so a
missing, truncated or foreign file is reported by name instead of surfacing as a wrong number.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import numpy as np

from maxact.errors import MaxactError, choices_text
from maxact.store import format as F
from maxact.units import UnitId, parse_unit


class Atlas:
    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise MaxactError(f"atlas {str(self.path)!r} does not exist; build one with `maxact atlas --out {self.path}`")
        mpath = self.path / F.MANIFEST
        if not mpath.is_file():
            hint = (" (an interrupted run: continue it with `maxact atlas ... --resume`)"
                    if (self.path / F.RUN_DIR).exists() else
                    " (a shard partial: combine shards with `maxact merge`)" if (self.path / F.PARTIAL).exists() else "")
            raise MaxactError(f"{self.path} is not a finished atlas: {F.MANIFEST} is missing{hint}")
        try:
            self.manifest = json.loads(mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise MaxactError(f"{mpath} is corrupt ({e}); rebuild the atlas") from None
        if self.manifest.get("format") != F.FORMAT_NAME:
            raise MaxactError(f"{self.path} is not a maxact atlas (format {self.manifest.get('format')!r})")
        if self.manifest.get("schema_version") != F.SCHEMA_VERSION:
            raise MaxactError(
                f"{self.path} has schema version {self.manifest.get('schema_version')}; this maxact reads "
                f"version {F.SCHEMA_VERSION}: rebuild the atlas with this version"
            )
        self._arrays: dict[str, np.ndarray] = {}
        for name, info in self.manifest["files"].items():
            arr = self._load(name)
            if list(arr.shape) != info["shape"]:
                raise MaxactError(f"{self.path / name} has shape {list(arr.shape)}, the manifest says {info['shape']}: the atlas is corrupt; rebuild it")
        self.sites = self.manifest["sites"]
        self._site_by_name = {s["name"]: s for s in self.sites}

    def _load(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            p = self.path / name
            if not p.is_file():
                raise MaxactError(f"{p} is missing: the atlas is incomplete or corrupt; rebuild it")
            try:
                self._arrays[name] = np.load(p, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError, EOFError) as e:
                raise MaxactError(f"{p} is corrupt or truncated ({e}); rebuild the atlas") from None
        return self._arrays[name]

    def __getitem__(self, name: str) -> np.ndarray:
        return self._load(name)

    # ---- meta ------------------------------------------------------------------------------
    @property
    def config(self) -> dict:
        return json.loads((self.path / F.CONFIG).read_text())

    @property
    def n_units(self) -> int:
        return int(self.manifest["n_units"])

    @cached_property
    def vocab(self) -> list[str]:
        try:
            return json.loads((self.path / F.VOCAB).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise MaxactError(f"{self.path / F.VOCAB} is missing or corrupt ({e}); rebuild the atlas") from None

    def token_text(self, token_id: int) -> str:
        v = self.vocab
        return v[token_id] if 0 <= token_id < len(v) else f"<{token_id}>"

    @cached_property
    def tokens(self) -> np.ndarray:
        return self[F.TOKENS]

    @cached_property
    def token_counts(self) -> np.ndarray:
        """(vocab,) occurrences of every token id in the corpus."""
        return np.bincount(np.asarray(self.tokens), minlength=len(self.vocab))

    # ---- units -----------------------------------------------------------------------------
    def row(self, unit: UnitId | str) -> int:
        """Row of a unit in every per-unit array; errors list what the atlas holds."""
        u = parse_unit(unit) if isinstance(unit, str) else unit
        site = self._site_by_name.get(u.site_ref.name)
        if site is None:
            raise MaxactError(
                f"unit {u} is not in this atlas; it holds the sites {choices_text([s['name'] for s in self.sites], 8)}"
            )
        if not 0 <= u.index < site["width"]:
            raise MaxactError(f"index {u.index} of {site['name']} is out of range: valid indices are 0..{site['width'] - 1}")
        return site["offset"] + u.index

    def unit_at(self, row: int) -> UnitId:
        for s in self.sites:
            if s["offset"] <= row < s["offset"] + s["width"]:
                return UnitId(s["site"], s["layer"], row - s["offset"])
        raise IndexError(row)

    def site_of(self, unit: UnitId) -> dict:
        return self._site_by_name[unit.site_ref.name]

    def site_rows(self, name: str) -> slice:
        s = self._site_by_name[name]
        return slice(s["offset"], s["offset"] + s["width"])

    def find_token_ids(self, text: str) -> list[int]:
        """Token ids whose text is exactly ``text`` (a vocab may hold several)."""
        return [i for i, t in enumerate(self.vocab) if t == text]
