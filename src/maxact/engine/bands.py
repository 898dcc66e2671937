"""Examples at a spread of activation levels: per unit and activation band, a few examples drawn by a
seeded hash of the corpus position (docs/STORE.md, "Activation bands").

A corpus position p is a *candidate* when h(p), the p-th output of splitmix64 seeded with the atlas
seed, falls in the lowest 1/64 of its range: a fixed subsample, the same however the corpus is cut
into batches or shards. Each candidate falls, for each unit, into one of N_BANDS fixed bands of its
activation (BAND_EDGES: x <= 0, then octaves of x > 0). Per unit and band the statistic keeps the
PER_BAND candidates with the smallest hash (bottom-k sampling): a uniform sample without replacement
of that band's candidates, exact, deterministic, and mergeable (the smallest hashes of a union are
the smallest of the smallest of each part). Hashes of distinct positions differ (splitmix64 is a
bijection), so the order has no ties.

Candidates wait in blocks of up to BLOCK_ROWS rows before they are folded in: one sort per block, not
per batch; the block size changes the cost, never the result.
"""

from __future__ import annotations

import numpy as np
import torch

from maxact.engine.statistic import Batch, Feed

PER_BAND = 4  # examples kept per unit and band
SAMPLE_SHIFT = 6  # a position is a candidate when its hash < 2**(64 - SAMPLE_SHIFT): 1 in 64
_HASH_BITS = 64 - SAMPLE_SHIFT  # a candidate's hash fits in 58 bits: key = band << 58 | hash
# band 0: x <= 0 (and NaN); band 1: (0, 2**-6); band j in 2..15: [2**(j-8), 2**(j-7)); band 16: [2**8, inf)
_LOW_EXP, _HIGH_EXP = -6, 8
N_BANDS = _HIGH_EXP - _LOW_EXP + 3
BAND_EDGES = np.array([-np.inf, 0.0, *(2.0**e for e in range(_LOW_EXP, _HIGH_EXP + 1)), np.inf])  # (N_BANDS + 1,)
BLOCK_ROWS = 256  # candidate rows gathered before they are folded in
EMPTY_KEY = torch.iinfo(torch.int64).max  # an empty slot sorts after every real key

_GOLDEN = 0x9E3779B97F4A7C15
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _signed(c: int) -> int:
    """A uint64 constant as the int64 with the same bits."""
    return c - (1 << 64) if c >= 1 << 63 else c


def _shift_right(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's >> is arithmetic)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def position_hash(positions: torch.Tensor, seed: int) -> torch.Tensor:
    """(...) int64 positions -> (...) int64 holding the uint64 bits of splitmix64's p-th output for
    ``seed``: mix(seed + (p + 1) * 0x9E3779B97F4A7C15), all arithmetic modulo 2**64."""
    z = (positions + 1) * _signed(_GOLDEN) + _signed(seed % (1 << 64))
    z = (z ^ _shift_right(z, 30)) * _signed(_MIX1)
    z = (z ^ _shift_right(z, 27)) * _signed(_MIX2)
    return z ^ _shift_right(z, 31)


def band_of(x: torch.Tensor) -> torch.Tensor:
    """(...) activations -> (...) int64 band (see BAND_EDGES), read off the float32 exponent bits."""
    x = x.float().contiguous()
    exponent = x.view(torch.int32) >> 23  # biased exponent for x > 0: x = m * 2**(exponent - 127)
    band = (exponent - (127 + _LOW_EXP - 2)).clamp_(1, N_BANDS - 1)
    return band.masked_fill_(~(x > 0), 0).long()


class ActivationBands:
    """Per unit and band, the PER_BAND candidate positions with the smallest hash and their values."""

    STATE_AXES = {"positions": 0, "values": 0}
    SHARED_ARRAYS = {"band_edges": BAND_EDGES}
    feed = Feed.TOKENS

    def __init__(self, n_units: int, seed: int, device="cpu"):
        self.seed = seed
        shape = (n_units, N_BANDS, PER_BAND)
        self.positions = torch.full(shape, -1, dtype=torch.int64, device=device)  # (U, B, R)
        self.values = torch.full(shape, float("nan"), dtype=torch.float32, device=device)  # (U, B, R)
        self._keys = torch.full(shape, EMPTY_KEY, dtype=torch.int64, device=device)  # (U, B, R)
        # candidates waiting to be folded in, in buffers made once (see SiteAccumulator)
        self._waiting_values = torch.empty(BLOCK_ROWS, n_units, device=device)  # (BLOCK_ROWS, U) float32
        self._waiting_positions = torch.empty(BLOCK_ROWS, dtype=torch.int64, device=device)
        self._n_waiting = 0

    def update(self, batch: Batch) -> None:
        positions = batch.positions.reshape(-1)  # (N,)
        rows = (position_hash(positions, self.seed) >> _HASH_BITS == 0).nonzero().squeeze(1)  # (c,)
        c = len(rows)
        if c == 0:
            return
        if self._n_waiting + c > BLOCK_ROWS:
            self._flush()
        if c > BLOCK_ROWS:
            self._fold(batch.flat.index_select(0, rows).float(), positions.index_select(0, rows))
            return
        n = self._n_waiting
        self._waiting_values[n : n + c].copy_(batch.flat.index_select(0, rows))
        self._waiting_positions[n : n + c].copy_(positions.index_select(0, rows))
        self._n_waiting += c

    def _flush(self) -> None:
        n, self._n_waiting = self._n_waiting, 0
        if n:
            self._fold(self._waiting_values[:n], self._waiting_positions[:n])

    def _fold(self, values: torch.Tensor, positions: torch.Tensor) -> None:
        """Fold candidates (c, U) values at (c,) positions in. Only those whose key beats the last
        kept one of their band (or whose band is not full) can enter: the rest go before the sort."""
        hashes = position_hash(positions, self.seed)  # (c,) each below 2**58
        band = band_of(values).T  # (U, c)
        last = self._keys[:, :, -1]  # (U, B) each band's largest kept key (EMPTY_KEY: not full)
        bar = torch.where(last == EMPTY_KEY, 1 << _HASH_BITS, last & ((1 << _HASH_BITS) - 1))  # (U, B) hash
        enters = hashes[None, :] < bar.gather(1, band)  # (U, c)
        most = int(enters.sum(1).max())
        if most == 0:
            return
        # each unit's entrants (and, for units with fewer, some that will not be kept)
        rows = enters.to(torch.uint8).topk(most, dim=1).indices  # (U, most)
        keys = (band.gather(1, rows) << _HASH_BITS) | hashes[rows]
        keys = keys.masked_fill_(~enters.gather(1, rows), EMPTY_KEY)
        self._keep(keys, values.T.gather(1, rows), positions[rows])

    def _key(self, values: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(...) int64 sort key band << 58 | hash of each candidate; EMPTY_KEY where position < 0."""
        keys = (band_of(values) << _HASH_BITS) | position_hash(positions, self.seed)
        return keys.masked_fill_(positions < 0, EMPTY_KEY)

    def _keep(self, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor) -> None:
        """Fold candidates (U, m) keys, values and positions in (EMPTY_KEY: none): per band, the
        PER_BAND smallest keys."""
        U = keys.shape[0]
        all_keys = torch.cat([self._keys.view(U, -1), keys], dim=1)  # (U, M)
        all_values = torch.cat([self.values.view(U, -1), values], dim=1)
        all_positions = torch.cat([self.positions.view(U, -1), positions], dim=1)
        sorted_keys, order = all_keys.sort(dim=1)
        bands = torch.arange(N_BANDS, device=keys.device)
        first = torch.searchsorted(sorted_keys, (bands << _HASH_BITS).expand(U, -1).contiguous())  # (U, B)
        slot = first[:, :, None] + torch.arange(PER_BAND, device=keys.device)  # (U, B, R)
        slot = slot.clamp_(max=all_keys.shape[1] - 1).view(U, -1)
        kept = sorted_keys.gather(1, slot).view(U, N_BANDS, PER_BAND)
        ok = (kept >> _HASH_BITS) == bands[None, :, None]  # a slot past its band's last key is empty
        src = order.gather(1, slot)
        self._keys = torch.where(ok, kept, EMPTY_KEY)
        self.positions = torch.where(ok, all_positions.gather(1, src).view_as(kept), -1)
        self.values = torch.where(ok, all_values.gather(1, src).view_as(kept), float("nan"))

    def arrays(self) -> dict[str, np.ndarray]:
        """band_positions (U, B, R) int64 (-1: empty) and band_values (U, B, R) float32 (NaN: empty),
        each band's examples by increasing hash."""
        self._flush()
        return {"band_positions": self.positions.cpu().numpy().astype(np.int64),
                "band_values": self.values.cpu().numpy().astype(np.float32)}

    def merge(self, other: ActivationBands) -> None:
        self._flush()
        other._flush()
        U = self.values.shape[0]
        self._keep(other._keys.reshape(U, -1), other.values.reshape(U, -1), other.positions.reshape(U, -1))

    def state(self) -> dict[str, torch.Tensor]:
        self._flush()
        return {"positions": self.positions, "values": self.values}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.positions, self.values = state["positions"], state["values"]
        self._n_waiting = 0
        self._keys = self._key(self.values, self.positions)
