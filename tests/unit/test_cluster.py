"""`maxact atlas --ray`: the shards as Ray tasks give the atlas of one run (the exact arrays byte for
byte, the moments to float rounding), also when a worker dies mid-run; a rerun reuses the finished
shards; a MaxactError is not retried; adjacent partials merge into one partial (the tree reduction).

One local Ray instance with 2 CPUs serves the whole module; models are tiny random-weight folders.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import ray
from atlas_helpers import (
    build_tiny_atlas,
    error_line,
    merge_tiny_partials,
    run_cli,
    save_tiny_folder,
    single_thread,
    synthetic_source,
    word_tokens,
    write_word_corpus,
)
from merge_check import assert_same_result

from maxact.config import AtlasConfig
from maxact.errors import MaxactError
from maxact.models.loading import load_model
from maxact.pipeline import build_atlas
from maxact.pipeline.cluster import RayCluster, _Task, _wait, build_atlas_on_ray, shard_folder
from maxact.pipeline.merge import merge_pair
from maxact.pipeline.partial import read_partial_info
from maxact.store import format as F
from maxact.store.reader import Atlas

SEQ, N_WORDS = 16, 1200  # 75 windows


@pytest.fixture(scope="module")
def ray_cpus():
    """A local Ray instance with 2 CPUs; this module's functions travel to the workers by value."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_folder(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="module")
def lm(folder):
    return load_model(folder)


@pytest.fixture(scope="module")
def source():
    return synthetic_source(word_tokens(N_WORDS, seed=1))


@pytest.fixture(scope="module")
def config(folder):
    return AtlasConfig(model=folder, corpus="synthetic", seq=SEQ, sites=("resid_pre", "mlp_post", "attn_v", "ln_final"),
                       k=8, k_ctx=4, max_types=40, windows_per_batch=2, ref_samples=200)


@pytest.fixture(scope="module")
def one_run(lm, source, config, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "atlas"
    with single_thread():
        build_atlas(lm, source, config, out, progress=False, echo=lambda m: None)
    return out




def loader(loads: Path, dies: Path | None = None):
    """A task's model loader that notes each load in ``loads``; with ``dies``, the first worker to
    start a second batch (anywhere) writes that file and exits on the spot, as a killed worker.
    Never the test process itself (the driver), should it load the model through this loader."""
    driver = os.getpid()

    def load(name: str, device: str):
        from maxact.models.loading import load_model

        with open(loads, "a") as f:
            f.write(f"{os.getpid()}\n")
        lm = load_model(name, device=device)
        if dies is not None:
            batches = []

            def die_on_second_batch(module, args):
                batches.append(1)
                if len(batches) == 2 and os.getpid() != driver and not dies.exists():
                    dies.write_text(str(os.getpid()))
                    os._exit(1)

            lm.adapter.base_model().register_forward_pre_hook(die_on_second_batch)
        return lm

    return load


def n_loads(loads: Path) -> int:
    return len(loads.read_text().splitlines()) if loads.exists() else 0


# =================================================================================================
def test_ray_run_equals_one_run_when_a_worker_dies_mid_run(ray_cpus, lm, source, config, one_run, tmp_path, capfd):
    out, loads, died = tmp_path / "atlas", tmp_path / "loads.txt", tmp_path / "died"
    timing = build_atlas_on_ray(lm, source, config, out, RayCluster(shards=3), checkpoint_s=0,
                                load_model=loader(loads, dies=died), echo=lambda m: None)
    assert died.exists() and n_loads(loads) == 3 + 1  # one worker died mid-shard; its task ran again
    assert_same_result(one_run, out)
    atlas = Atlas(out)
    assert atlas.manifest.merged_from == 3 and atlas.manifest.windows == [[0, N_WORDS // SEQ]]
    assert timing.tokens == N_WORDS and not (out / F.RUN_DIR).exists()
    bar = capfd.readouterr().err.replace("\r", "\n").splitlines()
    assert any("atlas (3 shards on Ray)" in line and "100%" in line for line in bar)  # every shard's tokens counted


def test_rerun_reuses_finished_shards_and_a_maxact_error_is_not_retried(ray_cpus, lm, source, config, one_run,
                                                                        tmp_path):
    out, loads = tmp_path / "atlas", tmp_path / "loads.txt"
    # a run that stopped: shard 0 of 2 finished; shard 1 left a checkpoint cut short
    with single_thread():
        build_atlas(lm, source, replace(config, shard=(0, 2)), shard_folder(out, 0, 2), progress=False,
                    echo=lambda m: None)
    ckpt = shard_folder(out, 1, 2) / F.RUN_DIR / F.CHECKPOINT
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"\x80cut")
    messages = []
    with pytest.raises(MaxactError) as e:
        build_atlas_on_ray(lm, source, config, out, RayCluster(shards=2), load_model=loader(loads),
                           progress=False, echo=messages.append)
    assert str(e.value).startswith("shard 1/2: ") and "corrupt" in str(e.value) and "\n" not in str(e.value)
    assert messages == [f"reusing 1 finished shards of 2 in {out / F.RUN_DIR / 'ray'}"]
    assert n_loads(loads) == 1  # shard 0 reused; shard 1 tried once, not retried

    # other options over the same shards: refused, nothing run
    with pytest.raises(MaxactError, match="other options or another corpus .*--overwrite"):
        build_atlas_on_ray(lm, source, replace(config, k=4), out, RayCluster(shards=2), load_model=loader(loads),
                           progress=False, echo=lambda m: None)
    assert n_loads(loads) == 1

    ckpt.unlink()
    build_atlas_on_ray(lm, source, config, out, RayCluster(shards=2), load_model=loader(loads), progress=False,
                       echo=lambda m: None)
    assert n_loads(loads) == 2  # only shard 1 ran
    assert_same_result(one_run, out)
    assert Atlas(out).manifest.merged_from == 2


def test_cli_ray_with_default_shards_equals_one_run(ray_cpus, folder, tmp_path):
    corpus = write_word_corpus(tmp_path / "words.txt", 600, seed=3)
    args = ["atlas", "--model", folder, "--corpus", corpus, "--seq", SEQ, "--k", "8", "--sites", "resid_pre,mlp_post",
            "--windows-per-batch", "2", "--max-types", "40", "--ref-samples", "200"]
    with single_thread():
        assert run_cli(*args, "--out", tmp_path / "one").exit_code == 0
    result = run_cli(*args, "--out", tmp_path / "ray", "--ray")
    assert result.exit_code == 0, (result.output, result.exception)
    assert "wrote atlas" in result.stdout and "600 tokens" in result.stdout
    assert_same_result(tmp_path / "one", tmp_path / "ray")
    assert Atlas(tmp_path / "ray").manifest.merged_from == 2  # one shard per CPU of the instance
    line = error_line(run_cli(*args, "--out", tmp_path / "many", "--ray", "--shards", "50"))
    assert "--shards 50" in line and "only 38 windows" in line


def test_cli_refuses_shards_without_ray_and_ray_with_shard(tmp_path):
    line = error_line(run_cli("atlas", "--out", tmp_path / "a", "--shards", "2"))
    assert "--shards 2 needs --ray" in line and "--shard i/N" in line
    line = error_line(run_cli("atlas", "--out", tmp_path / "a", "--ray", "--shard", "1/4"))
    assert "--ray runs every shard itself" in line and "--shard 1/4" in line
    assert not (tmp_path / "a").exists()


class _RayAtFailure:
    """Ray as `_wait` sees it when one shard fails: ``done`` answer ray.wait, "bad" fails in ray.get,
    and every ray.cancel is noted."""

    exceptions = ray.exceptions

    def __init__(self, done: set[str]):
        self.done, self.cancelled = done, []

    def wait(self, refs, num_returns, timeout):
        ready = [r for r in refs if r in self.done]
        return ready, [r for r in refs if r not in self.done]

    def get(self, ref):
        if ref == "bad":
            raise RuntimeError("shard 1 failed")

    def cancel(self, ref, force):
        self.cancelled.append((ref, force))


def test_a_failure_cancels_only_the_shards_still_running():
    """A merge is never cancelled (Ray 2.60 aborts the driver when a cancel meets the reply of a merge
    failing with its input), nor a shard already done; the shards still running are, by force."""
    tasks = {"bad": _Task("shard 1/4", [], is_shard=True), "done": _Task("shard 0/4", [], is_shard=True),
             "running": _Task("shard 2/4", [], is_shard=True), "queued": _Task("shard 3/4", [], is_shard=True),
             "merge01": _Task("the merge of shards 0..1", [], is_shard=False),
             "merge23": _Task("the merge of shards 2..3", [], is_shard=False)}
    fake = _RayAtFailure(done={"bad", "done"})
    with pytest.raises(RuntimeError, match="shard 1 failed"):
        _wait(fake, tasks, board=None, bar=None)
    assert sorted(fake.cancelled) == [("queued", True), ("running", True)]


def test_merge_pair_folds_adjacent_partials_into_one_partial(tmp_path):
    common = dict(n_tokens=500, seq=16, sites=("resid_pre", "mlp_post"), windows_per_batch=2)
    parts = [tmp_path / f"s{i}" for i in range(3)]
    for i, d in enumerate(parts):
        build_tiny_atlas(d, shard=(i, 3), **common)
    with pytest.raises(MaxactError, match="do not meet.*maxact merge"):
        merge_pair(parts[0], parts[2], tmp_path / "gap")
    merge_pair(parts[1], parts[0], tmp_path / "m01")  # either order
    info = read_partial_info(tmp_path / "m01")
    assert info.shard is None and info.window_range == (0, read_partial_info(parts[1]).window_range[1])
    merge_tiny_partials([tmp_path / "m01", parts[2]], tmp_path / "tree", n_tokens=500)
    merge_tiny_partials(parts, tmp_path / "fold", n_tokens=500)
    assert_same_result(tmp_path / "fold", tmp_path / "tree")
    assert Atlas(tmp_path / "tree").manifest.merged_from == 3


def test_ray_refuses_to_take_over_an_interrupted_run_of_one_process(lm, source, config, tmp_path):
    ckpt = tmp_path / "a" / F.RUN_DIR / F.CHECKPOINT
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"a checkpoint")
    with pytest.raises(MaxactError, match="interrupted run of one process; continue it without --ray"):
        build_atlas_on_ray(lm, source, config, tmp_path / "a", RayCluster(), progress=False, echo=lambda m: None)
    assert ckpt.read_bytes() == b"a checkpoint"


def test_tasks_take_one_gpu_each_where_the_cluster_has_gpus():
    from maxact.pipeline.cluster import _shard_count, _task_device

    gpus, cpus = {"CPU": 16.0, "GPU": 2.0}, {"CPU": 4.0}
    assert _task_device(RayCluster(), gpus) == ("cuda", 1)
    assert _task_device(RayCluster(device="cuda:1"), gpus) == ("cuda", 1)  # the task's one GPU
    assert _task_device(RayCluster(device="cpu"), gpus) == ("cpu", 0)
    assert _task_device(RayCluster(), cpus) == ("cpu", 0)
    with pytest.raises(MaxactError, match="--device cuda: the Ray cluster has no GPUs"):
        _task_device(RayCluster(device="cuda"), cpus)
    assert _shard_count(RayCluster(), gpus, 1, 100, SEQ) == 2  # one per GPU
    assert _shard_count(RayCluster(), gpus, 0, 100, SEQ) == 16  # --device cpu: one per CPU
    assert _shard_count(RayCluster(), cpus, 0, 3, SEQ) == 3  # never more than the windows
    assert _shard_count(RayCluster(shards=5), cpus, 0, 100, SEQ) == 5
