"""Which windows a run covers and in which batches (docs/METHOD.md, "Why one pass can replace a
thousand batches" and "Documents"): consecutive non-overlapping windows of ``length`` corpus tokens
from each document's start, never across a document start; a document's shorter last window is fed
as it is or dropped (``doc_tail``); batches of equal-length windows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from maxact.config import AtlasConfig
from maxact.corpus import TokenSource
from maxact.windows import Windowing, bos_token_id, doc_lengths, resolve_windowing


def atlas_windowing(lm, source: TokenSource, config: AtlasConfig) -> Windowing:
    """The windowing of an atlas run: config.bos resolved against the source and the model."""
    return resolve_windowing(config.seq, config.doc_tail, config.bos, len(source.doc_starts), bos_token_id(lm),
                             config.model)


@dataclass
class WindowPlan:
    """Windows [start, start + length) of corpus tokens; batches of equal-length windows."""

    starts: np.ndarray  # (n_windows,) int64 first corpus token of each window
    length: np.ndarray  # (n_windows,) int64 corpus tokens of each window
    batches: list[np.ndarray]  # each (W,) window indices, all of one length
    windowing: Windowing
    window_slice: tuple[int, int]  # [lo, hi): the windows of this run or shard (see make)

    @staticmethod
    def make(doc_starts: np.ndarray, n_tokens: int, windowing: Windowing, per_batch: int,
             shard: tuple[int, int] | None) -> WindowPlan:
        """doc_starts: (n_docs,) int64. Full windows go ``per_batch`` to a forward pass; shorter ones
        (document tails) are grouped by length, as many to a pass as hold ``per_batch`` full
        windows' worth of tokens. ``shard=(i, n)``: the i-th of n contiguous slices [lo, hi) of the
        windows: its full windows, and the tail batches whose first window lies in it. Tail batches
        are made over all windows, so a tail is fed in the same batch by every shard and by one run
        (a forward pass over a few short rows may round differently in another batch, which would
        break the exact merge). Starts and lengths always list every window."""
        window_tokens = windowing.length  # corpus tokens of a full window
        doc_starts = np.asarray(doc_starts, dtype=np.int64)
        doc_len = doc_lengths(doc_starts, n_tokens)  # (n_docs,)
        per_doc = -(-doc_len // window_tokens)  # windows of each document
        first = np.cumsum(per_doc) - per_doc  # index of each document's first window
        k = np.arange(int(per_doc.sum()), dtype=np.int64) - np.repeat(first, per_doc)  # window within its document
        starts = np.repeat(doc_starts, per_doc) + k * window_tokens
        length = np.minimum(window_tokens, np.repeat(doc_starts + doc_len, per_doc) - starts)
        if windowing.doc_tail == "drop":
            keep = length == window_tokens
            starts, length = starts[keep], length[keep]
        lo, hi = 0, len(starts)
        if shard is not None:
            i, n = shard
            lo, hi = len(starts) * i // n, len(starts) * (i + 1) // n
        windows = np.arange(lo, hi, dtype=np.int64)
        full = windows[length[windows] == window_tokens]
        batches = [full[j : j + per_batch] for j in range(0, len(full), per_batch)]
        tails = np.flatnonzero(length != window_tokens)  # of every shard
        for size in sorted(set(length[tails].tolist()), reverse=True):
            group = tails[length[tails] == size]
            cap = max(1, per_batch * window_tokens // size)
            batches += [group[j : j + cap] for j in range(0, len(group), cap) if lo <= group[j] < hi]
        return WindowPlan(starts, length, batches, windowing, (lo, hi))

    @staticmethod
    def for_atlas(lm, source: TokenSource, config: AtlasConfig) -> WindowPlan:
        """The plan of an atlas run (or of its shard) over ``source``."""
        return WindowPlan.make(source.doc_starts, len(source), atlas_windowing(lm, source, config),
                               config.windows_per_batch, config.shard)

    def window_range(self) -> tuple[int, int]:
        """[lo, hi) of the windows this run or shard covers (its tail batches start there)."""
        return int(self.window_slice[0]), int(self.window_slice[1])

    def n_tokens(self, batches: list[np.ndarray] | None = None) -> int:
        """Corpus tokens in ``batches`` (default: every batch of the plan)."""
        return int(sum(self.length[b].sum() for b in (self.batches if batches is None else batches)))

    def fed_tokens(self, tokens: np.ndarray) -> np.ndarray:
        """(n_fed,) int32 the corpus tokens the windows of every shard feed, in order: all of
        ``tokens`` (n,) unless document tails are dropped."""
        total = int(self.length.sum())
        if total == len(tokens):
            return tokens
        offset = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(self.length) - self.length, self.length)
        return tokens[np.repeat(self.starts, self.length) + offset]
