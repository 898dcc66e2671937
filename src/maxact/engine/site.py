"""Everything the atlas keeps for one site (all its units), fed one batch of windows at a time: one
instance of every statistic in engine/registry.py (docs/DEVELOPING.md, "Add a statistic")."""

from __future__ import annotations

import torch

from maxact.engine.registry import STATISTICS
from maxact.engine.statistic import (
    Batch,
    Feed,
    State,
    Statistic,
    StatisticSettings,
    declared_axis,
    join_states,
    split_state,
)

POS0_BLOCK = 256  # window-position-0 rows gathered before they are fed to WINDOW_STARTS statistics


class SiteAccumulator:
    """One instance of each registered statistic over the same units. Statistics fed every batch get
    it as it comes; window-position-0 rows (one per window, few) wait and go to the WINDOW_STARTS
    statistics in blocks: the block size does not change the (exact) result, only the cost.
    ``acc.top``, ``acc.moments``, ...: the statistic registered under that name."""

    def __init__(self, width: int, settings: StatisticSettings, device="cpu"):
        self.width = width
        self.statistics: dict[str, Statistic] = {name: make(width, settings, device)
                                                 for name, make in STATISTICS.items()}
        # window-position-0 rows waiting for the WINDOW_STARTS statistics, in buffers made once (rows
        # kept across batches in fresh small tensors would fragment the heap: RSS grew per batch)
        self._start_acts = torch.empty(POS0_BLOCK, 1, width, device=device)  # (POS0_BLOCK, 1, U) float32
        self._start_positions = torch.empty(POS0_BLOCK, 1, dtype=torch.int64, device=device)
        self._start_rows = torch.empty(POS0_BLOCK, dtype=torch.int64, device=device)
        self._n_starts = 0

    def __getattr__(self, name: str) -> Statistic:
        statistics = self.__dict__.get("statistics", {})
        if name in statistics:
            return statistics[name]
        raise AttributeError(f"{type(self).__name__} has no statistic or attribute {name!r}")

    def update(
        self,
        acts: torch.Tensor,  # (W, T, U) one site: W windows of T tokens, each from window pos 0
        positions: torch.Tensor,  # (W, T) int64 corpus positions
        tuning_rows: torch.Tensor,  # (W * T,) int64
    ) -> None:
        W, T, _ = acts.shape
        starts = Batch(acts[:, :1, :], positions[:, :1], tuning_rows.reshape(W, T)[:, 0])  # (W, 1, U)
        if self._n_starts + W > POS0_BLOCK:
            self.flush()
        if W > POS0_BLOCK:
            self._feed_starts(Batch(starts.acts.float(), starts.positions, starts.tuning_rows))
        else:
            n = self._n_starts
            self._start_acts[n : n + W].copy_(starts.acts)
            self._start_positions[n : n + W].copy_(starts.positions)
            self._start_rows[n : n + W].copy_(starts.tuning_rows)
            self._n_starts += W
        batch = Batch(acts, positions, tuning_rows)
        for stat in self.statistics.values():
            if stat.feed is Feed.TOKENS:
                stat.update(batch)

    def flush(self) -> None:
        """Feed the waiting window-position-0 rows to the WINDOW_STARTS statistics."""
        n, self._n_starts = self._n_starts, 0
        if n:
            self._feed_starts(Batch(self._start_acts[:n], self._start_positions[:n], self._start_rows[:n]))

    def _feed_starts(self, block: Batch) -> None:
        for stat in self.statistics.values():
            if stat.feed is Feed.WINDOW_STARTS:
                stat.update(block)  # acts (n, 1, U), positions (n, 1), tuning rows (n,)

    def merge(self, other: SiteAccumulator) -> None:
        self.flush()
        other.flush()
        for name, stat in self.statistics.items():
            stat.merge(other.statistics[name])

    def state(self) -> dict[str, State]:
        self.flush()
        return {name: stat.state() for name, stat in self.statistics.items()}

    def load_state(self, state: dict[str, State]) -> None:
        missing, unknown = sorted(set(self.statistics) - set(state)), sorted(set(state) - set(self.statistics))
        if missing or unknown:
            raise KeyError(f"the saved state lacks the statistics [{', '.join(missing)}] and holds unregistered "
                           f"ones [{', '.join(unknown)}]")
        for name, stat in self.statistics.items():
            stat.load_state(state[name])

    @staticmethod
    def from_state(state: dict[str, State], settings: StatisticSettings, device="cpu") -> SiteAccumulator:
        """An accumulator holding a saved state; its width is read off the declared unit axes."""
        axes = SiteAccumulator(0, settings, device).state_axes()
        unknown = sorted(set(state) - set(axes))
        if unknown:
            raise ValueError(f"the saved state holds statistics that are not registered: {', '.join(unknown)}")
        widths = set()
        for part, tensors in state.items():
            for name, t in tensors.items():
                axis = declared_axis(axes[part], part, name)
                if axis is not None:
                    widths.add(t.shape[axis])
        if len(widths) != 1:
            raise ValueError(f"the saved state's tensors disagree on the number of units ({sorted(widths)})")
        acc = SiteAccumulator(widths.pop(), settings, device)
        acc.load_state(state)
        return acc

    def state_axes(self) -> dict[str, dict[str, int | None]]:
        """Statistic name -> its declared unit axis per state tensor."""
        return {name: dict(stat.STATE_AXES) for name, stat in self.statistics.items()}

    def split(self, widths: list[int]) -> list[dict[str, State]]:
        """This accumulator's state (units of several sites side by side) as one state per site."""
        return split_state(self.state(), self.state_axes(), widths)

    def load_joined(self, states: list[dict[str, State]]) -> None:
        """Load the per-site states of consecutive unit ranges (the inverse of split)."""
        self.load_state(join_states(states, self.state_axes()))
