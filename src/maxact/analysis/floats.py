"""The one float formatter of the JSON that pages, overviews and searches produce (numpy only)."""

from __future__ import annotations

import math


def json_float(x) -> float | None:
    """``x`` as a Python float, or None where it is NaN or infinite (JSON has no such numbers)."""
    x = float(x)
    return x if math.isfinite(x) else None
