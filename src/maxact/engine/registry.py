"""The statistics every atlas accumulator keeps, by name (docs/DEVELOPING.md, "Add a statistic").

Adding a statistic: one module with a class that follows engine/statistic.py's protocol, one
``register_statistic`` line here, its file names in store/format.py. Its name keys its state in
checkpoints and partials; its ``arrays()`` go into the atlas under the names they give.
"""

from __future__ import annotations

from collections.abc import Callable

from maxact.engine.bands import ActivationBands
from maxact.engine.moments import StreamingMoments
from maxact.engine.statistic import Statistic, StatisticSettings
from maxact.engine.topk import StreamingTopK
from maxact.engine.tuning import TokenTuning

StatisticFactory = Callable[[int, StatisticSettings, str], Statistic]  # (units, settings, device)
STATISTICS: dict[str, StatisticFactory] = {}  # name -> factory, in registration order


def register_statistic(name: str, make: StatisticFactory) -> None:
    """Add a statistic to every accumulator made from now on (its name keys its state and arrays)."""
    if name in STATISTICS:
        raise ValueError(f"a statistic named {name!r} is already registered")
    STATISTICS[name] = make


def _extremes(name: str, largest: bool, at_window_start: bool) -> StatisticFactory:
    def make(width: int, s: StatisticSettings, device: str) -> StreamingTopK:
        k_ctx = 0 if at_window_start else s.k_ctx
        return StreamingTopK(width, s.k, k_ctx, largest, name=name, at_window_start=at_window_start,
                             device=device)
    return make


register_statistic("top", _extremes("top", largest=True, at_window_start=False))
register_statistic("bottom", _extremes("bottom", largest=False, at_window_start=False))
register_statistic("top0", _extremes("top0", largest=True, at_window_start=True))
register_statistic("bottom0", _extremes("bottom0", largest=False, at_window_start=True))
register_statistic("moments", lambda width, s, device: StreamingMoments(width, device=device))
register_statistic("tuning", lambda width, s, device: TokenTuning(width, s.n_types, device=device))
register_statistic("bands", lambda width, s, device: ActivationBands(width, s.seed, device=device))
