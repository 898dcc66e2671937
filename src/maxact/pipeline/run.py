"""Plan and run a pass (the whole corpus or one shard of it), checkpointing as it goes and resuming
from a checkpoint when asked."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from maxact.config import AtlasConfig
from maxact.corpus import TokenSource
from maxact.engine.runner import AtlasRun
from maxact.errors import MaxactError
from maxact.fsio import write_json_atomic
from maxact.pipeline.outdir import save_state
from maxact.pipeline.partial import RunTiming
from maxact.store import format as F


def _load_checkpoint(run: AtlasRun, ckpt: Path, run_dir: Path) -> None:
    try:
        with warnings.catch_warnings():  # torch warns about odd pickle protocols before it fails
            warnings.simplefilter("ignore")
            state = torch.load(ckpt, weights_only=True, map_location=run.config.device)
    except Exception as e:  # noqa: BLE001 - an empty, cut or foreign file is a corrupt checkpoint
        raise MaxactError(f"{ckpt} is corrupt or empty ({type(e).__name__}); start over with --overwrite") from None
    if not isinstance(state, dict):
        raise MaxactError(f"{ckpt} is not a maxact checkpoint; start over with --overwrite")
    try:
        run.load_state(state, f"the checkpoint in {run_dir}")
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise MaxactError(f"{ckpt} is corrupt ({type(e).__name__}: {e}); start over with --overwrite") from None


def run_pass(lm, source: TokenSource, config: AtlasConfig, run_dir: Path, *, resume: bool, checkpoint_s: float,
             progress: bool, echo, on_progress: Callable[[int], None] | None = None) -> tuple[AtlasRun, RunTiming]:
    """Run (or finish) the pass over ``config``'s windows; checkpoints go to run_dir. on_progress:
    see AtlasRun.run."""
    run = AtlasRun(lm, source, config)
    ckpt = run_dir / F.CHECKPOINT
    if resume and ckpt.exists():
        _load_checkpoint(run, ckpt, run_dir)
        echo(f"resuming after batch {run.cursor} of {len(run.plan.batches)}")
    elif resume:
        echo("no checkpoint to resume from: starting from the beginning")
    write_json_atomic(run_dir / F.CONFIG, config.to_json())
    t0 = time.perf_counter()
    run.run(on_checkpoint=lambda state: save_state(state, ckpt), checkpoint_s=checkpoint_s, progress=progress,
            on_progress=on_progress)
    return run, RunTiming.measured(time.perf_counter() - t0, run.plan.n_tokens())
