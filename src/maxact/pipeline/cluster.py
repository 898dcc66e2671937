"""`maxact atlas --ray [ADDRESS] --shards N`: the N shards of one atlas run as Ray tasks, merged by a
tree reduction, finalized once (docs/DEVELOPING.md, "A run on a Ray cluster").

The driver (this process) holds the model on the CPU and the token source. It puts the source in
Ray's object store once; each shard task loads the model on its own device (one GPU per task where
the cluster has GPUs), runs `build_atlas` for its shard into a folder of the work directory
(OUT/.run/ray), checkpointing as it goes, and reports its tokens done to a progress actor that the
driver's one progress bar reads. Adjacent partials are merged in pairs by `merge_pair` tasks as soon
as both exist (two partials in memory per task), and the last partial is finalized here by
`merge_partials`, with the driver's model and tokens.

A task whose worker dies is run again (RAY.max_retries times), from its shard's last checkpoint; a
task that fails with a MaxactError is not, and its message is shown. Finished shard partials stay in
the work directory until the atlas is written, so the same command run again after a crash or a
kill reuses them. Ray is imported here only, and only when a run asks for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

from tqdm.auto import tqdm

from maxact.config import CHECKPOINT_EVERY_S, RAY, AtlasConfig
from maxact.corpus import TokenSource
from maxact.engine.plan import WindowPlan
from maxact.engine.runner import tokens_sha256
from maxact.errors import MaxactError
from maxact.pipeline.build import build_atlas
from maxact.pipeline.merge import ModelLoader, merge_pair, merge_partials
from maxact.pipeline.outdir import check_out
from maxact.pipeline.partial import RunTiming, config_from_json, read_partial_info
from maxact.store import format as F
from maxact.windows import require_tokens

WORK_DIR = "ray"  # inside OUT/.run: the shard partials and merges of a Ray run


@dataclass(frozen=True)
class RayCluster:
    """Where and how wide `maxact atlas --ray` runs."""

    address: str = RAY.local  # RAY.local (start one here), or "auto", "HOST:PORT", "ray://HOST:PORT"
    shards: int | None = None  # None: one per GPU of the cluster, else one per CPU (at most one per window)
    device: str | None = None  # None: "cuda" (one GPU per task) where the cluster has GPUs, else "cpu"


@dataclass(frozen=True)
class ShardJob:
    """What one shard task runs: ``config`` has its shard (i, n) and the task's device."""

    config: AtlasConfig
    folder: Path  # where its partial (and, while it runs, its checkpoint) goes
    checkpoint_s: float
    trust_remote_code: bool
    load_model: ModelLoader | None  # (name, device) -> LoadedModel; None: maxact.models.loading.load_model


@dataclass(frozen=True)
class _Node:
    """A partial of the reduction tree: the shards [lo, hi) it covers, and its folder or the Ray
    reference of the task that returns its folder."""

    shards: tuple[int, int]
    result: object  # str (a finished partial's folder) or ray.ObjectRef
    folder: Path


class _Task(NamedTuple):
    """A submitted task, as the driver waits for it."""

    what: str  # how an error names it
    consumes: list[Path]  # intermediate merge folders it folds in, removed once it has succeeded
    is_shard: bool  # a shard task (long); else a merge task (short, or failing at once with its input)


class ProgressBoard:
    """Tokens done per shard, as its task last reported them (a Ray actor during a run: a retried
    task reports again from its checkpoint, so a shard is never counted twice)."""

    def __init__(self):
        self.done: dict[int, int] = {}

    def report(self, shard: int, tokens: int) -> None:
        self.done[shard] = tokens

    def total(self) -> int:
        return sum(self.done.values())


def shard_folder(out: Path, shard: int, n_shards: int) -> Path:
    """The work folder of shard ``shard`` of ``n_shards`` of a Ray run into ``out``."""
    return Path(out) / F.RUN_DIR / WORK_DIR / f"shard-{shard}-of-{n_shards}"


def build_atlas_on_ray(lm, source: TokenSource, config: AtlasConfig, out: Path, cluster: RayCluster, *,
                       overwrite: bool = False, checkpoint_s: float = CHECKPOINT_EVERY_S,
                       trust_remote_code: bool = False, load_model: ModelLoader | None = None,
                       progress: bool = True, echo=print) -> RunTiming:
    """The atlas of ``config`` over ``source``, run as shards on Ray and written to ``out``: the same
    arrays as build_atlas in one process (the exact ones byte for byte, the moments to float
    rounding). ``lm`` (on the CPU) is used to plan and to finalize; the tasks load ``config.model``
    themselves (``load_model``, default maxact.models.loading.load_model). Finished shard partials
    of an earlier run into ``out`` are reused (no --resume needed); ``overwrite`` starts over.
    Returns the wall time of the whole run and the tokens of every shard."""
    out = Path(out)
    refuse_shard(config.shard)
    if (out / F.RUN_DIR / F.CHECKPOINT).exists() and not overwrite:
        raise MaxactError(f"{out} holds an interrupted run of one process; continue it without --ray (with --resume), "
                          f"or start over with --overwrite")
    check_out(out, resume=True, overwrite=overwrite)  # a Ray run continues from its finished shards anyway
    source = source.head(config.max_tokens)
    require_tokens(len(source), config.seq, f"corpus {source.name!r}")
    work = out / F.RUN_DIR / WORK_DIR
    if overwrite:
        shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    with ray_connection(cluster.address) as ray:
        resources = ray.cluster_resources()
        device, gpus_per_task = _task_device(cluster, resources)
        n_windows = len(WindowPlan.for_atlas(lm, source, config).starts)
        n = _shard_count(cluster, resources, gpus_per_task, n_windows, config.seq)
        jobs = [ShardJob(replace(config, shard=(i, n), device=device), shard_folder(out, i, n), checkpoint_s,
                         trust_remote_code, load_model) for i in range(n)]
        totals = [WindowPlan.for_atlas(lm, source, job.config).n_tokens() for job in jobs]
        sha = tokens_sha256(source)
        finished = [_finished(job, sha, out) for job in jobs]
        if any(finished):
            echo(f"reusing {sum(finished)} finished shards of {n} in {work}")
        final = _run_tree(ray, jobs, finished, totals, source, gpus_per_task, progress)
    merge_partials([final], out, overwrite=overwrite, echo=echo, load_model=lambda *_: lm,
                   load_source=lambda *_: source)
    shutil.rmtree(out / F.RUN_DIR, ignore_errors=True)
    return RunTiming.measured(time.perf_counter() - t0, sum(totals))


def refuse_shard(shard: tuple[int, int] | None) -> None:
    """--ray with --shard i/N: refused (a Ray run makes every shard itself)."""
    if shard is not None:
        raise MaxactError(f"--ray runs every shard itself: drop --shard {shard[0]}/{shard[1]} (or drop --ray to "
                          f"run that one slice in this process)")


# ---- connecting and sizing ---------------------------------------------------------------------
def _import_ray():
    try:
        import ray
    except ImportError:
        raise MaxactError("--ray needs Ray, which is not installed here: pip install 'maxact[ray]'") from None
    return ray


@contextlib.contextmanager
def ray_connection(address: str) -> Iterator:
    """Ray, started here (``RAY.local``: CPUs bounded, no dashboard, quiet) or joined at ``address``,
    and shut down on leaving; a Ray already initialized (by the calling program, or by an enclosing
    ray_connection) is used as it is and left running. Yields the ray module."""
    ray = _import_ray()
    if ray.is_initialized():
        yield ray
        return
    try:
        if address == RAY.local:
            ray.init(address=RAY.local, num_cpus=min(os.cpu_count() or 1, RAY.max_local_cpus), include_dashboard=False,
                     log_to_driver=False, logging_level=logging.ERROR)
        else:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    except ConnectionError as e:
        raise MaxactError(f"--ray {address}: no Ray cluster answers there ({e}); start one with `ray start --head`, "
                          f"or give --ray alone for a local instance") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _task_device(cluster: RayCluster, resources: dict) -> tuple[str, int]:
    """The device of each shard task and the GPUs it asks Ray for."""
    gpus = int(resources.get("GPU", 0))
    device = cluster.device if cluster.device is not None else ("cuda" if gpus else "cpu")
    if not device.startswith("cuda"):
        return device, 0
    if not gpus:
        raise MaxactError(f"--device {device}: the Ray cluster has no GPUs; leave --device out to run the shards "
                          f"on its CPUs")
    return "cuda", 1  # Ray gives each task one GPU, which it sees as cuda


def _shard_count(cluster: RayCluster, resources: dict, gpus_per_task: int, n_windows: int, seq: int) -> int:
    if cluster.shards is None:
        workers = int(resources.get("GPU" if gpus_per_task else "CPU", 1))
        return max(1, min(workers, n_windows))
    if cluster.shards > n_windows:
        raise MaxactError(f"--shards {cluster.shards}: the corpus has only {n_windows} windows of --seq {seq}; "
                          f"give at most {n_windows}")
    return cluster.shards


def _same_options(a: AtlasConfig, b: AtlasConfig) -> bool:
    return config_from_json(a.to_json()).comparable() == config_from_json(b.to_json()).comparable()


def _finished(job: ShardJob, sha: str, out: Path) -> bool:
    """Whether the shard's partial is already there (from an earlier run of the same command)."""
    info = read_partial_info(job.folder)
    if info is None:
        return False
    if info.shard != job.config.shard or info.tokens_sha256 != sha or not _same_options(info.config, job.config):
        raise MaxactError(f"{out} holds the shards of an interrupted Ray run made with other options or another "
                          f"corpus ({job.folder.name}); repeat those options, or start over with --overwrite")
    return True


# ---- the tasks (run in Ray workers) --------------------------------------------------------------
class _Reporter:
    """on_progress of a shard task: tokens done, sent to the board at most every RAY.report_every_s."""

    def __init__(self, board, shard: int):
        self.board, self.shard, self.last = board, shard, 0.0

    def __call__(self, tokens: int) -> None:
        now = time.monotonic()
        if now - self.last >= RAY.report_every_s:
            self.board.report.remote(self.shard, tokens)
            self.last = now


def run_shard(job: ShardJob, source: TokenSource, board) -> str:
    """A shard task: its partial into job.folder (resuming from its checkpoint after a worker died;
    nothing to do when a previous attempt finished it). Returns the folder."""
    import ray

    i = job.config.shard[0]
    info = read_partial_info(job.folder)
    if info is None:
        if job.load_model is not None:
            lm = job.load_model(job.config.model, job.config.device)
        else:
            from maxact.models.loading import load_model

            lm = load_model(job.config.model, device=job.config.device, trust_remote_code=job.trust_remote_code)
        build_atlas(lm, source, job.config, job.folder, resume=True, checkpoint_s=job.checkpoint_s, progress=False,
                    echo=lambda message: None, on_progress=_Reporter(board, i))
        info = read_partial_info(job.folder)
    ray.get(board.report.remote(i, info.timing.tokens))  # the last report lands before the task ends
    return str(job.folder)


def merge_task(first: str, second: str, folder: str) -> str:
    """A merge task: the partials in ``first`` and ``second`` folded into one in ``folder``."""
    merge_pair(Path(first), Path(second), Path(folder))
    return folder


# ---- the driver's side of the run ----------------------------------------------------------------
def _run_tree(ray, jobs: list[ShardJob], finished: list[bool], totals: list[int], source: TokenSource,
              gpus_per_task: int, progress: bool) -> Path:
    """Submit the unfinished shards and the merges of adjacent pairs, wait with one progress bar;
    returns the folder of the partial that covers every shard."""
    n = len(jobs)
    shard_remote = ray.remote(run_shard).options(num_cpus=1, num_gpus=gpus_per_task, max_retries=RAY.max_retries,
                                                 retry_exceptions=False)
    merge_remote = ray.remote(merge_task).options(num_cpus=1, max_retries=RAY.max_retries, retry_exceptions=False)
    board = ray.remote(num_cpus=0)(ProgressBoard).remote()
    source_ref = ray.put(source)
    tasks: dict[object, _Task] = {}  # by Ray reference
    level = []
    for i, job in enumerate(jobs):
        if finished[i]:
            board.report.remote(i, totals[i])
            level.append(_Node((i, i + 1), str(job.folder), job.folder))
        else:
            ref = shard_remote.remote(job, source_ref, board)
            tasks[ref] = _Task(f"shard {i}/{n}", [], is_shard=True)
            level.append(_Node((i, i + 1), ref, job.folder))
    while len(level) > 1:
        merged = []
        for a, b in zip(level[0::2], level[1::2]):
            lo, hi = a.shards[0], b.shards[1]
            folder = jobs[0].folder.parent / f"merge-{lo}-{hi}-of-{n}"
            ref = merge_remote.remote(a.result, b.result, str(folder))
            inputs = [node.folder for node in (a, b) if node.shards[1] - node.shards[0] > 1]
            tasks[ref] = _Task(f"the merge of shards {lo}..{hi - 1}", inputs, is_shard=False)
            merged.append(_Node((lo, hi), ref, folder))
        level = merged + level[len(level) - len(level) % 2 :]
    bar = tqdm(total=sum(totals), unit="tok", unit_scale=True, desc=f"atlas ({n} shards on Ray)",
               disable=not progress, smoothing=0.1)
    try:
        _wait(ray, tasks, board, bar)
    finally:
        bar.close()
    return level[0].folder


def _wait(ray, tasks: dict[object, _Task], board, bar) -> None:
    """Wait for every task, redrawing the bar; the first failure (or Ctrl-C) stops the shards still
    running and is raised as one line naming the task.

    Only shard tasks not yet done are cancelled. Ray 2.60 aborts the driver process ("Check failed:
    it != submissible_tasks_.end() Tried to complete task that was not pending", a race between a
    cancel and the task's reply, of the kind ray-project/ray PR 54798 fixed for retries) when a
    cancel meets a task's reply in flight. A merge whose input just failed is such a task (Ray pushes
    it at once, to fail), so merges are left to end by themselves: they fail with their cancelled or
    failed input, or fold two finished shards, which is harmless."""
    pending = dict(tasks)
    try:
        while pending:
            ready = set(ray.wait(list(pending), num_returns=len(pending), timeout=RAY.report_every_s)[0])
            for ref in [r for r in pending if r in ready]:  # shards before the merges that need them
                task = pending.pop(ref)
                _result(ray, ref, task.what)
                for folder in task.consumes:  # an intermediate merge, folded into the next one
                    shutil.rmtree(folder, ignore_errors=True)
            bar.n = ray.get(board.total.remote())
            bar.refresh()
    except BaseException:
        shards = [ref for ref, task in pending.items() if task.is_shard]
        done = set(ray.wait(shards, num_returns=len(shards), timeout=0)[0]) if shards else set()
        for ref in shards:
            if ref not in done:
                ray.cancel(ref, force=True)
        raise


def _result(ray, ref, what: str) -> None:
    """Raise a task's failure as one line naming ``what``."""
    try:
        ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, MaxactError):
            raise MaxactError(f"{what}: {e.cause}") from None
        raise
    except ray.exceptions.RayError as e:  # its worker died on every try
        raise MaxactError(f"{what}: its Ray worker died {RAY.max_retries + 1} times ({type(e).__name__}); see the "
                          f"Ray logs (on a GPU, often memory), then run the same command again: finished shards "
                          f"are kept") from None
