"""The atlas store without a model: the writer's crash behaviour, the reader's validation, and a
reader that never loads torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from maxact.errors import MaxactError
from maxact.store import format as F
from maxact.store import writer
from maxact.store.reader import Atlas

SITES = [
    {"name": "L0.resid_pre", "site": "resid_pre", "layer": 0, "width": 3, "offset": 0,
     "hf_module": "model.layers.0", "reads": "input", "tl_hook": "blocks.0.hook_resid_pre"},
    {"name": "ln_final", "site": "ln_final", "layer": None, "width": 2, "offset": 3,
     "hf_module": "model.norm", "reads": "output", "tl_hook": "ln_final.hook_normalized"},
]
U, K = 5, 4


def arrays(seed=0):
    rng = np.random.default_rng(seed)
    stats = np.zeros(U, dtype=[("count", "i8"), ("mean", "f8")])
    stats["count"], stats["mean"] = 100, rng.normal(size=U)
    return {
        F.TOKENS: rng.integers(0, 10, 100).astype(np.int32),
        F.TOP_VALUES: rng.normal(size=(U, K)).astype(np.float32),
        F.TOP_POSITIONS: rng.integers(0, 100, (U, K)),
        F.TOP_CONTEXT: np.full((U, 2, 32), np.nan, dtype=np.float16),
        F.STATS: stats,
    }


def write(out, seed=0):
    manifest = {"format": F.FORMAT_NAME, "schema_version": F.SCHEMA_VERSION, "n_units": U, "sites": SITES}
    writer.write_atlas(out, arrays(seed), manifest, {"seq": 16, "seed": seed}, [f"t{i}" for i in range(10)])


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
    assert m["files"][F.TOP_VALUES] == {"shape": [U, K], "dtype": "<f4"}
    assert m["files"][F.STATS]["dtype"] == "structured"
    assert a.config == {"seq": 16, "seed": 0} and a.token_text(3) == "t3" and a.token_text(99) == "<99>"
    assert a.row("L0.resid_pre:2") == 2 and a.row("ln_final:1") == 4
    assert str(a.unit_at(4)) == "ln_final:1" and str(a.unit_at(0)) == "L0.resid_pre:0"
    assert a.find_token_ids("t7") == [7] and a.token_counts.sum() == 100
    assert sorted(p.name for p in atlas_dir.iterdir()) == sorted(
        [*arrays(), F.MANIFEST, F.CONFIG, F.VOCAB])  # no staging or temporary file left


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


def test_write_json_atomic_leaves_no_temporary(tmp_path):
    writer.write_json_atomic(tmp_path / "x.json", {"a": [1, 2]})
    writer.write_json_atomic(tmp_path / "x.json", {"a": [3]})
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
