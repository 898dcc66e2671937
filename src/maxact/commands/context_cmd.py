"""`maxact context ATLAS UNIT`: the activation of a unit's top examples with 0, 1, 2, 4, ... tokens
of context (pipeline/context.py), printed as a table or as JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from maxact.pipeline.context import ContextResult, context_curves
from maxact.report import show_token
from maxact.store.reader import Atlas


def context_table(result: ContextResult) -> str:
    """One block per example: its token, the atlas's value, then value by k, and k50 / k90."""
    lines = [f"{result.unit}: activation at each top example with only its k previous tokens as context"]
    for e in result.examples:
        k50 = "-" if e.k50 is None else e.k50
        k90 = "-" if e.k90 is None else e.k90
        lines.append(f"\nposition {e.position} {show_token(e.token)}: full context k={e.full_k} gives {e.full:.4g} "
                     f"(atlas {e.atlas_value:.4g}); half reached at k={k50}, 90% at k={k90}")
        lines.append("  " + "  ".join(f"k={p.k}: {p.value:.4g}" for p in e.prefix))
    return "\n".join(lines)


def run_context_command(atlas_dir: Path, unit: str, model: str | None, device: str, examples: int,
                        as_json: bool, echo: Callable[[str], None], load: Callable) -> None:
    atlas = Atlas(atlas_dir)
    atlas.row(unit)  # a unit the atlas lacks fails before the model loads
    lm = load(model or atlas.manifest.model.name, device)
    result = context_curves(lm, atlas, unit, examples)
    echo(json.dumps(result.to_json(), ensure_ascii=False) if as_json else context_table(result))
