"""Streaming moments and histograms per unit, mergeable (Chan/Pébay pairwise formulas).

Each batch's central moments are computed in float32 around the batch mean, then folded into
float64 running totals, so huge activations (attention sinks reach ~1e3) lose no precision to
cancellation. Count, mean, std, skew, kurtosis and frac > 0 use every token; only the histogram
counts a fixed 1-in-HIST_STRIDE subsample of corpus positions (binning every token would cost about
as much as the forward pass). Histogram bins are the same for every unit and every run (see
``bin_of``), so histograms add exactly across shards.
"""

from __future__ import annotations

import numpy as np
import torch

from maxact.engine.statistic import Batch, Feed

# Histogram bins come straight from the float32 bits: sign, exponent and one mantissa bit give
# two bins per octave ([2**e, 1.5 * 2**e) and [1.5 * 2**e, 2**(e+1))), |x| from 2**-10 to 2**12, plus an underflow bin (|x| < 2**-10) and an overflow
# bin per sign, and a bin for exact zeros per sign. No search, a few integer passes.
_MAG_BINS = 47  # 0: zero; 1: (0, 2**-10); 2..45: half-octaves; 46: >= 2**12 (saturating)
HIST_STRIDE = 8  # the histogram: tokens at corpus positions that are multiples of 8
N_BINS = 2 * _MAG_BINS  # bins 0..46 negative (most negative first), 47..93 positive
_CODE_OFFSET = 232  # code = 2 * biased exponent + top mantissa bit; 2**-10 has code 234


def bin_bounds() -> np.ndarray:
    """(N_BINS, 2) float64 [low, high) of each bin; exact-zero bins are [0, 0]."""
    mag = np.zeros((_MAG_BINS, 2))
    mag[1] = (0.0, 2.0**-10)
    starts = [2.0 ** (-10 + j // 2) * (1.5 if j % 2 else 1.0) for j in range(_MAG_BINS - 1)]
    for m in range(2, _MAG_BINS - 1):  # the top mantissa bit splits [2**e, 1.5 * 2**e, 2**(e+1))
        mag[m] = (starts[m - 2], starts[m - 1])
    mag[_MAG_BINS - 1] = (2.0**12, np.inf)
    neg = -mag[::-1, ::-1]
    return np.concatenate([neg, mag])


def bin_of(x: torch.Tensor) -> torch.Tensor:
    """(N, U) float32 -> (N, U) int64 histogram bin (see N_BINS)."""
    b = x.view(torch.int32)
    magnitude = b & 0x7FFFFFFF  # |x| as bits
    code = magnitude >> 22
    mag = (code - _CODE_OFFSET).clamp_(1, _MAG_BINS - 1)
    mag.masked_fill_(magnitude == 0, 0)  # only +-0.0 (a denormal's code is 0 too: underflow bin)
    sign = b >> 31  # 0 or -1
    return (_MAG_BINS + mag + sign * (2 * mag + 1)).long()


class _Central:
    """count, mean and central moment sums M2..M4 of a stream, folded pairwise (float64)."""

    def __init__(self, n_units: int, device):
        z = lambda: torch.zeros(n_units, dtype=torch.float64, device=device)  # noqa: E731
        self.count = 0
        self.mean, self.m2, self.m3, self.m4 = z(), z(), z(), z()

    def add(self, x: torch.Tensor) -> None:
        """x: (n, U) float32."""
        n = x.shape[0]
        if n == 0:
            return
        mean_b = x.mean(0)  # (U,)
        d = x - mean_b  # (n, U)
        d2 = d * d  # (n, U)
        m2, m3, m4 = d2.sum(0), torch.linalg.vecdot(d2, d, dim=0), torch.linalg.vecdot(d2, d2, dim=0)
        self.fold(n, mean_b.double(), m2.double(), m3.double(), m4.double())

    def fold(self, nb, mean_b, m2b, m3b, m4b) -> None:
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

    def merge(self, other: _Central) -> None:
        if other.count:
            self.fold(other.count, other.mean, other.m2, other.m3, other.m4)

    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}count": torch.tensor(self.count), f"{prefix}mean": self.mean,
                f"{prefix}m2": self.m2, f"{prefix}m3": self.m3, f"{prefix}m4": self.m4}

    def load_state(self, s, prefix: str) -> None:
        self.count = int(s[f"{prefix}count"])
        self.mean, self.m2, self.m3, self.m4 = (s[f"{prefix}{k}"] for k in ("mean", "m2", "m3", "m4"))


class StreamingMoments:
    """Every token: count, mean, variance, skew, kurtosis, count of x > 0. Every token whose corpus
    position is a multiple of HIST_STRIDE (a fixed subsample, the same however the corpus is cut into
    batches or shards): the histogram."""

    STATE_AXES = {"count": None, "mean": 0, "m2": 0, "m3": 0, "m4": 0, "hist_t": 1, "n_pos": 0}
    SHARED_ARRAYS = {"hist_bounds": bin_bounds()}
    feed = Feed.TOKENS

    def __init__(self, n_units: int, device="cpu"):
        self.full = _Central(n_units, device)
        self.n_pos = torch.zeros(n_units, dtype=torch.int64, device=device)
        self.hist_t = torch.zeros(N_BINS, n_units, dtype=torch.int64, device=device)  # (NB, U)
        self._ones_cache: torch.Tensor | None = None

    def _ones(self, n: int, u: int) -> torch.Tensor:
        if self._ones_cache is None or self._ones_cache.shape[0] < n:
            self._ones_cache = torch.ones(n, u, dtype=torch.int64, device=self.hist_t.device)
        return self._ones_cache[:n]

    @property
    def count(self) -> int:
        return self.full.count

    @property
    def hist(self) -> torch.Tensor:
        """(U, N_BINS) int64 counts."""
        return self.hist_t.T

    def update(self, batch: Batch) -> None:
        self.add(batch.flat, batch.positions.reshape(-1))

    def add(self, x: torch.Tensor, positions: torch.Tensor) -> None:
        """x: (N, U) float32, every token of the batch; positions: (N,) int64 corpus positions."""
        self.full.add(x)
        self.n_pos += x.clamp(min=0).sign_().sum(0).long()  # exact count of x > 0
        rows = (positions % HIST_STRIDE == 0).nonzero().squeeze(1)
        sub = x.index_select(0, rows)  # (N / HIST_STRIDE, U)
        self.hist_t.scatter_add_(0, bin_of(sub), self._ones(sub.shape[0], x.shape[1]))

    def merge(self, other: StreamingMoments) -> None:
        self.hist_t += other.hist_t
        self.n_pos += other.n_pos
        self.full.merge(other.full)

    def state(self) -> dict[str, torch.Tensor]:
        return {**self.full.state(""), "hist_t": self.hist_t, "n_pos": self.n_pos}

    def load_state(self, s: dict[str, torch.Tensor]) -> None:
        self.full.load_state(s, "")
        self.hist_t, self.n_pos = s["hist_t"], s["n_pos"]

    def arrays(self) -> dict[str, np.ndarray]:
        """hist (U, N_BINS) int64; the moments themselves go into stats beside top/bottom extremes."""
        return {"hist": self.hist.cpu().numpy().astype(np.int64)}

    def summary(self) -> dict[str, np.ndarray]:
        """count, mean, std, skew, kurtosis (excess), frac_pos as (U,) arrays (population)."""
        n = max(self.count, 1)
        var = (self.full.m2 / n).clamp(min=0)
        std = var.sqrt()
        safe = torch.where(var > 0, var, torch.ones_like(var))
        skew = torch.where(var > 0, (self.full.m3 / n) / safe**1.5, torch.zeros_like(var))
        kurt = torch.where(var > 0, (self.full.m4 / n) / safe**2 - 3.0, torch.zeros_like(var))
        return {
            "count": np.full(self.full.mean.shape[0], self.count, dtype=np.int64),
            "mean": self.full.mean.cpu().numpy(),
            "std": std.cpu().numpy(),
            "skew": skew.cpu().numpy(),
            "kurtosis": kurt.cpu().numpy(),
            "frac_pos": (self.n_pos.double() / n).cpu().numpy(),
        }
