"""`maxact ascend`: gradient-ascent activation maximization of one unit (maxact.ascent), beside what
data sampling found for it (from an atlas, or from a short exact sample of the corpus)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maxact.errors import MaxactError
from maxact.fsio import write_json_atomic
from maxact.report import show_token

DATA_TOP_TOKENS = 10  # distinct tokens of the unit's best real examples compared with the optimised inputs


@dataclass(frozen=True)
class AscendRequest:
    unit: str
    model: str | None  # None: the atlas's model, else the default model
    method: str
    length: int
    seeds: int  # seeds 0 .. seeds - 1
    steps: int
    atlas_dir: Path | None
    corpus: str
    data_samples: int  # batches of the exact sample when there is no atlas
    json_path: Path | None
    device: str


def data_from_atlas(atlas_dir: Path, unit: str):
    from maxact.ascent.runs import DataReference
    from maxact.store import format as F
    from maxact.store.reader import Atlas

    atlas = Atlas(atlas_dir)
    row = atlas.row(unit)
    stats = atlas[F.STATS][row]
    positions = np.asarray(atlas[F.TOP_POSITIONS][row])
    positions = positions[positions >= 0]
    tokens = atlas.tokens
    top: list[int] = []
    for p in positions.tolist():
        t = int(tokens[p])
        if t not in top:
            top.append(t)
        if len(top) == DATA_TOP_TOKENS:
            break
    return atlas, DataReference(float(stats["max"]), top,
                                f"atlas {atlas.path}: the maximum over every token of {atlas.manifest.corpus.name}, "
                                "top tokens of its best examples (window position 0 excluded)")


def data_from_sample(lm, corpus: str, unit, batches: int):
    from maxact.ascent.runs import DataReference
    from maxact.config import SAMPLE
    from maxact.corpus import load_source
    from maxact.sampling import SampleConfig, sample_exact

    source = load_source(corpus, lm.tokenizer)
    config = SampleConfig(model=lm.name, corpus=corpus, samples=batches, seed=0)
    result = sample_exact(lm, source, [unit], config, progress=False)
    u = result.units[0]
    ids, counts = np.unique(u.token_ids, return_counts=True)
    order = np.lexsort((ids, -counts))[:DATA_TOP_TOKENS]
    return DataReference(float(np.nanmax(u.values)), ids[order].astype(int).tolist(),
                         f"exact sample of {batches} batches of {SAMPLE.batch} x {SAMPLE.seq} tokens of {corpus}, "
                         "seed 0: the largest batch maximum, the most frequent winning tokens")


def ascend_text(result) -> str:
    d = result.to_json()
    lines = [f"{d['unit']}: {d['method']}, {d['length']} tokens, {d['steps']} steps, {len(d['runs'])} seeds "
             f"in {d['seconds']} s"]
    if d["data_max"] is not None:
        toks = " ".join(show_token(t["token"]) for t in d["data_top_tokens"])
        lines.append(f"data: max {d['data_max']:.4g} ({d['data_source']}); top tokens {toks}")
    for r in d["runs"]:
        rel = f" = {r['hard_value'] / d['data_max']:.2f} x data max" if d["data_max"] else ""
        lines.append(f"seed {r['seed']}: exact {r['hard_value']:.4g}{rel} (soft {r['soft_value']:.4g})  "
                     f"{show_token(r['text'])}")
    a = d["agreement"]
    lines.append(f"agreement: mean pairwise Jaccard {a['mean_jaccard']:.2f}; "
                 f"{a['data_tokens_found']} of {a['data_tokens']} data top tokens appear in some optimised input")
    return "\n".join(lines)


def run_ascend(req: AscendRequest, echo: Callable[[str], None], load: Callable) -> None:
    from maxact.ascent.runs import ascend
    from maxact.config import DEFAULT_MODEL
    from maxact.units import parse_unit

    unit = parse_unit(req.unit)
    data, model = None, req.model
    if req.atlas_dir is not None:
        atlas, data = data_from_atlas(req.atlas_dir, req.unit)
        model = model or atlas.manifest.model.name
    lm = load(model or DEFAULT_MODEL, req.device)
    lm.adapter.check_site(unit.site_ref)
    lm.adapter.check_index(unit.site_ref, unit.index)
    if data is None:
        if req.data_samples < 1:
            raise MaxactError(f"--data-samples must be at least 1, got {req.data_samples}")
        data = data_from_sample(lm, req.corpus, unit, req.data_samples)
    result = ascend(lm, unit, req.method, req.length, req.steps, list(range(req.seeds)), data)
    if req.json_path is not None:
        write_json_atomic(req.json_path, result.to_json())
    echo(ascend_text(result))
