"""`maxact sample` on the embedded SmolLM2-135M, checked against plain transformers.

The CLI runs in a subprocess (its peak memory is its VmHWM, polled); every batch it records in
--json is then recomputed here from the raw corpus file with the tokenizer and
``model(X, output_hidden_states=True)``, or a plain hook on ``mlp.down_proj``, none of maxact's
capture code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from maxact.corpus import NAMED_CORPORA
from maxact.models import load_model

pytestmark = pytest.mark.integration

MAXACT = str(Path(sys.executable).with_name("maxact"))
PEAK_LIMIT_KIB = 2 * 1024 * 1024  # 2 GiB
VALUE_TOL = 1e-3
BATCH, SEQ = 4, 64


def run_cli(args, tmp_path: Path, name: str, corpora: Path):
    """Run `maxact ARGS`; return (exit code, stdout, stderr, peak RSS of the child in KiB)."""
    out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    # module fixtures run before the autouse env fixture: name the corpora folder explicitly
    env = {**os.environ, "MAXACT_DATA": str(corpora), "HF_HUB_OFFLINE": "1"}
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen([MAXACT, *args], stdout=fo, stderr=fe, env=env)
        peak = 0
        while proc.poll() is None:  # VmHWM: the child's own high-water mark, never the test's
            peak = max(peak, _vm_hwm_kib(proc.pid))
            time.sleep(0.02)
    return proc.returncode, out.read_text(), err.read_text(), peak


def _vm_hwm_kib(pid: int) -> int:
    """Peak RSS so far (KiB) of a running process, from /proc/PID/status.

    Not wait4's ru_maxrss: Linux carries the parent's RSS at fork over exec into the child's
    ru_maxrss, so a child of a large test process would report the test's own size. VmHWM belongs
    to the address space the child built after exec. It only grows, so polling loses at most the
    growth of the child's last 20 ms."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):  # exited between poll() and open()
        pass
    return 0


@pytest.fixture(scope="module")
def lm():
    return load_model("smollm2-135m")  # the dequantized cache: a few seconds


@pytest.fixture(scope="module")
def corpus_tokens(lm, shared_corpora):
    """The reference's step 1, by hand: the raw file (BOM dropped), no special tokens."""
    text = (shared_corpora / NAMED_CORPORA["looking-glass"].file).read_bytes().decode("utf-8")
    text = text.removeprefix("\ufeff")
    return np.asarray(lm.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)


def windows(tokens: np.ndarray, starts) -> torch.Tensor:
    starts = np.asarray(starts)
    return torch.from_numpy(tokens[starts[:, None] + np.arange(SEQ)])  # (B, T)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, shared_corpora):
    tmp = tmp_path_factory.mktemp("sample")
    args = [
        "sample",
        "--layer",
        "2",
        "--dim",
        "345",
        "--samples",
        "3",
        "--batch",
        str(BATCH),
        "--seq",
        str(SEQ),
        "--seed",
        "7",
        "--json",
        str(tmp / "s.json"),
        "--plot",
        str(tmp / "s.png"),
    ]
    code, out, err, peak = run_cli(args, tmp, "reference", shared_corpora)
    assert code == 0, err
    return tmp, out, err, peak


def test_reference_run_peak_memory_under_2gb(reference_run):
    _, _, _, peak_kib = reference_run
    assert 0 < peak_kib < PEAK_LIMIT_KIB, f"peak RSS {peak_kib / 1024:.0f} MiB"


def test_reference_run_recomputes_with_transformers(reference_run, lm, corpus_tokens):
    tmp, _, _, _ = reference_run
    obj = json.loads((tmp / "s.json").read_text())
    assert [u["unit"] for u in obj["units"]] == ["L2.resid_pre:345"]
    unit = obj["units"][0]
    cfg = obj["config"]
    assert (cfg["batch"], cfg["seq"], cfg["samples"], cfg["seed"]) == (BATCH, SEQ, 3, 7)
    assert cfg["corpus"] == "looking-glass" and cfg["n_tokens"] == len(corpus_tokens)
    # the starts are the documented draw: one default_rng(seed), `batch` integers per batch
    rng = np.random.default_rng(7)
    assert len(obj["starts"]) == 3 and len(unit["winners"]) == 3
    for starts, w in zip(obj["starts"], unit["winners"], strict=True):
        assert starts == rng.integers(0, len(corpus_tokens) - SEQ, size=BATCH).tolist()
        X = windows(corpus_tokens, starts)
        with torch.no_grad():
            A = lm.model(X, output_hidden_states=True).hidden_states[2][..., 345]  # (B, T)
        i = int(A.flatten().argmax())
        row, col = divmod(i, SEQ)
        assert (w["row"], w["col"], w["token_id"]) == (row, col, int(X[row, col]))
        assert abs(w["value"] - float(A[row, col])) < VALUE_TOL
    counts = {t["token_id"]: t["count"] for t in unit["tally"]}
    winners = [w["token_id"] for w in unit["winners"]]
    assert counts == {t: winners.count(t) for t in set(winners)}


def test_reference_run_prints_tally_and_position_0(reference_run, lm):
    tmp, out, _, _ = reference_run
    obj = json.loads((tmp / "s.json").read_text())
    assert (
        "L2.resid_pre:345" in out and "model.layers.2" in out and "blocks.2.hook_resid_pre" in out
    )
    tally = obj["units"][0]["tally"]
    for t in tally:
        shown = json.dumps(lm.token_text(t["token_id"]), ensure_ascii=False)  # quoted, space kept
        assert f"{shown} (id {t['token_id']})" in out
        assert f"{t['share']:.1%}" in out
    assert f"distinct winners: {len(tally)}" in out
    assert "wins at window position 0: " in out
    assert (tmp / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_whole_mlp_site_in_one_run(tmp_path, lm, corpus_tokens, shared_corpora):
    path = tmp_path / "w.json"
    args = [
        "sample",
        "--unit",
        "L1.mlp_post:*",
        "--samples",
        "2",
        "--batch",
        str(BATCH),
        "--seq",
        str(SEQ),
        "--seed",
        "3",
        "--json",
        str(path),
    ]
    code, out, err, peak = run_cli(args, tmp_path, "site", shared_corpora)
    assert code == 0, err
    assert peak < PEAK_LIMIT_KIB
    obj = json.loads(path.read_text())
    objs = obj["units"]
    assert isinstance(objs, list) and len(objs) == 1536
    assert [o["unit"] for o in objs] == [f"L1.mlp_post:{i}" for i in range(1536)]
    assert out.count("wins at window position 0: ") == 1536
    # every neuron, every batch: a plain hook on what the down projection reads
    down = lm.model.model.layers[1].mlp.down_proj
    for b in range(2):
        starts = obj["starts"][b]  # one list of starts, shared by every unit
        assert all(len(o["winners"]) == 2 for o in objs)
        X = windows(corpus_tokens, starts)
        got = {}
        handle = down.register_forward_pre_hook(lambda m, args, got=got: got.update(x=args[0]))
        try:
            with torch.no_grad():
                lm.model(X)
        finally:
            handle.remove()
        acts = got["x"].reshape(-1, 1536)  # (B * T, 1536), row-major
        best = acts.argmax(dim=0)  # (1536,)
        winners = [o["winners"][b] for o in objs]
        np.testing.assert_array_equal([w["row"] * SEQ + w["col"] for w in winners], best.numpy())
        np.testing.assert_array_equal([w["token_id"] for w in winners], X.flatten()[best].numpy())
        np.testing.assert_allclose(
            [w["value"] for w in winners],
            acts[best, torch.arange(1536)].numpy(),
            atol=VALUE_TOL,
            rtol=0,
        )


def test_bad_input_in_a_real_process_is_one_line(tmp_path, shared_corpora):
    code, out, err, _ = run_cli(
        ["sample", "--corpus", str(tmp_path / "missing.txt"), "--layer", "2", "--dim", "345"],
        tmp_path,
        "bad",
        shared_corpora,
    )
    assert code != 0 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "missing.txt" in err
    code, _, err, _ = run_cli(
        ["sample", "--layer", "2", "--dim", "576", "--samples", "1"],
        tmp_path,
        "dim",
        shared_corpora,
    )
    lines = err.splitlines()
    assert code != 0 and "Traceback" not in err
    assert lines[-1] == "error: index 576 of L2.resid_pre is out of range: valid indices are 0..575"
