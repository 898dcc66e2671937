"""Shared test setup: offline hub, isolated cache, shared corpora, fixed seeds."""

from __future__ import annotations

import os
import random
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import tqdm

# ../shared/corpora beside the project (see ../shared/corpora/README.md); never copied in here.
SHARED_CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"

# tqdm's default lock is a multiprocessing semaphore, shared by every process forked after it exists:
# a forked child killed while holding it (`make mutation` forks one child per mutant and kills the
# ones past their time limit) left it held, and every later child hung at its next progress bar.
# A thread lock is private to each process.
tqdm.tqdm.set_lock(threading.RLock())

# huggingface_hub reads these when first imported, so set them before any test module imports it.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def _isolated_env(request, monkeypatch, tmp_path_factory):
    """Offline hub, a fresh MAXACT_CACHE (except for integration tests), MAXACT_DATA, seeds."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    # Integration tests keep the user's cache, so the dequantized model is reused between runs.
    if request.node.get_closest_marker("integration") is None:
        monkeypatch.setenv("MAXACT_CACHE", str(tmp_path_factory.mktemp("cache")))
    if "MAXACT_DATA" not in os.environ and SHARED_CORPORA.is_dir():
        monkeypatch.setenv("MAXACT_DATA", str(SHARED_CORPORA))
    random.seed(0)
    np.random.seed(0)
    if "torch" in sys.modules:  # seed torch only where a test module imported it (import is slow)
        sys.modules["torch"].manual_seed(0)


@pytest.fixture(scope="session")
def shared_corpora() -> Path:
    """The shared corpora folder; skips the test when it is absent."""
    if not SHARED_CORPORA.is_dir():
        pytest.skip(f"shared corpora not found at {SHARED_CORPORA}")
    return SHARED_CORPORA


@pytest.fixture(autouse=True)
def _derived_sites_isolated():
    """Derived sites (--directions, --sae, an atlas's manifest) register themselves in process-wide
    tables (units.SITE_KINDS, dictionaries._LOADED); each test leaves those tables as it found them,
    so no test sees another's names (in messages listing the valid sites, for instance)."""
    from maxact.units import SITE_KINDS

    kinds = dict(SITE_KINDS)
    loaded_module = sys.modules.get("maxact.dictionaries")
    loaded = dict(loaded_module._LOADED) if loaded_module is not None else None
    yield
    SITE_KINDS.clear()
    SITE_KINDS.update(kinds)
    module = sys.modules.get("maxact.dictionaries")
    if module is not None:
        module._LOADED.clear()
        module._LOADED.update(loaded or {})
