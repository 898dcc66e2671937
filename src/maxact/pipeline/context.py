"""How much context a unit's top examples need: `maxact context ATLAS UNIT`.

For each of the unit's best examples (the atlas's top list, away from window position 0), the
model is run on the example's token preceded by only its k previous tokens, for k on a ladder
0, 1, 2, 4, 8, ... and finally the full context the atlas pass gave it (the example's offset in its
window). ``value`` is the unit's activation at the last token of ``tokens[position-k : position+1]``
fed as one sequence, exactly as the atlas feeds a window (a BOS token first when the atlas put one
before each window). k50 and k90 are the smallest k of the ladder whose value reaches half and 90%
of the full-context value (same sign, |value| >= fraction x |full|); None when none does or when
the full value is 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from maxact.capture import capture
from maxact.config import CONTEXT_EXAMPLES
from maxact.errors import MaxactError
from maxact.store import format as F
from maxact.store.reader import Atlas
from maxact.units import UnitId, parse_unit

MAX_BATCH = 32  # prefixes of one length run in one forward pass


@dataclass(frozen=True)
class PrefixValue:
    k: int  # tokens of context before the example
    value: float  # the unit's activation at the example with that context


@dataclass(frozen=True)
class ContextExample:
    position: int  # corpus position of the example
    token: str
    full_k: int  # the context the atlas pass gave it: its offset in its window
    full: float  # the activation with that full context (recomputed; the atlas stored atlas_value)
    atlas_value: float
    prefix: tuple[PrefixValue, ...]  # ascending k, the last one is full_k
    k50: int | None
    k90: int | None

    def to_json(self) -> dict:
        return {"position": self.position, "token": self.token, "full_k": self.full_k, "full": self.full,
                "atlas_value": self.atlas_value, "prefix": [{"k": p.k, "value": p.value} for p in self.prefix],
                "k50": self.k50, "k90": self.k90}


@dataclass(frozen=True)
class ContextResult:
    unit: str
    examples: tuple[ContextExample, ...]

    def to_json(self) -> dict:
        return {"unit": self.unit, "examples": [e.to_json() for e in self.examples]}


def prefix_ladder(full_k: int) -> list[int]:
    """0, 1, 2, 4, ... below full_k, then full_k itself."""
    ks, k = [0], 1
    while k < full_k:
        ks.append(k)
        k *= 2
    if full_k > 0:
        ks.append(full_k)
    return ks


def shortest_k(prefix: list[PrefixValue], full: float, fraction: float) -> int | None:
    """Smallest k whose value has full's sign and reaches ``fraction`` of |full|."""
    if full == 0:
        return None
    for p in prefix:
        if p.value * np.sign(full) >= fraction * abs(full):
            return p.k
    return None


def context_curves(lm, atlas: Atlas, unit: UnitId | str, n_examples: int = CONTEXT_EXAMPLES) -> ContextResult:
    """Run the prefix ladder of the unit's first ``n_examples`` top examples (see the module doc)."""
    if n_examples < 1:
        raise MaxactError(f"--examples must be at least 1, got {n_examples}")
    unit = parse_unit(unit) if isinstance(unit, str) else unit
    row = atlas.row(unit)  # raises the listing error for a unit the atlas lacks
    ref = unit.site_ref
    lm.adapter.check_site(ref)
    lm.adapter.check_index(ref, unit.index)
    values = np.asarray(atlas[F.TOP_VALUES][row], dtype=np.float64)  # (K,)
    positions = np.asarray(atlas[F.TOP_POSITIONS][row], dtype=np.int64)  # (K,) -1 = empty
    keep = positions >= 0
    positions, values = positions[keep][:n_examples], values[keep][:n_examples]
    tokens = atlas.tokens  # (n,) int32
    starts, _ = atlas.window_bounds(positions)  # (E,) first corpus token of each example's window
    bos = atlas.windowing.bos_id

    # every (example, k) prefix, grouped by length so that equal lengths share a forward pass
    jobs: dict[int, list[tuple[int, int]]] = {}
    for e, (p, s) in enumerate(zip(positions.tolist(), starts.tolist())):
        for k in prefix_ladder(p - s):
            jobs.setdefault(k, []).append((e, p))
    got: dict[tuple[int, int], float] = {}
    for k, items in sorted(jobs.items()):
        for i in range(0, len(items), MAX_BATCH):
            chunk = items[i : i + MAX_BATCH]
            ids = np.stack([np.asarray(tokens[p - k : p + 1], dtype=np.int64) for _, p in chunk])  # (B, k+1)
            if bos is not None:
                ids = np.concatenate([np.full((len(chunk), 1), bos, dtype=np.int64), ids], axis=1)
            acts = capture(lm.adapter, torch.from_numpy(ids).to(lm.device), [ref])[ref]  # (B, T, width)
            last = acts[:, -1, unit.index].float().cpu().numpy()  # (B,)
            for (e, _), v in zip(chunk, last.tolist()):
                got[(e, k)] = v
    out = []
    for e, (p, s) in enumerate(zip(positions.tolist(), starts.tolist())):
        prefix = [PrefixValue(k, got[(e, k)]) for k in prefix_ladder(p - s)]
        full = prefix[-1].value
        out.append(ContextExample(p, atlas.token_text(int(tokens[p])), p - s, full, float(values[e]),
                                  tuple(prefix), shortest_k(prefix, full, 0.5), shortest_k(prefix, full, 0.9)))
    return ContextResult(str(unit), tuple(out))
