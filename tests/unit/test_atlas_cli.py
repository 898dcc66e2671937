"""The atlas through the CLI: kill -9 and --resume, shards and merge, show/find/export/sample --atlas,
and bad input (one error line, no traceback)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from atlas_helpers import (
    build_tiny_atlas,
    error_line,
    merge_tiny_partials,
    run_cli,
    save_tiny_folder,
    single_thread,
    write_word_corpus,
)

from maxact.capture import capture
from maxact.engine.moments import HIST_STRIDE
from maxact.store import format as F
from maxact.store.reader import Atlas

MAXACT = str(Path(sys.executable).with_name("maxact"))
N_TOKENS, SEQ, K, KC = 700, 32, 8, 4


# =================================================================================================
# CLI fixtures: a tiny Llama folder, a 2000-word corpus, one uninterrupted run
# =================================================================================================
CLI_SEQ = 16
N_WORDS = 2000


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_folder(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    return write_word_corpus(tmp_path_factory.mktemp("corpus") / "words.txt", N_WORDS, seed=1)


@pytest.fixture(scope="module")
def atlas_args(folder, corpus_file):
    return ["atlas", "--model", folder, "--corpus", corpus_file, "--seq", str(CLI_SEQ), "--k", "8",
            "--sites", "resid_pre,mlp_post,attn_v,ln_final", "--windows-per-batch", "2",
            "--max-types", "40", "--ref-samples", "200"]


def cli(*args):
    with single_thread():
        return run_cli(*args)


def ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.fixture(scope="module")
def one_run(atlas_args, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "atlas"
    ok(cli(*atlas_args, "--out", out))
    return out


def npy_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.glob("*.npy"))


def assert_same_bytes(a: Path, b: Path):
    """Every array file of two atlases byte for byte (dtype, shape and every bit, NaNs included)."""
    assert npy_files(a) == npy_files(b) and len(npy_files(a)) == 32  # 24 + the 3 of activation bands + doc_starts + 4 per-type moments
    for name in npy_files(a):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    for name in (F.VOCAB, F.CONFIG):
        assert (a / name).read_text() == (b / name).read_text(), name
    ma, mb = (json.loads((d / F.MANIFEST).read_text()) for d in (a, b))
    for m in (ma, mb):
        m.pop("created"), m.pop("timing")
    assert ma == mb


# =================================================================================================
# 2. kill -9 and --resume
# =================================================================================================
def test_killed_run_resumes_bit_identical(atlas_args, one_run, corpus_file, tmp_path):
    out = tmp_path / "killed"
    ckpt = out / F.RUN_DIR / "checkpoint.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "stderr.txt", "wb") as err:
        proc = subprocess.Popen([MAXACT, *atlas_args, "--out", str(out), "--checkpoint-every", "0"],
                                stdout=subprocess.DEVNULL, stderr=err, env=env)
        deadline = time.monotonic() + 120
        while proc.poll() is None and not ckpt.exists() and time.monotonic() < deadline:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "stderr.txt").read_text()
    assert ckpt.exists() and not (out / F.MANIFEST).exists()
    # a checkpoint write cut short leaves a temporary file beside it: it must not matter
    (ckpt.parent / "checkpoint.pt.tmp-999999").write_bytes(b"\x80half a pickle")

    # the interrupted folder is no atlas, says how to continue, and refuses a fresh start
    line = error_line(cli("show", out, "L0.resid_pre:0"))
    assert "manifest.json is missing" in line and "--resume" in line and str(out) in line
    line = error_line(cli(*atlas_args, "--out", out))
    assert "interrupted run" in line and "--resume" in line and "--overwrite" in line
    # resuming with other options is refused, naming what differs, and leaves the checkpoint alone
    before = ckpt.read_bytes()
    line = error_line(cli(*atlas_args, "--out", out, "--resume", "--k", "4"))
    assert "different configuration" in line and "k: 8 there, 4 now" in line
    assert ckpt.read_bytes() == before

    # the same options, over a corpus file that changed since: refused too (bug fix: it mixed them)
    changed = tmp_path / "changed"
    shutil.copytree(out, changed)
    original = Path(corpus_file).read_bytes()
    try:
        write_word_corpus(corpus_file, N_WORDS, seed=2)
        line = error_line(cli(*atlas_args, "--out", changed, "--resume"))
    finally:
        Path(corpus_file).write_bytes(original)
    assert "corpus tokens differ" in line

    result = ok(cli(*atlas_args, "--out", out, "--resume"))
    assert "resuming after batch" in result.stderr
    assert not (out / F.RUN_DIR).exists()
    assert_same_bytes(one_run, out)


def test_resume_without_checkpoint_starts_over_and_finished_atlas_is_kept(atlas_args, one_run, tmp_path):
    out = tmp_path / "a"
    result = ok(cli(*atlas_args, "--out", out, "--resume", "--max-tokens", "300"))
    assert "no checkpoint to resume from" in result.stderr
    atlas = Atlas(out)
    assert len(atlas.tokens) == 300 and atlas.manifest.corpus.n_tokens == 300
    assert (atlas[F.STATS]["count"] == 300).all()
    np.testing.assert_array_equal(atlas.tokens, Atlas(one_run).tokens[:300])  # --max-tokens: a prefix
    manifest = (out / F.MANIFEST).read_bytes()
    line = error_line(cli(*atlas_args, "--out", out, "--max-tokens", "200"))
    assert "already holds a finished atlas" in line and "--overwrite" in line
    assert (out / F.MANIFEST).read_bytes() == manifest and len(Atlas(out).tokens) == 300
    ok(cli(*atlas_args, "--out", out, "--max-tokens", "200", "--overwrite"))
    assert len(Atlas(out).tokens) == 200


# =================================================================================================
# 3. shards and merge
# =================================================================================================
@pytest.fixture(scope="module")
def shards(atlas_args, tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    for i in range(3):
        ok(cli(*atlas_args, "--out", root / f"s{i}", "--shard", f"{i}/3"))
    return root


def test_merged_shards_equal_one_run(shards, one_run, tmp_path):
    for i in range(3):
        assert (shards / f"s{i}" / F.PARTIAL).is_file() and not (shards / f"s{i}" / F.MANIFEST).exists()
    line = error_line(cli("show", shards / "s0", "L0.resid_pre:0"))
    assert "maxact merge" in line
    out = tmp_path / "merged"
    ok(cli("merge", shards / "s2", shards / "s0", shards / "s1", "--out", out))  # any order
    a, b = Atlas(one_run), Atlas(out)
    exact = [F.TOP_VALUES, F.TOP_POSITIONS, F.BOTTOM_VALUES, F.BOTTOM_POSITIONS, F.TOP0_VALUES,
             F.TOP0_POSITIONS, F.BOTTOM0_VALUES, F.BOTTOM0_POSITIONS, F.TOP_CONTEXT, F.BOTTOM_CONTEXT,
             F.HIST, F.HIST_BOUNDS, F.TUNING_IDS, F.TUNING_COUNTS, F.REF_POSITIONS, F.REF_PROBS,
             F.TOKENS, F.LOGIT_TOP_IDS, F.LOGIT_TOP_VALUES, F.LOGIT_BOTTOM_IDS, F.LOGIT_BOTTOM_VALUES,
             F.BAND_POSITIONS, F.BAND_VALUES, F.BAND_EDGES, F.DOC_STARTS, F.TYPE_COUNTS]
    assert sorted(exact + [F.STATS, F.TUNING_MEANS, F.REF, F.TYPE_DEV, F.TYPE_M2, F.TYPE_STATS]) == npy_files(one_run)
    for name in exact:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    sa, sb = a[F.STATS], b[F.STATS]
    for name in ("count", "frac_pos", "min", "max"):
        np.testing.assert_array_equal(sa[name], sb[name], err_msg=name)
    for name in ("mean", "std", "skew", "kurtosis"):  # float32 batch moments, batched differently
        np.testing.assert_allclose(sa[name], sb[name], rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(a[F.TUNING_MEANS], b[F.TUNING_MEANS], rtol=1e-5, atol=1e-6)
    for name in (F.TYPE_DEV, F.TYPE_M2):  # per-type moments: Chan-merged float64 over float32 batch moments
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)
    for name in ("mean", "m2", "eta2"):
        np.testing.assert_allclose(a[F.TYPE_STATS][name], b[F.TYPE_STATS][name], rtol=1e-6, atol=1e-7, err_msg=name)
    ra, rb = a[F.REF], b[F.REF]
    for name in ("top_token", "x_top_token", "best_token", "top_share", "pos0_share", "miss"):
        np.testing.assert_array_equal(ra[name], rb[name], err_msg=name)
    np.testing.assert_allclose(ra["best_z"], rb["best_z"], rtol=1e-4)
    assert b.manifest.merged_from == 3 and b.manifest.windows == [[0, 41], [41, 83], [83, 125]]


@pytest.mark.parametrize("seq", [16, 12])  # 12: not a multiple of the histogram's stride
def test_merged_histograms_equal_one_run_for_any_seq(tmp_path, seq):
    common = dict(n_tokens=600, seq=seq, sites=("resid_pre",), layers=(0,), windows_per_batch=2)
    _, _, one, _ = build_tiny_atlas(tmp_path / "one", **common)
    for i in range(3):
        build_tiny_atlas(tmp_path / f"s{i}", shard=(i, 3), **common)
    merge_tiny_partials([tmp_path / f"s{i}" for i in range(3)], tmp_path / "m", n_tokens=600)
    merged = Atlas(tmp_path / "m")
    np.testing.assert_array_equal(merged[F.TOP_POSITIONS], one[F.TOP_POSITIONS])
    np.testing.assert_array_equal(merged[F.HIST], one[F.HIST])


def test_merge_refuses_overlaps_other_options_and_non_partials(atlas_args, shards, one_run, tmp_path):
    line = error_line(cli("merge", shards / "s0", shards / "s1", shards / "s0", "--out", tmp_path / "m"))
    assert "overlap" in line and "s0" in line and "windows 0..40" in line
    ok(cli(*atlas_args, "--out", tmp_path / "half0", "--shard", "0/2"))  # windows 0..61
    line = error_line(cli("merge", tmp_path / "half0", shards / "s1", "--out", tmp_path / "m"))
    assert "overlap" in line and "half0" in line
    ok(cli(*atlas_args, "--out", tmp_path / "other", "--shard", "1/3", "--ref-samples", "100"))
    line = error_line(cli("merge", shards / "s0", tmp_path / "other", "--out", tmp_path / "m"))
    assert "other" in line and "cannot merge" in line
    line = error_line(cli("merge", shards / "s0", one_run, "--out", tmp_path / "m"))
    assert str(one_run) in line and "no shard partial" in line
    line = error_line(cli("merge", shards / "s0", shards / "s1", "--out", one_run))
    assert "already holds a finished atlas" in line
    assert not (tmp_path / "m").exists() or not (tmp_path / "m" / F.MANIFEST).exists()
    # an incomplete set merges into an atlas of the windows it covers, and says so
    result = ok(cli("merge", shards / "s0", shards / "s2", "--out", tmp_path / "gap"))
    assert "cover 83 of 125 windows" in result.stderr
    assert (Atlas(tmp_path / "gap")[F.STATS]["count"] == (41 + 42) * CLI_SEQ).all()


# =================================================================================================
# 4. show, find, export, sample --atlas
# =================================================================================================
def test_show_json(one_run, folder):
    page = json.loads(ok(cli("show", one_run, "L1.mlp_post:3", "--json")).stdout)
    assert {"unit", "top", "bottom", "stats", "tally", "logit_effects"} <= page.keys()
    assert page["unit"] == "L1.mlp_post:3"
    a = Atlas(one_run)
    row = a.row("L1.mlp_post:3")
    tokens = np.load(one_run / F.TOKENS)
    for part in ("top", "bottom"):
        items = page[part]
        assert len(items) == 8 and all({"position", "token_id", "value"} <= it.keys() for it in items)
        assert [it["position"] for it in items] == a[f"{part}_positions.npy"][row].tolist()
        assert [it["value"] for it in items] == a[f"{part}_values.npy"][row].tolist()
        assert all(tokens[it["position"]] == it["token_id"] for it in items)  # indexes the stream
    assert {"count", "mean", "std", "skew", "kurtosis", "frac_pos", "min", "max", "hist"} <= page["stats"].keys()
    assert page["stats"]["count"] == N_WORDS and sum(page["stats"]["hist"]["counts"]) == N_WORDS // HIST_STRIDE
    assert page["tally"] and {"token_id", "count", "share", "expected_share", "wins_per_occurrence"} <= page["tally"][0].keys()
    assert {"miss_prob", "pos0_share"} <= page["reference"].keys()
    assert len(page["logit_effects"]["promoted"]) == 16
    # the value at a top position is the unit's activation there, computed in its window
    from maxact.models.loading import load_model
    from maxact.units import SiteRef

    lm = load_model(folder)
    p = page["top"][0]["position"]
    w0 = p - p % CLI_SEQ
    with single_thread():
        acts = capture(lm.adapter, torch.from_numpy(tokens[w0 : w0 + CLI_SEQ].astype(np.int64))[None],
                       [SiteRef("mlp_post", 1)])[SiteRef("mlp_post", 1)]
    assert acts[0, p - w0, 3].item() == pytest.approx(page["top"][0]["value"], rel=1e-5, abs=1e-6)
    # a q/k/v unit: no logit effects, head and dim named
    page = json.loads(ok(cli("show", one_run, "L0.attn_v:17", "--json")).stdout)
    assert page["logit_effects"] is None and page["info"]["head"] == 1 and page["info"]["head_dim"] == 1
    text = ok(cli("show", one_run, "L1.mlp_post:3")).stdout
    assert "L1.mlp_post:3" in text


def test_find_json(one_run):
    a = Atlas(one_run)
    tracked = np.asarray(a[F.TUNING_IDS])
    tid = int(tracked[0])  # the most frequent token type
    text = a.token_text(tid)
    found = json.loads(ok(cli("find", one_run, "--token", text, "--json")).stdout)
    assert found["token"] == text and found["token_id"] == tid
    assert found["occurrences"] == int((a.tokens == tid).sum())
    zs = [u["z"] for u in found["units"]]
    assert len(zs) == 20 and zs == sorted(zs, reverse=True)
    st = a[F.STATS]
    z = (a[F.TUNING_MEANS][0] - st["mean"]) / st["std"]
    assert zs[0] == pytest.approx(np.nanmax(z), rel=1e-6)
    best = found["units"][0]
    assert best["unit"] == str(a.unit_at(int(np.nanargmax(z))))
    found = json.loads(ok(cli("find", one_run, "--token", text, "--site", "mlp_post", "--json")).stdout)
    assert found["units"] and all(".mlp_post:" in u["unit"] for u in found["units"])
    assert text in ok(cli("find", one_run, "--token", text)).stdout
    line = error_line(cli("find", one_run, "--token", " before"))
    assert "' before'" in line and "not in the vocabulary" in line
    untracked = next(t for t in range(1, 97) if t not in set(tracked.tolist()))
    line = error_line(cli("find", one_run, "--token", f"w{untracked}"))
    assert "is not among the 40 token types the atlas tracks (raise --max-types)" in line


def test_export_parquet_is_queryable(one_run, tmp_path):
    import pyarrow.parquet as pq

    ok(cli("export", one_run, "--parquet", tmp_path / "pq"))
    a = Atlas(one_run)
    units = pq.read_table(tmp_path / "pq" / "units.parquet")
    assert units.num_rows == a.n_units and {"unit", "site", "layer", "index", "mean", "ref_top_token"} <= set(units.column_names)
    examples = pq.read_table(tmp_path / "pq" / "examples.parquet")
    assert examples.num_rows == 4 * 8 * a.n_units
    tokens = pq.read_table(tmp_path / "pq" / "tokens.parquet")
    assert tokens.num_rows == N_WORDS
    duckdb = pytest.importorskip("duckdb")
    p = tmp_path / "pq"
    assert duckdb.sql(f"select count(*) from '{p / 'units.parquet'}'").fetchall() == [(a.n_units,)]
    (got,), = duckdb.sql(f"select max(value) from '{p / 'examples.parquet'}' "
                         "where unit = 'L1.mlp_post:3' and kind in ('top', 'top0')").fetchall()
    assert got == pytest.approx(float(a[F.STATS]["max"][a.row("L1.mlp_post:3")]))
    joined = duckdb.sql(f"select e.position, t.token_id, e.token_id from '{p / 'examples.parquet'}' e "
                        f"join '{p / 'tokens.parquet'}' t using (position) where e.token_id <> t.token_id")
    assert joined.fetchall() == []


def test_sample_atlas_matches_exact_sampling_format_and_starts(one_run, folder, corpus_file, tmp_path):
    units = ["--unit", "L0.resid_pre:5", "--unit", "L1.mlp_post:3"]
    common = ["--batch", "4", "--seq", str(CLI_SEQ), "--samples", "40", "--seed", "11", *units]
    ok(cli("sample", "--model", folder, "--corpus", corpus_file, *common, "--json", tmp_path / "exact.json"))
    result = ok(cli("sample", "--atlas", one_run, *common, "--json", tmp_path / "atlas.json"))
    assert "simulated from an atlas" in result.stdout
    exact, sim = (json.loads((tmp_path / f).read_text()) for f in ("exact.json", "atlas.json"))
    assert exact.keys() == sim.keys() and exact["config"].keys() == sim["config"].keys()
    assert sim["config"]["source"] == "atlas" and exact["config"]["n_tokens"] == sim["config"]["n_tokens"]
    assert exact["starts"] == sim["starts"]
    assert [o["unit"] for o in exact["units"]] == [o["unit"] for o in sim["units"]] == ["L0.resid_pre:5", "L1.mlp_post:3"]
    for e, s in zip(exact["units"], sim["units"]):
        assert e.keys() == s.keys()
        assert e["tally"] and s["tally"] and e["tally"][0].keys() == s["tally"][0].keys()
    # L0.resid_pre is the token embedding (no context): where the atlas's top-K answers a batch,
    # its winner is the exact run's winning token with the same value
    hits = 0
    for we, ws in zip(exact["units"][0]["winners"], sim["units"][0]["winners"]):
        if ws is not None:
            hits += 1
            assert ws["token_id"] == we["token_id"]
            assert ws["value"] == we["value"]
    assert hits > 0


def test_sample_atlas_answers_in_well_under_a_second(one_run):
    from maxact.atlas_sample import sample_from_atlas_dir

    sample_from_atlas_dir(one_run, layer=None, dim=None, unit_specs=["L0.resid_pre:0"], batch=32,
                          seq=CLI_SEQ, samples=10, seed=0, skip_pos0=False)  # warm the imports
    t0 = time.perf_counter()
    result, _, _ = sample_from_atlas_dir(one_run, layer=1, dim=7, unit_specs=["L2.mlp_post:4"], batch=32,
                                         seq=CLI_SEQ, samples=1000, seed=0, skip_pos0=True)
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0, elapsed
    assert [str(u.unit) for u in result.units] == ["L1.resid_pre:7", "L2.mlp_post:4"]
    assert result.starts.shape == (1000, 32)
    assert all((u.window_pos[~np.isnan(u.values)] != 0).all() for u in result.units)  # --skip-pos0


def test_atlas_commands_do_not_load_torch(one_run, tmp_path):
    """show, find, export and sample --atlas read the store with numpy alone (bug fix: they pulled
    in torch, and sample --atlas matplotlib, several seconds before the first line)."""
    token = f"w{int(np.load(one_run / F.TUNING_IDS)[0])}"  # a tracked token
    code = f"""
import sys
from click.testing import CliRunner
from maxact.cli import main
for args in (["show", {str(one_run)!r}, "L1.mlp_post:3", "--json"],
             ["find", {str(one_run)!r}, "--token", {token!r}, "--json"],
             ["export", {str(one_run)!r}, "--parquet", {str(tmp_path / 'pq')!r}],
             ["sample", "--atlas", {str(one_run)!r}, "--unit", "L0.resid_pre:1", "--seq", "16"]):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, (args, r.output)
heavy = [m for m in ("torch", "transformers", "matplotlib") if m in sys.modules]
assert not heavy, heavy
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


# =================================================================================================
# 5. bad input: one error line naming the bad value and the valid choices
# =================================================================================================
@pytest.fixture
def copy_of(one_run, tmp_path):
    def make() -> Path:
        d = tmp_path / "copy"
        shutil.copytree(one_run, d)
        return d
    return make


@pytest.mark.parametrize("unit, expected", [
    ("L9.resid_pre:0", "unit L9.resid_pre:0 is not in this atlas; it holds the sites L0.resid_pre"),
    ("L0.mlp_pre:0", "unit L0.mlp_pre:0 is not in this atlas"),
    ("L0.resid_pre:64", "index 64 of L0.resid_pre is out of range: valid indices are 0..63"),
    ("L0.attn_v:32", "valid indices are 0..31"),
    ("layer2/345", "is not a unit id"),
])
def test_show_unit_not_in_atlas(one_run, unit, expected):
    assert expected in error_line(cli("show", one_run, unit))


def test_sample_atlas_bad_unit_and_seq(one_run):
    line = error_line(cli("sample", "--atlas", one_run, "--unit", "L0.mlp_out:1", "--seq", "16"))
    assert "L0.mlp_out:1 is not in this atlas" in line and "L0.mlp_post" in line
    line = error_line(cli("sample", "--atlas", one_run, "--unit", "L0.mlp_out:*", "--seq", "16"))
    assert "is not in this atlas" in line
    line = error_line(cli("sample", "--atlas", one_run, "--unit", "L0.resid_pre:1"))  # --seq 256
    assert "--seq 256" in line and "--seq 16" in line


def test_missing_atlas_dir(tmp_path):
    line = error_line(cli("show", tmp_path / "nope", "L0.resid_pre:0"))
    assert "nope" in line and "does not exist" in line


def test_truncated_array(copy_of):
    d = copy_of()
    data = (d / F.TOP_VALUES).read_bytes()
    (d / F.TOP_VALUES).write_bytes(data[: len(data) // 2])
    line = error_line(cli("show", d, "L0.resid_pre:0"))
    assert "top_values.npy" in line and ("corrupt" in line or "truncated" in line)


def test_other_schema_version(copy_of):
    d = copy_of()
    m = json.loads((d / F.MANIFEST).read_text())
    m["schema_version"] = 99
    (d / F.MANIFEST).write_text(json.dumps(m))
    line = error_line(cli("find", d, "--token", "w5"))
    assert "schema version 99" in line and f"version {F.SCHEMA_VERSION}" in line


def test_manifest_missing_after_interrupted_run(copy_of):
    d = copy_of()
    (d / F.MANIFEST).unlink()
    line = error_line(cli("export", d, "--parquet", d / "pq"))
    assert "not a finished atlas" in line
    (d / F.RUN_DIR).mkdir()
    line = error_line(cli("sample", "--atlas", d, "--unit", "L0.resid_pre:1", "--seq", "16"))
    assert "--resume" in line


@pytest.mark.parametrize("args, expected", [
    (["--k", "0"], "--k must be at least 1, got 0"),
    (["--windows-per-batch", "0"], "--windows-per-batch must be at least 1, got 0"),
    (["--max-types", "0"], "--max-types must be at least 1, got 0"),
    (["--layers", "1-x"], "--layers '1-x' must list blocks and ranges"),
    (["--layers", "7"], "layer 7 is out of range: this model has blocks 0..2"),
    (["--sites", "resid_pre,bogus"], "unknown site 'bogus'; valid sites: resid_pre"),
    (["--shard", "3/3"], "--shard '3/3'"),
    (["--max-tokens", "10"], "too few for --seq 16"),
])
def test_bad_atlas_options(atlas_args, tmp_path, args, expected):
    assert expected in error_line(cli(*atlas_args, "--out", tmp_path / "x", *args))
    assert not (tmp_path / "x" / F.MANIFEST).exists()
