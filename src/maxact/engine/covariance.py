"""Streaming covariance of a site's activations, mergeable (Chan et al.'s pairwise formulas).

Count, mean (d,) and co-moment matrix (d, d) (the sum of outer products of deviations from the
mean) of a stream of rows. Each batch's co-moment is computed in float32 around the batch's own
mean (summed in float64, then rounded), then folded into float64 running totals, as
engine/groups.py does per unit: no cancellation however large the mean is against the spread. Two
accumulators over parts of a stream merge into the accumulator of the whole (exact in real
numbers), whatever the batches and parts.
Used by `maxact pca` (pipeline/pca.py).
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class CovarianceState(NamedTuple):
    """What a checkpoint or a merge carries: the whole accumulator."""

    count: int  # rows folded in
    mean: torch.Tensor  # (d,) float64
    comoment: torch.Tensor  # (d, d) float64, sum over rows of (x - mean) outer (x - mean)


class CovarianceAccumulator:
    """count, mean (d,) float64 and co-moment (d, d) float64 of every row added."""

    def __init__(self, dim: int, device="cpu"):
        self.count = 0
        self.mean = torch.zeros(dim, dtype=torch.float64, device=device)  # (d,)
        self.comoment = torch.zeros(dim, dim, dtype=torch.float64, device=device)  # (d, d)

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    def add(self, x: torch.Tensor) -> None:
        """x (N, d) float32 rows: their co-moment in float32 around their mean, folded in float64."""
        n_b = x.shape[0]
        if n_b == 0:
            return
        if x.shape[1] != self.dim:
            raise ValueError(f"rows of width {x.shape[1]} fed to a covariance of width {self.dim}")
        mean_b = x.sum(0, dtype=torch.float64) / n_b  # (d,) float64, summed without a float64 copy of x
        centre = mean_b.float()  # (d,) float32, the batch mean rounded
        centred = x - centre  # (N, d) float32
        comoment_b = (centred.T @ centred).double()  # (d, d) around the rounded mean
        shift = mean_b - centre.double()  # (d,) float64, that rounding: taken out exactly
        self.fold(n_b, mean_b, comoment_b - torch.outer(shift, shift) * n_b)

    def fold(self, n_b: int, mean_b: torch.Tensor, comoment_b: torch.Tensor) -> None:
        """Fold in n_b rows of mean mean_b (d,) float64 and co-moment comoment_b (d, d) float64."""
        if n_b == 0:
            return
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self.mean  # (d,) float64
        self.mean = self.mean + delta * (n_b / n)
        self.comoment = self.comoment + comoment_b + torch.outer(delta, delta) * (n_a * n_b / n)
        self.count = n

    def merge(self, other: CovarianceAccumulator) -> None:
        """Fold in another accumulator (of any other rows of the same width)."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge a covariance of width {other.dim} into one of width {self.dim}")
        self.fold(other.count, other.mean.to(self.mean.device), other.comoment.to(self.mean.device))

    def covariance(self, ddof: int = 1) -> torch.Tensor:
        """(d, d) float64 comoment / (count - ddof); ddof 1: the unbiased estimate (numpy.cov's)."""
        if self.count <= ddof:
            raise ValueError(f"a covariance with ddof {ddof} needs more than {ddof} rows, got {self.count}")
        return self.comoment / (self.count - ddof)

    def state(self) -> CovarianceState:
        return CovarianceState(self.count, self.mean, self.comoment)

    def load_state(self, state: CovarianceState) -> None:
        if state.mean.shape != (self.dim,) or state.comoment.shape != (self.dim, self.dim):
            raise ValueError(f"a covariance state of width {state.mean.shape[0]} loaded into one of width {self.dim}")
        self.count = int(state.count)
        self.mean = state.mean.to(self.mean.device, torch.float64)
        self.comoment = state.comoment.to(self.mean.device, torch.float64)
