"""Everything the atlas keeps for one site (all its units), fed one batch of windows at a time."""

from __future__ import annotations

import torch

from maxact.engine.moments import StreamingMoments
from maxact.engine.topk import StreamingTopK
from maxact.engine.tuning import TokenTuning

PARTS = ("top", "bottom", "top0", "bottom0", "moments", "tuning")
POS0_BLOCK = 256  # window-position-0 rows gathered before they are folded in


class SiteAccumulator:
    """top/bottom: best examples away from window position 0 (with contexts); top0/bottom0: best
    examples at window position 0 (sink tokens), kept apart so either view can be had exactly."""

    def __init__(self, width: int, k: int, k_ctx: int, n_types: int, device="cpu"):
        self.width = width
        self.top = StreamingTopK(width, k, k_ctx, largest=True, device=device)
        self.bottom = StreamingTopK(width, k, k_ctx, largest=False, device=device)
        self.top0 = StreamingTopK(width, k, 0, largest=True, device=device)
        self.bottom0 = StreamingTopK(width, k, 0, largest=False, device=device)
        self.moments = StreamingMoments(width, device=device)
        self.tuning = TokenTuning(width, n_types, device=device)
        # window-position-0 rows are few (one per window): they wait here and go to top0/bottom0
        # in blocks; the block size does not change the (exact) result, only the cost
        self._pos0_acts: list[torch.Tensor] = []  # (W, U) each
        self._pos0_pos: list[torch.Tensor] = []  # (W,) each
        self._pos0_rows = 0

    def update(
        self,
        acts: torch.Tensor,  # (W, T, U) one site: W windows of T tokens, each from window pos 0
        positions: torch.Tensor,  # (W, T) int64 corpus positions
        tuning_rows: torch.Tensor,  # (W * T,) int64
    ) -> None:
        W, T, U = acts.shape
        flat = acts.reshape(W * T, U)  # hooks hand us contiguous (B, T, U) tensors: a view
        self.moments.update(flat, positions.reshape(-1))
        self.tuning.update(flat, tuning_rows)
        self._pos0_acts.append(acts[:, 0, :].float().clone())  # (W, U)
        self._pos0_pos.append(positions[:, 0].clone())
        self._pos0_rows += W
        if self._pos0_rows >= POS0_BLOCK:
            self.flush()
        if T > 1:
            work = acts.to(torch.float32, copy=True)  # the model still reads `acts`: never edit it
            work[:, 0, :] = float("-inf")
            self.top.update(work, positions, acts)
            work[:, 0, :] = float("inf")
            self.bottom.update(work, positions, acts)

    def flush(self) -> None:
        """Fold the waiting window-position-0 rows into top0/bottom0."""
        if not self._pos0_acts:
            return
        first = torch.cat(self._pos0_acts)[:, None, :]  # (n, 1, U)
        pos = torch.cat(self._pos0_pos)[:, None]  # (n, 1)
        self.top0.update(first, pos)
        self.bottom0.update(first, pos)
        self._pos0_acts, self._pos0_pos, self._pos0_rows = [], [], 0

    def merge(self, other: SiteAccumulator) -> None:
        self.flush()
        other.flush()
        for part in PARTS:
            getattr(self, part).merge(getattr(other, part))

    def state(self) -> dict[str, dict[str, torch.Tensor]]:
        self.flush()
        return {part: getattr(self, part).state() for part in PARTS}

    def load_state(self, state) -> None:
        for part in PARTS:
            getattr(self, part).load_state(state[part])


# How a state splits into unit ranges: most tensors have units on axis 0, these on axis 1, and
# these are per-accumulator scalars.
_UNITS_ON_AXIS_1 = frozenset({"hist_t", "sums"})
_SCALARS = frozenset({"count", "sub_count"})


def split_state(state: dict, widths: list[int]) -> list[dict]:
    """Cut the state of an accumulator over concatenated units into one state per unit range."""
    out = [{part: {} for part in state} for _ in widths]
    for part, tensors in state.items():
        for name, t in tensors.items():
            start = 0
            for i, w in enumerate(widths):
                if name in _SCALARS:
                    out[i][part][name] = t
                elif name in _UNITS_ON_AXIS_1:
                    out[i][part][name] = t[:, start : start + w].clone()
                else:
                    out[i][part][name] = t[start : start + w].clone()
                start += w
    return out


def join_states(states: list[dict]) -> dict:
    """The inverse of split_state."""
    first = states[0]
    return {
        part: {
            name: first[part][name] if name in _SCALARS
            else torch.cat([s[part][name] for s in states], dim=1 if name in _UNITS_ON_AXIS_1 else 0)
            for name in first[part]
        }
        for part in first
    }
