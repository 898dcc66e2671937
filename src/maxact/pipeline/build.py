"""`maxact atlas` as a library call: check the output, run (or resume) the pass, then finalize and
write the atlas, or write the shard's partial."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from maxact.config import CHECKPOINT_EVERY_S, AtlasConfig
from maxact.corpus import TokenSource
from maxact.engine.plan import atlas_windowing
from maxact.pipeline.finalize import finalize, reference_space
from maxact.pipeline.outdir import check_out, cleaned_on_error
from maxact.pipeline.partial import RunTiming, save_partial
from maxact.pipeline.run import run_pass
from maxact.store import format as F
from maxact.store.writer import write_atlas
from maxact.windows import require_starts


def build_atlas(lm, source: TokenSource, config: AtlasConfig, out: Path, *, resume=False, overwrite=False,
                checkpoint_s: float = CHECKPOINT_EVERY_S, progress=True, echo=print,
                on_progress: Callable[[int], None] | None = None) -> RunTiming:
    """Run the pass (resuming if asked), then write the atlas, or the shard's partial. on_progress:
    see AtlasRun.run."""
    out = Path(out)
    check_out(out, resume=resume, overwrite=overwrite)
    source = source.head(config.max_tokens)
    space = reference_space(source, config, atlas_windowing(lm, source, config))
    require_starts(space, config.ref_seq or config.seq, f"corpus {source.name!r}")
    if space.docs_without_window:
        echo(f"note: {space.docs_without_window} of {space.n_docs} documents are too short to hold a reference "
             f"window ({space.length + 1} tokens or more); the reference statistic never draws them")
    run_dir = out / F.RUN_DIR
    if overwrite and not resume:
        shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    with cleaned_on_error(out):
        run, timing = run_pass(lm, source, config, run_dir, resume=resume, checkpoint_s=checkpoint_s,
                               progress=progress, echo=echo, on_progress=on_progress)
        if config.shard is not None:
            save_partial(out, run.state(), config, source.info, timing)
        else:
            atlas = finalize(lm, source, source.info, config, run.refs, run.accumulators(),
                             windows=[0, len(run.plan.starts)], timing=asdict(timing))
            write_atlas(out, atlas.arrays, atlas.manifest, config, atlas.vocab)
    shutil.rmtree(run_dir, ignore_errors=True)
    return timing
