"""Token tuning: each unit's activation per token type, for a bounded set of types.

The tracked types are the corpus's most frequent ``max_types`` token ids (chosen once, from the
whole token stream, so every shard tracks the same ones); every other token adds to a last "other"
row. Two accumulations per unit and type:

- ``sums``: the float32 sum (one count vector per corpus serves all units), from which the atlas's
  tuning means are made;
- ``types``: count, mean and M2 (sum of squared deviations from the type's mean), Chan-merged in
  float64 (engine/groups.py), from which category statistics (analysis/concept.py) and eta squared
  are made without the model.

Memory is (max_types + 1) x U floats of each whatever the corpus length.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from maxact.engine.groups import GroupMoments
from maxact.engine.statistic import Batch, Feed


def choose_types(tokens: np.ndarray, max_types: int) -> tuple[np.ndarray, np.ndarray]:
    """(V,) tracked token ids (most frequent first; ties: smaller id) and (V + 1,) their counts,
    the last count being all other tokens."""
    ids, counts = np.unique(tokens, return_counts=True)
    order = np.lexsort((ids, -counts))[:max_types]
    kept_ids, kept_counts = ids[order].astype(np.int64), counts[order].astype(np.int64)
    other = int(len(tokens) - kept_counts.sum())
    return kept_ids, np.concatenate([kept_counts, [other]])


def type_rows(tokens: np.ndarray, type_ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """(max(vocab_size, max token + 1),) int64: the tuning-table row of each token id (V for
    untracked ids); index it with a batch's tokens (the stream itself is never widened)."""
    lut = np.full(max(vocab_size, int(tokens.max(initial=0)) + 1), len(type_ids), dtype=np.int64)
    lut[type_ids] = np.arange(len(type_ids))
    return lut


class TokenTuning:
    STATE_AXES = {"sums": 1, "type_count": None, "type_mean": 1, "type_m2": 1}
    SHARED_ARRAYS: dict = {}
    feed = Feed.TOKENS

    def __init__(self, n_units: int, n_types: int, device="cpu"):
        self.sums = torch.zeros(n_types + 1, n_units, dtype=torch.float32, device=device)  # (V+1, U)
        self.types = GroupMoments(n_types + 1, n_units, device)  # rows: the tracked types, then other

    def update(self, batch: Batch) -> None:
        self.sums.index_add_(0, batch.tuning_rows, batch.flat)  # flat (N, U), rows (N,) int64
        self.types.add(batch.flat, batch.tuning_rows)

    def arrays(self) -> dict[str, np.ndarray]:
        """None per unit: tuning means need the corpus's type counts (made with the atlas)."""
        return {}

    def merge(self, other: TokenTuning) -> None:
        self.sums += other.sums
        self.types.merge(other.types)

    def state(self) -> dict[str, torch.Tensor]:
        return {"sums": self.sums, **self.types.state("type_")}

    def load_state(self, s: dict[str, torch.Tensor]) -> None:
        self.sums = s["sums"]
        self.types.load_state(s, "type_")


class TypeMoments(NamedTuple):
    """Per-type second moments of every unit of an atlas, as the store keeps them (docs/STORE.md):
    rows are the tracked types, then every other token as one group."""

    count: np.ndarray  # (V+1,) int64 tokens fed of each type
    dev: np.ndarray  # (V+1, U) float32 mean on the type minus the unit's mean over every token
    m2: np.ndarray  # (V+1, U) float32 sum of squared deviations from the type's own mean
    mean: np.ndarray  # (U,) float64 the unit's mean over every token fed
    total_m2: np.ndarray  # (U,) float64 sum of squared deviations from that mean
    eta2: np.ndarray  # (U,) float64 between-type sum of squares / total_m2 (NaN when that is 0)


def type_moments(tunings: list[TokenTuning]) -> TypeMoments:
    """The per-type moments of the units of several sites side by side (in the order given),
    from their float64 accumulators: the total and between-type sums of squares are exact sums of
    the per-type parts (no subtraction), rounded to float32 only in ``dev`` and ``m2``."""
    count = tunings[0].types.count.cpu().numpy().astype(np.int64)  # (V+1,) the same for every site
    mean_t = np.concatenate([t.types.mean.cpu().numpy() for t in tunings], axis=1)  # (V+1, U) float64
    m2_t = np.concatenate([t.types.m2.cpu().numpy() for t in tunings], axis=1)  # (V+1, U) float64
    n = max(int(count.sum()), 1)
    w = count.astype(np.float64)[:, None]  # (V+1, 1)
    mean = (w * mean_t).sum(0) / n  # (U,)
    dev = mean_t - mean[None, :]  # (V+1, U)
    between = (w * dev * dev).sum(0)  # (U,)
    total = between + m2_t.sum(0)  # (U,)
    with np.errstate(invalid="ignore", divide="ignore"):
        eta2 = np.where(total > 0, between / total, np.nan)
    dev[count == 0] = 0.0  # a type never fed has no mean: it weighs nothing in any sum
    return TypeMoments(count, dev.astype(np.float32), m2_t.astype(np.float32), mean, total, eta2)
