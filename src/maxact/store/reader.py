"""Read an atlas directory: numpy and the standard library only (no torch), arrays memory-mapped.

``Atlas(path)`` validates the manifest and every file's shape and dtype before serving anything, so
a missing, truncated or foreign file is reported by name instead of surfacing as a wrong number.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import numpy as np

from maxact.derived import register_derived_kind
from maxact.errors import MaxactError, choices_text
from maxact.store import format as F
from maxact.store.manifest import FileInfo, Manifest, SiteInfo
from maxact.units import UnitId, parse_unit
from maxact.windows import StartSpace, Windowing, window_bounds


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
            parsed = json.loads(mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise MaxactError(f"{mpath} is corrupt ({e}); rebuild the atlas") from None
        self.manifest: Manifest = Manifest.from_json(parsed, str(mpath))
        for spec in self.manifest.derived:  # NAME:i becomes a unit id (no weights needed to read)
            register_derived_kind(spec)
        self._arrays: dict[str, np.ndarray] = {}
        self._spaces: dict[int, StartSpace] = {}  # start_space by window length
        for name in self.manifest.files:
            self._load(name)
        self.sites: tuple[SiteInfo, ...] = self.manifest.sites
        self._site_by_name = {s.name: s for s in self.sites}

    def _load(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            p = self.path / name
            info = self.manifest.files.get(name)
            if info is None:
                raise MaxactError(f"{p} is not among the files {F.MANIFEST} lists: the atlas is incomplete "
                                  f"or from another version; rebuild it")
            if not p.is_file():
                raise MaxactError(f"{p} is missing: the atlas is incomplete or corrupt; rebuild it")
            try:
                arr = np.load(p, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError, EOFError) as e:
                raise MaxactError(f"{p} is corrupt or truncated ({e}); rebuild the atlas") from None
            _check_array(p, arr, info)
            self._arrays[name] = arr
        return self._arrays[name]

    def __getitem__(self, name: str) -> np.ndarray:
        return self._load(name)

    # ---- meta ------------------------------------------------------------------------------
    @property
    def config(self) -> dict:
        """config.json as written (the AtlasConfig that made the atlas)."""
        return json.loads((self.path / F.CONFIG).read_text())

    @property
    def n_units(self) -> int:
        return self.manifest.n_units

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
    def doc_starts(self) -> np.ndarray:
        """(n_docs,) int64 first token of each document: [0] for an atlas made before documents."""
        if F.DOC_STARTS not in self.manifest.files:
            return np.zeros(1, dtype=np.int64)
        starts = np.asarray(self[F.DOC_STARTS])
        if len(starts) == 0 or starts[0] != 0 or (np.diff(starts) <= 0).any() or starts[-1] >= len(self.tokens):
            raise MaxactError(f"{self.path / F.DOC_STARTS} does not hold increasing document starts from 0 "
                              f"inside the {len(self.tokens)} tokens: the atlas is corrupt; rebuild it")
        return starts

    @cached_property
    def windowing(self) -> Windowing:
        """How the atlas pass fed its windows (no BOS and short tails before documents existed)."""
        d = self.manifest.documents
        if d is None:
            return Windowing(self.manifest.seq, None, "short")
        return Windowing(self.manifest.seq, d.bos_id if d.bos else None, d.doc_tail)

    def window_bounds(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(...) corpus positions -> (...) first and end (exclusive) position of the atlas-pass window
        holding each (-1 for -1)."""
        return window_bounds(positions, self.doc_starts, len(self.tokens), self.windowing.length)

    def start_space(self, seq: int) -> StartSpace:
        """The starts a reference window of ``seq`` tokens can take in this atlas's documents (its
        BOS token among the seq when the atlas feeds one)."""
        if seq not in self._spaces:
            length = seq - (self.windowing.bos_id is not None)
            self._spaces[seq] = StartSpace.of(self.doc_starts, len(self.tokens), length)
        return self._spaces[seq]

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
                f"unit {u} is not in this atlas; it holds the sites {choices_text([s.name for s in self.sites], 8)}"
            )
        if not 0 <= u.index < site.width:
            raise MaxactError(f"index {u.index} of {site.name} is out of range: valid indices are 0..{site.width - 1}")
        return site.offset + u.index

    def unit_at(self, row: int) -> UnitId:
        for s in self.sites:
            if s.offset <= row < s.offset + s.width:
                return s.unit(row - s.offset)
        raise IndexError(row)

    def site_of(self, unit: UnitId) -> SiteInfo:
        return self._site_by_name[unit.site_ref.name]

    def site_rows(self, name: str) -> slice:
        return self._site_by_name[name].rows

    def find_token_ids(self, text: str) -> list[int]:
        """Token ids whose text is exactly ``text`` (a vocab may hold several)."""
        return [i for i, t in enumerate(self.vocab) if t == text]


def _check_array(path: Path, arr: np.ndarray, info: FileInfo) -> None:
    """The shape and dtype the manifest records; structured arrays also carry the fields of
    store/format.py."""
    if list(arr.shape) != list(info.shape):
        raise MaxactError(f"{path} has shape {list(arr.shape)}, the manifest says {list(info.shape)}: the atlas is corrupt; rebuild it")
    if info.dtype == F.STRUCTURED_TAG:
        expected = F.STRUCTURED.get(path.name)
        if arr.dtype.names is None or (expected is not None and arr.dtype != expected):
            want = _fields(expected) if expected is not None else "named fields"
            raise MaxactError(f"{path} has fields ({_fields(arr.dtype)}), this version reads ({want}): "
                              f"the atlas is corrupt or from another version; rebuild it")
    elif arr.dtype.str != info.dtype:
        raise MaxactError(f"{path} has dtype {arr.dtype.str}, the manifest says {info.dtype}: the atlas is corrupt; rebuild it")


def _fields(dtype: np.dtype) -> str:
    """``count <i8, mean <f8`` (or the plain dtype of an array without fields)."""
    if dtype.names is None:
        return dtype.str
    return ", ".join(f"{n} {dtype.fields[n][0].str}" for n in dtype.names)
