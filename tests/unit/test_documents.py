"""Documents (docs/METHOD.md, "Documents"): windows never span two documents, a BOS token may start
every window, and the reference statistic draws only windows that fit inside one document (the
plan, start space and reference statistic alone, without a model: test_documents_windows.py).

Every expectation here is computed from the documented rules, written out again in plain Python:
the atlas against every window fed separately through the model ([BOS] + the window's tokens);
exact sampling against the documented draw over the list of valid starts and a plain HF forward;
the reference probabilities against enumeration of every start tuple.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from atlas_helpers import single_thread, synthetic_source
from documents_helpers import (
    BOS,
    DOC_LENGTHS,
    KC,
    SEQ,
    K,
    brute_covered,
    doc_source,
    documents,
    plan_windows,
    valid_starts,
)
from tiny_models import tiny_loaded

from maxact.analysis.pages import examples, unit_page
from maxact.capture import capture
from maxact.config import AtlasConfig
from maxact.corpus import TokenSource
from maxact.engine.runner import ordered_refs
from maxact.engine.topk import C_AFTER, C_BEFORE
from maxact.errors import MaxactError
from maxact.store import format as F
from maxact.store.reader import Atlas
from maxact.windows import Windowing


# =================================================================================================
# an atlas of documents against every window fed separately
# =================================================================================================
def build_doc_atlas(out, source, lm=None, **config):
    from maxact.pipeline import build_atlas

    lm = lm or tiny_loaded("llama")
    settings = dict(model="tiny-llama", corpus="docs", seq=SEQ, sites=tuple(lm.adapter.sites), k=K, k_ctx=KC,
                    max_types=32, windows_per_batch=3, ref_batch=4, ref_samples=200)
    cfg = AtlasConfig(**{**settings, **config})
    with single_thread():
        build_atlas(lm, source, cfg, Path(out), progress=False, echo=lambda m: None)
    return lm, cfg


class DocBrute:
    """A documents atlas and the activation of every unit at every fed token, each window fed alone.

    A forward pass over a few short rows may round differently alone than in a batch (the atlas
    feeds equal-length document tails several to a pass), so values agree to float32 rounding and
    ranked lists up to near-ties; the shards and resume tests below check exact equality."""

    def __init__(self, out, bos: bool, tail: str):
        self.source = doc_source()
        self.lm, self.cfg = build_doc_atlas(out, self.source, bos=bos, doc_tail=tail)
        self.atlas = Atlas(out)
        self.length = SEQ - 1 if bos else SEQ
        self.windows = plan_windows(self.source, self.length, tail)
        refs = ordered_refs(self.lm.adapter, self.cfg)
        acts, pos = [], []
        with single_thread():
            for s, e in self.windows:
                ids = ([BOS] if bos else []) + self.source.tokens[s:e].tolist()
                got = capture(self.lm.adapter, torch.tensor([ids]), refs)
                first = 1 if bos else 0  # the BOS position is fed, never counted
                acts.append(np.concatenate([got[r][0, first:].float().numpy() for r in refs], axis=1))
                pos.append(np.arange(s, e))
        self.acts = np.concatenate(acts)  # (n_fed, U)
        self.pos = np.concatenate(pos)  # (n_fed,)
        self.window_start = np.concatenate([np.full(e - s, s) for s, e in self.windows])
        self.window_end = np.concatenate([np.full(e - s, e) for s, e in self.windows])

    def ranked(self, largest: bool, pos0: bool | None, k: int = K):
        keep = np.ones(len(self.pos), bool) if pos0 is None else (self.pos == self.window_start) == pos0
        v = self.acts[keep]
        p = np.broadcast_to(self.pos[keep][:, None], v.shape)
        order = np.lexsort((p, -v if largest else v), axis=0)[:k]
        return np.take_along_axis(v, order, 0).T, np.take_along_axis(p, order, 0).T

    def at(self, positions: np.ndarray) -> np.ndarray:
        """(U, k) the brute-force activation of each unit at each of its (U, k) positions."""
        row = np.searchsorted(self.pos, positions)  # self.pos is increasing
        assert (self.pos[row] == positions).all()  # every listed position was fed
        return self.acts[row, np.arange(len(positions))[:, None]]

    def assert_ranked(self, values, positions, largest: bool, pos0: bool | None) -> None:
        """The atlas's (U, K) list is the brute-force top (or bottom) K, to rounding and near-ties:
        the same sorted values, each listed position holding its listed value, none listed twice."""
        bv, _ = self.ranked(largest, pos0)
        values, positions = np.asarray(values), np.asarray(positions)
        np.testing.assert_allclose(values, bv, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(values, self.at(positions), rtol=1e-5, atol=1e-6)
        assert all(len(set(row)) == len(row) for row in positions.tolist())
        if pos0 is not None:
            starts = self.window_start[np.searchsorted(self.pos, positions)]
            assert ((positions == starts) == pos0).all()


@pytest.fixture(scope="module", params=[(True, "short"), (False, "drop")], ids=["bos-short", "nobos-drop"])
def docs(request, tmp_path_factory):
    bos, tail = request.param
    return DocBrute(tmp_path_factory.mktemp(f"docs-{bos}-{tail}"), bos, tail)


def test_the_store_records_the_documents_and_how_they_were_fed(docs):
    a, m = docs.atlas, docs.atlas.manifest
    np.testing.assert_array_equal(a[F.DOC_STARTS], docs.source.doc_starts)
    assert a[F.DOC_STARTS].dtype == np.int64
    assert m.documents.n_docs == len(DOC_LENGTHS) and m.documents.doc_tail == docs.cfg.doc_tail
    assert m.documents.bos == docs.cfg.bos and m.documents.bos_id == (BOS if docs.cfg.bos else None)
    assert m.documents.window_tokens == docs.length
    assert m.reference.docs_without_window == sum(n <= docs.length for n in DOC_LENGTHS)
    assert a.windowing == Windowing(SEQ, BOS if docs.cfg.bos else None, docs.cfg.doc_tail)
    assert m.windows == [0, len(docs.windows)]


@pytest.mark.parametrize("part, largest, pos0", [
    ("top", True, False), ("bottom", False, False), ("top0", True, True), ("bottom0", False, True)])
def test_ranked_lists_equal_every_window_fed_alone(docs, part, largest, pos0):
    docs.assert_ranked(docs.atlas[f"{part}_values.npy"], docs.atlas[f"{part}_positions.npy"], largest, pos0)


def test_counts_and_tuning_cover_the_fed_tokens_only(docs):
    st = docs.atlas[F.STATS]
    assert (st["count"] == len(docs.pos)).all()
    np.testing.assert_allclose(st["mean"], docs.acts.astype(np.float64).mean(0), rtol=1e-5, atol=1e-6)
    counts = np.asarray(docs.atlas[F.TUNING_COUNTS])
    fed = docs.source.tokens[docs.pos]
    assert counts.sum() == len(fed)
    ids = np.asarray(docs.atlas[F.TUNING_IDS])
    for i, t in enumerate(ids[:5]):
        assert counts[i] == (fed == t).sum()
        np.testing.assert_allclose(docs.atlas[F.TUNING_MEANS][i], docs.acts[fed == t].mean(0), rtol=1e-4, atol=1e-5)


def test_contexts_stay_inside_the_window_and_so_inside_the_document(docs):
    U = docs.acts.shape[1]
    where = {int(p): i for i, p in enumerate(docs.pos)}
    for part in ("top", "bottom"):
        ctx = np.asarray(docs.atlas[f"{part}_context.npy"])  # (U, KC, C)
        bp = np.asarray(docs.atlas[f"{part}_positions.npy"])[:, :KC]
        for u in range(0, U, 7):
            for r in range(KC):
                p = int(bp[u, r])
                i = where[p]
                lo, hi = docs.window_start[i], docs.window_end[i]
                q = p + np.arange(-C_BEFORE, C_AFTER)
                inside = (q >= lo) & (q < hi)
                expect = np.array([docs.acts[where[int(x)], u] if ok else np.nan for x, ok in zip(q, inside)])
                np.testing.assert_allclose(ctx[u, r].astype(np.float32), expect, rtol=2e-3, atol=1e-5)
                assert (np.isnan(ctx[u, r]) == ~inside).all()
    # the pages: context and window position from the document's own windows
    doc_of = np.searchsorted(docs.source.doc_starts, np.arange(len(docs.source)), side="right") - 1
    for row in range(0, U, 11):
        for item in examples(docs.atlas, row, "top") + examples(docs.atlas, row, "bottom0"):
            p = item["position"]
            i = where[p]
            assert item["window_pos"] == p - docs.window_start[i]
            if "context" in item:
                c = item["context"]
                span = np.arange(c["start"], c["start"] + len(c["token_ids"]))
                assert (doc_of[span] == doc_of[p]).all() and span[0] >= docs.window_start[i]
                assert c["token_ids"] == docs.source.tokens[span].tolist()
    page = unit_page(docs.atlas, str(docs.atlas.unit_at(5)))
    bands = page["bands"]["levels"] + [{"examples": page["bands"]["random"]}]
    for e in (e for level in bands for e in level["examples"]):
        span = np.arange(e["context"]["start"], e["context"]["start"] + len(e["context"]["token_ids"]))
        i = where[e["position"]]
        assert span[0] >= docs.window_start[i] and span[-1] < docs.window_end[i]
        assert e["window_pos"] == e["position"] - docs.window_start[i]


def test_reference_probabilities_use_windows_inside_documents(docs):
    a = docs.atlas
    bp = np.asarray(a[F.REF_POSITIONS])
    docs.assert_ranked(docs.at(bp), bp, True, None)  # the top-K over all positions, window starts too
    rows = np.arange(0, len(bp), 29)  # brute force is slow: a spread of units
    bp = bp[rows]
    valid = valid_starts(docs.source, docs.length)  # reference windows of ref_seq = SEQ tokens, BOS among them
    covered = brute_covered(bp, docs.source, docs.length).astype(np.float64)
    survive = (1 - covered / len(valid)) ** docs.cfg.ref_batch
    probs = np.concatenate([np.ones((len(bp), 1)), survive[:, :-1]], 1) - survive
    np.testing.assert_allclose(a[F.REF_PROBS][rows], probs.astype(np.float32), rtol=1e-6, atol=1e-7)
    at_start = np.isin(bp, [s for s, _ in docs.windows])  # computed at a window's first corpus token
    assert at_start.any()
    pos0 = (probs * at_start).sum(1) / (1 - survive[:, -1])
    np.testing.assert_allclose(a[F.REF]["pos0_share"][rows], pos0.astype(np.float32), rtol=1e-5, atol=1e-7)


# =================================================================================================
# exact sampling and `sample --atlas` inside documents
# =================================================================================================
def test_exact_sampling_with_bos_equals_brute_force_inside_documents():
    from maxact.sampling import SampleConfig, sample_exact
    from maxact.units import parse_unit

    lm = tiny_loaded("llama")
    source = doc_source()
    units = [parse_unit("L1.resid_pre:3"), parse_unit("L2.resid_pre:7")]
    cfg = SampleConfig(model="tiny", corpus="docs", batch=4, seq=SEQ, samples=12, seed=4)
    with single_thread():
        result = sample_exact(lm, source, units, cfg, progress=False)
    assert result.config.bos is True and result.config.n_docs == len(DOC_LENGTHS)
    assert result.config.docs_without_window == sum(n <= SEQ - 1 for n in DOC_LENGTHS)
    valid = np.array(valid_starts(source, SEQ - 1))
    rng = np.random.default_rng(4)
    for b in range(12):
        starts = valid[rng.integers(0, len(valid), size=4)]
        np.testing.assert_array_equal(result.starts[b], starts)
        X = torch.tensor([[BOS, *source.tokens[s : s + SEQ - 1].tolist()] for s in starts])  # (B, SEQ)
        with torch.no_grad():
            hidden = lm.model(X, output_hidden_states=True).hidden_states
        for u, got in zip(units, result.units):
            A = hidden[u.layer][:, 1:, u.index].numpy()  # the BOS position never wins
            i = int(np.argmax(A))
            row, col = divmod(i, SEQ - 1)
            assert (got.rows[b], got.cols[b], got.values[b]) == (row, col, A.flat[i])
            assert got.token_ids[b] == source.tokens[starts[row] + col]
    # every window lies inside one document
    doc_of = np.searchsorted(source.doc_starts, np.arange(len(source)), side="right") - 1
    assert (doc_of[result.starts] == doc_of[result.starts + SEQ - 2]).all()
    # --no-bos on the same documents: windows of SEQ corpus tokens, the draws of that space
    with single_thread():
        plain = sample_exact(lm, source, units[:1], replace(cfg, bos=False, samples=3), progress=False)
    rng = np.random.default_rng(4)
    valid = np.array(valid_starts(source, SEQ))
    assert plain.config.bos is False
    assert plain.starts.tolist() == [valid[rng.integers(0, len(valid), size=4)].tolist() for _ in range(3)]


def test_sample_atlas_draws_the_exact_runs_starts_and_agrees_on_the_embedding(tmp_path):
    from maxact.atlas_sample import sample_from_atlas
    from maxact.sampling import SampleConfig, sample_exact
    from maxact.units import parse_unit

    source = doc_source()
    lm, _ = build_doc_atlas(tmp_path / "a", source, sites=("resid_pre",), layers=(0,))
    atlas = Atlas(tmp_path / "a")
    cfg = SampleConfig(model="tiny", corpus="docs", batch=4, seq=SEQ, samples=60, seed=9)
    with single_thread():
        exact = sample_exact(lm, source, [parse_unit("L0.resid_pre:5")], cfg, progress=False)
    sim = sample_from_atlas(atlas, ["L0.resid_pre:5"], 4, SEQ, 60, 9, False)
    np.testing.assert_array_equal(exact.starts, sim.starts)
    assert (sim.config.bos, sim.config.n_docs, sim.config.docs_without_window) == (
        exact.config.bos, exact.config.n_docs, exact.config.docs_without_window)
    # L0.resid_pre is the token embedding (no context): wherever the atlas's top-K answers a batch,
    # it names the exact run's winning token and value
    e, s = exact.units[0], sim.units[0]
    hit = ~np.isnan(s.values)
    assert hit.sum() > 10
    np.testing.assert_array_equal(s.token_ids[hit], e.token_ids[hit])
    np.testing.assert_array_equal(s.values[hit], e.values[hit])


# =================================================================================================
# shards, merge and resume on documents
# =================================================================================================
def _arrays(path) -> dict[str, np.ndarray]:
    a = Atlas(path)
    return {name: np.asarray(a[name]) for name in a.manifest.files}


def assert_same(got: np.ndarray, want: np.ndarray, name: str) -> None:
    """Equal arrays, NaN equal to NaN (field by field for structured arrays)."""
    for field in want.dtype.names or (None,):
        g, w = (got, want) if field is None else (got[field], want[field])
        np.testing.assert_array_equal(g, w, err_msg=f"{name} {field or ''}")


EXACT = (F.TOP_VALUES, F.TOP_POSITIONS, F.TOP0_VALUES, F.TOP0_POSITIONS, F.BOTTOM_VALUES, F.BOTTOM_POSITIONS,
         F.TOP_CONTEXT, F.BOTTOM_CONTEXT, F.HIST, F.BAND_POSITIONS, F.BAND_VALUES, F.TOKENS, F.DOC_STARTS,
         F.REF_POSITIONS, F.REF_PROBS, F.TUNING_IDS, F.TUNING_COUNTS)


def test_shards_merged_and_a_resumed_run_equal_one_run(tmp_path):
    from maxact.engine.runner import AtlasRun
    from maxact.pipeline import build_atlas, merge_partials
    from maxact.pipeline.outdir import save_state

    source = doc_source()
    common = dict(sites=("resid_pre", "mlp_post"), layers=(1,))
    lm, cfg = build_doc_atlas(tmp_path / "one", source, **common)
    one = _arrays(tmp_path / "one")
    for i in range(3):
        build_doc_atlas(tmp_path / f"s{i}", source, lm, shard=(i, 3), **common)
    with single_thread():
        merge_partials([tmp_path / f"s{i}" for i in (2, 0, 1)], tmp_path / "m", echo=lambda m: None,
                       load_model=lambda name, device: lm, load_source=lambda *args: source)
    merged = _arrays(tmp_path / "m")
    for name in EXACT:
        assert_same(merged[name], one[name], name)
    for name in ("mean", "std"):
        np.testing.assert_allclose(merged[F.STATS][name], one[F.STATS][name], rtol=1e-5, atol=1e-6)
    # other document starts over the same tokens: merge refuses, the partials are tied to them
    moved = TokenSource(source.tokens, source.doc_starts[:-1], source.info)
    with pytest.raises(MaxactError, match="now gives other tokens"):
        merge_partials([tmp_path / "s0", tmp_path / "s1"], tmp_path / "m2", echo=lambda m: None,
                       load_model=lambda name, device: lm, load_source=lambda *args: moved)
    # a run stopped after two batches and resumed from its checkpoint
    out = tmp_path / "resumed"
    (out / F.RUN_DIR).mkdir(parents=True)
    with single_thread():
        run = AtlasRun(lm, source, cfg)
        run.run(progress=False, stop_after_batches=2)
        save_state(run.state(), out / F.RUN_DIR / F.CHECKPOINT)
        build_atlas(lm, source, cfg, out, resume=True, progress=False, echo=lambda m: None)
    resumed = _arrays(out)
    assert resumed.keys() == one.keys()
    for name in one:
        assert_same(resumed[name], one[name], name)


def test_a_model_without_bos_feeds_documents_without_and_refuses_bos(tmp_path):
    lm = tiny_loaded("gpt2")
    lm.model.config.bos_token_id = None
    source = doc_source()
    build_doc_atlas(tmp_path / "a", source, lm, model="tiny-gpt2", sites=("resid_pre",), layers=(0,))
    assert Atlas(tmp_path / "a").manifest.documents.bos is False
    with pytest.raises(MaxactError, match="--bos: model tiny-gpt2 has no BOS token"):
        build_doc_atlas(tmp_path / "b", source, lm, model="tiny-gpt2", sites=("resid_pre",), layers=(0,), bos=True)


def test_a_single_text_feeds_no_bos_unless_asked(tmp_path):
    tokens = doc_source().tokens
    build_doc_atlas(tmp_path / "a", synthetic_source(tokens), sites=("resid_pre",), layers=(0,))
    docs = Atlas(tmp_path / "a").manifest.documents
    assert (docs.n_docs, docs.bos, docs.bos_id, docs.window_tokens) == (1, False, None, SEQ)
    build_doc_atlas(tmp_path / "b", synthetic_source(tokens), sites=("resid_pre",), layers=(0,), bos=True)
    docs = Atlas(tmp_path / "b").manifest.documents
    assert (docs.bos, docs.bos_id, docs.window_tokens) == (True, BOS, SEQ - 1)


# =================================================================================================
# the command line: --bos/--no-bos, --doc-tail, on a JSONL corpus of documents
# =================================================================================================
def test_cli_options_on_a_jsonl_corpus(tmp_path):
    import json

    from atlas_helpers import error_line, run_cli, save_tiny_folder
    from transformers import PreTrainedTokenizerFast

    plain = save_tiny_folder(tmp_path / "plain")  # its tokenizer names no BOS token
    folder = save_tiny_folder(tmp_path / "bos")
    tok = PreTrainedTokenizerFast.from_pretrained(folder)
    tok.bos_token = "[UNK]"  # id 0, as the model's config says
    tok.save_pretrained(folder)
    source = doc_source()
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": " ".join(f"w{t}" for t in source.tokens[s:e])}) + "\n"
                              for s, e in documents(source)))
    common = ["--seq", SEQ, "--k", 4, "--sites", "resid_pre", "--layers", "0", "--windows-per-batch", 3]

    def ok(result):
        assert result.exit_code == 0, (result.output, result.exception)
        return result

    ok(run_cli("atlas", "--model", folder, "--corpus", corpus, "--out", tmp_path / "a", *common))
    a = Atlas(tmp_path / "a")
    np.testing.assert_array_equal(a.tokens, source.tokens)
    np.testing.assert_array_equal(a[F.DOC_STARTS], source.doc_starts)
    d = a.manifest.documents
    assert (d.n_docs, d.bos, d.bos_id, d.doc_tail, d.window_tokens) == (len(DOC_LENGTHS), True, 0, "short", SEQ - 1)
    assert a.config["bos"] is None and a.config["doc_tail"] == "short"  # as asked; the manifest has it resolved
    units = ["--unit", "L0.resid_pre:5", "--batch", 4, "--samples", 30, "--seed", 3, "--seq", SEQ]
    ok(run_cli("sample", "--model", folder, "--corpus", corpus, *units, "--json", tmp_path / "e.json"))
    ok(run_cli("sample", "--atlas", tmp_path / "a", *units, "--json", tmp_path / "s.json"))
    exact, sim = (json.loads((tmp_path / f).read_text()) for f in ("e.json", "s.json"))
    assert exact["starts"] == sim["starts"] and exact["config"]["bos"] is sim["config"]["bos"] is True
    valid = valid_starts(source, SEQ - 1)
    assert all(s in valid for batch in exact["starts"] for s in batch)

    ok(run_cli("atlas", "--model", folder, "--corpus", corpus, "--out", tmp_path / "b", *common,
               "--no-bos", "--doc-tail", "drop"))
    d = Atlas(tmp_path / "b").manifest.documents
    assert (d.bos, d.bos_id, d.doc_tail, d.window_tokens) == (False, None, "drop", SEQ)
    ok(run_cli("atlas", "--model", plain, "--corpus", corpus, "--out", tmp_path / "c", *common))
    assert Atlas(tmp_path / "c").manifest.documents.bos is False  # no BOS token: none fed
    line = error_line(run_cli("atlas", "--model", plain, "--corpus", corpus, "--out", tmp_path / "d", *common, "--bos"))
    assert "has no BOS token" in line and "--no-bos" in line
    line = error_line(run_cli("atlas", "--model", folder, "--corpus", corpus, "--out", tmp_path / "e", *common,
                              "--doc-tail", "keep"))
    assert "--doc-tail" in line and "short" in line and "drop" in line
