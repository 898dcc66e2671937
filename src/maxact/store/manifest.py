"""The manifest of an atlas as typed objects: what the writer writes, the reader checks and every
consumer (pages, export, web, report) reads by attribute. ``to_json``/``from_json`` are the only
places that know the JSON keys (docs/STORE.md). Standard library only."""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from maxact.corpus import CorpusInfo
from maxact.derived import DerivedSpec, register_derived_kind
from maxact.errors import MaxactError
from maxact.store import format as F
from maxact.units import SiteRef, UnitId


def _from(cls, d: Any, what: str):
    """Build dataclass ``cls`` from dict ``d``, naming ``what`` and the missing key on failure."""
    if not isinstance(d, dict):
        raise MaxactError(f"{what} must be a JSON object, found {type(d).__name__}")
    names = [f.name for f in fields(cls)]
    missing = [n for n in names if n not in d and _required(cls, n)]
    if missing:
        raise MaxactError(f"{what} lacks {', '.join(missing)}")
    return cls(**{n: d[n] for n in names if n in d})


def _required(cls, name: str) -> bool:
    f = next(f for f in fields(cls) if f.name == name)
    return f.default is MISSING and f.default_factory is MISSING


@dataclass(frozen=True)
class SiteInfo:
    """One site of an atlas: its rows are [offset, offset + width) in every per-unit array."""

    name: str  # "L2.resid_pre", "ln_final"
    site: str  # the site kind
    layer: int | None
    width: int
    offset: int
    hf_module: str  # the model's own module path
    reads: str  # "input" or "output" of that module (or a derived site's description)
    tl_hook: str

    @property
    def ref(self) -> SiteRef:
        return SiteRef(self.site, self.layer)

    @property
    def rows(self) -> slice:
        return slice(self.offset, self.offset + self.width)

    def unit(self, index: int) -> UnitId:
        return UnitId(self.site, self.layer, index)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str
    n_layers: int
    d_model: int
    d_mlp: int
    n_heads: int
    n_kv_heads: int
    d_head: int


@dataclass(frozen=True)
class ReferenceGeometry:
    """The geometry of the simulated reference statistic (batch windows of seq tokens, samples)."""

    batch: int
    seq: int
    samples: int
    seed: int
    docs_without_window: int = 0  # documents too short to hold one of its windows (never drawn)
    # measured contexts per top-K candidate behind the shares: 1 (the atlas pass alone), or 2 (with
    # the context pass: ref_shift_values.npy, top_shift_values.npy; docs/METHOD.md, "Context")
    contexts: int = 1


@dataclass(frozen=True)
class DocumentLayout:
    """How the atlas pass cut its documents into windows (docs/METHOD.md, "Documents"); their starts
    are doc_starts.npy."""

    n_docs: int
    doc_tail: str  # a document's last, shorter window: "short" (fed as it is) or "drop"
    bos: bool  # a BOS token fed before every window (never counted: not a corpus token)
    bos_id: int | None  # that token's id; None without BOS
    window_tokens: int  # corpus tokens per full window: seq, or seq - 1 with BOS


@dataclass(frozen=True)
class ContextSpan:
    before: int  # context tokens kept before an example
    after: int  # the example and the tokens after it


@dataclass(frozen=True)
class BandSampling:
    """How the activation-band examples were drawn (docs/STORE.md, "Activation bands")."""

    per_band: int  # examples kept per unit and band
    one_in: int  # a position is a candidate when its hash falls in the lowest 1/one_in of its range
    hash: str  # "splitmix64": the p-th output of splitmix64 seeded with ``seed``
    seed: int


@dataclass(frozen=True)
class FileInfo:
    shape: list[int]
    dtype: str


@dataclass(frozen=True)
class Manifest:
    """manifest.json: written last, its presence marks a complete atlas."""

    created: str
    model: ModelInfo
    corpus: CorpusInfo
    seq: int
    k: int
    k_ctx: int
    context: ContextSpan
    hist_stride: int
    min_tuning_count: int
    reference: ReferenceGeometry
    n_units: int
    sites: tuple[SiteInfo, ...]
    windows: Any = None  # [lo, hi) of one run, or a list of ranges for a merge
    timing: dict | None = None
    merged_from: int | None = None
    files: dict[str, FileInfo] = field(default_factory=dict)
    bands: BandSampling | None = None  # None: an atlas made before activation bands
    documents: DocumentLayout | None = None  # None: an atlas made before documents (one, no BOS)
    derived: tuple[DerivedSpec, ...] = ()  # derived sites (docs/DIRECTIONS.md), also among ``sites``
    format: str = F.FORMAT_NAME
    schema_version: int = F.SCHEMA_VERSION

    def site(self, name: str) -> SiteInfo | None:
        return next((s for s in self.sites if s.name == name), None)

    def check_rows(self, what: str) -> None:
        """Sites own consecutive rows [offset, offset + width) from 0 to n_units, in order."""
        offset = 0
        for s in self.sites:
            if s.offset != offset or s.width < 0:
                raise MaxactError(f"{what}: site {s.name} starts at row {s.offset} with width {s.width}; "
                                  f"it should start at row {offset}: the atlas is corrupt; rebuild it")
            offset += s.width
        if offset != self.n_units:
            raise MaxactError(f"{what}: the sites hold {offset} units, n_units says {self.n_units}: "
                              f"the atlas is corrupt; rebuild it")

    def to_json(self) -> dict:
        """The JSON object, keys in the documented order (docs/STORE.md)."""
        d = {"format": self.format, "schema_version": self.schema_version, "created": self.created,
             "model": asdict(self.model), "corpus": asdict(self.corpus), "seq": self.seq, "k": self.k,
             "k_ctx": self.k_ctx, "context": asdict(self.context), "hist_stride": self.hist_stride,
             "min_tuning_count": self.min_tuning_count, "reference": asdict(self.reference),
             "n_units": self.n_units, "sites": [asdict(s) for s in self.sites]}
        if self.documents is not None:
            d["documents"] = asdict(self.documents)
        if self.bands is not None:
            d["bands"] = asdict(self.bands)
        if self.derived:
            d["derived"] = [spec.to_json() for spec in self.derived]
        if self.windows is not None:
            d["windows"] = self.windows
        if self.merged_from is not None:
            d["merged_from"] = self.merged_from
        if self.timing is not None:
            d["timing"] = self.timing
        if self.files:
            d["files"] = {k: asdict(v) for k, v in self.files.items()}
        return d

    @staticmethod
    def from_json(d: Any, what: str = "manifest") -> Manifest:
        """Check and convert a parsed manifest.json; a bad one raises MaxactError naming the fault."""
        if not isinstance(d, dict):
            raise MaxactError(f"{what} must be a JSON object, found {type(d).__name__}: the atlas is corrupt; rebuild it")
        if d.get("format") != F.FORMAT_NAME:
            raise MaxactError(f"{what} is not a maxact atlas (format {d.get('format')!r})")
        if d.get("schema_version") != F.SCHEMA_VERSION:
            raise MaxactError(
                f"{what} has schema version {d.get('schema_version')}; this maxact reads version "
                f"{F.SCHEMA_VERSION}: rebuild the atlas with this version")
        try:
            sites = d.get("sites")
            if not isinstance(sites, list):
                raise MaxactError(f"{what} lacks its list of sites")
            files = d.get("files")
            if not isinstance(files, dict):
                raise MaxactError(f"{what} lacks its list of files")
            manifest = Manifest(
                created=d.get("created", ""),
                model=_from(ModelInfo, d.get("model"), f"{what}: model"),
                corpus=_from(CorpusInfo, d.get("corpus"), f"{what}: corpus"),
                seq=int(d["seq"]), k=int(d["k"]), k_ctx=int(d["k_ctx"]),
                context=_from(ContextSpan, d.get("context"), f"{what}: context"),
                hist_stride=int(d["hist_stride"]), min_tuning_count=int(d["min_tuning_count"]),
                reference=_from(ReferenceGeometry, d.get("reference"), f"{what}: reference"),
                n_units=int(d["n_units"]),
                sites=tuple(_from(SiteInfo, s, f"{what}: site") for s in sites),
                windows=d.get("windows"), timing=d.get("timing"), merged_from=d.get("merged_from"),
                bands=None if d.get("bands") is None else _from(BandSampling, d["bands"], f"{what}: bands"),
                documents=(None if d.get("documents") is None
                           else _from(DocumentLayout, d["documents"], f"{what}: documents")),
                files={k: _from(FileInfo, v, f"{what}: file {k}") for k, v in files.items()},
                derived=tuple(DerivedSpec.from_json(x, f"{what}: derived site") for x in d.get("derived") or ()),
            )
            manifest.check_rows(what)
            return manifest
        except KeyError as e:
            raise MaxactError(f"{what} lacks {e.args[0]!r}: the atlas is corrupt; rebuild it") from None
        except (TypeError, ValueError) as e:
            raise MaxactError(f"{what} has a malformed field ({e}): the atlas is corrupt; rebuild it") from None


def register_recorded_sites(atlas_dir: Path) -> None:
    """Register the derived sites an atlas's manifest.json records, without checking the rest (the
    command that opens the atlas reports any fault)."""
    try:
        parsed = json.loads((atlas_dir / F.MANIFEST).read_text())
        for d in parsed.get("derived") or ():
            register_derived_kind(DerivedSpec.from_json(d))
    except (OSError, ValueError, AttributeError, MaxactError):
        return
