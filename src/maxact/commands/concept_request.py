"""What `maxact concept` was asked for and what it answers (docs/CONCEPTS.md): the request as the
CLI parsed it, and the answer both ways of computing it return (commands/concept_cmd.py from an
atlas, commands/concept_pass_cmd.py from a pass)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from maxact.analysis.concept import AnovaTable, ConceptTable
from maxact.analysis.probe import ProbeResult
from maxact.config import CONCEPT, DEFAULT_DEVICE


@dataclass(frozen=True)
class ConceptRequest:
    """What `maxact concept` was asked for, as parsed by the CLI."""

    atlas_dir: Path | None
    tokens: tuple[str, ...] = ()  # --token, exact token texts
    words: Path | None = None  # --words FILE
    word_token: str = CONCEPT.word_token  # last | first | mean
    tags: tuple[str, ...] = ()  # --tag patterns
    pos: Path | None = None  # --pos FILE (the category) with --neg FILE (the rest)
    neg: Path | None = None
    by: str | None = None  # --by token-length | capitalized
    sites: tuple[str, ...] | None = None
    layers: tuple[int, ...] | None = None
    units: tuple[str, ...] = ()  # --unit: histograms by group (with --by)
    as_json: bool = False
    csv: Path | None = None
    parquet: Path | None = None
    plot: Path | None = None
    skip_pos0: bool = False
    model: str | None = None
    corpus: str | None = None
    max_tokens: int | None = None
    probe: bool = False
    save_direction: Path | None = None
    top: int = CONCEPT.top
    device: str = DEFAULT_DEVICE
    trust_remote_code: bool = False
    derived: tuple = ()  # DerivedSpec of --directions / --sae: sites of the pass (docs/DIRECTIONS.md)


def describe_tokens(texts: tuple[str, ...], ids: list[int]) -> str:
    return f"tokens {', '.join(repr(t) for t in texts)} ({len(ids)} type{'s' * (len(ids) != 1)})"


class SiteProbe(NamedTuple):
    site: str  # the site's name, e.g. L2.resid_pre
    result: ProbeResult


class Answer(NamedTuple):
    """What `maxact concept` prints and writes."""

    table: ConceptTable | AnovaTable
    probes: list[SiteProbe]
    histograms: list[dict]  # --by with --unit: {"unit", "bounds", "counts": {group: [...]}}
