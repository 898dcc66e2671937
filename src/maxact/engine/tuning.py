"""Token tuning: the sum of each unit's activation per token type, for a bounded set of types.

One count vector per corpus serves all units; only the sums are per unit and type. The tracked
types are the corpus's most frequent ``max_types`` token ids (chosen once, from the whole token
stream, so every shard tracks the same ones); every other token adds to a last "other" row. Memory
is (max_types + 1) x U floats whatever the corpus length.
"""

from __future__ import annotations

import numpy as np
import torch

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
    STATE_AXES = {"sums": 1}
    SHARED_ARRAYS: dict = {}
    feed = Feed.TOKENS

    def __init__(self, n_units: int, n_types: int, device="cpu"):
        self.sums = torch.zeros(n_types + 1, n_units, dtype=torch.float32, device=device)  # (V+1, U)

    def update(self, batch: Batch) -> None:
        self.sums.index_add_(0, batch.tuning_rows, batch.flat)  # flat (N, U), rows (N,) int64

    def arrays(self) -> dict[str, np.ndarray]:
        """None per unit: tuning means need the corpus's type counts (made with the atlas)."""
        return {}

    def merge(self, other: TokenTuning) -> None:
        self.sums += other.sums

    def state(self) -> dict[str, torch.Tensor]:
        return {"sums": self.sums}

    def load_state(self, s: dict[str, torch.Tensor]) -> None:
        self.sums = s["sums"]
