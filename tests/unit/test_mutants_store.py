"""Checks that kill the mutants of the third `make mutation` round in store/writer.py (folders, JSON
files, pickles, the full-disk message), store/manifest.py (messages, defaults, empty sites),
store/reader.py (token texts, a plain array where fields belong),
sampling.py (the progress bar, the token ids' dtype), analysis/refstat.py (merging ranked lists,
a start space of one start)
and analysis/pages.py (the simulated batches' window positions) (docs/MUTATION.md; equivalent
ones: /work/notes/mut_M7.md).

The atlas functions read two tiny atlases built once (one with --context-pass); every function
under test is called inside the test (docs/MUTATION.md, "Module-scoped fixtures"), and checked
against numbers recomputed here from the returned starts, rows and columns.
"""

from __future__ import annotations

import errno
import json
from types import SimpleNamespace

import numpy as np
import pytest
from atlas_helpers import build_tiny_atlas, synthetic_source, tiny_tokens
from tiny_models import tiny_loaded

from maxact.analysis.pages import reference_tally, simulate_unit
from maxact.analysis.refstat import (
    covered_counts,
    merge_ranked,
    merge_ranked_min,
    win_probabilities,
)
from maxact.config import AtlasConfig
from maxact.corpus import CorpusInfo
from maxact.errors import MaxactError
from maxact.sampling import SampleConfig, sample_exact
from maxact.store import format as F
from maxact.store import writer
from maxact.store.manifest import ContextSpan, Manifest, ModelInfo, ReferenceGeometry, SiteInfo
from maxact.store.reader import Atlas
from maxact.units import parse_unit
from maxact.windows import StartSpace


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("mutants_store")
    common = dict(n_tokens=300, seed=4, sites=("resid_post",), layers=(1,))
    _, _, plain, _ = build_tiny_atlas(root / "plain", **common)
    _, _, two, _ = build_tiny_atlas(root / "two", **common, context_pass=True)
    return SimpleNamespace(plain=plain, two=two)


# ---- store/writer.py -----------------------------------------------------------------------------
MANIFEST = Manifest(
    created="2025-01-01T00:00:00+00:00",
    model=ModelInfo(name="tiny", family="llama", n_layers=1, d_model=2, d_mlp=4, n_heads=1, n_kv_heads=1, d_head=2),
    corpus=CorpusInfo(name="synthetic", path="", sha256="0" * 64, n_tokens=20),
    seq=8, k=2, k_ctx=1, context=ContextSpan(before=4, after=2), hist_stride=8, min_tuning_count=5,
    reference=ReferenceGeometry(batch=2, seq=8, samples=4, seed=0), n_units=2,
    sites=(SiteInfo(name="L0.resid_pre", site="resid_pre", layer=0, width=2, offset=0,
                    hf_module="model.layers.0", reads="input", tl_hook="blocks.0.hook_resid_pre"),))
VOCAB_TEXTS = ["\u00e9t\u00e9", " \u65e5\u672c", "a\"b", "w3"]


def _write(out, arrays):
    writer.write_atlas(out, arrays, MANIFEST, AtlasConfig(seq=8, seed=3), VOCAB_TEXTS)


def test_write_atlas_makes_missing_folders_and_readable_json_files(tmp_path):
    out = tmp_path / "not" / "yet" / "atlas"  # its parents do not exist
    tokens = np.arange(20, dtype=np.int32) % 4
    _write(out, {F.TOKENS: tokens})
    atlas = Atlas(out)
    np.testing.assert_array_equal(atlas.tokens, tokens)
    assert atlas.vocab == VOCAB_TEXTS
    # vocab.json is UTF-8 text (no \\u escapes), config.json is indented by one space
    assert (out / F.VOCAB).read_bytes() == json.dumps(VOCAB_TEXTS, ensure_ascii=False).encode()
    assert "\u00e9t\u00e9".encode() in (out / F.VOCAB).read_bytes()
    config = AtlasConfig(seq=8, seed=3).to_json()
    assert (out / F.CONFIG).read_text() == json.dumps(config, indent=1)


def test_write_atlas_never_writes_a_pickle(tmp_path):
    out = tmp_path / "atlas"
    with pytest.raises(ValueError, match="allow_pickle=False"):
        _write(out, {F.TOKENS: np.array([1, "a"], dtype=object)})
    assert not (out / F.MANIFEST).exists() and not (out / F.TOKENS).exists()
    assert [p.name for p in out.iterdir()] == []  # no staging folder left


@pytest.mark.parametrize(("nbytes", "mb"), [(10**6, 1), (10**6 + 1, 2), (3 * 10**6 - 1, 3)])
def test_full_disk_message_rounds_the_megabytes_needed_up(tmp_path, monkeypatch, nbytes, mb):
    def save(f, arr, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer.np, "save", save)
    out = tmp_path / "atlas"
    with pytest.raises(MaxactError) as e:
        _write(out, {F.TOKENS: np.zeros(nbytes, dtype=np.uint8)})
    assert str(e.value) == f"no space left on {out} (needed about {mb} MB); free some space and run again"


# ---- store/manifest.py ---------------------------------------------------------------------------
def _manifest_json() -> dict:
    return {**MANIFEST.to_json(), "files": {}}


def test_manifest_errors_name_the_manifest_the_type_found_and_every_missing_key():
    with pytest.raises(MaxactError, match=r"^manifest must be a JSON object, found list: the atlas is corrupt"):
        Manifest.from_json([])
    with pytest.raises(MaxactError, match=r"^manifest: model must be a JSON object, found list$"):
        Manifest.from_json({**_manifest_json(), "model": [1]})
    model = {k: v for k, v in _manifest_json()["model"].items() if k not in ("family", "n_layers")}
    with pytest.raises(MaxactError, match=r"^manifest: model lacks family, n_layers$"):
        Manifest.from_json({**_manifest_json(), "model": model})


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("corpus", [1], "manifest: corpus must be a JSON object, found list"),
    ("context", [1], "manifest: context must be a JSON object, found list"),
    ("reference", [1], "manifest: reference must be a JSON object, found list"),
    ("sites", [[1]], "manifest: site must be a JSON object, found list"),
    ("bands", [1], "manifest: bands must be a JSON object, found list"),
    ("documents", [1], "manifest: documents must be a JSON object, found list"),
    ("files", {F.TOKENS: [1]}, f"manifest: file {F.TOKENS} must be a JSON object, found list"),
    ("n_units", 3, "manifest: the sites hold 2 units, n_units says 3: the atlas is corrupt; rebuild it"),
    ("seq", "x", "manifest has a malformed field (invalid literal for int() with base 10: 'x'): "
                 "the atlas is corrupt; rebuild it"),
])
def test_manifest_errors_name_the_part_at_fault(key, value, expected):
    with pytest.raises(MaxactError) as e:
        Manifest.from_json({**_manifest_json(), key: value})
    assert str(e.value) == expected


def test_manifest_without_created_reads_as_empty_and_a_site_may_hold_no_unit():
    d = _manifest_json()
    del d["created"]
    assert Manifest.from_json(d).created == ""
    empty = {**d["sites"][0], "name": "L0.mlp_post", "site": "mlp_post", "width": 0, "offset": 2}
    m = Manifest.from_json({**d, "sites": [*d["sites"], empty]})
    assert [(s.name, s.width, s.offset) for s in m.sites] == [("L0.resid_pre", 2, 0), ("L0.mlp_post", 0, 2)]


# ---- store/reader.py -----------------------------------------------------------------------------
def test_a_missing_atlas_or_manifest_is_named_with_the_way_on(tmp_path):
    absent = tmp_path / "nope"
    with pytest.raises(MaxactError) as e:
        Atlas(absent)
    assert str(e.value) == f"atlas {str(absent)!r} does not exist; build one with `maxact atlas --out {absent}`"
    out = tmp_path / "atlas"
    out.mkdir()
    missing = f"{out} is not a finished atlas: {F.MANIFEST} is missing"
    hints = ["", " (a shard partial: combine shards with `maxact merge`)",
             " (an interrupted run: continue it with `maxact atlas ... --resume`)"]
    for make, hint in zip([lambda: None, (out / F.PARTIAL).touch, (out / F.RUN_DIR).mkdir], hints):
        make()
        with pytest.raises(MaxactError) as e:
            Atlas(out)
        assert str(e.value) == missing + hint


def test_array_faults_are_one_line_naming_the_file(tmp_path):
    """A pickled array of the right shape is refused unread (never unpickled); a missing or unlisted
    file is named."""
    out = tmp_path / "atlas"
    _write(out, {F.TOKENS: np.arange(20, dtype=np.int32), F.HIST_BOUNDS: np.zeros(3, dtype=np.float64)})
    np.save(out / F.TOKENS, np.array([{"a": 1}] * 20, dtype=object), allow_pickle=True)
    with pytest.raises(MaxactError) as e:
        Atlas(out)
    message = str(e.value)  # numpy's reason in the brackets: no object array can be memory-mapped
    assert message.startswith(f"{out / F.TOKENS} is corrupt or truncated (") and "object" in message.lower()
    assert message.endswith("); rebuild the atlas")
    (out / F.TOKENS).unlink()
    with pytest.raises(MaxactError) as e:
        Atlas(out)
    assert str(e.value) == f"{out / F.TOKENS} is missing: the atlas is incomplete or corrupt; rebuild it"
    _write(out, {F.TOKENS: np.arange(20, dtype=np.int32)})
    atlas = Atlas(out)
    assert isinstance(atlas[F.TOKENS], np.memmap)
    with pytest.raises(MaxactError) as e:
        atlas[F.HIST_BOUNDS]  # left behind by the first write, not listed by the second
    assert str(e.value) == (f"{out / F.HIST_BOUNDS} is not among the files {F.MANIFEST} lists: the atlas is "
                            f"incomplete or from another version; rebuild it")


def test_token_text_covers_every_id_of_the_vocabulary_and_only_those(built):
    atlas = built.plain
    vocab = atlas.vocab
    assert atlas.token_text(0) == vocab[0]  # token id 0 is a token like any other
    assert atlas.token_text(len(vocab) - 1) == vocab[-1]
    assert atlas.token_text(len(vocab)) == f"<{len(vocab)}>"  # one past the vocabulary
    assert atlas.token_text(-1) == "<-1>"


def test_a_plain_array_tagged_structured_is_refused_naming_its_dtype(tmp_path):
    """A file the manifest marks as structured that has no fields and no fields of this version
    (any file but stats, reference and type stats): the message says named fields are read."""
    out = tmp_path / "atlas"
    _write(out, {F.TOKENS: np.arange(20, dtype=np.int32)})
    manifest = json.loads((out / F.MANIFEST).read_text())
    manifest["files"][F.TOKENS]["dtype"] = F.STRUCTURED_TAG
    (out / F.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(MaxactError) as e:
        Atlas(out)
    assert str(e.value) == (f"{out / F.TOKENS} has fields (<i4), this version reads (named fields): "
                            f"the atlas is corrupt or from another version; rebuild it")


# ---- sampling.py ---------------------------------------------------------------------------------
def _sample(progress: bool):
    units = [parse_unit("L0.resid_pre:0"), parse_unit("L1.resid_post:5")]
    source = synthetic_source(tiny_tokens(200, 1))
    config = SampleConfig(model="tiny-llama", corpus="synthetic", batch=3, seq=12, samples=5, seed=2)
    return source, sample_exact(tiny_loaded("llama"), source, units, config, progress=progress)


def test_sample_exact_progress_counts_batches(capsys):
    _sample(progress=True)
    err = capsys.readouterr().err
    assert "batches: 100%" in err and "5/5" in err and "batch/s]" in err  # the bar's unit: batches


def test_sample_exact_is_silent_without_progress_and_gives_int64_token_ids(capsys):
    source, result = _sample(progress=False)
    assert capsys.readouterr().err == ""
    tokens = np.asarray(source.tokens)
    for u in result.units:
        assert u.token_ids.dtype == np.int64
        positions = result.starts[np.arange(5), u.rows] + u.cols
        np.testing.assert_array_equal(u.token_ids, tokens[positions])


# ---- analysis/refstat.py -------------------------------------------------------------------------
def test_merge_ranked_orders_by_value_then_position_with_empty_slots_last():
    nan, inf = np.nan, np.inf
    v1 = np.array([[3.0, 1.0, -inf], [2.0, nan, nan]], dtype=np.float32)
    p1 = np.array([[9, 4, 7], [5, -1, -1]], dtype=np.int64)
    v2 = np.array([[nan, 3.0], [2.0, 2.0]], dtype=np.float32)
    p2 = np.array([[-1, 2], [1, 8]], dtype=np.int64)
    v, p = merge_ranked(v1, p1, v2, p2, 5)
    # a value of -inf is a value: it ranks before the empty slot (NaN, -1)
    np.testing.assert_array_equal(v[0], np.array([3.0, 3.0, 1.0, -inf, nan], dtype=np.float32))
    np.testing.assert_array_equal(p[0], [2, 9, 4, 7, -1])
    np.testing.assert_array_equal(v[1], np.array([2.0, 2.0, 2.0, nan, nan], dtype=np.float32))
    np.testing.assert_array_equal(p[1], [1, 5, 8, -1, -1])
    assert v.dtype == np.float32 and p.dtype == np.int64
    # bottom lists: value ascending, +inf before the empty slot
    vb, pb = merge_ranked_min(-v1, p1, -v2, p2, 4)
    np.testing.assert_array_equal(vb[0], np.array([-3.0, -3.0, -1.0, inf], dtype=np.float32))
    np.testing.assert_array_equal(pb[0], [2, 9, 4, 7])


def test_one_start_covers_the_first_window_only():
    """A corpus of seq + 1 tokens holds one reference start: the first ranked position inside its
    window wins every batch."""
    space = StartSpace.of(np.zeros(1, dtype=np.int64), 9, 8)
    assert space.n_starts == 1
    positions = np.array([[8, 3, 5, -1], [2, 8, 0, -1]], dtype=np.int64)
    counts = covered_counts(positions, space)
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, [[0, 1, 1, 1], [1, 1, 1, 1]])
    probs, miss = win_probabilities(positions, space, batch=3)
    np.testing.assert_array_equal(probs, [[0, 1, 0, 0], [1, 0, 0, 0]])
    np.testing.assert_array_equal(miss, [0, 0])


# ---- analysis/pages.py: reference_tally, simulate_unit -------------------------------------------
def test_reference_tally_reads_the_token_at_corpus_position_0(built):
    """The expected shares sum each reference position's probability onto the token there, corpus
    position 0 included (a sink: it is in the reference list of units here)."""
    atlas = built.plain
    tokens = np.asarray(atlas.tokens)
    assert tokens[0] != tokens[1]
    positions, probs = np.asarray(atlas[F.REF_POSITIONS]), np.asarray(atlas[F.REF_PROBS], dtype=np.float64)
    rows = [r for r in range(atlas.n_units) if ((positions[r] == 0) & (probs[r] > 1e-3)).any()]
    assert rows  # unit 37 here
    for row in rows:
        expected: dict[int, float] = {}
        for p, pr in zip(positions[row], probs[row]):
            if p >= 0 and pr > 0:
                expected[int(tokens[p])] = expected.get(int(tokens[p]), 0.0) + float(pr)
        got = {r["token_id"]: r["expected_share"] for r in reference_tally(atlas, row)["tally"]}
        assert got[int(tokens[0])] == pytest.approx(expected[int(tokens[0])], rel=1e-9)
        for t, share in got.items():
            assert share == pytest.approx(expected.get(t, 0.0), rel=1e-9, abs=1e-15)


SEQ, BATCH, SAMPLES = 8, 1, 60  # short windows, one per batch: many batches miss the top-K


def _check_simulated(atlas, rows, skip_pos0: bool, drawn_window: bool):
    """Every simulated batch of the rows: hits at the winner's window position (the drawn window's
    with two contexts, else the atlas pass's), misses with -1 ids and positions and NaN values, the
    tally's position-0 wins counted from those positions. Returns (hits, misses, pos0 wins)."""
    L = atlas.windowing.length
    assert list(atlas.doc_starts) == [0] and atlas.windowing.bos_id is None  # windows tile from 0
    tokens = np.asarray(atlas.tokens)
    n_hit = n_miss = n_pos0 = 0
    for row in rows:
        sim = simulate_unit(atlas, row, BATCH, SEQ, SAMPLES, 7, skip_pos0)
        assert sim.values.dtype == np.float32 and sim.token_ids.dtype == np.int64
        assert sim.window_pos.dtype == np.int64 and sim.window_pos.shape == (SAMPLES,)
        hit = ~np.isnan(sim.values)
        position = sim.starts[np.arange(SAMPLES), sim.rows] + sim.cols
        expected = sim.cols if drawn_window else position - position // L * L
        np.testing.assert_array_equal(sim.window_pos[hit], expected[hit])
        np.testing.assert_array_equal(sim.token_ids[hit], tokens[position[hit]])
        np.testing.assert_array_equal(sim.window_pos[~hit], -1)
        np.testing.assert_array_equal(sim.token_ids[~hit], -1)
        pos0 = int((hit & (expected == 0)).sum())
        assert sim.tally.pos0_wins == pos0
        assert sim.tally.n_missed == int((~hit).sum()) and sim.tally.n_batches == SAMPLES
        n_hit, n_miss, n_pos0 = n_hit + int(hit.sum()), n_miss + int((~hit).sum()), n_pos0 + pos0
    return n_hit, n_miss, n_pos0


def test_simulated_window_positions_are_the_atlas_pass_windows(built):
    atlas = built.plain
    assert atlas.manifest.reference.contexts == 1
    for skip_pos0 in (False, True):
        n_hit, n_miss, n_pos0 = _check_simulated(atlas, range(0, atlas.n_units, 4), skip_pos0, False)
        assert n_hit > 50 and n_miss > 50
        if not skip_pos0:
            assert n_pos0 > 0  # winners at the atlas window's position 0 (a sink) are counted


def test_simulated_window_positions_with_two_contexts_are_the_drawn_windows(built):
    atlas = built.two
    assert atlas.manifest.reference.contexts == 2
    totals = np.zeros(3, dtype=np.int64)
    for skip_pos0 in (False, True):
        totals += _check_simulated(atlas, range(0, atlas.n_units, 4), skip_pos0, True)
    n_hit, n_miss, n_pos0 = totals
    assert n_hit > 50 and n_miss > 50 and n_pos0 > 0
