"""The context pass (`maxact atlas --context-pass`, docs/METHOD.md, "Context"): each unit's top-K
candidates measured a second time, in windows shifted by half a window inside each document.

The shifted partition cuts every document into windows of ``length`` corpus tokens from
``doc_start + length // 2`` (the last one ending with its document, fed as it is), fed exactly as the
atlas pass feeds its windows (a BOS token first when the atlas puts one there). Only the shifted
windows that hold a candidate of some unit are run, equal lengths batched together; the first
``length // 2`` tokens of each document have no shifted window and keep only their first value.
No statistic is accumulated: the unit's activation is read at its own candidates and dropped.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from maxact.capture import stream
from maxact.units import SiteRef
from maxact.windows import Windowing


class ShiftedWindows(NamedTuple):
    """The shifted windows holding at least one of a set of positions."""

    starts: np.ndarray  # (W,) int64 first corpus token of each window, increasing
    lengths: np.ndarray  # (W,) int64 corpus tokens of each window
    window_of: np.ndarray  # (N,) int64 window of each position (-1: in a document's first half window)


def shifted_windows(positions: np.ndarray, doc_starts: np.ndarray, n_tokens: int, length: int) -> ShiftedWindows:
    """positions (N,) int64 corpus positions (>= 0). Windows of ``length`` corpus tokens from each
    document's start + length // 2."""
    half = length // 2
    doc_starts = np.asarray(doc_starts, dtype=np.int64)
    doc = np.searchsorted(doc_starts, positions, side="right") - 1
    s = doc_starts[doc]
    doc_end = np.append(doc_starts[1:], n_tokens)[doc]
    rel = positions - s - half
    inside = rel >= 0
    start = np.where(inside, s + half + np.maximum(rel, 0) // length * length, -1)
    end = np.minimum(start + length, doc_end)
    starts, first = np.unique(start[inside], return_index=True)
    lengths = (end - start)[inside][first]
    window_of = np.where(inside, np.searchsorted(starts, start), -1)
    return ShiftedWindows(starts, lengths, window_of)


def shift_batches(windows: ShiftedWindows, full_length: int, per_batch: int) -> list[np.ndarray]:
    """Windows of equal length, ``per_batch`` full windows (or as many shorter ones as hold that many
    tokens) to a forward pass: each (B,) window indices."""
    out = []
    for size in sorted(set(windows.lengths.tolist()), reverse=True):
        group = np.flatnonzero(windows.lengths == size)
        cap = max(1, per_batch * full_length // size)
        out += [group[j : j + cap] for j in range(0, len(group), cap)]
    return out


def gather_shifted(lm, tokens: np.ndarray, doc_starts: np.ndarray, windowing: Windowing, refs: list[SiteRef],
                   widths: list[int], positions: np.ndarray, per_batch: int) -> np.ndarray:
    """tokens (n,) int32; positions (U, K) int64 (-1 empty), units in ``refs`` order (site by site,
    ``widths`` each) -> (U, K) float32: each unit's activation at each of its positions in the shifted
    partition (NaN: empty, or in a document's first half window)."""
    U, K = positions.shape
    out = np.full((U, K), np.nan, dtype=np.float32)
    unit, slot = np.nonzero(positions >= 0)  # the (unit, candidate) pairs
    pos = positions[unit, slot]
    length = windowing.length
    if length < 2 or len(pos) == 0:
        return out
    windows = shifted_windows(pos, doc_starts, len(tokens), length)
    keep = windows.window_of >= 0
    unit, slot, pos, window = unit[keep], slot[keep], pos[keep], windows.window_of[keep]
    order = np.argsort(window, kind="stable")
    unit, slot, pos, window = unit[order], slot[order], pos[order], window[order]
    bounds = np.searchsorted(window, np.arange(len(windows.starts) + 1))  # pairs of window w: [bounds[w], bounds[w+1])
    site_offsets = np.cumsum([0] + list(widths))
    first = 0 if windowing.bos_id is None else 1  # model position of a window's first corpus token
    device = lm.device
    for batch in shift_batches(windows, length, per_batch):
        T = int(windows.lengths[batch[0]])
        idx = windows.starts[batch][:, None] + np.arange(T)  # (B, T) corpus positions
        ids = torch.from_numpy(tokens[idx].astype(np.int64))  # (B, T)
        if windowing.bos_id is not None:
            ids = torch.cat([torch.full((len(batch), 1), windowing.bos_id), ids], 1)  # (B, 1 + T)
        pairs = np.concatenate([np.arange(bounds[w], bounds[w + 1]) for w in batch])
        row_in_batch = np.searchsorted(batch, window[pairs])  # batch is increasing within a length group
        col = first + pos[pairs] - windows.starts[window[pairs]]  # model position of each pair

        def consume(ref: SiteRef, acts: torch.Tensor, pairs=pairs, row_in_batch=row_in_batch, col=col) -> None:
            i = refs.index(ref)  # acts (B, first + T, width)
            lo, hi = site_offsets[i], site_offsets[i + 1]
            mine = (unit[pairs] >= lo) & (unit[pairs] < hi)
            if not mine.any():
                return
            p = pairs[mine]
            r = torch.from_numpy(row_in_batch[mine]).to(acts.device)
            c = torch.from_numpy(col[mine]).to(acts.device)
            u = torch.from_numpy(unit[p] - lo).to(acts.device)
            out[unit[p], slot[p]] = acts[r, c, u].float().cpu().numpy()

        stream(lm.adapter, ids.to(device), refs, consume)
    return out
