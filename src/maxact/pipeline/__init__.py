"""The stages of making an atlas, as functions (docs/DEVELOPING.md, "Data flow"): plan and run a
pass or one shard of it (run.py), fold shard partials two at a time (merge.py), finalize once
(finalize.py: tuning means, reference statistic, logit effects, token texts) and write through the
store (store/writer.py). build.py and merge.py are the entry points of `maxact atlas` and `maxact merge`."""

from maxact.pipeline.build import build_atlas
from maxact.pipeline.merge import merge_partials
from maxact.pipeline.outdir import check_out
from maxact.pipeline.partial import RunTiming

__all__ = ["build_atlas", "check_out", "merge_partials", "RunTiming"]
