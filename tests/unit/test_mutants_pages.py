"""Checks that kill the mutants `make mutation` left alive in analysis/categories.py, overview.py,
pages.py, context_shares.py and store/ (docs/MUTATION.md; equivalent ones: /work/notes/mut_M2.md).

The pure functions get hand-made inputs whose answer is obvious; the atlas functions read copies of
one tiny atlas (nine sites, one of them layerless) with hand-written reference summaries, statistics
or logit lists, and are checked against numbers recomputed here. Every function under test is called
inside the test (docs/MUTATION.md, "Module-scoped fixtures").
"""

from __future__ import annotations

import gzip
import json
import math
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from atlas_helpers import FIVE_SITES, five_site_atlas

from maxact.analysis.categories import (
    Labels,
    is_tagged,
    match_tags,
    phrase_spans,
    property_groups,
    property_labels,
    read_lines,
    read_tagged,
    span_labels,
    token_labels,
    token_spans,
)
from maxact.analysis.context_shares import Segments, context_simulate
from maxact.analysis.overview import UnitScores, overview, site_units, unit_row_summary
from maxact.analysis.pages import find_units, logit_effects
from maxact.errors import MaxactError
from maxact.store import format as F
from maxact.store.export import export_parquet
from maxact.store.manifest import ReferenceGeometry, _from
from maxact.store.reader import Atlas


# ---- categories: labels ---------------------------------------------------------------------------
def test_group_counts_keep_the_empty_last_group():
    labels = Labels(("in", "out"), np.arange(2), np.array([0, 0], dtype=np.int64), np.ones(2, dtype=np.int64))
    counts = labels.group_counts()
    assert counts.tolist() == [2, 0] and counts.dtype == np.int64


def test_token_labels_groups_names_and_dtypes():
    labels = token_labels(np.array([5, 0, 7, 5], dtype=np.int32), [0, 5])
    assert labels.group_names == ("in", "out")
    assert labels.obs_group.tolist() == [0, 0, 1, 0] and labels.token_obs.tolist() == [0, 1, 2, 3]
    assert labels.obs_size.tolist() == [1, 1, 1, 1] and labels.obs_size.dtype == np.int64


def test_property_groups_are_int64_even_for_an_empty_vocabulary():
    for by in ("token-length", "capitalized"):
        names, group = property_groups(by, [])
        assert group.dtype == np.int64 and group.shape == (0,)
    names, group = property_groups("token-length", [" a", "abcdefghij", "  "])
    assert names[-1] == "8+" and group.tolist() == [0, 7, 0]
    labels = property_labels(np.array([2, 0]), "capitalized", ["A", "b", "1"])
    assert labels.obs_group.tolist() == [2, 0] and labels.obs_size.dtype == np.int64
    assert labels.obs_size.tolist() == [1, 1]


# ---- categories: word files -----------------------------------------------------------------------
def test_read_lines_strips_carriage_returns_only(tmp_path):
    p = tmp_path / "words.txt"
    p.write_bytes(b"BOX\r\n\n a b \r\nX\n")
    assert read_lines(p, "--words") == ["BOX", " a b ", "X"]


def test_read_lines_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.txt"
    with pytest.raises(MaxactError, match=r"--words .*missing.txt: no such file"):
        read_lines(missing, "--words")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(MaxactError, match=r"--words .*bad.txt cannot be read as UTF-8 text"):
        read_lines(bad, "--words")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(MaxactError, match=r"--words .*empty.txt holds no line of text"):
        read_lines(empty, "--words")


def test_phrase_spans_without_a_match_are_an_empty_int64_table():
    spans = phrase_spans("nothing here", ["absent"])
    assert spans.shape == (0, 2) and spans.dtype == np.int64
    assert phrase_spans("New York is new", ["New", "New York"]).tolist() == [[0, 8]]


def test_token_spans_leave_out_a_token_that_ends_where_the_span_starts():
    offsets = np.array([[0, 3], [3, 5], [5, 9]], dtype=np.int64)
    assert token_spans(offsets, np.array([[3, 5], [4, 7]], dtype=np.int64)).tolist() == [[1, 2], [1, 3]]


# ---- categories: span labels ----------------------------------------------------------------------
def test_span_labels_drop_the_later_of_two_overlapping_spans_by_start():
    # (1, 2) starts inside (0, 5): dropped, though it ends first
    labels = span_labels(8, np.array([[1, 2], [0, 5]]), np.array([1, 0]), "first", ("a", "b"), None)
    assert labels.obs_group.tolist() == [0]
    assert labels.token_obs.tolist() == [0, -1, -1, -1, -1, -1, -1, -1]


def test_span_labels_a_dropped_span_does_not_extend_the_cover():
    spans = np.array([[0, 3], [1, 10], [5, 6]])
    labels = span_labels(12, spans, np.array([0, 1, 0]), "last", ("a", "b"), None)
    assert labels.obs_group.tolist() == [0, 0]  # (0, 3) and (5, 6); (1, 10) dropped
    assert np.nonzero(labels.token_obs >= 0)[0].tolist() == [2, 5]


def test_span_labels_keep_the_first_given_of_spans_with_one_start():
    # 20 pairs of spans with one start each, given in shuffled order: the first of each pair stays
    rng = np.random.default_rng(0)
    pairs = [((3 * i, 3 * i + 1), (3 * i, 3 * i + 2)) for i in range(20)]
    spans, groups = [], []
    for i in rng.permutation(20):
        first_long = bool(rng.integers(2))
        a, b = pairs[i][::-1] if first_long else pairs[i]
        spans += [a, b]
        groups += [int(first_long), -2]  # group 1: the long one came first; -2 never kept
    groups = np.array(groups)
    groups[groups == -2] = 7
    labels = span_labels(60, np.array(spans), groups, "mean", tuple("abcdefgh"), None)
    sizes = {0: 1, 1: 2}
    kept = [(int(g), int(n)) for g, n in zip(labels.obs_group, labels.obs_size)]
    assert all(g != 7 for g, _ in kept) and len(kept) == 20
    assert all(n == sizes[g] for g, n in kept)


def test_span_labels_observations_and_their_dtypes():
    spans = np.array([[1, 3], [5, 6]])
    groups = np.array([0, 0])
    mean = span_labels(8, spans, groups, "mean", ("in", "out"), 1)
    assert mean.obs_size.dtype == np.int64 and mean.obs_size.tolist() == [2, 1] + [1] * 5
    assert mean.token_obs.tolist() == [2, 0, 0, 3, 4, 1, 5, 6]
    last = span_labels(8, spans, groups, "last", ("in", "out"), 1)
    assert last.obs_size.dtype == np.int64 and last.obs_size.tolist() == [1] * 7
    assert last.obs_group.tolist() == [0, 0, 1, 1, 1, 1, 1]
    none = span_labels(8, spans, groups, "last", ("in", "out"), None)
    assert none.token_obs.tolist() == [-1, -1, 0, -1, -1, 1, -1, -1]
    assert none.obs_size.dtype == np.int64


def test_span_labels_two_overlapping_spans_keep_one():
    labels = span_labels(6, np.array([[0, 3], [2, 4]]), np.array([0, 1]), "first", ("a", "b"), None)
    assert labels.obs_group.tolist() == [0]


# ---- categories: tagged corpora -------------------------------------------------------------------
def _jsonl(path, records, blank_after=None):
    lines = [json.dumps(r) for r in records]
    if blank_after is not None:
        lines.insert(blank_after, "")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_is_tagged_reads_plain_jsonl_and_checks_the_name_and_columns(tmp_path):
    rec = {"words": ["a"], "tags": ["x"]}
    assert is_tagged(_jsonl(tmp_path / "c.jsonl", [rec]))
    assert not is_tagged(_jsonl(tmp_path / "c.txt", [rec]))  # a file, but not .jsonl
    assert not is_tagged(_jsonl(tmp_path / "tags.jsonl", [{"tags": ["x"]}]))
    assert not is_tagged(_jsonl(tmp_path / "words.jsonl", [{"words": 1}]))
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    assert not is_tagged(tmp_path / "broken.jsonl")
    with gzip.open(tmp_path / "c.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")
    assert is_tagged(tmp_path / "c.jsonl.gz")


def test_read_tagged_documents_places_and_fields(tmp_path):
    path = _jsonl(tmp_path / "t.jsonl", [{"words": ["The", "cat"], "tags": ["at", "nn"]},
                                         {"words": ["sat", "``"], "tags": ["vbd", "``"]},
                                         {"words": ["Go"], "tags": ["vb"], "doc": "b"}], blank_after=1)
    t = read_tagged(path)
    assert (t.name, t.path) == ("t.jsonl", str(path))
    assert t.texts == ['The cat sat "', "Go"]  # no doc id: one document; the blank line skipped
    assert t.word_doc.tolist() == [0, 0, 0, 0, 1]
    assert t.word_chars.tolist() == [[0, 3], [4, 7], [8, 11], [12, 13], [0, 2]]
    assert t.tags == ("``", "at", "nn", "vb", "vbd")
    assert t.word_tags.tolist() == [1, 2, 4, 0, 3]


def test_read_tagged_stops_after_the_sentence_that_reaches_max_words(tmp_path):
    path = _jsonl(tmp_path / "t.jsonl", [{"words": ["a", "b"], "tags": ["x", "y"]},
                                         {"words": ["c"], "tags": ["z"]}])
    t = read_tagged(path, max_words=2)
    assert t.texts == ["a b"] and t.tags == ("x", "y")


def test_read_tagged_of_no_sentence_has_int64_arrays(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n\n")
    t = read_tagged(tmp_path / "e.jsonl")
    assert t.texts == [] and t.tags == ()
    assert t.word_doc.dtype == t.word_chars.dtype == t.word_tags.dtype == np.int64
    assert t.word_chars.shape == (0, 2)


def test_read_tagged_errors_name_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"words": ["a"], "tags": ["x"]}) + "\n[1]\n")
    with pytest.raises(MaxactError, match=r"bad.jsonl line 2 is no JSON object with `words` and `tags`"):
        read_tagged(path)
    path.write_text(json.dumps({"words": ["a"], "tags": ["x"]}) + "\n" + json.dumps({"words": ["a"], "tags": []}))
    with pytest.raises(MaxactError, match=r"bad.jsonl line 2 has 1 words and 0 tags"):
        read_tagged(path)


def test_match_tags_error_lists_sixty_tags():
    tags = tuple(f"t{i:02d}" for i in range(61))
    with pytest.raises(MaxactError) as e:
        match_tags(["zz*"], tags)
    assert str(e.value).endswith(", ".join(tags[:60]) + ", ... (61 in all)")


# ---- context_shares: one unit's simulation --------------------------------------------------------
def _segments(rows):
    lo, hi, value, cand = (np.array([[r[i] for r in rows]]) for i in range(4))
    return Segments(lo.astype(np.int64), hi.astype(np.int64), value.astype(np.float64), cand.astype(np.int64))


def test_context_simulate_against_brute_force():
    # best first: segment 0 covers start 2 alone (lo == hi), 1 is empty, 2 (the last) covers 5..7
    seg = _segments([(2, 2, 9.0, 3), (4, 3, -np.inf, 0), (5, 7, 4.0, 1)])
    index = np.array([[0, 1], [2, 6], [7, 5], [0, 3]])
    cand, row, value = context_simulate(seg, index, 8)
    assert cand.tolist() == [-1, 3, 1, -1]
    assert row.tolist()[1:3] == [0, 0]
    assert value.dtype == np.float64
    assert value[1:3].tolist() == [9.0, 4.0] and np.isnan(value[[0, 3]]).all()


# ---- store: manifest and export -------------------------------------------------------------------
def test_manifest_parts_take_their_defaults_and_name_what_is_missing():
    geo = _from(ReferenceGeometry, {"batch": 4, "seq": 8, "samples": 10, "seed": 1}, "m: reference")
    assert geo == ReferenceGeometry(4, 8, 10, 1, 0, 1)
    with pytest.raises(MaxactError, match="m: reference lacks seed$"):
        _from(ReferenceGeometry, {"batch": 4, "seq": 8, "samples": 10}, "m: reference")


# ---- a tiny atlas and hand-written copies ---------------------------------------------------------
SITES = FIVE_SITES


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return five_site_atlas(tmp_path_factory.mktemp("mutants_pages"))


def _copy(built, name, arrays=None, min_tuning_count=None, drop=()):
    """A copy of the atlas with some arrays replaced (the manifest's shapes follow) or dropped."""
    out = built.root / name
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(built.path, out)
    manifest = json.loads((out / F.MANIFEST).read_text())
    for fname, arr in (arrays or {}).items():
        np.save(out / fname, arr)
        manifest["files"][fname]["shape"] = list(arr.shape)
    for fname in drop:
        del manifest["files"][fname]
        (out / fname).unlink()
    if min_tuning_count is not None:
        manifest["min_tuning_count"] = min_tuning_count
    (out / F.MANIFEST).write_text(json.dumps(manifest))
    return Atlas(out)


def _ref(built, rows):
    """refstat.npy with rows {row: (top_token, top_share, pos0_share, top_token_z)}; others score 0."""
    ref = np.load(built.path / F.REF)
    ref["top_token"], ref["top_share"], ref["pos0_share"], ref["top_token_z"] = 1, 0.0, 0.0, np.nan
    for r, (tok, share, pos0, z) in rows.items():
        ref[r]["top_token"], ref[r]["top_share"], ref[r]["pos0_share"], ref[r]["top_token_z"] = tok, share, pos0, z
    return ref


def _score(ref_row, counts, min_count):
    """The documented score, in float64 from the stored float32."""
    tok, share, pos0, z = (int(ref_row["top_token"]), float(ref_row["top_share"]), float(ref_row["pos0_share"]),
                           float(ref_row["top_token_z"]))
    if tok < 0 or counts[tok] < min_count:
        return 0.0
    return share * (1 - pos0) * min(max(0.0 if math.isnan(z) else z, 0.0), 10.0)


# ---- overview ------------------------------------------------------------------------------------
def test_scores_read_the_counts_of_token_0_and_of_the_last_token(built):
    counts = np.bincount(built.tokens, minlength=97)
    assert counts[0] >= 4 > counts[1] and counts[96] < 4 <= counts[95]
    rows = {0: (0, 0.9, 0.0, 5.0), 1: (96, 0.9, 0.0, 5.0), 2: (95, 0.9, 0.0, 5.0), 3: (-1, 0.9, 0.0, 5.0),
            4: (0, 0.6, 0.0, np.nan), 5: (1, 0.9, 0.1, 5.0)}
    atlas = _copy(built, "counts", {F.REF: _ref(built, rows)}, min_tuning_count=4)
    s = UnitScores(atlas)
    ref = np.load(atlas.path / F.REF)
    want = [_score(r, counts, 4) for r in ref]
    assert s.score[:6].tolist() == pytest.approx([4.5, 0.0, 4.5, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(s.score, want, rtol=1e-12)


def test_a_unit_without_top_token_scores_0_even_when_one_occurrence_is_enough(built):
    rows = {0: (-1, 0.9, 0.0, 5.0), 1: (3, 0.9, 0.0, 5.0), 2: (3, 0.9, 0.1, 5.0)}
    atlas = _copy(built, "min1", {F.REF: _ref(built, rows)}, min_tuning_count=1)
    s = UnitScores(atlas)
    assert s.score[0] == 0.0 and s.score[1] == pytest.approx(4.5)
    assert s.top_token.dtype == s.best_token.dtype == s.x_top_token.dtype == np.int64
    counts = np.bincount(built.tokens, minlength=97)
    np.testing.assert_allclose(s.score, [_score(r, counts, 1) for r in np.load(atlas.path / F.REF)], rtol=1e-12)


def test_unit_row_summary_every_key(built):
    atlas = _copy(built, "summary", {F.REF: _ref(built, {3: (7, 0.75, 0.25, 4.0)})}, min_tuning_count=1)
    ref = np.load(atlas.path / F.REF)[3]
    row = unit_row_summary(atlas, 3)  # no scores given: computed here
    text = atlas.token_text
    assert row == {
        "unit": "L0.resid_pre:3", "score": pytest.approx(0.75 * 0.75 * 4.0), "selective": True,
        "top_token_id": 7, "top_token": text(7), "top_share": 0.75, "pos0_share": 0.25, "top_token_z": 4.0,
        "x_top_token": text(int(ref["x_top_token"])), "x_top_share": float(ref["x_top_share"]),
        "best_token": text(int(ref["best_token"])),
        "best_z": None if not np.isfinite(ref["best_z"]) else float(ref["best_z"]),
    }


def _many(built, n, first_site_score=True):
    """n units of L0.resid_pre with positive scores 0.5, 0.6, ...; L0.resid_post's best score 0.5."""
    rows = {r: (3, 0.5, 0.0, 1.0 + 0.2 * r) for r in range(n)}
    rows[64] = (3, 0.5, 0.0, 1.0)  # L0.resid_post: one unit with score 0.5, the rest 0
    return _ref(built, rows)


def test_overview_lists_the_top_12_by_default(built):
    atlas = _copy(built, "many", {F.REF: _many(built, 14)}, min_tuning_count=1)
    view = overview(atlas)
    assert len(view["top_units"]) == 12
    assert [u["unit"] for u in view["top_units"]] == [f"L0.resid_pre:{r}" for r in range(13, 1, -1)]


def test_overview_cells_keys_and_best(built):
    atlas = _copy(built, "few", {F.REF: _many(built, 2)}, min_tuning_count=1)
    view = overview(atlas, top=50)
    # only the three units of positive score, the one of score 0.5 too
    assert [u["unit"] for u in view["top_units"]] == ["L0.resid_pre:1", "L0.resid_pre:0", "L0.resid_post:0"]
    assert view["top_units"][2]["score"] == pytest.approx(0.5)
    assert view["n_units"] == atlas.n_units == 640 and view["layers"] == [0, 1]
    assert view["config"] == json.loads((atlas.path / F.CONFIG).read_text())
    cells = {c["site"]: c for c in view["cells"]}
    assert (cells["ln_final"]["kind"], cells["ln_final"]["layer"]) == ("ln_final", None)
    assert (cells["L1.mlp_post"]["kind"], cells["L1.mlp_post"]["layer"]) == ("mlp_post", 1)
    assert cells["L0.resid_post"]["best"]["unit"] == "L0.resid_post:0"  # best score 0.5 (<= 1)
    assert cells["L1.attn_out"]["best"] is None  # every score 0
    eta2 = np.load(atlas.path / F.TYPE_STATS)["eta2"][atlas.site_rows("L1.attn_out")]
    assert np.isfinite(eta2).any()
    assert cells["L1.attn_out"]["mean_eta2"] == pytest.approx(float(np.nanmean(eta2)), rel=1e-12)


def test_overview_of_an_atlas_without_type_stats(built):
    atlas = _copy(built, "no_type_stats", drop=(F.TYPE_STATS,))
    view = overview(atlas)
    assert all(c["mean_eta2"] is None for c in view["cells"])


def test_overview_mean_and_median_share_of_the_clean_units(built):
    shares = {0: (3, 0.1, 0.0, 1.0), 1: (3, 0.7, 0.0, 1.0), 2: (3, 0.2, 0.9, 1.0), 3: (3, 0.3, 0.0, 1.0)}
    atlas = _copy(built, "shares", {F.REF: _ref(built, shares)})
    cell = overview(atlas)["cells"][0]
    stored = np.load(atlas.path / F.REF)[:64]
    clean = stored["top_share"][stored["pos0_share"] < 0.5].astype(np.float64)
    assert cell["n_clean"] == 63
    assert cell["mean_top_share"] == pytest.approx(math.fsum(clean) / 63, rel=1e-12)
    assert cell["median_top_share"] == 0.0


# ---- site listings -------------------------------------------------------------------------------
def test_site_listing_breaks_score_ties_by_z_then_share(built):
    # all of score 0: z -1 before NaN z; among NaN z, the larger share first
    rows = {0: (3, 0.3, 0.0, np.nan), 1: (3, 0.6, 0.0, np.nan), 2: (3, 0.2, 0.0, -1.0)}
    atlas = _copy(built, "ties", {F.REF: _ref(built, rows)})
    listing = site_units(atlas, "L0.resid_pre", per_page=3)
    assert [u["unit"] for u in listing["units"]] == ["L0.resid_pre:2", "L0.resid_pre:1", "L0.resid_pre:0"]


def test_site_listing_defaults_and_page_count(built):
    atlas = Atlas(built.path)
    listing = site_units(atlas, "L0.mlp_post")
    assert (listing["page"], listing["per_page"], listing["pages"], listing["total"]) == (1, 50, 2, 96)
    assert len(listing["units"]) == 50
    assert site_units(atlas, "L0.mlp_post", per_page=1000)["pages"] == 1
    with pytest.raises(MaxactError, match=r"per_page 1\.\.1000, got page=1, per_page=1001$"):
        site_units(atlas, "L0.mlp_post", per_page=1001)


def test_an_unknown_site_lists_eight_of_the_nine_sites(built):
    atlas = Atlas(built.path)
    names = [s.name for s in atlas.sites]
    with pytest.raises(MaxactError) as e:
        site_units(atlas, "L7.resid_pre")
    assert str(e.value).endswith("it holds " + ", ".join(names[:8]) + ", ... (9 in all)")


# ---- pages: logit effects and find ---------------------------------------------------------------
def test_logit_effects_with_token_0_promoted_first(built):
    ids = np.load(built.path / F.LOGIT_TOP_IDS)
    row = int(np.nonzero(ids[:, 0] >= 0)[0][0])
    ids[row, 0] = 0
    atlas = _copy(built, "logit0", {F.LOGIT_TOP_IDS: ids})
    got = logit_effects(atlas, row)
    vals, bids, bvals = (np.load(atlas.path / f) for f in (F.LOGIT_TOP_VALUES, F.LOGIT_BOTTOM_IDS, F.LOGIT_BOTTOM_VALUES))
    text = atlas.token_text
    assert got["promoted"][0] == {"token_id": 0, "token": text(0), "value": float(vals[row, 0])}
    assert got["promoted"] == [{"token_id": int(i), "token": text(int(i)), "value": float(v)}
                               for i, v in zip(ids[row], vals[row])]
    assert got["suppressed"] == [{"token_id": int(i), "token": text(int(i)), "value": float(v)}
                                 for i, v in zip(bids[row], bvals[row])]


def test_logit_effects_of_one_token_per_unit(built):
    files = {f: np.load(built.path / f)[:, :1].copy() for f in
             (F.LOGIT_TOP_IDS, F.LOGIT_TOP_VALUES, F.LOGIT_BOTTOM_IDS, F.LOGIT_BOTTOM_VALUES)}
    files[F.LOGIT_TOP_IDS][1] = -1  # a unit without logit effects
    atlas = _copy(built, "logit1", files)
    got = logit_effects(atlas, 0)
    assert len(got["promoted"]) == len(got["suppressed"]) == 1
    assert logit_effects(atlas, 1) is None


def _tracked_token(atlas):
    tid = int(np.load(atlas.path / F.TUNING_IDS)[0])
    return tid, atlas.vocab[tid], 0


def test_find_units_with_limit_1(built):
    atlas = Atlas(built.path)
    tid, text, v = _tracked_token(atlas)
    found = find_units(atlas, text, limit=1)
    means = np.load(atlas.path / F.TUNING_MEANS)[v].astype(np.float64)
    st = np.load(atlas.path / F.STATS)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(st["std"] > 0, (means - st["mean"]) / st["std"], np.nan)
    assert len(found["units"]) == 1
    assert found["units"][0]["unit"] == str(atlas.unit_at(int(np.nanargmax(z))))
    assert found["units"][0]["z"] == pytest.approx(float(np.nanmax(z)), rel=1e-12)


def test_find_units_names_the_count_of_an_untracked_token(built):
    atlas = Atlas(built.path)
    tracked = set(np.load(atlas.path / F.TUNING_IDS).tolist())
    counts = np.bincount(built.tokens, minlength=97)
    tid = next(i for i in range(97) if i not in tracked and atlas.find_token_ids(atlas.vocab[i]) == [i])
    with pytest.raises(MaxactError, match=f"occurs {counts[tid]} times in the corpus and is not among the 64"):
        find_units(atlas, atlas.vocab[tid])


def test_find_units_leaves_out_constant_units(built):
    st = np.load(built.path / F.STATS)
    tid = int(np.load(built.path / F.TUNING_IDS)[0])
    st["std"][:5] = 0.0
    st["mean"][:5] = -1e6  # far below the token's mean: a finite std would rank them first
    atlas = _copy(built, "constant", {F.STATS: st})
    found = find_units(atlas, atlas.vocab[tid], limit=1000)
    listed = {u["unit"] for u in found["units"]}
    assert len(listed) > 5
    assert not listed & {str(atlas.unit_at(r)) for r in range(5)}


def test_find_units_when_every_unit_is_constant(built):
    st = np.load(built.path / F.STATS)
    st["std"] = 0.0
    atlas = _copy(built, "all_constant", {F.STATS: st})
    tid = int(np.load(built.path / F.TUNING_IDS)[0])
    found = find_units(atlas, atlas.vocab[tid])
    assert found["units"] == [] and found["token_id"] == tid


def test_find_units_counts_a_win_at_the_last_position(built):
    last = len(built.tokens) - 1
    tid = int(built.tokens[last])
    assert int(built.tokens[last - 1]) != tid
    tracked = np.load(built.path / F.TUNING_IDS)
    if tid not in tracked.tolist():
        tracked[0] = tid  # which tracked means are read does not matter here
    positions, probs = np.load(built.path / F.REF_POSITIONS), np.load(built.path / F.REF_PROBS)
    positions[:], probs[:] = -1, 0.0
    positions[:, 0], probs[:, 0] = last, 1.0  # every unit: the last position wins every batch
    positions[:, 1], probs[:, 1] = last - 1, 0.0
    atlas = _copy(built, "last_pos", {F.REF_POSITIONS: positions, F.REF_PROBS: probs, F.TUNING_IDS: tracked})
    found = find_units(atlas, atlas.vocab[tid], limit=3)
    assert [u["win_share"] for u in found["units"]] == [1.0, 1.0, 1.0]


# ---- export --------------------------------------------------------------------------------------
def test_export_unit_columns_of_a_layerless_site(built, tmp_path):
    atlas = Atlas(built.path)
    export_parquet(atlas, tmp_path / "pq")
    units = pq.read_table(tmp_path / "pq" / "units.parquet").to_pydict()
    want_layer = [-1 if s.layer is None else s.layer for s in atlas.sites for _ in range(s.width)]
    want_index = [i for s in atlas.sites for i in range(s.width)]
    assert units["layer"] == want_layer and units["index"] == want_index
    assert units["unit"][-1] == "ln_final:63" and units["layer"][-1] == -1


# ---- pages: stats and neighbours ----------------------------------------------------------------
def test_page_stats_every_key_and_the_histogram_span(built):
    from maxact.analysis.pages import stats

    hist = np.load(built.path / F.HIST)
    hist[1] = 0  # unit 1: an empty histogram
    atlas = _copy(built, "stats", {F.HIST: hist})
    st, bounds = np.load(atlas.path / F.STATS), np.load(atlas.path / F.HIST_BOUNDS)
    eta2 = np.load(atlas.path / F.TYPE_STATS)["eta2"]
    nz = np.nonzero(hist[0])[0]
    lo, hi = nz[0], nz[-1] + 1
    got = stats(atlas, 0)
    want = {k: (int(st[0][k]) if k == "count" else float(st[0][k])) for k in st.dtype.names}
    assert {k: got[k] for k in want} == want and isinstance(got["mean"], float)
    assert got["eta2"] == (float(eta2[0]) if np.isfinite(eta2[0]) else None)
    assert got["hist"] == {"counts": hist[0, lo:hi].tolist(), "bounds": bounds[lo:hi].tolist(),
                           "stride": atlas.manifest.hist_stride}
    assert hist[0, hi - 1] > 0 and got["hist"]["counts"][-1] > 0
    assert stats(atlas, 1)["hist"] == {"counts": [], "bounds": [], "stride": atlas.manifest.hist_stride}
    no_eta = _copy(built, "stats_no_type_stats", drop=(F.TYPE_STATS,))
    assert stats(no_eta, 0)["eta2"] is None


def test_neighbours_at_both_ends_of_a_site(built):
    from maxact.analysis.pages import neighbours
    from maxact.units import parse_unit

    atlas = Atlas(built.path)
    first = neighbours(atlas, parse_unit("L0.resid_pre:0"))
    assert first["prev"] is None and first["next"] == "L0.resid_pre:1"
    assert neighbours(atlas, parse_unit("L0.resid_pre:1"))["prev"] == "L0.resid_pre:0"
    last = neighbours(atlas, parse_unit("L0.resid_pre:63"))
    assert last["next"] is None and last["prev"] == "L0.resid_pre:62"
    assert neighbours(atlas, parse_unit("L0.resid_pre:62"))["next"] == "L0.resid_pre:63"
    assert sorted(first["same_index"]) == sorted(["L0.resid_post:0", "L0.mlp_post:0", "L0.attn_out:0",
                                                  "L1.resid_pre:0"])
