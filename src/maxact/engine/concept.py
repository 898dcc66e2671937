"""The concept pass's accumulator (docs/CONCEPTS.md): per unit and group of observations, count,
mean and M2 in float64 (engine/groups.py); for chosen units, a histogram of each group; for a
probe, the values of a fixed set of observations. Memory is flat in corpus length: G x U moments,
H x G x N_BINS counts and the probe's observations, chosen before the pass.

An observation is one token, or the mean of the tokens of a span inside one window; which tokens
belong to which observation, and its group, arrive as arrays (``ObservationMap``) and are cut per
batch (``BatchObservations``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from maxact.engine.groups import GroupMoments
from maxact.engine.moments import N_BINS, bin_of


@dataclass(frozen=True)
class ObservationMap:
    """Which corpus tokens make which observation (see analysis/categories.Labels)."""

    token_obs: np.ndarray  # (n_tokens,) int64 observation of each token, -1: none
    obs_group: np.ndarray  # (n_obs,) int64 group of each observation
    obs_size: np.ndarray  # (n_obs,) int64 tokens of each observation
    probe: np.ndarray  # (n_obs,) bool: observation kept for the probe
    n_groups: int

    @property
    def single_tokens(self) -> bool:
        """Every observation one token (no span means to form)."""
        return bool((self.obs_size == 1).all())


@dataclass(frozen=True)
class BatchObservations:
    """The observations of one batch of windows (n_b of them), on the accumulators' device."""

    rows: torch.Tensor | None  # (n_rows,) int64 flat token rows in observations; None: every row
    local: torch.Tensor | None  # (n_rows,) int64 observation (0..n_b-1) of each row; None: row i is observation i
    inv_size: torch.Tensor | None  # (n_b, 1) float32 1 / tokens of each observation; None: all 1
    groups: torch.Tensor  # (n_b,) int64 group of each observation
    probe_rows: torch.Tensor  # (m_b,) int64 observations of the batch kept for the probe
    probe_ids: np.ndarray  # (m_b,) int64 their observation ids

    @staticmethod
    def of(obs_map: ObservationMap, positions: np.ndarray, device) -> BatchObservations:
        """positions (W, T) int64 corpus positions of the batch's tokens (row-major = flat rows)."""
        obs = obs_map.token_obs[positions.reshape(-1)]  # (N,) observation of each row
        valid = obs >= 0
        single = obs_map.single_tokens
        if single and valid.all():
            rows = local = inv = None
            ids = obs
        elif single:
            rows_np = np.nonzero(valid)[0]
            ids = obs[rows_np]
            rows, local, inv = torch.from_numpy(rows_np).to(device), None, None
        else:
            rows_np = np.nonzero(valid)[0]
            ids, local_np = np.unique(obs[rows_np], return_inverse=True)
            rows, local = torch.from_numpy(rows_np).to(device), torch.from_numpy(local_np.astype(np.int64)).to(device)
            inv = torch.from_numpy(1.0 / obs_map.obs_size[ids].astype(np.float32)).unsqueeze(1).to(device)
        groups = torch.from_numpy(obs_map.obs_group[ids]).to(device)
        keep = np.nonzero(obs_map.probe[ids])[0]
        return BatchObservations(rows, local, inv, groups, torch.from_numpy(keep).to(device), ids[keep])

    @property
    def n_obs(self) -> int:
        return self.groups.shape[0]

    def values(self, flat: torch.Tensor) -> torch.Tensor:
        """flat (N, U) activations of the batch's tokens -> (n_b, U) float32 observation values."""
        if self.rows is None:
            return flat.float()
        x = flat.index_select(0, self.rows).float()  # (n_rows, U)
        if self.local is None:
            return x
        sums = torch.zeros(self.n_obs, x.shape[1], dtype=torch.float32, device=x.device)
        return sums.index_add_(0, self.local, x) * self.inv_size  # (n_b, U) span means


class ConceptAccumulator:
    """The concept pass's state for a range of units (one site, or all sites side by side)."""

    def __init__(self, width: int, n_groups: int, hist_columns: list[int], probe_columns: list[slice],
                 device="cpu"):
        self.moments = GroupMoments(n_groups, width, device)
        self.hist_columns = torch.tensor(hist_columns, dtype=torch.int64, device=device)  # (H,)
        self.hist = torch.zeros(len(hist_columns), n_groups * N_BINS, dtype=torch.int64, device=device)
        self.probe_columns = probe_columns  # column ranges whose probe observations are kept
        self.probe_values: list[list[np.ndarray]] = [[] for _ in probe_columns]  # per range: (m_b, width) float32 parts
        self.probe_ids: list[np.ndarray] = []  # (m_b,) int64 parts, in the same order

    def update(self, flat: torch.Tensor, obs: BatchObservations) -> None:
        """flat (N, U) activations of the batch's N token rows."""
        if obs.n_obs == 0:
            return
        x = obs.values(flat)  # (n_b, U) float32
        self.moments.add(x, obs.groups)
        if len(self.hist_columns):
            h = x.index_select(1, self.hist_columns).T.contiguous()  # (H, n_b)
            codes = bin_of(h) + obs.groups.unsqueeze(0) * N_BINS  # (H, n_b) group-major bins
            self.hist.scatter_add_(1, codes, torch.ones_like(codes))
        if self.probe_columns and obs.probe_rows.numel():
            kept = x.index_select(0, obs.probe_rows)  # (m_b, U)
            for parts, cols in zip(self.probe_values, self.probe_columns):
                parts.append(kept[:, cols].cpu().numpy().astype(np.float32))
            self.probe_ids.append(obs.probe_ids)

    def histograms(self) -> np.ndarray:
        """(H, G, N_BINS) int64 counts of each chosen unit's observations per group."""
        return self.hist.reshape(len(self.hist_columns), self.moments.n_groups, N_BINS).cpu().numpy()

    def probe_matrix(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The i-th probe range: (m, width) float32 values of its kept observations and (m,) int64
        their observation ids, sorted by id."""
        ids = np.concatenate(self.probe_ids) if self.probe_ids else np.zeros(0, dtype=np.int64)
        width = self.probe_columns[i].stop - self.probe_columns[i].start
        values = np.concatenate(self.probe_values[i]) if self.probe_values[i] else np.zeros((0, width), np.float32)
        order = np.argsort(ids, kind="stable")
        return values[order], ids[order]
