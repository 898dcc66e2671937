"""Plain-text rendering of results for the terminal (one place, shared by every command)."""

from __future__ import annotations

import json

from maxact.tally import Tally


def show_token(text: str) -> str:
    """A token with its leading space and control characters visible: `" before"`, `"\\n"`."""
    return json.dumps(text, ensure_ascii=False)


def site_line(adapter, unit) -> str:
    """`L2.resid_pre:345  HF model.layers.2 (input) | TL blocks.2.hook_resid_pre`."""
    hook = adapter.site_hook(unit.site_ref)
    extra = adapter.describe_index(unit.site_ref, unit.index)
    extra = f" ({extra})" if extra else ""
    return (
        f"{unit}{extra}  HF {hook.module_path} ({hook.reads})  |  TL {unit.site_ref.tl_hook()}"
    )


def tally_table(tally: Tally, token_text, top: int = 20, extra_columns=None) -> str:
    """count / share / token / id table; extra_columns: {name: fn(token_id) -> str}."""
    extra_columns = extra_columns or {}
    head = f"{'count':>7}  {'share':>6}  " + "".join(f"{k:>10}  " for k in extra_columns) + "token"
    lines = [head]
    for tid, count in list(zip(tally.token_ids, tally.counts))[:top]:
        share = count / max(tally.n_batches, 1)
        extras = "".join(f"{fn(int(tid)):>10}  " for fn in extra_columns.values())
        lines.append(f"{count:>7}  {share:>6.1%}  {extras}{show_token(token_text(int(tid)))} (id {tid})")
    if tally.distinct > top:
        rest = int(tally.counts[top:].sum())
        lines.append(f"{rest:>7}  {rest / tally.n_batches:>6.1%}  ... {tally.distinct - top} more tokens")
    return "\n".join(lines)


def tally_summary(tally: Tally) -> str:
    won = tally.n_batches - tally.n_missed
    s = (
        f"distinct winners: {tally.distinct}; wins at window position 0: {tally.pos0_wins} "
        f"({tally.pos0_wins / max(won, 1):.1%})"
    )
    if tally.n_missed:
        s += f"; batches with no top-K position covered: {tally.n_missed}"
    if won and tally.pos0_wins / won > 0.5:
        s += "\nwarning: most wins sit at window position 0 (an attention-sink artefact); try --skip-pos0"
    return s
