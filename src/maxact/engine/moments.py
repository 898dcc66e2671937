"""Streaming moments and histograms per unit, mergeable (Chan/Pébay pairwise formulas).

Each batch's central moments are computed in float32 around the batch mean, then folded into
float64 running totals, so huge activations (attention sinks reach ~1e3) lose no precision to
cancellation. Histogram bins are the same for every unit and every run (sign-symmetric, 8 per
decade from 1e-3 to 1e3, plus the two tails), so histograms add exactly across shards.
"""

from __future__ import annotations

import numpy as np
import torch

_POS = 10.0 ** (np.arange(-24, 25) / 8.0)  # 1e-3 .. 1e3
HIST_EDGES = np.concatenate([-_POS[::-1], [0.0], _POS]).astype(np.float32)  # (99,)
N_BINS = len(HIST_EDGES) + 1  # bin i holds edges[i-1] <= x < edges[i]


class StreamingMoments:
    def __init__(self, n_units: int, device="cpu"):
        z = lambda: torch.zeros(n_units, dtype=torch.float64, device=device)  # noqa: E731
        self.count = 0
        self.mean, self.m2, self.m3, self.m4 = z(), z(), z(), z()
        self.n_pos = torch.zeros(n_units, dtype=torch.int64, device=device)
        self.hist = torch.zeros(n_units, N_BINS, dtype=torch.int64, device=device)  # (U, NB)
        self._edges = torch.tensor(HIST_EDGES, device=device)

    def update(self, x: torch.Tensor) -> None:
        """x: (N, U) float32, every token of the batch."""
        n, u = x.shape
        mean_b = x.mean(0)  # (U,)
        d = x - mean_b  # (N, U)
        d2 = d * d
        m2 = d2.sum(0)
        m3 = torch.linalg.vecdot(d2, d, dim=0)
        m4 = torch.linalg.vecdot(d2, d2, dim=0)
        del d, d2
        self._fold(n, mean_b.double(), m2.double(), m3.double(), m4.double())
        self.n_pos += (x > 0).sum(0)
        idx = torch.bucketize(x, self._edges, right=True)  # (N, U) in [0, NB)
        idx += torch.arange(u, device=x.device) * N_BINS
        self.hist += torch.bincount(idx.view(-1), minlength=u * N_BINS).view(u, N_BINS)

    def _fold(self, nb, mean_b, m2b, m3b, m4b) -> None:
        na = self.count
        if na == 0:
            self.count, self.mean, self.m2, self.m3, self.m4 = nb, mean_b, m2b, m3b, m4b
            return
        n = na + nb
        delta = mean_b - self.mean
        d_n = delta / n
        self.m4 = (
            self.m4 + m4b
            + delta * d_n**3 * na * nb * (na * na - na * nb + nb * nb)
            + 6 * d_n**2 * (na * na * m2b + nb * nb * self.m2)
            + 4 * d_n * (na * m3b - nb * self.m3)
        )
        self.m3 = (
            self.m3 + m3b + delta * d_n**2 * na * nb * (na - nb) + 3 * d_n * (na * m2b - nb * self.m2)
        )
        self.m2 = self.m2 + m2b + delta * d_n * na * nb
        self.mean = self.mean + d_n * nb
        self.count = n

    def merge(self, other: StreamingMoments) -> None:
        self.n_pos += other.n_pos
        self.hist += other.hist
        if other.count:
            self._fold(other.count, other.mean, other.m2, other.m3, other.m4)

    def state(self) -> dict[str, torch.Tensor]:
        return {
            "count": torch.tensor(self.count), "mean": self.mean, "m2": self.m2, "m3": self.m3,
            "m4": self.m4, "n_pos": self.n_pos, "hist": self.hist,
        }

    def load_state(self, s: dict[str, torch.Tensor]) -> None:
        self.count = int(s["count"])
        self.mean, self.m2, self.m3, self.m4 = s["mean"], s["m2"], s["m3"], s["m4"]
        self.n_pos, self.hist = s["n_pos"], s["hist"]

    def summary(self) -> dict[str, np.ndarray]:
        """count, mean, std, skew, kurtosis (excess), frac_pos as (U,) arrays (population)."""
        n = max(self.count, 1)
        var = (self.m2 / n).clamp(min=0)
        std = var.sqrt()
        safe = torch.where(var > 0, var, torch.ones_like(var))
        skew = torch.where(var > 0, (self.m3 / n) / safe**1.5, torch.zeros_like(var))
        kurt = torch.where(var > 0, (self.m4 / n) / safe**2 - 3.0, torch.zeros_like(var))
        return {
            "count": np.full(self.mean.shape[0], self.count, dtype=np.int64),
            "mean": self.mean.cpu().numpy(),
            "std": std.cpu().numpy(),
            "skew": skew.cpu().numpy(),
            "kurtosis": kurt.cpu().numpy(),
            "frac_pos": (self.n_pos.double() / n).cpu().numpy(),
        }
