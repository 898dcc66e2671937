"""A shard's partial on disk (DIR/partial.pt, DIR/partial.json): the accumulator state of its
windows, the config, its window range, the sha256 of the token stream and where that stream came
from. No token stream, vocabulary or logit effects: merge rebuilds those once from the model and
the source the config names."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from maxact.config import AtlasConfig
from maxact.corpus import CorpusInfo
from maxact.errors import MaxactError
from maxact.fsio import write_json_atomic
from maxact.pipeline.outdir import save_state
from maxact.store import format as F


@dataclass(frozen=True)
class RunTiming:
    """How long a pass took over how many tokens."""

    seconds: float
    tokens: int
    tokens_per_s: float

    @staticmethod
    def measured(seconds: float, tokens: int) -> RunTiming:
        return RunTiming(round(seconds, 2), int(tokens), round(tokens / max(seconds, 1e-9), 1))


@dataclass(frozen=True)
class Partial:
    """One shard's result. ``state`` is AtlasRun.state(): schema, comparable config, shard, cursor,
    window_range, n_tokens, tokens_sha256 and the per-site statistic states."""

    folder: Path
    state: dict
    window_range: tuple[int, int]  # [lo, hi) of the windows it covers
    tokens_sha256: str  # of the whole (int32) token stream its windows index
    config: AtlasConfig
    corpus: CorpusInfo
    timing: RunTiming
    merged_from: int  # shard partials folded into it (1 for a shard's own)


@dataclass(frozen=True)
class PartialInfo:
    """DIR/partial.json: what a finished partial holds, read without loading its state."""

    shard: tuple[int, int] | None  # (i, n) of a shard's own partial; None for partials merged together
    window_range: tuple[int, int]
    config: AtlasConfig
    tokens_sha256: str | None  # None: written by a maxact that did not record it
    timing: RunTiming


def config_from_json(d: dict) -> AtlasConfig:
    """An AtlasConfig from its to_json() form (lists back to tuples)."""
    d = dict(d)
    for k in ("sites", "layers", "shard"):
        if d.get(k) is not None:
            d[k] = tuple(d[k])
    return replace(AtlasConfig(), **d)


def save_partial(out: Path, state: dict, config: AtlasConfig, corpus: CorpusInfo, timing: RunTiming) -> None:
    """The state (AtlasRun.state(), or merge_pair's, which adds ``merged_from``) to DIR/partial.pt, then
    DIR/partial.json (written last: its presence means the partial is complete)."""
    save_state({"state": state, "config": config.to_json(), "corpus": asdict(corpus), "timing": asdict(timing)},
               out / F.PARTIAL)
    write_json_atomic(out / F.PARTIAL_INFO, {"shard": list(config.shard) if config.shard else None,
                                              "window_range": list(state["window_range"]),
                                              "tokens_sha256": state["tokens_sha256"],
                                              "merged_from": state.get("merged_from", 1),
                                              "config": config.to_json(), **asdict(timing)})


def read_partial_info(folder: Path) -> PartialInfo | None:
    """The partial.json of a finished partial in ``folder``; None when there is none (yet)."""
    path = Path(folder) / F.PARTIAL_INFO
    if not ((Path(folder) / F.PARTIAL).is_file() and path.is_file()):
        return None
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        lo, hi = d["window_range"]
        return PartialInfo(tuple(d["shard"]) if d["shard"] is not None else None, (int(lo), int(hi)),
                           config_from_json(d["config"]), d.get("tokens_sha256"),
                           RunTiming(d["seconds"], d["tokens"], d["tokens_per_s"]))
    except (ValueError, KeyError, TypeError) as e:
        raise MaxactError(f"{path} is corrupt ({type(e).__name__}); remove {folder} and rerun that shard") from None


def load_partial(folder: Path) -> Partial:
    path = Path(folder) / F.PARTIAL
    if not path.is_file():
        raise MaxactError(f"{folder} holds no shard partial ({F.PARTIAL}); make one with maxact atlas --shard i/N")
    try:
        saved = torch.load(path, weights_only=True, map_location="cpu")
        state = saved["state"]
        lo, hi = state["window_range"]
        return Partial(Path(folder), state, (int(lo), int(hi)), str(state["tokens_sha256"]),
                       config_from_json(saved["config"]), CorpusInfo(**saved["corpus"]), RunTiming(**saved["timing"]),
                       int(state.get("merged_from", 1)))
    except Exception as e:  # noqa: BLE001 - any unreadable or foreign content is a corrupt partial
        raise MaxactError(f"{path} is corrupt, truncated or from another maxact version ({type(e).__name__}); "
                          f"rerun that shard") from None
