"""`maxact context` (pipeline/context.py) against a hand forward of each prefix, and the viewer's
model jobs (optimise and context panels): start, poll, cancel, limits, errors."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from atlas_helpers import build_tiny_atlas, run_cli
from e2e.viewer_atlas import api_call as call
from e2e.viewer_atlas import build_viewer_atlas, wait_job

from maxact.pipeline.context import PrefixValue as P
from maxact.pipeline.context import context_curves, prefix_ladder, shortest_k
from maxact.store import format as F
from maxact.web.server import make_server

UNIT = "L1.resid_pre:3"


def test_prefix_ladder_and_thresholds_by_hand():
    assert prefix_ladder(0) == [0]
    assert prefix_ladder(1) == [0, 1]
    assert prefix_ladder(6) == [0, 1, 2, 4, 6]
    assert prefix_ladder(8) == [0, 1, 2, 4, 8]
    curve = [P(0, 0.1), P(1, 0.6), P(2, 0.95), P(4, 1.0)]
    assert (shortest_k(curve, 1.0, 0.5), shortest_k(curve, 1.0, 0.9)) == (1, 2)
    neg = [P(0, 0.2), P(1, -0.5), P(3, -1.0)]  # a negative full value: same sign and magnitude
    assert (shortest_k(neg, -1.0, 0.5), shortest_k(neg, -1.0, 0.9)) == (1, 3)
    assert shortest_k(curve, 0.0, 0.5) is None


@pytest.fixture(scope="module")
def tiny_atlas(tmp_path_factory):
    return build_tiny_atlas(tmp_path_factory.mktemp("context"), sites=("resid_pre",), n_tokens=300)


def test_context_values_are_forwards_of_each_prefix(tiny_atlas):
    lm, tokens, atlas, cfg = tiny_atlas
    row = atlas.row(UNIT)
    result = context_curves(lm, atlas, UNIT, n_examples=5)
    top_pos = np.asarray(atlas[F.TOP_POSITIONS][row])[:5]
    top_val = np.asarray(atlas[F.TOP_VALUES][row])[:5]
    assert [e.position for e in result.examples] == top_pos.tolist()
    for e, want in zip(result.examples, top_val):
        assert e.full_k == e.position % cfg.seq  # one document, no BOS: windows of seq from 0
        assert e.atlas_value == pytest.approx(float(want))
        assert e.full == pytest.approx(float(want), rel=1e-5, abs=1e-5)  # the full context is the atlas's
        assert [p.k for p in e.prefix] == prefix_ladder(e.full_k)
        for p in e.prefix:
            ids = torch.tensor(tokens[e.position - p.k : e.position + 1], dtype=torch.long)[None]
            with torch.no_grad():
                hidden = lm.model(input_ids=ids, output_hidden_states=True).hidden_states[1]
            assert p.value == pytest.approx(float(hidden[0, -1, 3]), rel=1e-5, abs=1e-5)
    data = result.to_json()
    assert data["unit"] == UNIT and {"position", "full", "prefix", "k50", "k90"} <= data["examples"][0].keys()


def test_context_cli_errors(tiny_atlas):
    _, _, atlas, _ = tiny_atlas
    bad = run_cli("context", str(atlas.path), "L1.resid_pre:999")
    assert bad.exit_code == 2 and "out of range" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_cli("context", str(atlas.path), UNIT, "--examples", "0")
    assert bad.exit_code == 2 and "--examples" in bad.stderr


# ---- the viewer's jobs -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    atlas_dir, _ = build_viewer_atlas(tmp_path_factory.mktemp("jobs"))
    srv, url = make_server(atlas_dir, port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv, url.rstrip("/")
    srv.shutdown()
    srv.server_close()


def wait(url: str, job: str, timeout: float = 120.0) -> dict:
    return wait_job(url, job, timeout)


def test_ascend_job_gives_exact_values_and_the_atlas_data_side(server):
    srv, url = server
    status, started = call(url, "/api/ascend", {"unit": UNIT, "method": "gcg", "length": 4, "steps": 5, "seeds": 2})
    assert status == 202 and started["url"] == f"/api/job/{started['job']}"
    done = wait(url, started["job"])
    assert done["state"] == "done" and done["error"] is None
    result = done["result"]
    assert [r["seed"] for r in result["runs"]] == [0, 1] and result["stopped"] is False
    lm = srv.viewer.live_model.with_model(lambda lm: lm)
    for run in result["runs"]:
        with torch.no_grad():
            h = lm.model(input_ids=torch.tensor([run["token_ids"]]), output_hidden_states=True).hidden_states[1]
        assert run["hard_value"] == pytest.approx(float(h[0, -1, 3]), rel=1e-5, abs=1e-5)
    atlas = srv.viewer.atlas
    assert result["data_max"] == pytest.approx(float(atlas[F.STATS][atlas.row(UNIT)]["max"]))
    assert done["progress"]["of"] == 10


def test_a_job_can_be_cancelled_and_keeps_what_it_found(server):
    _, url = server
    _, started = call(url, "/api/ascend", {"unit": UNIT, "method": "relax", "length": 4, "steps": 500, "seeds": 5})
    time.sleep(0.5)
    status, _ = call(url, f"/api/job/{started['job']}/cancel", {})
    assert status == 200
    done = wait(url, started["job"])
    assert done["state"] == "cancelled"
    if done["result"] is not None:  # cancelled after its first step: partial result, flagged
        assert done["result"]["stopped"] is True


@pytest.mark.parametrize("body, status, words", [
    ({"unit": UNIT, "steps": 0}, 400, "steps must be a whole number from 1 to 500"),
    ({"unit": UNIT, "length": 1000}, 400, "length must be a whole number from 1 to 32"),
    ({"unit": UNIT, "method": "adam"}, 400, "unknown method"),
    ({"unit": "nonsense"}, 400, "unit"),
    ({}, 400, "unit"),
])
def test_bad_job_requests(server, body, status, words):
    _, url = server
    got, answer = call(url, "/api/ascend", body)
    assert got == status and words in answer["error"]


def test_context_job_and_unknown_job(server):
    srv, url = server
    status, started = call(url, "/api/context", {"unit": UNIT, "examples": 3})
    assert status == 202
    done = wait(url, started["job"])
    assert done["state"] == "done" and len(done["result"]["examples"]) == 3
    first = done["result"]["examples"][0]
    assert first["full"] == pytest.approx(first["atlas_value"], rel=1e-5, abs=1e-5)
    assert call(url, "/api/job/ascend-99999")[0] == 404
    assert call(url, "/api/context", {"unit": "L1.resid_pre:99999"})[0] == 404


def test_too_many_jobs_are_refused(server):
    srv, url = server
    limit = srv.viewer.jobs.limits.max_queued
    ids, codes = [], []
    for _ in range(limit + 1):
        code, answer = call(url, "/api/ascend", {"unit": UNIT, "method": "relax", "length": 4, "steps": 500, "seeds": 5})
        codes.append(code)
        if code == 202:
            ids.append(answer["job"])
    assert codes.count(202) <= limit and codes[-1] == 429
    for job in ids:
        call(url, f"/api/job/{job}/cancel", {})
    for job in ids:
        assert wait(url, job)["state"] == "cancelled"
