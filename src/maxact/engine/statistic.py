"""The accumulator protocol: what one statistic of an atlas is (docs/DEVELOPING.md, "Add a statistic").

A statistic keeps, for every unit of a site (or of several sites side by side), a bounded state that
it updates one batch at a time and merges exactly (or to rounding) with the state of the same units
over other windows. It declares each of its state tensors with the axis that holds the units (None
for a scalar shared by all units), so a state can be cut into unit ranges and joined again without
the caller knowing any statistic by name: a tensor it does not declare is an error, never guessed.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

State = dict[str, torch.Tensor]  # one statistic's state: tensor name -> tensor


class Feed(enum.Enum):
    """Which rows a statistic is fed."""

    TOKENS = "tokens"  # every batch of windows as it comes
    WINDOW_STARTS = "window_starts"  # only window position 0, gathered into blocks of many windows


@dataclass(frozen=True)
class StatisticSettings:
    """What the statistics of one atlas share (from AtlasConfig and the corpus)."""

    k: int  # top-K and bottom-K kept per unit
    k_ctx: int  # of which this many keep their context activations
    n_types: int  # tracked token types (tuning rows, plus one for all others)
    seed: int  # seeds the deterministic subsample of the activation bands


@dataclass
class Batch:
    """One batch of windows of one accumulator's units, as every statistic reads it."""

    acts: torch.Tensor  # (W, T, U) activations; T == 1 for a block of window starts
    positions: torch.Tensor  # (W, T) int64 corpus positions
    tuning_rows: torch.Tensor  # (W * T,) int64 tuning-table row of each token
    _masked: torch.Tensor | None = field(default=None, repr=False)  # (W, T, U) float32 work copy

    @property
    def flat(self) -> torch.Tensor:
        """(W * T, U) the activations token-major (a view: hooks hand over contiguous tensors)."""
        W, T, U = self.acts.shape
        return self.acts.reshape(W * T, U)

    def without_window_start(self, fill: float) -> torch.Tensor:
        """(W, T, U) float32 copy of acts with window position 0 set to ``fill``. One buffer serves
        every statistic of the batch (the model still reads ``acts``: it is never edited); each call
        rewrites position 0, so use the result before the next call."""
        if self._masked is None:
            self._masked = self.acts.to(torch.float32, copy=True)
        self._masked[:, 0, :] = fill
        return self._masked


class Statistic(Protocol):
    """One statistic over the units of an accumulator."""

    STATE_AXES: Mapping[str, int | None]  # state tensor -> axis holding the units (None: shared)
    SHARED_ARRAYS: Mapping[str, np.ndarray]  # store arrays the same for every unit (bin edges), by stem
    feed: Feed

    def update(self, batch: Batch) -> None: ...

    def arrays(self) -> dict[str, np.ndarray]:
        """Its per-unit results for the store, by file stem, units on axis 0 (an atlas concatenates
        them over sites); results that need other statistics are derived when the atlas is made."""

    def merge(self, other: Statistic) -> None:
        """Fold in the same statistic of the same units over other windows."""

    def state(self) -> State: ...

    def load_state(self, state: State) -> None: ...


class UndeclaredStateError(ValueError):
    """A state tensor a statistic did not declare (a bug in that statistic, not a user error)."""


def declared_axis(axes: Mapping[str, int | None], part: str, name: str) -> int | None:
    if name not in axes:
        raise UndeclaredStateError(
            f"statistic {part!r} has a state tensor {name!r} that its STATE_AXES does not declare; "
            f"declare the axis that holds its units (or None for a shared scalar)")
    return axes[name]


def split_state(state: Mapping[str, State], axes: Mapping[str, Mapping[str, int | None]],
                widths: list[int]) -> list[dict[str, State]]:
    """Cut the state of units concatenated from several sites into one state per unit range.

    state: statistic name -> its state; axes: statistic name -> its STATE_AXES; widths: the units of
    each range, in order (they must add up to the units of every per-unit tensor)."""
    out: list[dict[str, State]] = [{part: {} for part in state} for _ in widths]
    total = sum(widths)
    for part, tensors in state.items():
        for name, t in tensors.items():
            axis = declared_axis(axes[part], part, name)
            if axis is not None and t.shape[axis] != total:
                raise UndeclaredStateError(
                    f"state tensor {part}.{name} has {t.shape[axis]} units on axis {axis}, expected {total}")
            start = 0
            for i, w in enumerate(widths):
                out[i][part][name] = t if axis is None else t.narrow(axis, start, w).clone()
                start += w
    return out


def join_states(states: list[Mapping[str, State]], axes: Mapping[str, Mapping[str, int | None]]) -> dict[str, State]:
    """The inverse of split_state: per-range states, in order, into one over all their units."""
    first = states[0]
    return {
        part: {
            name: first[part][name] if declared_axis(axes[part], part, name) is None
            else torch.cat([s[part][name] for s in states], dim=axes[part][name])
            for name in first[part]
        }
        for part in first
    }
