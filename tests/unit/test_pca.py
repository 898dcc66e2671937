"""`maxact pca`: the streaming covariance against numpy.cov for any batches and shards, the
components against scikit-learn's PCA, the pass against activations captured window by window, and
the command end to end on a tiny Llama (files, JSON, one error line for bad input)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from atlas_helpers import (
    D_MODEL,
    error_line,
    run_cli,
    save_tiny_folder,
    single_thread,
    write_word_corpus,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_models import tiny_loaded

from maxact.capture import capture
from maxact.config import AtlasConfig
from maxact.corpus import CorpusInfo, TokenSource
from maxact.engine.covariance import CovarianceAccumulator, CovarianceState
from maxact.pipeline.pca import principal_components, run_pca
from maxact.units import SiteRef


def _rows(seed: int, n: int, d: int, offset: float) -> np.ndarray:
    """(n, d) float32 correlated rows around a mean of size ``offset``."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d))
    return (rng.normal(size=(n, d)) @ mix + offset * rng.normal(size=d)).astype(np.float32)


def _fed(rows: np.ndarray, cuts: list[int]) -> CovarianceAccumulator:
    """An accumulator fed ``rows`` in the batches that ``cuts`` (sorted positions) delimit."""
    acc = CovarianceAccumulator(rows.shape[1])
    for lo, hi in zip([0, *cuts], [*cuts, len(rows)]):
        acc.add(torch.from_numpy(rows[lo:hi]))
    return acc


def _assert_matches(acc: CovarianceAccumulator, rows: np.ndarray) -> None:
    x = rows.astype(np.float64)
    scale = max(1.0, float(np.abs(np.cov(x, rowvar=False)).max()))
    assert acc.count == len(rows)
    np.testing.assert_allclose(acc.mean.numpy(), x.mean(0), rtol=1e-6, atol=1e-6 * max(1.0, np.abs(x).max()))
    np.testing.assert_allclose(acc.covariance().numpy(), np.cov(x, rowvar=False), rtol=0, atol=2e-6 * scale)


# =================================================================================================
# 1. the accumulator
# =================================================================================================
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(2, 120), d=st.integers(1, 7),
       offset=st.sampled_from([0.0, 1.0, 1e3]), data=st.data())
def test_covariance_matches_numpy_for_any_batches(seed, n, d, offset, data):
    rows = _rows(seed, n, d, offset)
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=6)))  # empty batches included
    _assert_matches(_fed(rows, cuts), rows)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(2, 120), d=st.integers(1, 7),
       offset=st.sampled_from([0.0, 1e3]), data=st.data())
def test_shards_merged_equal_one_run(seed, n, d, offset, data):
    rows = _rows(seed, n, d, offset)
    bounds = sorted(data.draw(st.lists(st.integers(0, n), max_size=4)))
    shards = [_fed(rows[lo:hi], sorted(data.draw(st.lists(st.integers(0, hi - lo), max_size=3))))
              for lo, hi in zip([0, *bounds], [*bounds, n])]
    while len(shards) > 1:  # a tree of merges, as a cluster would fold them
        folded = shards[0]
        folded.merge(shards[1])
        shards = shards[2:] + [folded]
    _assert_matches(shards[0], rows)
    one = _fed(rows, [])
    assert shards[0].count == one.count
    np.testing.assert_allclose(shards[0].comoment.numpy(), one.comoment.numpy(), rtol=1e-5,
                               atol=1e-5 * float(np.abs(one.comoment.numpy()).max()))


def test_large_mean_loses_no_precision():
    """Rows of mean 1e4 and spread 1 in float32: E[xx] - E[x]E[x] would cancel every digit."""
    rows = (1e4 + np.random.default_rng(0).normal(size=(4000, 3))).astype(np.float32)
    acc = _fed(rows, [1000, 2500])
    np.testing.assert_allclose(acc.covariance().numpy(), np.cov(rows.astype(np.float64), rowvar=False), atol=1e-4)
    # spread of one float32 step: the batch mean a + u/3 rounds to a, and that rounding is taken out
    a = np.float32(1e4)
    u = float(np.nextafter(a, np.float32(2e4)) - a)
    rows = np.array([[a], [a], [np.nextafter(a, np.float32(2e4))]], dtype=np.float32)
    acc = _fed(rows, [])
    assert acc.comoment.item() == pytest.approx(2 * u * u / 3, rel=1e-9)


def test_state_resumes_exactly():
    rows = _rows(1, 300, 5, 10.0)
    whole = _fed(rows, [100, 200])
    first = _fed(rows[:200], [100])
    resumed = CovarianceAccumulator(5)
    resumed.load_state(first.state())
    resumed.add(torch.from_numpy(rows[200:]))
    assert resumed.count == whole.count
    assert torch.equal(resumed.mean, whole.mean) and torch.equal(resumed.comoment, whole.comoment)
    with pytest.raises(ValueError, match="width 5"):
        CovarianceAccumulator(4).load_state(first.state())


# =================================================================================================
# 2. the components
# =================================================================================================
def _exact_state(x: np.ndarray) -> CovarianceState:
    x = x.astype(np.float64)
    c = x - x.mean(0)
    return CovarianceState(len(x), torch.from_numpy(x.mean(0)), torch.from_numpy(c.T @ c))


@pytest.mark.parametrize("n_components", [1, 3, 6])
def test_components_match_sklearn(n_components):
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(3)
    d = 6
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
    x = (rng.normal(size=(3000, d)) * np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.5])) @ basis.T + 7.0
    ours = principal_components(_exact_state(x), n_components)
    ref = PCA(n_components=n_components, svd_solver="full").fit(x)
    signs = np.sign(np.sum(ours.directions * ref.components_, axis=1))  # up to sign
    np.testing.assert_allclose(ours.directions, ref.components_ * signs[:, None], atol=1e-6)
    np.testing.assert_allclose(ours.explained_variance, ref.explained_variance_, rtol=1e-6)
    np.testing.assert_allclose(ours.explained_variance_ratio, ref.explained_variance_ratio_, rtol=1e-6)
    rows = np.arange(n_components)
    assert (ours.directions[rows, np.abs(ours.directions).argmax(1)] > 0).all()  # the sign rule
    np.testing.assert_allclose(np.linalg.norm(ours.directions, axis=1), 1.0, atol=1e-12)
    # from the streaming accumulator (float32 rows): the same directions to float32 rounding
    streamed = principal_components(_fed(x.astype(np.float32), [1000, 2000]).state(), n_components)
    np.testing.assert_allclose(streamed.directions, ours.directions, atol=1e-4)


# =================================================================================================
# 3. the pass, against activations captured window by window
# =================================================================================================
def _brute_rows(lm, source: TokenSource, ref: SiteRef, seq: int, bos: int | None) -> np.ndarray:
    """Every corpus token's activation, each window (from each document's start, seq tokens, the
    BOS among them) run alone; the BOS position dropped."""
    length = seq - (bos is not None)
    ends = [*source.doc_starts[1:].tolist(), len(source)]
    out = []
    for s, e in zip(source.doc_starts.tolist(), ends):
        for w in range(s, e, length):
            ids = source.tokens[w : min(w + length, e)].astype(np.int64).tolist()
            acts = capture(lm.adapter, torch.tensor([([bos] if bos is not None else []) + ids]), [ref])[ref]
            out.append(acts[0, bos is not None :].double().numpy())
    return np.concatenate(out)


@pytest.mark.parametrize("site, bos", [(SiteRef("resid_pre", 1), False), (SiteRef("mlp_post", 2), True),
                                       (SiteRef("ln_final", None), True)])
def test_pass_counts_every_token_once(site, bos):
    from sklearn.decomposition import PCA

    lm = tiny_loaded("llama")
    tokens = np.random.default_rng(5).integers(1, 97, 290).astype(np.int32)
    starts = np.array([0, 100, 137, 250], dtype=np.int64)  # documents of 100, 37, 113 and 40 tokens
    info = CorpusInfo(name="docs", path="<docs>", sha256="0" * 64, n_tokens=290, n_docs=4)
    source = TokenSource(tokens, starts, info)
    config = AtlasConfig(model="tiny", corpus="docs", seq=16, sites=(site.site,), windows_per_batch=3, bos=bos)
    with single_thread():
        result = run_pca(lm, source, config, site, 5, progress=False)
        rows = _brute_rows(lm, source, site, 16, 0 if bos else None)
    assert result.n_tokens == len(rows) == 290 and result.bos is bos
    np.testing.assert_allclose(result.mean, rows.mean(0), rtol=1e-5, atol=1e-5)
    ref = PCA(n_components=5, svd_solver="full").fit(rows)
    signs = np.sign(np.sum(result.components.directions * ref.components_, axis=1))
    np.testing.assert_allclose(result.components.directions, ref.components_ * signs[:, None], atol=1e-4)
    np.testing.assert_allclose(result.components.explained_variance, ref.explained_variance_, rtol=1e-4)
    # --max-tokens is the corpus's head: fewer rows, the same windows there
    with single_thread():
        head = run_pca(lm, source.head(120), replace(config, max_tokens=120), site, 2, progress=False)
    assert head.n_tokens == 120


# =================================================================================================
# 4. the command
# =================================================================================================
N_WORDS = 500


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_folder(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    return write_word_corpus(tmp_path_factory.mktemp("corpus") / "words.txt", N_WORDS, seed=2)


def cli(*args):
    with single_thread():
        return run_cli(*args)


def test_command_writes_directions_and_description(folder, corpus_file, tmp_path):
    from maxact.models.loading import load_model

    out = tmp_path / "pcs.npy"
    base = ["pca", "--model", folder, "--corpus", corpus_file, "--seq", "16", "--site", "L1.resid_pre"]
    r = cli(*base, "--components", "4", "--out", out)
    assert r.exit_code == 0, r.output
    assert "wrote" in r.stdout and "not centred" in r.stdout
    directions = np.load(out)
    assert directions.dtype == np.float32 and directions.shape == (4, D_MODEL)
    described = json.loads((tmp_path / "pcs.json").read_text())
    assert described["site"] == "L1.resid_pre" and described["tokens_counted"] == N_WORDS
    assert described["centred"] is False and described["file"] == "pcs.npy" and described["bos"] is False
    assert described["corpus"]["name"] == "words" and len(described["mean"]) == D_MODEL
    # against the activations, one window of 16 words at a time (a single text: no BOS)
    lm = load_model(folder)
    source = TokenSource(np.asarray(lm.tokenizer(open(corpus_file).read())["input_ids"], dtype=np.int32),
                         np.zeros(1, dtype=np.int64), CorpusInfo("w", "w", "0"))
    with single_thread():
        rows = _brute_rows(lm, source, SiteRef("resid_pre", 1), 16, None)
    centred = rows - rows.mean(0)
    variance = np.sum((centred @ directions.T.astype(np.float64)) ** 2, axis=0) / (len(rows) - 1)
    np.testing.assert_allclose(described["explained_variance"], variance, rtol=1e-4)
    top = np.linalg.eigvalsh(np.cov(rows, rowvar=False))[::-1][:4]
    np.testing.assert_allclose(described["explained_variance"], top, rtol=1e-4)
    np.testing.assert_allclose(described["mean"], rows.mean(0), rtol=1e-5, atol=1e-5)
    # --json prints the description; --overwrite replaces
    r = cli(*base, "--components", "2", "--out", out, "--overwrite", "--json")
    assert r.exit_code == 0, r.output
    printed = json.loads(r.stdout)
    assert printed == json.loads((tmp_path / "pcs.json").read_text()) | {"seconds": printed["seconds"]}
    assert np.load(out).shape == (2, D_MODEL)
    np.testing.assert_allclose(np.abs(np.load(out)), np.abs(directions[:2]), atol=1e-5)


@pytest.mark.parametrize("args, expected", [
    (["--site", "L1.nope"], "unknown site 'nope'"),
    (["--site", "resid_pre"], "site 'resid_pre' needs a block, e.g. L6.resid_pre"),
    (["--site", "L1.ln_final"], "site 'ln_final' has no block"),
    (["--site", "L1:resid_pre"], "is not a site"),
    (["--site", "L9.resid_pre"], "block 9 in L9.resid_pre is out of range: this model has blocks 0..2"),
    (["--components", "0"], "--components must be at least 1, got 0"),
    (["--components", "65"], "--components 65 is more than the 64 dimensions of L1.resid_pre; choose 1..64"),
    (["--out", "{tmp}/pcs.txt"], "must name a .npy file"),
    (["--out", "{tmp}/missing/pcs.npy"], "does not exist"),
    (["--corpus", "{tmp}/none.txt"], "none.txt"),
])
def test_bad_input_gives_one_line(folder, corpus_file, tmp_path, args, expected):
    base = {"--site": "L1.resid_pre", "--components": "3", "--out": f"{tmp_path}/pcs.npy",
            "--corpus": corpus_file, "--model": folder}
    given = dict(zip(args[::2], [a.format(tmp=tmp_path) for a in args[1::2]]))
    line = error_line(cli("pca", "--seq", "16", *[x for kv in (base | given).items() for x in kv]))
    assert expected in line, line
    assert not (tmp_path / "pcs.npy").exists() and not (tmp_path / "pcs.json").exists()


def test_existing_out_needs_overwrite(folder, corpus_file, tmp_path):
    (tmp_path / "pcs.json").write_text("{}")
    line = error_line(cli("pca", "--model", folder, "--corpus", corpus_file, "--seq", "16", "--site",
                          "L0.mlp_post", "--components", "2", "--out", tmp_path / "pcs.npy"))
    assert "pcs.json already exist(s); add --overwrite" in line
    assert (tmp_path / "pcs.json").read_text() == "{}" and not (tmp_path / "pcs.npy").exists()
