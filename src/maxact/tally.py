"""Tallies of batch winners, shared by exact sampling, atlas sampling and reports."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Tally:
    token_ids: np.ndarray  # (distinct,) int64, most wins first (ties: smaller id first)
    counts: np.ndarray  # (distinct,) int64
    n_batches: int
    n_missed: int  # batches with no winner (atlas simulation: no top position covered)
    pos0_wins: int  # wins at window position 0

    @property
    def distinct(self) -> int:
        return int(len(self.token_ids))

    @property
    def shares(self) -> np.ndarray:
        return self.counts / max(self.n_batches, 1)

    def to_records(self, token_text) -> list[dict]:
        return [
            {"token_id": int(t), "token": token_text(int(t)), "count": int(c), "share": float(c) / self.n_batches}
            for t, c in zip(self.token_ids, self.counts)
        ]


def tally_winners(token_ids: np.ndarray, cols: np.ndarray, values: np.ndarray) -> Tally:
    """Count winners per token id; NaN values mark batches without a winner."""
    hit = ~np.isnan(values)
    ids, counts = np.unique(token_ids[hit], return_counts=True)
    order = np.lexsort((ids, -counts))
    return Tally(
        token_ids=ids[order].astype(np.int64),
        counts=counts[order].astype(np.int64),
        n_batches=int(len(token_ids)),
        n_missed=int((~hit).sum()),
        pos0_wins=int(((cols == 0) & hit).sum()),
    )
