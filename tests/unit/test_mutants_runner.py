"""Checks that kill the mutants `make mutation` left alive in engine/runner.py, engine/plan.py,
engine/bands.py, engine/groups.py, engine/concept.py and engine/context_pass.py in its third round
(issue 13, docs/MUTATION.md; the equivalent ones are listed in /work/notes/mut_M6.md).

The token hash against docs/STORE.md read literally (hashlib on the stream's int32 bytes, then on the
int64 document starts when there are several), a shard's checkpoint resumed into the same shard, the
refusal of a checkpoint over another corpus naming both token counts as the checkpoint recorded them,
group moments folded from a single row against numpy, and activation bands loaded over an
accumulator that still held waiting candidates. Every function under test is called inside its test
(docs/MUTATION.md, "Module-scoped fixtures").
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest
import torch
from atlas_helpers import single_thread, synthetic_source, tiny_tokens
from tiny_models import tiny_loaded

from maxact.capture import capture
from maxact.config import AtlasConfig
from maxact.engine.bands import N_BANDS, PER_BAND, SAMPLE_SHIFT, ActivationBands, position_hash
from maxact.engine.groups import GroupMoments
from maxact.engine.plan import WindowPlan
from maxact.engine.runner import AtlasRun, ordered_refs, tokens_sha256
from maxact.engine.statistic import Batch
from maxact.errors import MaxactError
from maxact.units import SiteRef
from maxact.windows import Windowing


def _config(**changes) -> AtlasConfig:
    base = dict(seq=32, sites=("resid_post",), layers=(1,), k=4, k_ctx=2, max_types=16, windows_per_batch=2)
    return AtlasConfig(**{**base, **changes})


# ---- the token hash (engine/runner.py tokens_sha256) -----------------------------------------------
@pytest.mark.parametrize("doc_starts", [[0], [0, 7], [0, 7, 20]])
def test_tokens_hash_is_the_stream_then_its_document_starts_when_several(doc_starts):
    tokens = tiny_tokens(40, 3)
    source = replace(synthetic_source(tokens), doc_starts=np.array(doc_starts, dtype=np.int64))
    want = hashlib.sha256(tokens.astype(np.int32).tobytes())
    if len(doc_starts) > 1:  # docs/STORE.md: "then of its document starts, when there are several"
        want.update(np.array(doc_starts, dtype=np.int64).tobytes())
    assert tokens_sha256(source) == want.hexdigest()


def test_two_documents_cut_elsewhere_hash_differently():
    tokens = tiny_tokens(40, 3)
    one = replace(synthetic_source(tokens), doc_starts=np.array([0, 7], dtype=np.int64))
    other = replace(one, doc_starts=np.array([0, 8], dtype=np.int64))
    assert tokens_sha256(one) != tokens_sha256(other)


# ---- checkpoints (engine/runner.py AtlasRun.state / load_state) ------------------------------------
def test_a_shard_checkpoint_resumes_into_the_same_shard():
    lm = tiny_loaded("llama")
    source = synthetic_source(tiny_tokens(300, 0))
    cfg = _config(shard=(0, 2))
    with single_thread():
        run = AtlasRun(lm, source, cfg)
        run.run(progress=False, stop_after_batches=1)
        state = run.state()
        assert state["shard"] == (0, 2)
        again = AtlasRun(lm, source, cfg)
        again.load_state(state, "ckpt")
    assert again.cursor == run.cursor == 1


def test_a_checkpoint_over_other_tokens_names_the_count_it_recorded():
    lm = tiny_loaded("llama")
    cfg = _config()
    with single_thread():
        run = AtlasRun(lm, synthetic_source(tiny_tokens(200, 0)), cfg)
        run.run(progress=False, stop_after_batches=1)
        state = run.state()
        assert state["n_tokens"] == 200
        other = AtlasRun(lm, synthetic_source(tiny_tokens(150, 1)), cfg)
        with pytest.raises(MaxactError, match=r"ckpt was made with a different configuration \(the corpus tokens "
                                              r"differ \(200 tokens there, 150 now, or their document starts\)\)"):
            other.load_state(state, "ckpt")


# ---- group moments (engine/groups.py GroupMoments.fold) --------------------------------------------
def test_folding_single_rows_into_empty_groups_gives_numpy_moments():
    rows = np.array([[1.5, -2.0, 4.0], [3.5, 6.0, -1.0]])  # two rows of group 0, none of group 1
    acc = GroupMoments(2, 3)
    for row in rows:  # one row at a time: the first fold has na + nb = 1
        acc.fold(torch.tensor([1, 0]), torch.tensor(np.stack([row, np.zeros(3)])), torch.zeros(2, 3, dtype=torch.float64))
        if acc.count[0] == 1:
            np.testing.assert_array_equal(acc.mean[0].numpy(), rows[0])
            np.testing.assert_array_equal(acc.m2[0].numpy(), np.zeros(3))
    assert acc.count.tolist() == [2, 0]
    np.testing.assert_allclose(acc.mean[0].numpy(), rows.mean(0), rtol=1e-15)
    np.testing.assert_allclose(acc.m2[0].numpy(), ((rows - rows.mean(0)) ** 2).sum(0), rtol=1e-15)
    np.testing.assert_array_equal(acc.mean[1].numpy(), np.zeros(3))  # an empty group stays empty
    np.testing.assert_array_equal(acc.m2[1].numpy(), np.zeros(3))


def test_merging_one_row_into_an_empty_accumulator_gives_that_row():
    one = GroupMoments(1, 2)
    one.add(torch.tensor([[2.5, -7.0]]), torch.tensor([0]))
    empty = GroupMoments(1, 2)
    empty.merge(one)
    assert empty.count.tolist() == [1]
    np.testing.assert_array_equal(empty.mean.numpy(), [[2.5, -7.0]])
    np.testing.assert_array_equal(empty.m2.numpy(), [[0.0, 0.0]])


# ---- activation bands (engine/bands.py ActivationBands.load_state) ---------------------------------
def _candidates(seed: int, n: int) -> np.ndarray:
    """The first n corpus positions that are band candidates for ``seed`` (hash below 2**58)."""
    p = torch.arange(20000, dtype=torch.int64)
    keep = (position_hash(p, seed) >> (64 - SAMPLE_SHIFT)) == 0
    return p[keep][:n].numpy()


def test_loading_a_state_drops_candidates_waiting_from_before():
    seed = 11
    pos = _candidates(seed, 6)
    acts = torch.tensor([[[1.0, -0.5]] * 3, [[0.25, 3.0]] * 3])  # (2, 3, 2): two windows of 3
    used = ActivationBands(2, seed)
    used.update(Batch(acts[:1], torch.as_tensor(pos[:3][None]), None))  # waiting, then flushed by state()
    used.state()
    empty_state = ActivationBands(2, seed).state()
    used.load_state({k: v.clone() for k, v in empty_state.items()})
    assert (used.arrays()["band_positions"] == -1).all()  # nothing of before comes back
    used.update(Batch(acts[1:], torch.as_tensor(pos[3:][None]), None))
    fresh = ActivationBands(2, seed)
    fresh.update(Batch(acts[1:], torch.as_tensor(pos[3:][None]), None))
    for name, want in fresh.arrays().items():
        np.testing.assert_array_equal(used.arrays()[name], want)


# ---- the pass (engine/runner.py AtlasRun.run) ------------------------------------------------------
def _last_bar(err: str) -> str:
    """The bar as last drawn (tqdm redraws it after a carriage return)."""
    return err.replace("\n", "\r").rstrip("\r").split("\r")[-1].strip()


def test_the_progress_bar_counts_corpus_tokens_under_its_label(capsys):
    lm = tiny_loaded("llama")
    source = synthetic_source(tiny_tokens(1100, 4))  # 34 windows of 32 and a tail of 12: 18 batches
    with single_thread():
        run = AtlasRun(lm, source, _config())
        capsys.readouterr()
        run.run()  # progress by default, drawn even when stderr is not a terminal
    bar = _last_bar(capsys.readouterr().err)
    assert bar.startswith("atlas: 100%|"), bar
    assert "| 1.10k/1.10k [" in bar and bar.endswith("tok/s]"), bar


def test_a_resumed_run_reports_progress_from_the_tokens_already_done(capsys):
    lm = tiny_loaded("llama")
    source = synthetic_source(tiny_tokens(1100, 4))
    seen: list[int] = []
    with single_thread():
        first = AtlasRun(lm, source, _config())
        capsys.readouterr()
        first.run(progress=False, stop_after_batches=5)
        again = AtlasRun(lm, source, _config())
        again.load_state(first.state(), "ckpt")
        assert capsys.readouterr().err == ""  # progress=False draws nothing
        again.run(progress=True, on_progress=seen.append)
    plan = again.plan
    assert seen == [plan.n_tokens(plan.batches[: i + 1]) for i in range(5, len(plan.batches))]
    assert seen[0] == 6 * 64 and seen[-1] == 1100
    bar = _last_bar(capsys.readouterr().err)
    assert bar.startswith("atlas: 100%|") and "| 1.10k/1.10k [" in bar, bar


def test_the_progress_bar_shows_a_smoothed_rate(capsys, monkeypatch):
    """tqdm's clock is driven by the batches: 128 tokens in the first second, then 64 tokens every 8 s.
    Between draws the bar shows tqdm's moving average of those intervals (smoothing 0.1), not the
    overall average rate (which only its last, closing draw shows)."""
    import tqdm.std

    now = [0.0]
    monkeypatch.setattr(tqdm.std, "time", lambda: now[0])
    monkeypatch.setattr(tqdm.std.tqdm, "monitor_interval", 0)
    lm = tiny_loaded("llama")
    source = synthetic_source(tiny_tokens(1100, 4))

    def tick(done: int) -> None:  # after batch i, the clock the bar reads at batch i + 1
        now[0] = 1.0 if done == 64 else now[0] + 8.0

    with single_thread():
        run = AtlasRun(lm, source, _config())
        capsys.readouterr()
        run.run(progress=True, on_progress=tick, stop_after_batches=5)
    err = capsys.readouterr().err
    assert err.endswith("]\n")  # a run stopped early closes its bar too
    draws = err.replace("\n", "\r").split("\r")
    at_320 = [d for d in draws if "| 320/1.10k [" in d]
    ema_dn, ema_dt = tqdm.std.EMA(0.1), tqdm.std.EMA(0.1)
    for dn, dt in [(128, 1.0), (64, 8.0), (64, 8.0), (64, 8.0)]:  # the draws at batches 2 to 5
        rate = ema_dn(dn) / ema_dt(dt)
    average = 320 / 25.0
    assert f"{tqdm.std.tqdm.format_sizeof(rate)}tok/s" != f"{tqdm.std.tqdm.format_sizeof(average)}tok/s"
    assert at_320 and at_320[0].strip().endswith(f", {tqdm.std.tqdm.format_sizeof(rate)}tok/s]"), draws


def test_a_checkpoint_is_handed_over_once_the_default_interval_has_passed(monkeypatch):
    """Without checkpoint_s, a run checkpoints every CHECKPOINT_EVERY_S seconds (config.py)."""
    from types import SimpleNamespace

    from maxact.config import CHECKPOINT_EVERY_S
    from maxact.engine import runner as runner_module

    now = [0.0]
    monkeypatch.setattr(runner_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    c = CHECKPOINT_EVERY_S  # the clock after each batch: a checkpoint after batches 2 and 4 only
    after_batch = {1: c, 2: c + 0.25, 3: 2 * c + 0.1, 4: 2 * c + 0.5, 5: 3 * c}  # exactly c: not yet
    lm = tiny_loaded("llama")
    run = AtlasRun(lm, synthetic_source(tiny_tokens(300, 0)), _config())
    cursors: list[int] = []

    def tick(done: int) -> None:
        now[0] = after_batch[run.cursor]

    with single_thread():
        run.run(on_checkpoint=lambda state: cursors.append(state["cursor"]), progress=False,
                on_progress=tick, stop_after_batches=5)
    assert cursors == [2, 4]


def test_with_bos_every_window_is_fed_after_the_models_bos_token():
    lm = tiny_loaded("llama")  # BOS id 0
    tokens = tiny_tokens(100, 5)
    ref = lm.adapter.site_refs(("resid_post",), (1,))[0]
    with single_thread():
        run = AtlasRun(lm, synthetic_source(tokens), _config(bos=True, k=3))
        assert run.plan.windowing.bos_id == 0
        run.run(progress=False)
        values, positions = run.accumulators()[0].statistics["top"].values_positions()
        acts = np.concatenate([
            capture(lm.adapter, torch.from_numpy(np.concatenate([[0], tokens[s : s + n]]).astype(np.int64))[None],
                    [ref])[ref][0, 1:].numpy()
            for s, n in zip(run.plan.starts, run.plan.length)])  # (100, U): position p after its window's BOS
    assert len(run.plan.starts) == 4 and len(acts) == 100
    values, positions = values.numpy(), positions.numpy()
    assert (positions >= 0).all()
    np.testing.assert_allclose(values, np.take_along_axis(acts.T, positions, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fuse_sites", [True, False, None])
def test_fuse_sites_chooses_one_accumulator_for_every_site(fuse_sites):
    lm = tiny_loaded("llama")
    cfg = _config(fuse_sites=fuse_sites, layers=(0, 1))
    run = AtlasRun(lm, synthetic_source(tiny_tokens(100, 0)), cfg)
    fused = fuse_sites is True  # None: fused on CUDA only, and this run is on the CPU
    assert run.fused is fused
    assert hasattr(run, "all") is fused and hasattr(run, "acc") is not fused
    assert [a.statistics["top"].values_positions()[0].shape[0] for a in run.accumulators()] == run.widths


def test_an_empty_stream_read_with_a_tokenizer_makes_a_run_with_nothing_to_do():
    class Tokenizer:  # what the engine reads of a tokenizer: its length and BOS id
        bos_token_id = 0

        def __len__(self) -> int:
            return 97

    lm = replace(tiny_loaded("llama"), tokenizer=Tokenizer())
    run = AtlasRun(lm, synthetic_source(np.zeros(0, dtype=np.int32)), _config())
    assert run.plan.batches == [] and tuple(run.row_of_token.shape) == (97,)
    run.run(progress=False)
    assert run.finished and run.cursor == 0


def test_band_arrays_have_the_store_dtypes():
    """docs/STORE.md: band_positions (U, B, R) int64 (-1: empty), band_values float32 (NaN: empty)."""
    seed = 5
    pos = _candidates(seed, 4)
    acts = torch.tensor([[[0.75, -1.0], [3.0, 0.0], [0.01, 2.0], [-4.0, 0.75]]])  # (1, 4, 2)
    bands = ActivationBands(2, seed)
    bands.update(Batch(acts, torch.as_tensor(pos[None]), None))
    arrays = bands.arrays()
    assert {k: v.dtype for k, v in arrays.items()} == {"band_positions": np.int64, "band_values": np.float32}
    kept = arrays["band_positions"] >= 0
    assert kept.sum() == 8  # every candidate of each unit, in its own band
    values = {int(p): acts[0, i].numpy() for i, p in enumerate(pos)}
    for u, b, r in zip(*np.nonzero(kept)):
        assert arrays["band_values"][u, b, r] == values[int(arrays["band_positions"][u, b, r])][u]
    assert np.isnan(arrays["band_values"][~kept]).all()



# ---- the window plan (engine/plan.py WindowPlan.make) ----------------------------------------------
# five documents of 10, 3, 7, 2 and 1 tokens cut into windows of 4: windows 0 [0, 4), 1 [4, 8), 2 [8, 10),
# 3 [10, 13), 4 [13, 17), 5 [17, 20), 6 [20, 22), 7 [22, 23); full: 0, 1, 4; tails of 3: 3, 5; of 2: 2, 6; of 1: 7
DOCS = np.array([0, 10, 13, 20, 22], dtype=np.int64)


@pytest.mark.parametrize("per_batch,want", [
    (2, [[0, 1], [4], [3, 5], [2, 6], [7]]),  # a pass holds 2 x 4 tokens: two tails of 3, four of 2
    (1, [[0], [1], [4], [3], [5], [2, 6], [7]]),  # 4 tokens: one tail of 3, two of 2, four of 1
])
def test_tails_share_passes_by_length_longest_first(per_batch, want):
    plan = WindowPlan.make(DOCS, 23, Windowing(4, None, "short"), per_batch, None)
    assert plan.starts.tolist() == [0, 4, 8, 10, 13, 17, 20, 22] and plan.length.tolist() == [4, 4, 2, 3, 4, 3, 2, 1]
    assert [b.tolist() for b in plan.batches] == want


@pytest.mark.parametrize("n", [2, 3, 5])
def test_shards_feed_every_window_once_in_the_batches_of_one_run(n):
    whole = WindowPlan.make(DOCS, 23, Windowing(4, None, "short"), 2, None)
    fed = []
    for i in range(n):
        shard = WindowPlan.make(DOCS, 23, Windowing(4, None, "short"), 2, (i, n))
        assert shard.window_range() == (8 * i // n, 8 * (i + 1) // n)
        lo, hi = shard.window_range()
        for batch in shard.batches:
            assert lo <= batch[0] < hi
            if shard.length[batch[0]] < 4:  # a tail: fed in the same pass as by one run
                assert any(np.array_equal(batch, b) for b in whole.batches)
            else:  # full windows: the shard's own
                assert batch[-1] < hi
        fed += [w for b in shard.batches for w in b.tolist()]
    assert sorted(fed) == list(range(8))



# ---- site order (engine/runner.py ordered_refs) -----------------------------------------------------
def test_sites_are_in_model_order_by_block_then_site_then_ln_final():
    lm = tiny_loaded("llama")
    cfg = _config(sites=("ln_final", "mlp_out", "resid_post"), layers=(1, 0))
    assert ordered_refs(lm.adapter, cfg) == [SiteRef("resid_post", 0), SiteRef("mlp_out", 0), SiteRef("resid_post", 1),
                                              SiteRef("mlp_out", 1), SiteRef("ln_final", None)]



# ---- bands: a candidate with the largest candidate hash (engine/bands.py ActivationBands._fold) ----
_M64 = (1 << 64) - 1


def _unxorshift(y: int, s: int) -> int:
    x = y
    for _ in range(64 // s + 1):
        x = y ^ (x >> s)
    return x


def _seed_hashing(position: int, target: int) -> int:
    """The seed for which splitmix64's output at ``position`` is ``target`` (bands.py's mix inverted:
    xor-shifts undone by iteration, the odd multipliers by their inverses modulo 2**64)."""
    z = _unxorshift(target, 31)
    z = _unxorshift(z * pow(0x94D049BB133111EB, -1, 1 << 64) & _M64, 27)
    z = _unxorshift(z * pow(0xBF58476D1CE4E5B9, -1, 1 << 64) & _M64, 30)
    return (z - (position + 1) * 0x9E3779B97F4A7C15) & _M64


def test_a_candidate_with_the_largest_candidate_hash_is_kept():
    last = (1 << (64 - SAMPLE_SHIFT)) - 1  # the largest hash that is still a candidate
    seed = _seed_hashing(3, last)
    assert position_hash(torch.tensor([3]), seed).item() == last
    bands = ActivationBands(1, seed)
    bands.update(Batch(torch.tensor([[[0.5], [0.5]]]), torch.tensor([[2, 3]]), None))
    arrays = bands.arrays()
    assert arrays["band_positions"].shape == (1, N_BANDS, PER_BAND)
    assert (arrays["band_positions"] == 3).sum() == 1 and arrays["band_values"][arrays["band_positions"] == 3] == 0.5


def test_a_full_band_takes_a_candidate_whose_hash_is_one_below_its_last(monkeypatch):
    """bands.py `_fold`: a candidate enters a full band when its hash is below the band's largest kept
    hash, by any margin, also by 1 (the bar keeps every bit of that hash). splitmix64 gives no two
    positions hashes 1 apart that a test could find, so the hash is replaced by a chosen one: positions
    0..R-1 hash to the odd 1, 3, .., 2R-1 and position 1000 to 2R-2, just below the last."""
    from maxact.engine import bands as bands_module

    def chosen_hash(positions: torch.Tensor, seed: int) -> torch.Tensor:
        return torch.where(positions == 1000, 2 * PER_BAND - 2, 2 * positions + 1)

    monkeypatch.setattr(bands_module, "position_hash", chosen_hash)
    bands = ActivationBands(1, seed=0)
    bands.update(Batch(torch.full((1, PER_BAND, 1), 0.5), torch.arange(PER_BAND)[None], None))
    first = bands.arrays()["band_positions"][0]  # (B, R): one band full
    assert sorted(first[first >= 0]) == list(range(PER_BAND))
    bands.update(Batch(torch.full((1, 1, 1), 0.5), torch.tensor([[1000]]), None))
    kept = bands.arrays()["band_positions"][0]
    band = int(np.flatnonzero((kept >= 0).any(1))[0])
    assert list(kept[band]) == [*range(PER_BAND - 1), 1000]  # by increasing hash; position R-1 left


def test_bands_without_a_candidate_hold_only_empty_slots():
    seed = 11
    positions = torch.arange(64)
    others = positions[(position_hash(positions, seed) >> (64 - SAMPLE_SHIFT)) != 0][:5]  # no candidate among them
    for fed in (False, True):
        bands = ActivationBands(3, seed)
        if fed:
            bands.update(Batch(torch.ones(1, 5, 3), others[None], None))
        arrays = bands.arrays()
        assert (arrays["band_positions"] == -1).all() and np.isnan(arrays["band_values"]).all()
        state = bands.state()
        assert (state["positions"] == -1).all() and state["values"].isnan().all()


# ---- group sums (engine/groups.py group_sums) -------------------------------------------------------
class _CudaLike(torch.Tensor):
    """A CPU tensor that says it is on CUDA: group_sums' dense path run on the CPU."""

    @property
    def is_cuda(self) -> bool:
        return True


@pytest.mark.parametrize("n_groups,cuda,default_dtype", [(3, True, torch.float32), (3, True, torch.float64),
                                                           (64, True, torch.float32), (65, True, torch.float32),
                                                           (3, False, torch.float32)])
def test_group_sums_use_a_one_hot_matmul_on_cuda_for_few_groups_only(n_groups, cuda, default_dtype, monkeypatch):
    """groups.py: on CUDA at most DENSE_GROUPS (64) groups are summed by a one-hot matmul; elsewhere
    index_add_. Either way, out holds each group's sum of rows, whatever torch's default dtype."""
    from maxact.engine import groups as groups_module

    calls = []
    real_mm = torch.mm
    monkeypatch.setattr(groups_module.torch, "mm", lambda *a, **k: calls.append(1) or real_mm(*a, **k))
    rng = np.random.default_rng(n_groups)
    x = torch.tensor(rng.integers(-8, 9, (40, 5)).astype(np.float32))  # small integers: exact sums in any order
    groups = torch.tensor(rng.integers(0, min(n_groups, 6), 40))
    groups[0] = n_groups - 1  # the last group too
    if cuda:
        x = x.as_subclass(_CudaLike)
    out = torch.full((n_groups, 5), 7.0)  # overwritten
    before = torch.get_default_dtype()
    torch.set_default_dtype(default_dtype)
    try:
        got = groups_module.group_sums(x, groups, n_groups, out)
    finally:
        torch.set_default_dtype(before)
    want = np.zeros((n_groups, 5), dtype=np.float32)
    np.add.at(want, groups.numpy(), x.as_subclass(torch.Tensor).numpy())
    np.testing.assert_array_equal(torch.as_tensor(got).as_subclass(torch.Tensor).numpy(), want)
    assert len(calls) == (1 if cuda and n_groups <= 64 else 0)


def test_group_moments_under_a_float64_default_dtype_match_numpy():
    """The work buffers keep float32 whatever torch's default dtype (they are cleared first, so they
    are made inside the test: docs/MUTATION.md, module-level caches)."""
    from maxact.engine import groups as groups_module

    rng = np.random.default_rng(2)
    x = rng.normal(3.0, 2.0, (30, 4)).astype(np.float32)
    g = rng.integers(0, 3, 30)
    groups_module._WORK.clear()
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        acc = GroupMoments(3, 4)
        acc.add(torch.from_numpy(x[:10]), torch.from_numpy(g[:10]))
        acc.add(torch.from_numpy(x[10:]), torch.from_numpy(g[10:]))  # a larger batch: the buffer grows
    finally:
        torch.set_default_dtype(before)
        groups_module._WORK.clear()
    for k in range(3):
        rows = x[g == k].astype(np.float64)
        assert acc.count[k].item() == len(rows)
        np.testing.assert_allclose(acc.mean[k].numpy(), rows.mean(0), rtol=1e-6)
        np.testing.assert_allclose(acc.m2[k].numpy(), ((rows - rows.mean(0)) ** 2).sum(0), rtol=1e-5)


def test_adding_batches_of_other_sizes_than_the_units_warns_nothing():
    """Each batch's deviations go into the (rows, units) work buffer: no resized output (a torch
    UserWarning) whether a batch has more rows than units or fewer."""
    import warnings

    from maxact.engine import groups as groups_module

    groups_module._WORK.clear()
    acc = GroupMoments(2, 3)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            acc.add(torch.ones(10, 3), torch.zeros(10, dtype=torch.int64))
            acc.add(torch.ones(2, 3), torch.ones(2, dtype=torch.int64))
    finally:
        groups_module._WORK.clear()
    assert acc.count.tolist() == [10, 2]


def test_group_moments_keep_int64_counts_and_float64_moments():
    """groups.py: count (G,) int64, mean and m2 (G, U) float64, fresh, after add and after fold
    (a float32 count is exact only to 2**24 rows, a float32 mean loses a large offset's spread)."""
    acc = GroupMoments(2, 3)
    dtypes = lambda: (acc.count.dtype, acc.mean.dtype, acc.m2.dtype)  # noqa: E731
    assert dtypes() == (torch.int64, torch.float64, torch.float64)
    acc.add(torch.tensor([[1e4 + 0.25, 1.0, 2.0], [1e4 - 0.25, 3.0, 2.0]]), torch.tensor([0, 0]))
    assert dtypes() == (torch.int64, torch.float64, torch.float64)
    assert acc.count.tolist() == [2, 0] and acc.m2[0, 0].item() == 0.125
    acc.fold(torch.tensor([0, 1]), torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64))
    assert dtypes() == (torch.int64, torch.float64, torch.float64)


def test_group_moments_of_a_cuda_like_batch_sum_by_matmul():
    """add on a batch that says it is on CUDA (the one-hot matmul of group_sums) against numpy."""
    rng = np.random.default_rng(4)
    x = rng.integers(-5, 6, (12, 3)).astype(np.float32)
    g = rng.integers(0, 3, 12)
    acc = GroupMoments(3, 3)
    acc.add(torch.from_numpy(x).as_subclass(_CudaLike), torch.from_numpy(g))
    for k in range(3):
        rows = x[g == k].astype(np.float64)
        np.testing.assert_allclose(torch.as_tensor(acc.mean[k]).as_subclass(torch.Tensor).numpy(), rows.mean(0))
        np.testing.assert_allclose(torch.as_tensor(acc.m2[k]).as_subclass(torch.Tensor).numpy(),
                                   ((rows - rows.mean(0)) ** 2).sum(0), atol=1e-9)
