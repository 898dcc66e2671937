"""Which windows a run covers and in which batches: consecutive non-overlapping windows of ``seq``
tokens, batches of equal-length windows (docs/METHOD.md, "Why one pass can replace a thousand
batches")."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class WindowPlan:
    """Windows [start, start + length) covering tokens; batches of equal-length windows."""

    starts: np.ndarray  # (n_windows,) int64
    length: np.ndarray  # (n_windows,) int64
    batches: list[np.ndarray]  # each (W,) window indices, all of one length

    @staticmethod
    def make(n_tokens: int, seq: int, per_batch: int, shard: tuple[int, int] | None) -> WindowPlan:
        starts = np.arange(0, n_tokens, seq, dtype=np.int64)
        length = np.minimum(seq, n_tokens - starts)
        lo, hi = 0, len(starts)
        if shard is not None:
            i, n = shard
            lo, hi = len(starts) * i // n, len(starts) * (i + 1) // n
        full = [w for w in range(lo, hi) if length[w] == seq]
        batches = [np.array(full[j : j + per_batch]) for j in range(0, len(full), per_batch)]
        batches += [np.array([w]) for w in range(lo, hi) if length[w] != seq]
        return WindowPlan(starts, length, batches)

    def window_range(self) -> tuple[int, int]:
        ws = np.concatenate(self.batches) if self.batches else np.array([0])
        return int(ws.min()), int(ws.max()) + 1

    def n_tokens(self, batches: list[np.ndarray] | None = None) -> int:
        """Tokens in ``batches`` (default: every batch of the plan)."""
        return int(sum(self.length[b].sum() for b in (self.batches if batches is None else batches)))
