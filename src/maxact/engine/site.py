"""Everything the atlas keeps for one site (all its units), fed one batch of windows at a time."""

from __future__ import annotations

import torch

from maxact.engine.moments import StreamingMoments
from maxact.engine.topk import StreamingTopK
from maxact.engine.tuning import TokenTuning

PARTS = ("top", "bottom", "top0", "bottom0", "moments", "tuning")


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

    def update(
        self,
        acts: torch.Tensor,  # (W, T, U) one site, W windows of T tokens, all starting at window pos 0
        positions: torch.Tensor,  # (W, T) int64 corpus positions
        tuning_rows: torch.Tensor,  # (W * T,) int64
    ) -> None:
        W, T, U = acts.shape
        flat = acts.reshape(W * T, U)  # a view: hooks hand us contiguous (B, T, U) tensors
        if flat.dtype != torch.float32:
            flat = flat.float()
            acts = flat.view(W, T, U)
        lo, hi = torch.aminmax(flat, dim=0)  # (U,), (U,): over all rows, a superset for candidates
        win_len = torch.full((W,), T, dtype=torch.int64, device=acts.device)
        if T > 1:
            not_pos0 = torch.ones(W, T, dtype=torch.bool, device=acts.device)
            not_pos0[:, 0] = False
            self.top.update(acts, positions, win_len, hi, not_pos0)
            self.bottom.update(acts, positions, win_len, lo, not_pos0)
        first = acts[:, :1, :]  # (W, 1, U) window position 0
        lo0, hi0 = torch.aminmax(first.reshape(W, U), dim=0)
        one = torch.ones(W, dtype=torch.int64, device=acts.device)
        self.top0.update(first, positions[:, :1], one, hi0)
        self.bottom0.update(first, positions[:, :1], one, lo0)
        self.moments.update(flat)
        self.tuning.update(flat, tuning_rows)

    def merge(self, other: SiteAccumulator) -> None:
        for part in PARTS:
            getattr(self, part).merge(getattr(other, part))

    def state(self) -> dict[str, dict[str, torch.Tensor]]:
        return {part: getattr(self, part).state() for part in PARTS}

    def load_state(self, state) -> None:
        for part in PARTS:
            getattr(self, part).load_state(state[part])
