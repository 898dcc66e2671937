"""Streaming top-K (or bottom-K) per unit, exact, with the unit's activations around each example.

State for U units: ``keys`` (U, K) int64, best first (see keys.py), and ``context`` (U, K_ctx, C)
float16: the unit's activation on the C tokens around each of its best K_ctx examples (C_BEFORE
before, the token itself, C_AFTER - 1 after; NaN outside the example's window). An example's rank
can only fall as more data arrives, so an example that enters below rank K_ctx never needs its
context, and one that enters above it has it recorded at that moment, from the batch in memory.
"""

from __future__ import annotations

import torch

from maxact.engine.keys import EMPTY, pack, unpack

C_BEFORE = 24  # context tokens before the example
C_AFTER = 8  # the example and the tokens after it


class StreamingTopK:
    def __init__(self, n_units: int, k: int, k_ctx: int, largest: bool, device="cpu"):
        self.k, self.k_ctx, self.largest = k, k_ctx, largest
        self.keys = torch.full((n_units, k), EMPTY, dtype=torch.int64, device=device)  # (U, K)
        self.context = torch.full(
            (n_units, k_ctx, C_BEFORE + C_AFTER), float("nan"), dtype=torch.float16, device=device
        )  # (U, K_ctx, C)

    # ---- the threshold a new value must reach to enter ------------------------------------
    def _threshold(self) -> torch.Tensor:
        """(U,) float32: the K-th value (-inf/+inf while not full)."""
        vals, _ = unpack(self.keys[:, -1], self.largest)
        fill = float("-inf") if self.largest else float("inf")
        return torch.nan_to_num(vals, nan=fill)

    def update(
        self,
        acts: torch.Tensor,  # (W, T, U) float32 working copy: rows that may not enter hold -inf
        # (top) or +inf (bottom)
        positions: torch.Tensor,  # (W, T) int64 corpus positions
        context_source: torch.Tensor | None = None,  # (W, T, U) unmasked activations for contexts
    ) -> None:
        W, T, U = acts.shape
        N = W * T
        flat = acts.reshape(N, U)
        eff = self._threshold()  # (U,) the K-th best so far
        if N >= 2 * self.k:
            # The best of each of K disjoint row groups is a distinct element, so the batch's K-th
            # best is at least the worst of those K group bests: nothing below it can enter.
            s = N // self.k
            groups = flat[: self.k * s].view(self.k, s, U)
            bound = groups.amax(1).amin(0) if self.largest else groups.amin(1).amax(0)  # (U,)
            eff = torch.maximum(eff, bound) if self.largest else torch.minimum(eff, bound)
        passing = (flat >= eff) if self.largest else (flat <= eff)  # (N, U)
        pairs = passing.T.nonzero()  # (P, 2) [unit, row], sorted by unit then row
        if len(pairs) == 0:
            return
        unit, row = pairs[:, 0], pairs[:, 1]
        cols, counts = torch.unique_consecutive(unit, return_counts=True)  # (c,), (c,)
        first = torch.cumsum(counts, 0) - counts  # (c,) index of each column's first pair
        col_of_pair = torch.repeat_interleave(torch.arange(len(cols), device=flat.device), counts)
        rank = torch.arange(len(pairs), device=flat.device) - first[col_of_pair]  # (P,)
        new = torch.full((len(cols), int(counts.max())), EMPTY, dtype=torch.int64, device=flat.device)
        new[col_of_pair, rank] = pack(flat[row, unit], positions.reshape(-1)[row], self.largest)
        both = torch.cat([self.keys[cols], new], dim=1)  # (c, K + P_max)
        merged, src = both.topk(self.k, dim=1)  # (c, K)
        self.keys[cols] = merged
        if self.k_ctx:
            source = acts if context_source is None else context_source
            self._move_contexts(source, cols, merged, src, first, row)

    def _move_contexts(self, acts, cols, merged, src, first, row) -> None:
        """Contexts of the first K_ctx ranks: moved from old slots, or cut from this batch."""
        W, T, _ = acts.shape
        src = src[:, : self.k_ctx]  # (c, K_ctx) index into [old K | new pairs]
        from_old = src < self.k_ctx  # an old example beyond rank K_ctx cannot climb back
        old_ctx = self.context[cols]  # (c, K_ctx, C)
        ctx = torch.gather(
            old_ctx, 1, src.clamp(max=self.k_ctx - 1)[:, :, None].expand(-1, -1, old_ctx.shape[2])
        )
        is_new = src >= self.k
        if is_new.any():
            ci, ri = is_new.nonzero(as_tuple=True)  # column (in cols) and rank of each new entry
            r = row[first[ci] + src[ci, ri] - self.k]  # flat batch row (window * T + t)
            w, t = r // T, r % T
            tt = t[:, None] + torch.arange(-C_BEFORE, C_AFTER, device=acts.device)  # (e, C)
            inside = (tt >= 0) & (tt < T)
            vals = acts[w[:, None], tt.clamp(0, T - 1), cols[ci][:, None]]  # (e, C)
            ctx[ci, ri] = vals.masked_fill(~inside, float("nan")).to(torch.float16)
        # only empty slots are neither old-and-kept nor new: they carry no context
        ctx[(~from_old & ~is_new) | (merged[:, : self.k_ctx] == EMPTY)] = float("nan")
        self.context[cols] = ctx

    # ---- merge, export -----------------------------------------------------------------------
    def merge(self, other: StreamingTopK) -> None:
        """Fold another accumulator of the same units in (exact; refuses shared positions upstream)."""
        both = torch.cat([self.keys, other.keys], dim=1)  # (U, 2K)
        merged, src = both.topk(self.k, dim=1)
        ctx_both = torch.cat([self.context, other.context], dim=1)  # (U, 2 K_ctx, C)
        src = src[:, : self.k_ctx]
        mine = src < self.k
        slot = torch.where(mine, src, src - self.k + self.k_ctx)
        ok = torch.where(mine, src < self.k_ctx, src - self.k < self.k_ctx)  # False only for empties
        slot = slot.clamp(max=2 * self.k_ctx - 1)
        ctx = torch.gather(ctx_both, 1, slot[:, :, None].expand(-1, -1, ctx_both.shape[2]))
        ctx[~ok | (merged[:, : self.k_ctx] == EMPTY)] = float("nan")
        self.context, self.keys = ctx, merged

    def values_positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(U, K) float32 values and (U, K) int64 positions, best first; empty slots NaN / -1."""
        return unpack(self.keys, self.largest)

    def state(self) -> dict[str, torch.Tensor]:
        return {"keys": self.keys, "context": self.context}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.keys, self.context = state["keys"], state["context"]
