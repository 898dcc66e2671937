"""Where maxact keeps things on the user's machine."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$MAXACT_CACHE, else $XDG_CACHE_HOME/maxact, else ~/.cache/maxact."""
    if os.environ.get("MAXACT_CACHE"):
        return Path(os.environ["MAXACT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "maxact"
