"""Token tuning: the sum of each unit's activation per token type, for a bounded set of types.

One count vector per corpus serves all units; only the sums are per unit and type. The tracked
types are the corpus's most frequent ``max_types`` token ids (chosen once, from the whole token
stream, so every shard tracks the same ones); every other token adds to a last "other" row. Memory
is (max_types + 1) x U floats whatever the corpus length.
"""

from __future__ import annotations

import numpy as np
import torch


def choose_types(tokens: np.ndarray, max_types: int) -> tuple[np.ndarray, np.ndarray]:
    """(V,) tracked token ids (most frequent first; ties: smaller id) and (V + 1,) their counts,
    the last count being all other tokens."""
    ids, counts = np.unique(tokens, return_counts=True)
    order = np.lexsort((ids, -counts))[:max_types]
    kept_ids, kept_counts = ids[order].astype(np.int64), counts[order].astype(np.int64)
    other = int(len(tokens) - kept_counts.sum())
    return kept_ids, np.concatenate([kept_counts, [other]])


def type_index(tokens: np.ndarray, type_ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """(n,) row of each token in the tuning table (V for untracked tokens)."""
    lut = np.full(max(vocab_size, int(tokens.max(initial=0)) + 1), len(type_ids), dtype=np.int64)
    lut[type_ids] = np.arange(len(type_ids))
    return lut[tokens]


class TokenTuning:
    def __init__(self, n_units: int, n_types: int, device="cpu"):
        self.sums = torch.zeros(n_types + 1, n_units, dtype=torch.float32, device=device)  # (V+1, U)

    def update(self, x: torch.Tensor, rows: torch.Tensor) -> None:
        """x: (N, U) float32; rows: (N,) int64 tuning row of each token."""
        self.sums.index_add_(0, rows, x)

    def merge(self, other: TokenTuning) -> None:
        self.sums += other.sums

    def state(self) -> dict[str, torch.Tensor]:
        return {"sums": self.sums}

    def load_state(self, s: dict[str, torch.Tensor]) -> None:
        self.sums = s["sums"]
