"""Exact, total order on (value, position) packed into one int64.

A float32 is mapped to an int32 whose signed order is the float order (-0.0 counts as +0.0); the
high 32 bits hold that, the low 32 bits hold ``POS_LIMIT - 1 - position``, so between equal values
the earlier position ranks higher. ``topk`` on these keys is therefore deterministic and exact,
with no tie left to chance: streaming, sharded and brute-force runs give the same lists.
Positions must be below 2**32 (4 G tokens).
"""

from __future__ import annotations

import torch

POS_LIMIT = 1 << 32
EMPTY = torch.iinfo(torch.int64).min  # an empty slot ranks below every real key
_LOW = POS_LIMIT - 1


def order_bits(values: torch.Tensor) -> torch.Tensor:
    """float32 -> int32 whose signed order is the float order."""
    b = values.contiguous().view(torch.int32)
    return b ^ ((b >> 31) & 0x7FFFFFFF)


def from_order_bits(bits: torch.Tensor) -> torch.Tensor:
    """Inverse of order_bits."""
    b = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return b.view(torch.float32)


def pack(values: torch.Tensor, positions: torch.Tensor, largest: bool) -> torch.Tensor:
    """Keys whose descending order is: value (desc if largest else asc), then position asc.

    values: (..., ) float32; positions: broadcastable int64 -> (...) int64.
    """
    bits = order_bits(values.float() + 0.0)  # + 0.0 turns -0.0 into +0.0: zeros tie
    if not largest:
        bits = ~bits  # reverses the signed order exactly (no overflow)
    return (bits.to(torch.int64) << 32) | (_LOW - positions)


def unpack(keys: torch.Tensor, largest: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """keys (...) int64 -> (values float32 (...), positions int64 (...)); EMPTY -> (nan, -1)."""
    bits = (keys >> 32).to(torch.int32)
    if not largest:
        bits = ~bits
    values = from_order_bits(bits)
    positions = _LOW - (keys & _LOW)
    empty = keys == EMPTY
    return values.masked_fill(empty, float("nan")), positions.masked_fill(empty, -1)
