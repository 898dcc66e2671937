"""Count, mean and M2 (sum of squared deviations from the mean) of every unit over each of G groups
of rows, one batch at a time, merged exactly in float64 (Chan et al.'s pairwise formulas).

Each batch's group means and M2 are computed in float32 around the batch's own group means, then
folded into float64 running totals, as engine/moments.py does for the whole stream: no
cancellation however large an activation is against its spread. Used per token type by
engine/tuning.py (the atlas's per-type second moments) and per category group by
engine/concept.py (the concept pass).
"""

from __future__ import annotations

import torch

MAX_COLUMNS = 8192  # units handled at once (fused sites pass ~64k)
DENSE_GROUPS = 64  # on CUDA, at most this many groups are summed by a one-hot matmul (no atomics)


def group_sums(x: torch.Tensor, groups: torch.Tensor, n_groups: int, out: torch.Tensor) -> torch.Tensor:
    """x (N, C) float32, groups (N,) int64 in [0, n_groups) -> out (n_groups, C) float32, the sums of
    each group's rows (out is overwritten)."""
    if x.is_cuda and n_groups <= DENSE_GROUPS:  # index_add_ into few rows serialises on atomics
        onehot = torch.zeros(n_groups, x.shape[0], dtype=x.dtype, device=x.device)  # (G, N)
        onehot[groups, torch.arange(x.shape[0], device=x.device)] = 1.0
        return torch.mm(onehot, x, out=out)
    return out.zero_().index_add_(0, groups, x)


class _Work:
    """Buffers reused batch after batch for one shape of column slice: on the CPU a fresh tensor of
    a batch's size costs more (page faults) than the arithmetic done in it. One set per (groups,
    columns, device) serves every accumulator of that shape (the sites of a pass are fed one after
    the other), so their memory does not grow with the number of sites."""

    def __init__(self, n_groups: int, columns: int, device):
        self.sums = torch.empty(n_groups, columns, dtype=torch.float32, device=device)  # (G, C)
        self.m2 = torch.empty(n_groups, columns, dtype=torch.float32, device=device)  # (G, C)
        self.delta = torch.empty(n_groups, columns, dtype=torch.float64, device=device)  # (G, C)
        self.m2_64 = torch.empty(n_groups, columns, dtype=torch.float64, device=device)  # (G, C)
        self.dev = torch.empty(0, columns, dtype=torch.float32, device=device)  # (capacity, C)

    def deviations(self, n: int) -> torch.Tensor:
        """(n, C) float32 buffer (grown to the largest batch seen)."""
        if self.dev.shape[0] < n:
            self.dev = torch.empty(n, self.dev.shape[1], dtype=torch.float32, device=self.dev.device)
        return self.dev[:n]


_WORK: dict[tuple[int, int, str], _Work] = {}  # shared work buffers, by (groups, columns, device)


def _work(n_groups: int, columns: int, device) -> _Work:
    key = (n_groups, columns, str(device))
    if key not in _WORK:
        _WORK[key] = _Work(n_groups, columns, device)
    return _WORK[key]


class GroupMoments:
    """count (G,) int64, mean (G, U) float64 and m2 (G, U) float64 of the rows of each group."""

    def __init__(self, n_groups: int, n_units: int, device="cpu"):
        self.count = torch.zeros(n_groups, dtype=torch.int64, device=device)  # (G,)
        self.mean = torch.zeros(n_groups, n_units, dtype=torch.float64, device=device)  # (G, U)
        self.m2 = torch.zeros(n_groups, n_units, dtype=torch.float64, device=device)  # (G, U)

    @property
    def n_groups(self) -> int:
        return self.count.shape[0]

    def add(self, x: torch.Tensor, groups: torch.Tensor) -> None:
        """x (N, U) float32 rows, groups (N,) int64 in [0, G): the group of each row. Units are
        taken MAX_COLUMNS at a time, which bounds the (N, columns) temporaries (fused sites pass
        every unit of a model at once)."""
        N = x.shape[0]
        if N == 0:
            return
        G = self.n_groups
        n_b = torch.bincount(groups, minlength=G)  # (G,) int64
        na = self.count.double().unsqueeze(1)  # (G, 1)
        nb = n_b.double().unsqueeze(1)  # (G, 1)
        n = (na + nb).clamp(min=1.0)  # an empty group stays empty: nb = 0 leaves mean and m2 alone
        w_new, w_cross = nb / n, na * nb / n  # (G, 1) float64
        scale = n_b.clamp(min=1).unsqueeze(1).float()  # (G, 1)
        for lo in range(0, x.shape[1], MAX_COLUMNS):
            xs = x[:, lo : lo + MAX_COLUMNS]  # (N, C)
            c = xs.shape[1]
            work = _work(G, c, x.device)
            mean_b = group_sums(xs, groups, G, work.sums).div_(scale)  # (G, C) float32 batch mean of each group
            d = torch.index_select(mean_b, 0, groups, out=work.deviations(N)).sub_(xs).square_()  # (N, C)
            m2_b = group_sums(d, groups, G, work.m2)  # (G, C) float32
            mean, m2 = self.mean[:, lo : lo + c], self.m2[:, lo : lo + c]  # (G, C) float64 views
            delta = work.delta.copy_(mean_b).sub_(mean)  # (G, C) float64
            mean.addcmul_(delta, w_new)
            m2.add_(work.m2_64.copy_(m2_b)).addcmul_(delta.square_(), w_cross)
        self.count = self.count + n_b  # never in place: a shared count may be held by other sites

    def fold(self, n_b: torch.Tensor, mean_b: torch.Tensor, m2_b: torch.Tensor) -> None:
        """Fold in groups of n_b (G,) rows with means and M2 (G, U) float64 (exact in real numbers)."""
        na = self.count.double().unsqueeze(1)  # (G, 1)
        nb = n_b.double().unsqueeze(1)  # (G, 1)
        n = (na + nb).clamp(min=1.0)
        delta = mean_b - self.mean  # (G, U)
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2_b + delta.square() * (na * nb / n)
        self.count = self.count + n_b

    def merge(self, other: GroupMoments) -> None:
        self.fold(other.count, other.mean, other.m2)

    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}count": self.count, f"{prefix}mean": self.mean, f"{prefix}m2": self.m2}

    def load_state(self, s: dict[str, torch.Tensor], prefix: str) -> None:
        self.count, self.mean, self.m2 = s[f"{prefix}count"], s[f"{prefix}mean"], s[f"{prefix}m2"]
