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
COLUMN_CHUNK = 2048  # candidate columns handled at once (bounds the (N, c) int64 temporaries)


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
        acts: torch.Tensor,  # (W, T, U) float32: W windows of T tokens, one site
        positions: torch.Tensor,  # (W, T) int64 corpus positions
        window_len: torch.Tensor,  # (W,) int64: real length of each window (tokens past it: pad)
        column_extreme: torch.Tensor,  # (U,) float32: max (largest) / min over the rows that count
        row_mask: torch.Tensor | None = None,  # (W, T) bool: rows that may enter (None: all)
    ) -> None:
        thr = self._threshold()
        cand = (column_extreme >= thr) if self.largest else (column_extreme <= thr)
        cols = cand.nonzero().squeeze(1)
        for start in range(0, len(cols), COLUMN_CHUNK):
            self._merge_columns(acts, positions, window_len, row_mask, cols[start : start + COLUMN_CHUNK])

    def _merge_columns(self, acts, positions, window_len, row_mask, cols) -> None:
        W, T, _ = acts.shape
        sub = acts[:, :, cols].reshape(W * T, len(cols))  # (N, c)
        new = pack(sub, positions.reshape(-1, 1), self.largest)  # (N, c) int64
        if row_mask is not None:
            new.masked_fill_(~row_mask.reshape(-1, 1), EMPTY)
        k_new = min(self.k, W * T)
        new_keys, new_rows = new.topk(k_new, dim=0)  # (k_new, c): best rows of this batch
        old = self.keys[cols]  # (c, K)
        both = torch.cat([old, new_keys.T], dim=1)  # (c, K + k_new)
        merged, src = both.topk(self.k, dim=1)  # (c, K), src indexes `both`
        self.keys[cols] = merged

        # contexts of the first K_ctx ranks: moved from the old slots, or cut from this batch
        src = src[:, : self.k_ctx]  # (c, K_ctx)
        from_old = src < self.k_ctx  # an old example beyond rank K_ctx cannot climb back
        old_ctx = self.context[cols]  # (c, K_ctx, C)
        ctx = torch.gather(
            old_ctx, 1, src.clamp(max=self.k_ctx - 1)[:, :, None].expand(-1, -1, old_ctx.shape[2])
        )
        is_new = src >= self.k
        if is_new.any():
            ci, ri = is_new.nonzero(as_tuple=True)  # column (in cols) and rank of each new entry
            row = new_rows[src[ci, ri] - self.k, ci]  # flat batch row (window * T + t)
            w, t = row // T, row % T
            offs = torch.arange(-C_BEFORE, C_AFTER, device=acts.device)  # (C,)
            tt = t[:, None] + offs  # (e, C)
            inside = (tt >= 0) & (tt < window_len[w][:, None])
            vals = acts[w[:, None], tt.clamp(0, T - 1), cols[ci][:, None]]  # (e, C)
            ctx[ci, ri] = vals.masked_fill(~inside, float("nan")).to(torch.float16)
        # an old example beyond rank K_ctx cannot climb back (ranks only fall): only empty slots
        # land here, and they, like new empty keys, carry no context
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
