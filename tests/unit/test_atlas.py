"""`build_atlas` on tiny models against brute force (the CLI side is in test_atlas_cli.py).

Part 1 builds atlases with ``build_atlas`` over a small random corpus (700 tokens, windows of 32,
so the last window is a partial one of 28) and recomputes everything by brute force: every site
captured over every window (one forward per window), then per unit the top-K / bottom-K by
(value, position), moments, histograms, token tuning and direct logit effects.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from atlas_helpers import (
    VOCAB,
    build_tiny_atlas,
    one_text,
    single_thread,
    synthetic_source,
)
from tiny_models import tiny_loaded

from maxact.analysis.refstat import token_shares, win_probabilities
from maxact.capture import capture
from maxact.engine.moments import HIST_STRIDE, N_BINS, bin_of
from maxact.engine.runner import ordered_refs
from maxact.engine.topk import C_AFTER, C_BEFORE
from maxact.store import format as F
from maxact.store.reader import Atlas

MAXACT = str(Path(sys.executable).with_name("maxact"))
N_TOKENS, SEQ, K, KC = 700, 32, 8, 4


# =================================================================================================
# 1. build_atlas against brute force
# =================================================================================================
class Brute:
    """An atlas and every activation of every unit, captured window by window."""

    def __init__(self, family, out):
        self.lm, self.tokens, self.atlas, self.cfg = build_tiny_atlas(
            out, family, n_tokens=N_TOKENS, seq=SEQ, k=K, k_ctx=KC)
        refs = ordered_refs(self.lm.adapter, self.cfg)
        assert [s.name for s in self.atlas.sites] == [r.name for r in refs]
        parts = {r: [] for r in refs}
        with single_thread():
            for start in range(0, N_TOKENS, SEQ):  # consecutive, non-overlapping; the last is short
                ids = torch.from_numpy(self.tokens[start : start + SEQ].astype(np.int64))[None]
                got = capture(self.lm.adapter, ids, refs)
                for r in refs:
                    parts[r].append(got[r][0].float().numpy())
        self.acts = np.concatenate([np.concatenate(parts[r]) for r in refs], axis=1)  # (n, U)
        self.pos = np.arange(N_TOKENS)

    def ranked(self, largest: bool, pos0: bool | None, k: int = K):
        """(U, k) values and positions by (value desc/asc, position asc); pos0 None: all positions."""
        keep = np.ones(N_TOKENS, bool) if pos0 is None else (self.pos % SEQ == 0) == pos0
        v = self.acts[keep]
        p = np.broadcast_to(self.pos[keep][:, None], v.shape)
        order = np.lexsort((p, -v if largest else v), axis=0)[:k]
        return np.take_along_axis(v, order, 0).T, np.take_along_axis(p, order, 0).T


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def brute(request, tmp_path_factory):
    return Brute(request.param, tmp_path_factory.mktemp(f"atlas-{request.param}"))


def test_every_site_of_the_family_is_in_the_atlas(brute):
    names = [s.name for s in brute.atlas.sites]
    for site in ("resid_pre", "resid_post", "mlp_pre", "mlp_post", "attn_q", "attn_k", "attn_v",
                 "attn_out", "mlp_out"):
        assert [f"L{layer}.{site}" in names for layer in range(3)] == [True] * 3, site
    assert names[-1] == "ln_final"
    assert brute.atlas.n_units == brute.acts.shape[1]
    assert brute.atlas.manifest.windows == [0, 22]  # 21 full windows of 32 and one of 28
    np.testing.assert_array_equal(brute.atlas.tokens, brute.tokens)


@pytest.mark.parametrize("part, largest, pos0", [
    ("top", True, False), ("bottom", False, False), ("top0", True, True), ("bottom0", False, True)])
def test_top_and_bottom_lists_equal_brute_force(brute, part, largest, pos0):
    """Streaming top-K equals brute force exactly: same positions, same float32 values."""
    bv, bp = brute.ranked(largest, pos0)
    np.testing.assert_array_equal(brute.atlas[f"{part}_positions.npy"], bp)
    np.testing.assert_array_equal(brute.atlas[f"{part}_values.npy"], bv.astype(np.float32))
    assert (bp % SEQ == 0).all() if pos0 else (bp % SEQ != 0).all()


def test_reference_list_is_top_k_over_all_positions(brute):
    _, bp = brute.ranked(True, None)
    np.testing.assert_array_equal(brute.atlas[F.REF_POSITIONS], bp)
    probs, miss = win_probabilities(bp, one_text(N_TOKENS, SEQ), 32)
    np.testing.assert_allclose(brute.atlas[F.REF_PROBS], probs.astype(np.float32))
    ref = brute.atlas[F.REF]
    np.testing.assert_allclose(ref["miss"], miss.astype(np.float32))
    # the top token is the token with the largest summed win probability; pos0_share its share at 0
    shares = token_shares(probs, brute.tokens[bp])
    np.testing.assert_array_equal(ref["top_token"], [ids[0] for ids, _ in shares])
    pos0 = (probs * (bp % SEQ == 0)).sum(1) / (1 - miss)
    np.testing.assert_allclose(ref["pos0_share"], pos0.astype(np.float32), rtol=1e-5, atol=1e-7)


def test_contexts_are_the_captured_activations(brute):
    units = np.arange(brute.acts.shape[1])[:, None, None]
    for part, largest in (("top", True), ("bottom", False)):
        ctx = np.asarray(brute.atlas[f"{part}_context.npy"])  # (U, KC, C) float16
        assert ctx.shape == (brute.atlas.n_units, KC, C_BEFORE + C_AFTER) and ctx.dtype == np.float16
        _, bp = brute.ranked(largest, False, KC)  # (U, KC)
        q = bp[:, :, None] + np.arange(-C_BEFORE, C_AFTER)  # (U, KC, C) corpus positions around each
        w0 = (bp - bp % SEQ)[:, :, None]
        inside = (q >= w0) & (q < np.minimum(w0 + SEQ, N_TOKENS))  # never across a window edge
        expect = np.where(inside, brute.acts[np.clip(q, 0, N_TOKENS - 1), units], np.nan).astype(np.float16)
        np.testing.assert_array_equal(ctx, expect, err_msg=part)  # NaN == NaN here
        assert inside[:, :, C_BEFORE].all() and (~inside).any()  # the example itself; some edges


def test_moments_match_numpy(brute):
    st = brute.atlas[F.STATS]
    x = brute.acts.astype(np.float64)
    assert (st["count"] == N_TOKENS).all()
    np.testing.assert_allclose(st["mean"], x.mean(0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(st["std"], x.std(0), rtol=1e-5, atol=1e-7)
    d = x - x.mean(0)  # skew and kurtosis: every token, like mean and std
    var = x.var(0)
    np.testing.assert_allclose(st["skew"], (d**3).mean(0) / var**1.5, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(st["kurtosis"], (d**4).mean(0) / var**2 - 3, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(st["frac_pos"], (x > 0).mean(0))
    np.testing.assert_array_equal(st["max"], brute.acts.max(0))
    np.testing.assert_array_equal(st["min"], brute.acts.min(0))


def test_histogram_counts_positions_multiple_of_stride(brute):
    # the histogram's subsample is the tokens at corpus positions p with p % HIST_STRIDE == 0
    sub = torch.from_numpy(np.ascontiguousarray(brute.acts[brute.pos % HIST_STRIDE == 0]))
    bins = bin_of(sub).numpy()  # (n/4, U); bin_of itself is checked against its bounds elsewhere
    expect = np.zeros((brute.acts.shape[1], N_BINS), dtype=np.int64)
    for u in range(expect.shape[0]):
        expect[u] = np.bincount(bins[:, u], minlength=N_BINS)
    np.testing.assert_array_equal(brute.atlas[F.HIST], expect)


def test_token_tuning_means(brute):
    ids = np.asarray(brute.atlas[F.TUNING_IDS])
    counts = np.asarray(brute.atlas[F.TUNING_COUNTS])
    means = np.asarray(brute.atlas[F.TUNING_MEANS])
    occ = np.bincount(brute.tokens)
    assert len(ids) == 64 and counts.sum() == N_TOKENS
    # the most frequent types, ties by smaller id
    order = np.lexsort((np.arange(len(occ)), -occ))[:64]
    np.testing.assert_array_equal(ids, order)
    for i, t in enumerate(ids):
        assert counts[i] == occ[t]
        np.testing.assert_allclose(means[i], brute.acts[brute.tokens == t].mean(0), rtol=1e-4, atol=1e-5)
    other = ~np.isin(brute.tokens, ids)
    np.testing.assert_allclose(means[-1], brute.acts[other].mean(0), rtol=1e-4, atol=1e-5)


def _unembedding_and_down(model, family):
    """W (vocab, d_model) with the final norm folded in, and each block's down projection (d, d_mlp)."""
    if family == "llama":
        W = model.lm_head.weight * model.model.norm.weight
        downs = [b.mlp.down_proj.weight for b in model.model.layers]
    else:  # GPT-2: LayerNorm centres over d_model; Conv1D c_proj weight is (d_mlp, d_model)
        W = model.lm_head.weight * model.transformer.ln_f.weight
        W = W - W.mean(1, keepdim=True)
        downs = [b.mlp.c_proj.weight.T for b in model.transformer.h]
    return W.detach().double(), [d.detach().double() for d in downs]


def test_direct_logit_effects(brute):
    a, family = brute.atlas, brute.lm.adapter.family
    W, downs = _unembedding_and_down(brute.lm.model, family)
    L = a[F.LOGIT_TOP_IDS].shape[1]
    for s in a.sites:
        rows = range(s.offset, s.offset + s.width)
        if s.site in ("attn_q", "attn_k", "attn_v", "mlp_pre"):  # no direct path to the logits
            assert (a[F.LOGIT_TOP_IDS][rows.start : rows.stop] == -1).all(), s.name
            continue
        for i in (0, s.width - 1):
            direction = downs[s.layer][:, i] if s.site == "mlp_post" else torch.eye(W.shape[1])[i].double()
            logits = (W @ direction).numpy()
            top = np.argsort(-logits)[:L]
            bottom = np.argsort(logits)[:L]
            np.testing.assert_array_equal(a[F.LOGIT_TOP_IDS][rows[i]], top, err_msg=s.name)
            np.testing.assert_array_equal(a[F.LOGIT_BOTTOM_IDS][rows[i]], bottom, err_msg=s.name)
            np.testing.assert_allclose(a[F.LOGIT_TOP_VALUES][rows[i]], logits[top], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(a[F.LOGIT_BOTTOM_VALUES][rows[i]], logits[bottom], rtol=1e-4, atol=1e-5)


def test_k_ctx_above_k_is_capped(tmp_path):
    """Bug fix: k_ctx > K (the CLI's default 20 with --k 8) used to crash in the first batch."""
    _, _, atlas, cfg = build_tiny_atlas(tmp_path / "a", "llama", n_tokens=200, sites=("resid_pre",),
                                        k=3, k_ctx=20, layers=(0,))
    assert cfg.k_ctx == 3 and atlas[F.TOP_CONTEXT].shape == (64, 3, C_BEFORE + C_AFTER)


def test_fused_sites_give_the_same_atlas(tmp_path, monkeypatch):
    """One accumulator over all units (the GPU default) equals one accumulator per site, also when
    the fused units are handled in column slices."""
    import maxact.engine.topk as topk

    monkeypatch.setattr(topk, "MAX_COLUMNS", 50)  # tiny units: force several slices
    _, _, per_site, _ = build_tiny_atlas(tmp_path / "a", fuse_sites=False)
    _, _, fused, _ = build_tiny_atlas(tmp_path / "b", fuse_sites=True)
    exact = [F.TOP_VALUES, F.TOP_POSITIONS, F.BOTTOM_VALUES, F.BOTTOM_POSITIONS, F.TOP0_POSITIONS,
             F.BOTTOM0_POSITIONS, F.TOP_CONTEXT, F.BOTTOM_CONTEXT, F.HIST, F.REF_POSITIONS,
             F.BAND_POSITIONS, F.BAND_VALUES]
    for name in exact:
        np.testing.assert_array_equal(per_site[name], fused[name], err_msg=name)
    for name in ("mean", "std", "skew", "kurtosis", "frac_pos"):
        np.testing.assert_allclose(per_site[F.STATS][name], fused[F.STATS][name], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(per_site[F.TUNING_MEANS], fused[F.TUNING_MEANS], rtol=1e-5, atol=1e-6)


def test_fused_state_round_trips_through_site_states():
    from maxact.config import AtlasConfig
    from maxact.engine.runner import AtlasRun

    lm = tiny_loaded("gpt2")
    tokens = synthetic_source(np.random.default_rng(3).integers(0, VOCAB, 300).astype(np.int32))
    cfg = AtlasConfig(seq=32, k=8, k_ctx=4, max_types=16, windows_per_batch=2, fuse_sites=True)
    with single_thread():
        run = AtlasRun(lm, tokens, cfg)
        run.run(progress=False, stop_after_batches=2)
        state = run.state()
        again = AtlasRun(lm, tokens, cfg)
        again.load_state(state, "test")
        for a, b in zip(run.accumulators(), again.accumulators()):
            assert torch.equal(a.top.keys, b.top.keys) and torch.equal(a.moments.hist_t, b.moments.hist_t)
        unfused = AtlasRun(lm, tokens, AtlasConfig(**{**cfg.__dict__, "fuse_sites": False}))
        unfused.load_state(state, "test")  # a fused checkpoint resumes unfused, and back
        assert unfused.cursor == 2


# =================================================================================================
# 2. activation bands against brute force
# =================================================================================================
def test_activation_bands_equal_brute_force(brute):
    """Per unit and band, the candidates (splitmix64 hash below 2**58) with the smallest hashes, from
    the activations captured window by window."""
    from atlas_helpers import expected_bands

    from maxact.engine.bands import BAND_EDGES
    from maxact.store.manifest import BandSampling

    want_p, want_v = expected_bands(brute.acts, brute.pos, brute.cfg.seed)
    assert (want_p >= 0).sum() > brute.acts.shape[1]  # a few examples per unit at least
    np.testing.assert_array_equal(brute.atlas[F.BAND_POSITIONS], want_p)
    np.testing.assert_array_equal(brute.atlas[F.BAND_VALUES], want_v)
    np.testing.assert_array_equal(brute.atlas[F.BAND_EDGES], BAND_EDGES)
    assert brute.atlas.manifest.bands == BandSampling(per_band=4, one_in=64, hash="splitmix64", seed=brute.cfg.seed)


# =================================================================================================
# 3. the output folder, leftovers and failures: refused before any work, cleaned on every error
# =================================================================================================
def _build(out, **kwargs):
    """build_atlas of a small tiny-Llama atlas into out (the model is built once per test)."""
    from atlas_helpers import synthetic_source, tiny_tokens

    from maxact.config import AtlasConfig
    from maxact.pipeline import build_atlas

    settings = dict(model="tiny-llama", corpus="synthetic", seq=32, sites=("resid_pre",), layers=(0,), k=4,
                    k_ctx=2, max_types=16, windows_per_batch=2, ref_samples=20)
    run_kwargs = {k: kwargs.pop(k) for k in ("resume", "overwrite", "checkpoint_s") if k in kwargs}
    cfg = AtlasConfig(**{**settings, **kwargs})
    with single_thread():
        return build_atlas(tiny_loaded("llama"), synthetic_source(tiny_tokens(300, 0)), cfg, Path(out),
                           progress=False, echo=lambda m: None, **run_kwargs)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp-" in p.name or p.name.startswith(".staging-"))


def test_out_that_is_a_file_or_a_folder_of_other_files_is_refused(tmp_path):
    from maxact.errors import MaxactError

    f = tmp_path / "notes.txt"
    f.write_text("mine")
    with pytest.raises(MaxactError, match="is a file, not a folder"):
        _build(f)
    folder = tmp_path / "papers"
    folder.mkdir()
    (folder / "tokens.npy").write_bytes(b"my own file")
    (folder / "config.json").write_text("{}")
    for overwrite in (False, True):  # --overwrite replaces atlases only
        with pytest.raises(MaxactError, match="folder of other files .*config.json, tokens.npy.*not an atlas"):
            _build(folder, overwrite=overwrite)
    assert (folder / "tokens.npy").read_bytes() == b"my own file" and f.read_text() == "mine"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "tokens.npy"]


def test_out_that_cannot_be_written_is_refused_before_any_work(tmp_path, monkeypatch):
    import maxact.fsio as fsio
    from maxact.errors import MaxactError
    from maxact.pipeline.run import AtlasRun

    real_open = os.open

    def read_only(path, flags, *args):  # what a folder without write permission answers (we run as root)
        if str(path).startswith(str(tmp_path / "ro")):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(fsio.os, "open", read_only)  # the write probe
    monkeypatch.setattr(AtlasRun, "run", lambda *a, **k: pytest.fail("the pass started"))
    (tmp_path / "ro").mkdir()
    for out in (tmp_path / "ro", tmp_path / "ro" / "new" / "atlas"):
        with pytest.raises(MaxactError, match="cannot be written \\(Permission denied\\)"):
            _build(out)
    assert list((tmp_path / "ro").iterdir()) == []


def test_garbage_or_empty_checkpoint_with_resume_is_one_error_line(tmp_path):
    from maxact.errors import MaxactError

    for content in (b"", b"\x80\x04garbage", b"not a pickle at all"):
        out = tmp_path / f"run{len(content)}"
        (out / F.RUN_DIR).mkdir(parents=True)
        (out / F.RUN_DIR / F.CHECKPOINT).write_bytes(content)
        with pytest.raises(MaxactError, match="checkpoint.pt is corrupt or empty .*--overwrite"):
            _build(out, resume=True)
    # a readable file that is no checkpoint of this maxact
    out = tmp_path / "foreign"
    (out / F.RUN_DIR).mkdir(parents=True)
    torch.save({"cursor": 3}, out / F.RUN_DIR / F.CHECKPOINT)
    with pytest.raises(MaxactError, match="another version of maxact"):
        _build(out, resume=True)


def test_leftovers_of_dead_runs_are_removed_at_the_start_and_on_error(tmp_path, monkeypatch):
    from maxact.pipeline.run import AtlasRun

    out = tmp_path / "a"
    _build(out)
    dead = 2**22 + 12345  # above the kernel's pid_max default: no live process has it
    (out / f".staging-{dead}").mkdir()
    (out / f".staging-{dead}" / "top_values.npy").write_bytes(b"x")
    (out / F.RUN_DIR).mkdir()
    (out / F.RUN_DIR / f"{F.CHECKPOINT}.tmp-{dead}").write_bytes(b"half")
    (out / f"{F.MANIFEST}.tmp-{dead}").write_bytes(b"{")
    _build(out, overwrite=True)
    assert _leftovers(out) == [] and (out / F.MANIFEST).is_file()

    (out / f".staging-{dead}").mkdir()
    monkeypatch.setattr(AtlasRun, "run", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    (out / f"{F.MANIFEST}.tmp-{os.getpid()}").write_bytes(b"{")  # as if this process died mid-write
    with pytest.raises(RuntimeError, match="boom"):
        _build(out, overwrite=True)
    assert _leftovers(out) == []


def _full_disk_after(n_bytes: int):
    """A writer that accepts n_bytes, then fails as a full disk does."""
    import errno

    class Full:
        def __init__(self, f):
            self.f, self.left = f, n_bytes

        def write(self, data):
            if len(data) > self.left:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.left -= len(data)
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

    return Full


@pytest.mark.parametrize("where", ["checkpoint", "partial", "atlas"])
def test_full_disk_cleans_up_and_says_how_much_space(tmp_path, monkeypatch, where):
    import maxact.pipeline.outdir as outdir
    import maxact.store.writer as writer
    from maxact.errors import MaxactError

    full = _full_disk_after(1000)
    if where in ("checkpoint", "partial"):
        real_save = torch.save
        monkeypatch.setattr(outdir.torch, "save", lambda obj, f: real_save(obj, full(f)))
    else:
        real_np_save = np.save
        monkeypatch.setattr(writer.np, "save", lambda f, arr, **kw: real_np_save(full(f), arr, **kw))
    out = tmp_path / where
    kwargs = {"checkpoint": dict(checkpoint_s=0.0), "partial": dict(shard=(0, 2)), "atlas": {}}[where]
    with pytest.raises(MaxactError, match=f"no space left on {tmp_path}.* \\(needed about [1-9][0-9]* MB\\)"):
        _build(out, **kwargs)
    assert _leftovers(out) == []
    assert not (out / F.MANIFEST).exists() and not (out / F.PARTIAL).exists()


# =================================================================================================
# 4. shards: a partial holds no token stream; merge rebuilds it and checks its hash
# =================================================================================================
def test_partials_hold_state_not_tokens_and_merge_checks_the_tokens(tmp_path):
    from atlas_helpers import merge_tiny_partials, synthetic_source, tiny_tokens

    from maxact.errors import MaxactError
    from maxact.pipeline import merge_partials

    common = dict(n_tokens=400, sites=("resid_pre", "mlp_post"), layers=(1,), windows_per_batch=3)
    _, tokens, one, _ = build_tiny_atlas(tmp_path / "one", **common)
    for i in range(2):
        build_tiny_atlas(tmp_path / f"s{i}", shard=(i, 2), **common)
    saved = torch.load(tmp_path / "s0" / F.PARTIAL, weights_only=True)
    assert set(saved) == {"state", "config", "corpus", "timing"}

    def sizes(obj):
        if isinstance(obj, torch.Tensor):
            yield obj.numel()
        elif isinstance(obj, dict):
            for v in obj.values():
                yield from sizes(v)

    assert len(tokens) not in set(sizes(saved))  # no token stream (nor any per-token array)
    merge_tiny_partials([tmp_path / "s1", tmp_path / "s0"], tmp_path / "m", n_tokens=400)
    for name in (F.TOP_POSITIONS, F.BAND_POSITIONS, F.BAND_VALUES, F.HIST, F.TOKENS, F.LOGIT_TOP_IDS, F.REF_PROBS):
        np.testing.assert_array_equal(Atlas(tmp_path / "m")[name], one[name], err_msg=name)
    # the source the config names now gives other tokens: refused before anything is written
    other = tiny_tokens(400, 1)
    with pytest.raises(MaxactError, match="now gives other tokens"):
        merge_partials([tmp_path / "s0", tmp_path / "s1"], tmp_path / "m2", echo=lambda m: None,
                       load_model=lambda name, device: tiny_loaded("llama"),
                       load_source=lambda lm, corpus, strip: synthetic_source(other))
    assert not (tmp_path / "m2").exists()
    # a folder of other files is no place for a merge either
    (tmp_path / "m3").mkdir()
    (tmp_path / "m3" / "notes.txt").write_text("mine")
    with pytest.raises(MaxactError, match="folder of other files"):
        merge_tiny_partials([tmp_path / "s0", tmp_path / "s1"], tmp_path / "m3", n_tokens=400)
