"""The atlas store without a model: the writer's crash behaviour, the reader's validation, and a
reader that never loads torch."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from maxact.config import AtlasConfig
from maxact.corpus import CorpusInfo
from maxact.errors import MaxactError
from maxact.fsio import write_json_atomic
from maxact.store import format as F
from maxact.store import writer
from maxact.store.manifest import (
    ContextSpan,
    FileInfo,
    Manifest,
    ModelInfo,
    ReferenceGeometry,
    SiteInfo,
)
from maxact.store.reader import Atlas

SITES = (
    SiteInfo(name="L0.resid_pre", site="resid_pre", layer=0, width=3, offset=0,
             hf_module="model.layers.0", reads="input", tl_hook="blocks.0.hook_resid_pre"),
    SiteInfo(name="ln_final", site="ln_final", layer=None, width=2, offset=3,
             hf_module="model.norm", reads="output", tl_hook="ln_final.hook_normalized"),
)
U, K = 5, 4
MANIFEST = Manifest(
    created="2025-01-01T00:00:00+00:00",
    model=ModelInfo(name="tiny", family="llama", n_layers=1, d_model=3, d_mlp=8, n_heads=1, n_kv_heads=1, d_head=3),
    corpus=CorpusInfo(name="synthetic", path="", sha256="0" * 64, n_tokens=100),
    seq=16, k=K, k_ctx=2, context=ContextSpan(before=24, after=8), hist_stride=8, min_tuning_count=5,
    reference=ReferenceGeometry(batch=4, seq=16, samples=10, seed=0), n_units=U, sites=SITES)


def arrays(seed=0):
    rng = np.random.default_rng(seed)
    stats = np.zeros(U, dtype=F.STATS_DTYPE)
    stats["count"], stats["mean"] = 100, rng.normal(size=U)
    ref = np.zeros(U, dtype=F.REF_DTYPE)
    ref["top_token"], ref["top_share"] = rng.integers(0, 10, U), 0.5
    out = {F.TOKENS: rng.integers(0, 10, 100).astype(np.int32)}
    for files in F.RANKED.values():
        out[files.values] = rng.normal(size=(U, K)).astype(np.float32)
        out[files.positions] = rng.integers(0, 100, (U, K))
    return out | {F.TOP_CONTEXT: np.full((U, 2, 32), np.nan, dtype=np.float16), F.STATS: stats, F.REF: ref}


def write(out, seed=0):
    writer.write_atlas(out, arrays(seed), MANIFEST, AtlasConfig(seq=16, seed=seed), [f"t{i}" for i in range(10)])


@pytest.fixture
def atlas_dir(tmp_path):
    write(tmp_path / "a")
    return tmp_path / "a"


def test_round_trip(atlas_dir):
    a = Atlas(atlas_dir)
    for name, arr in arrays().items():
        got = a[name]
        assert isinstance(got, np.memmap) and got.dtype == arr.dtype, name
        np.testing.assert_array_equal(got, arr)  # NaNs compare equal here
    m = a.manifest
    assert m.files[F.TOP_VALUES] == FileInfo(shape=[U, K], dtype="<f4")
    assert m.files[F.STATS].dtype == "structured"
    assert a.config == json.loads(json.dumps(AtlasConfig(seq=16, seed=0).to_json())) and a.token_text(3) == "t3" and a.token_text(99) == "<99>"
    assert a.row("L0.resid_pre:2") == 2 and a.row("ln_final:1") == 4
    assert str(a.unit_at(4)) == "ln_final:1" and str(a.unit_at(0)) == "L0.resid_pre:0"
    assert a.find_token_ids("t7") == [7] and a.token_counts.sum() == 100
    assert sorted(p.name for p in atlas_dir.iterdir()) == sorted(
        [*arrays(), F.MANIFEST, F.CONFIG, F.VOCAB])  # no staging or temporary file left


def test_manifest_and_sites_are_typed(atlas_dir):
    a = Atlas(atlas_dir)
    assert isinstance(a.manifest, Manifest) and a.sites == SITES and a.n_units == U
    assert a.manifest == dataclasses.replace(MANIFEST, files=a.manifest.files)  # what was written, read back
    assert a.site_of(a.unit_at(4)) == SITES[1] and a.site_rows("ln_final") == slice(3, 5)
    raw = json.loads((atlas_dir / F.MANIFEST).read_text())
    assert json.dumps(a.manifest.to_json()) == json.dumps(raw)  # the same JSON, keys in the same order


@pytest.mark.parametrize("unit, expected", [
    ("L1.resid_pre:0", "unit L1.resid_pre:0 is not in this atlas; it holds the sites L0.resid_pre, ln_final"),
    ("L0.resid_pre:3", "index 3 of L0.resid_pre is out of range: valid indices are 0..2"),
])
def test_unknown_units_list_what_the_atlas_holds(atlas_dir, unit, expected):
    with pytest.raises(MaxactError) as e:
        Atlas(atlas_dir).row(unit)
    assert expected in str(e.value)


# ---- the reader refuses what is not a complete atlas of this version ---------------------------
def refused(path) -> str:
    with pytest.raises(MaxactError) as e:
        Atlas(path)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_missing_dir(tmp_path):
    assert "does not exist" in refused(tmp_path / "nope") and "maxact atlas --out" in refused(tmp_path / "nope")


def test_missing_manifest_says_why(atlas_dir):
    (atlas_dir / F.MANIFEST).unlink()
    assert "manifest.json is missing" in refused(atlas_dir)
    (atlas_dir / F.PARTIAL).write_bytes(b"")
    assert "maxact merge" in refused(atlas_dir)
    (atlas_dir / F.RUN_DIR).mkdir()
    assert "--resume" in refused(atlas_dir)


def test_missing_array(atlas_dir):
    (atlas_dir / F.TOP_POSITIONS).unlink()
    msg = refused(atlas_dir)
    assert "top_positions.npy is missing" in msg and "rebuild" in msg


def test_shape_mismatch(atlas_dir):
    np.save(atlas_dir / F.TOP_VALUES, np.zeros((U, K + 1), dtype=np.float32))
    assert f"top_values.npy has shape [{U}, {K + 1}], the manifest says [{U}, {K}]" in refused(atlas_dir)


def test_truncated_array(atlas_dir):
    data = (atlas_dir / F.TOP_CONTEXT).read_bytes()
    (atlas_dir / F.TOP_CONTEXT).write_bytes(data[:200])
    msg = refused(atlas_dir)
    assert "top_context.npy" in msg and "corrupt or truncated" in msg


def test_pickled_array_is_refused(atlas_dir):
    np.save(atlas_dir / F.TOP_VALUES, np.array([{"a": 1}] * U, dtype=object), allow_pickle=True)
    assert "top_values.npy" in refused(atlas_dir)


@pytest.mark.parametrize("edit, expected", [
    (lambda m: m.update(format="something-else"), "is not a maxact atlas (format 'something-else')"),
    (lambda m: m.pop("format"), "is not a maxact atlas (format None)"),
    (lambda m: m.update(schema_version=F.SCHEMA_VERSION + 1),
     f"has schema version {F.SCHEMA_VERSION + 1}; this maxact reads version {F.SCHEMA_VERSION}"),
])
def test_foreign_manifest(atlas_dir, edit, expected):
    m = json.loads((atlas_dir / F.MANIFEST).read_text())
    edit(m)
    (atlas_dir / F.MANIFEST).write_text(json.dumps(m))
    assert expected in refused(atlas_dir)


def test_corrupt_manifest(atlas_dir):
    (atlas_dir / F.MANIFEST).write_text('{"format": "maxact-atlas", ')
    assert "manifest.json is corrupt" in refused(atlas_dir)


def edit_manifest(atlas_dir, edit) -> None:
    """``edit`` returns the new manifest object."""
    m = json.loads((atlas_dir / F.MANIFEST).read_text())
    (atlas_dir / F.MANIFEST).write_text(json.dumps(edit(m)))


def drop(key):
    return lambda m: {k: v for k, v in m.items() if k != key}


def change(fn):
    return lambda m: fn(m) or m


@pytest.mark.parametrize("edit, expected", [
    (lambda m: [m], "manifest.json must be a JSON object, found list"),
    (drop("files"), "manifest.json lacks its list of files"),
    (drop("sites"), "manifest.json lacks its list of sites"),
    (drop("model"), "manifest.json: model must be a JSON object"),
    (change(lambda m: m["model"].pop("d_head") and None), "manifest.json: model lacks d_head"),
    (drop("n_units"), "manifest.json lacks 'n_units'"),
    (change(lambda m: m["sites"][1].update(offset=2)), "site ln_final starts at row 2 with width 2; it should start at row 3"),
    (change(lambda m: m.update(n_units=U + 1)), f"the sites hold {U} units, n_units says {U + 1}"),
])
def test_malformed_manifest_is_one_clear_line(atlas_dir, edit, expected):
    edit_manifest(atlas_dir, edit)
    assert expected in refused(atlas_dir)


@pytest.mark.parametrize("name", [F.STATS, F.REF])
def test_structured_array_with_other_fields(atlas_dir, name):
    other = np.zeros(U, dtype=[("count", "i8"), ("mean", "f8")])  # right shape, other fields
    np.save(atlas_dir / name, other)
    msg = refused(atlas_dir)
    first = F.STRUCTURED[name].names[0]
    assert f"{name} has fields (count <i8, mean <f8), this version reads ({first} <i8, " in msg
    assert "rebuild" in msg


def test_structured_array_with_other_field_types(atlas_dir):
    stats = np.zeros(U, dtype=[(n, "f4") for n in F.STATS_DTYPE.names])  # right names, wrong types
    np.save(atlas_dir / F.STATS, stats)
    assert "stats.npy has fields (count <f4, mean <f4" in refused(atlas_dir)


def test_plain_array_where_a_structured_one_belongs(atlas_dir):
    np.save(atlas_dir / F.STATS, np.zeros(U))
    assert "stats.npy has fields (<f8)" in refused(atlas_dir)


@pytest.mark.parametrize("name, dtype", [(F.TOP_VALUES, np.float64), (F.TOP_POSITIONS, np.int32),
                                         (F.TOKENS, np.int64), (F.TOP_CONTEXT, np.float32)])
def test_right_shape_wrong_dtype(atlas_dir, name, dtype):
    arr = arrays()[name].astype(dtype)
    np.save(atlas_dir / name, arr)
    expected = np.dtype(arrays()[name].dtype).str
    assert f"{name} has dtype {arr.dtype.str}, the manifest says {expected}" in refused(atlas_dir)


def test_a_file_the_manifest_does_not_list_is_refused(atlas_dir):
    edit_manifest(atlas_dir, change(lambda m: m["files"].pop(F.REF) and None))
    a = Atlas(atlas_dir)
    with pytest.raises(MaxactError, match="refstat.npy is not among the files manifest.json lists"):
        a[F.REF]


def test_missing_vocab_is_named(atlas_dir):
    (atlas_dir / F.VOCAB).unlink()
    with pytest.raises(MaxactError, match="vocab.json is missing or corrupt"):
        Atlas(atlas_dir).token_text(1)


# ---- the writer: a crash never leaves something that reads as a finished atlas -------------------
def crash_on_manifest(monkeypatch):
    real = writer.os.replace

    def replace(src, dst):
        if str(dst).endswith(F.MANIFEST):
            raise OSError("simulated crash before the manifest")
        return real(src, dst)

    monkeypatch.setattr(writer.os, "replace", replace)


def test_crash_before_manifest_leaves_no_manifest(tmp_path, monkeypatch):
    crash_on_manifest(monkeypatch)
    with pytest.raises(OSError, match="simulated"):
        write(tmp_path / "a")
    assert not (tmp_path / "a" / F.MANIFEST).exists()
    assert (tmp_path / "a" / F.TOP_VALUES).exists()  # the arrays were in place: only the manifest says done
    assert "manifest.json is missing" in refused(tmp_path / "a")


def test_crash_while_replacing_an_atlas_never_mixes_old_and_new(atlas_dir, monkeypatch):
    crash_on_manifest(monkeypatch)
    with pytest.raises(OSError, match="simulated"):
        write(atlas_dir, seed=1)
    # new arrays beside what was the old atlas: the old manifest went first, so nothing reads as done
    assert "manifest.json is missing" in refused(atlas_dir)


def test_crash_while_staging_keeps_the_old_atlas(atlas_dir, monkeypatch):
    real = writer.np.save
    calls = {"n": 0}

    def save(f, arr, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("simulated crash while staging")
        return real(f, arr, **kw)

    monkeypatch.setattr(writer.np, "save", save)
    with pytest.raises(OSError, match="staging"):
        write(atlas_dir, seed=1)
    a = Atlas(atlas_dir)  # the old atlas, complete and unchanged
    for name, arr in arrays(seed=0).items():
        np.testing.assert_array_equal(a[name], arr)
    monkeypatch.undo()
    write(atlas_dir, seed=1)  # a later write replaces it cleanly, leftovers and all
    np.testing.assert_array_equal(Atlas(atlas_dir)[F.TOP_VALUES], arrays(seed=1)[F.TOP_VALUES])


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".staging-" in p.name or ".tmp-" in p.name)


def test_a_failed_write_leaves_no_staging_folder(atlas_dir, monkeypatch):
    def save(f, arr, **kw):
        raise OSError("simulated crash while staging")

    monkeypatch.setattr(writer.np, "save", save)
    with pytest.raises(OSError, match="staging"):
        write(atlas_dir, seed=1)
    assert leftovers(atlas_dir) == []


def test_leftovers_of_killed_runs_are_removed_by_the_next_write(atlas_dir):
    dead = 2**31 - 2  # above any pid_max: no such process
    (atlas_dir / f".staging-{dead}").mkdir()
    (atlas_dir / f".staging-{dead}" / F.TOP_VALUES).write_bytes(b"half")
    (atlas_dir / f"{F.MANIFEST}.tmp-{dead}").write_text("{")
    write(atlas_dir, seed=1)
    assert leftovers(atlas_dir) == []


def test_full_disk_is_one_line_with_the_space_needed(atlas_dir, monkeypatch):
    import errno

    def save(f, arr, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer.np, "save", save)
    with pytest.raises(MaxactError) as e:
        write(atlas_dir, seed=1)
    needed = -(-sum(a.nbytes for a in arrays().values()) // 10**6)
    assert str(e.value).startswith(f"no space left on {atlas_dir} (needed about {needed} MB)")
    assert leftovers(atlas_dir) == []
    Atlas(atlas_dir)  # the old atlas is untouched


# ---- export ------------------------------------------------------------------------------------
def test_export_refuses_to_replace_parquet_files_without_overwrite(atlas_dir, tmp_path):
    import pyarrow.parquet as pq

    from maxact.store.export import export_parquet

    out = tmp_path / "pq"
    written = export_parquet(Atlas(atlas_dir), out)
    assert [p.name for p in written] == ["units.parquet", "examples.parquet", "tokens.parquet"]
    units = pq.read_table(out / "units.parquet")
    assert units.column("unit").to_pylist() == ["L0.resid_pre:0", "L0.resid_pre:1", "L0.resid_pre:2",
                                                "ln_final:0", "ln_final:1"]
    assert pq.read_table(out / "examples.parquet").num_rows == 4 * U * K
    before = {p.name: p.read_bytes() for p in written}
    with pytest.raises(MaxactError) as e:
        export_parquet(Atlas(atlas_dir), out)
    msg = str(e.value)
    assert "units.parquet, examples.parquet, tokens.parquet" in msg and "--overwrite" in msg and "\n" not in msg
    assert {p.name: p.read_bytes() for p in written} == before
    (out / "units.parquet").unlink()
    with pytest.raises(MaxactError, match="already holds examples.parquet, tokens.parquet;"):
        export_parquet(Atlas(atlas_dir), out)
    assert not (out / "units.parquet").exists()  # nothing written when refusing
    assert export_parquet(Atlas(atlas_dir), out, overwrite=True) == written
    assert sorted(p.name for p in out.iterdir()) == sorted(before)  # no temporary left


def test_export_to_a_file_is_refused(atlas_dir, tmp_path):
    from maxact.store.export import export_parquet

    (tmp_path / "f").write_text("x")
    with pytest.raises(MaxactError, match="is a file; give a folder"):
        export_parquet(Atlas(atlas_dir), tmp_path / "f")


def test_write_json_atomic_leaves_no_temporary(tmp_path):
    write_json_atomic(tmp_path / "x.json", {"a": [1, 2]})
    write_json_atomic(tmp_path / "x.json", {"a": [3]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": [3]}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_store_format_is_documented():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "STORE.md").read_text()
    assert f"schema version {F.SCHEMA_VERSION}" in doc
    names = [v for k, v in vars(F).items() if k.isupper() and isinstance(v, str) and "." in v]
    for name in names:
        stem = name.split(".")[0]
        assert name in doc or stem.rsplit("_", 1)[0] + "_*" in doc or stem in doc, name


# ---- no torch ----------------------------------------------------------------------------------
def test_reader_and_atlas_commands_do_not_import_torch():
    code = ("import sys\n"
            "import maxact.store.reader, maxact.store.export, maxact.analysis.pages, maxact.analysis.refstat\n"
            "import maxact.atlas_sample, maxact.commands.atlas_cmd, maxact.commands.sample_cmd\n"
            "heavy = [m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
