"""Streaming top-K (or bottom-K) per unit, exact, with the unit's activations around each example.

State for U units: ``keys`` (U, K) int64, best first (see keys.py), and ``context`` (U, K_ctx, C)
float16: the unit's activation on the C tokens around each of its best K_ctx examples (C_BEFORE
before, the token itself, C_AFTER - 1 after; NaN outside the example's window). An example's rank
can only fall as more data arrives, so an example that enters below rank K_ctx never needs its
context, and one that enters above it has it recorded at that moment, from the batch in memory.
"""

from __future__ import annotations

import numpy as np
import torch

from maxact.engine.keys import EMPTY, pack, unpack
from maxact.engine.statistic import Batch, Feed

C_BEFORE = 24  # context tokens before the example
C_AFTER = 8  # the example and the tokens after it
MAX_COLUMNS = 4096  # units handled at once (fused sites pass ~64k)


class StreamingTopK:
    """The K best examples of each unit, either away from window position 0 (fed every batch, with
    contexts) or at window position 0 (fed blocks of window starts, ``at_window_start``): the two are
    kept apart so that either view, and their exact merge, can be had."""

    STATE_AXES = {"keys": 0, "context": 0}
    SHARED_ARRAYS: dict = {}

    def __init__(self, n_units: int, k: int, k_ctx: int, largest: bool, name: str = "top",
                 at_window_start: bool = False, device="cpu"):
        self.k, self.k_ctx, self.largest, self.name = k, k_ctx, largest, name
        self.at_window_start = at_window_start
        self.feed = Feed.WINDOW_STARTS if at_window_start else Feed.TOKENS
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

    def update(self, batch: Batch) -> None:
        if self.at_window_start:
            self.add(batch.acts, batch.positions)  # (n, 1, U): one row per window
        elif batch.acts.shape[1] > 1:
            fill = float("-inf") if self.largest else float("inf")
            self.add(batch.without_window_start(fill), batch.positions, batch.acts)

    def add(
        self,
        acts: torch.Tensor,  # (W, T, U) float32 working copy: rows that may not enter hold -inf
        # (top) or +inf (bottom)
        positions: torch.Tensor,  # (W, T) int64 corpus positions
        context_source: torch.Tensor | None = None,  # (W, T, U) unmasked activations for contexts
    ) -> None:
        U = acts.shape[2]
        if U <= MAX_COLUMNS:
            self._update(acts, positions, acts if context_source is None else context_source, 0)
            return
        # many units at once (fused sites): slices of columns bound the candidate temporaries
        for lo in range(0, U, MAX_COLUMNS):
            hi = min(U, lo + MAX_COLUMNS)
            source = acts if context_source is None else context_source
            self._update(acts[:, :, lo:hi], positions, source[:, :, lo:hi], lo)

    def _update(self, acts, positions, context_source, base: int) -> None:
        """add() for the units [base, base + acts.shape[2])."""
        W, T, U = acts.shape
        N = W * T
        flat = acts.reshape(N, U)
        fill = float("-inf") if self.largest else float("inf")
        # Rows go in G groups of s consecutive rows (padded with rows that cannot enter). A group
        # whose best is below the K-th best so far cannot contribute. Early in a run, when that
        # leaves many groups, the K-th best group best sharpens the bar: those K group bests are
        # distinct elements, so the batch's own K-th best is at least that high. Only the rows of
        # the few remaining (group, unit) pairs are then ranked, exactly, by their keys.
        s = max(1, N // (8 * self.k))
        G = -(-N // s)
        if G * s != N:
            flat = torch.cat([flat, flat.new_full((G * s - N, U), fill)])
        groups = flat.view(G, s, U)
        best = groups.amax(1) if self.largest else groups.amin(1)  # (G, U)
        thr = self._threshold()[base : base + U]
        cand = (best >= thr) if self.largest else (best <= thr)
        if G >= self.k and int(cand.sum()) * 8 > G * U:
            kth = best.topk(self.k, dim=0, largest=self.largest).values[-1]  # (U,)
            thr = torch.maximum(thr, kth) if self.largest else torch.minimum(thr, kth)
            cand = (best >= thr) if self.largest else (best <= thr)
        cols, new, row_of_new = self._sparse_candidates(flat, cand, positions, s, N, fill)
        if cols is None:
            return
        both = torch.cat([self.keys[cols + base], new], dim=1)  # (c, K + groups * s)
        merged, src = both.topk(self.k, dim=1)  # (c, K)
        self.keys[cols + base] = merged
        if self.k_ctx:
            self._move_contexts(context_source, cols, merged, src, row_of_new, base)

    def _sparse_candidates(self, flat, cand, positions, s, N, fill):
        """Keys (c, groups * s) of the rows of candidate groups, per candidate column."""
        U = flat.shape[1]
        pairs = cand.T.nonzero()  # (P, 2) [unit, group], sorted by unit
        if len(pairs) == 0:
            return None, None, None
        unit, group = pairs[:, 0], pairs[:, 1]
        cols, counts = torch.unique_consecutive(unit, return_counts=True)  # (c,), (c,)
        first = torch.cumsum(counts, 0) - counts  # (c,) index of each column's first pair
        col_of_pair = torch.repeat_interleave(torch.arange(len(cols), device=flat.device), counts)
        slot = torch.arange(len(pairs), device=flat.device) - first[col_of_pair]  # (P,)
        rows = group[:, None] * s + torch.arange(s, device=flat.device)  # (P, s) flat rows
        vals = flat.reshape(-1).take(rows * U + unit[:, None])  # (P, s) = flat[rows, unit]
        keys = pack(vals, positions.reshape(-1)[rows.clamp(max=N - 1)], self.largest)  # (P, s)
        keys.masked_fill_((rows >= N) | (vals == fill), EMPTY)  # padding and masked rows
        width = int(counts.max()) * s
        new = torch.full((len(cols), width), EMPTY, dtype=torch.int64, device=flat.device)
        new.view(len(cols), -1, s)[col_of_pair, slot] = keys
        row_of_new = torch.full_like(new, -1)
        row_of_new.view(len(cols), -1, s)[col_of_pair, slot] = rows
        return cols, new, row_of_new

    def _move_contexts(self, acts, cols, merged, src, row_of_new, base: int) -> None:
        """Contexts of the first K_ctx ranks: moved from old slots, or cut from this batch."""
        W, T, _ = acts.shape
        src = src[:, : self.k_ctx]  # (c, K_ctx) index into [old K | new pairs]
        is_new = src >= self.k
        changed = is_new.any(1)  # elsewhere the first K_ctx ranks are the same old examples
        if not changed.any():
            return
        cols, merged, src, row_of_new, is_new = (
            cols[changed], merged[changed], src[changed], row_of_new[changed], is_new[changed])
        from_old = src < self.k_ctx  # an old example beyond rank K_ctx cannot climb back
        old_ctx = self.context.index_select(0, cols + base)  # (c, K_ctx, C)
        ctx = torch.gather(
            old_ctx, 1, src.clamp(max=self.k_ctx - 1)[:, :, None].expand(-1, -1, old_ctx.shape[2])
        )
        ci, ri = is_new.nonzero(as_tuple=True)  # column (in cols) and rank of each new entry
        r = row_of_new[ci, src[ci, ri] - self.k]  # flat batch row (window * T + t)
        w, t = r // T, r % T
        tt = t[:, None] + torch.arange(-C_BEFORE, C_AFTER, device=acts.device)  # (e, C)
        inside = (tt >= 0) & (tt < T)
        vals = acts[w[:, None], tt.clamp(0, T - 1), cols[ci][:, None]]  # (e, C)
        ctx[ci, ri] = vals.masked_fill(~inside, float("nan")).to(torch.float16)
        # only empty slots are neither old-and-kept nor new: they carry no context
        ctx[(~from_old & ~is_new) | (merged[:, : self.k_ctx] == EMPTY)] = float("nan")
        self.context.index_copy_(0, cols + base, ctx)

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

    def arrays(self) -> dict[str, np.ndarray]:
        """{name}_values (U, K) float32, {name}_positions (U, K) int64 and, away from window
        position 0, {name}_context (U, K_ctx, C) float16."""
        values, positions = self.values_positions()
        out = {f"{self.name}_values": values.cpu().numpy().astype(np.float32),
               f"{self.name}_positions": positions.cpu().numpy().astype(np.int64)}
        if not self.at_window_start:
            out[f"{self.name}_context"] = self.context.cpu().numpy().astype(np.float16)
        return out

    def state(self) -> dict[str, torch.Tensor]:
        return {"keys": self.keys, "context": self.context}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.keys, self.context = state["keys"], state["context"]
