"""The viewer's concept probe (POST /api/concept/probe, docs/CONCEPTS.md "In the viewer"): a job
that runs `maxact concept ATLAS --token ... --probe` over the first tokens of the atlas's corpus with
the viewer's model, against the command line itself; its limits and errors; and a pass stopped
early, against a pass over only the tokens it fed."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from atlas_helpers import build_tiny_atlas, run_cli, single_thread, synthetic_source
from e2e.viewer_atlas import api_call as call
from e2e.viewer_atlas import build_viewer_atlas, start_server, wait_job

from maxact.analysis.categories import token_labels
from maxact.pipeline.concept_pass import PassRequest, run_concept_pass
from maxact.store import format as F

N_TOKENS = 400  # of the viewer atlas's 700: the probe's pass reads the first N


def wait(url: str, job: str, timeout: float = 300.0) -> dict:
    return wait_job(url, job, timeout)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    atlas_dir, _ = build_viewer_atlas(tmp_path_factory.mktemp("probe"))
    srv, url = start_server(atlas_dir)
    yield srv, url
    srv.shutdown()
    srv.server_close()


def tracked_text(atlas, i: int) -> str:
    return atlas.token_text(int(np.asarray(atlas[F.TUNING_IDS])[i]))


def test_probe_job_is_the_command_line_probe(server):
    srv, url = server
    atlas = srv.viewer.atlas
    tokens = [tracked_text(atlas, 0), tracked_text(atlas, 3)]
    status, started = call(url, "/api/concept/probe", {"token": tokens, "site": "L1.mlp_post", "tokens": N_TOKENS})
    assert status == 202 and started["url"] == f"/api/job/{started['job']}"
    done = wait(url, started["job"])
    assert done["state"] == "done", done["error"]
    result = done["result"]
    assert result["site"] == "L1.mlp_post" and result["n_fed"] == N_TOKENS and result["stopped"] is False
    assert done["progress"] == {"done": N_TOKENS, "of": N_TOKENS}
    args = ["concept", atlas.path, "--sites", "mlp_post", "--layers", "1", "--probe", "--max-tokens", str(N_TOKENS),
            "--json"]
    for t in tokens:
        args += ["--token", t]
    r = run_cli(*args)
    assert r.exit_code == 0, r.output
    cli = json.loads(r.stdout)
    assert result["probe"] == cli["probes"][0]
    assert (result["n_in"], result["n_out"]) == (cli["n_in"], cli["n_out"]) and result["category"] == cli["category"]
    assert [u["unit"] for u in result["top_t"]] == [u["unit"] for u in cli["units"][: len(result["top_t"])]]
    assert all(u["unit"].startswith("L1.mlp_post:") for u in result["probe"]["top_units"])


@pytest.mark.parametrize("body, words", [
    ({"token": [], "site": "L1.mlp_post"}, "give the category's token texts"),
    ({"token": ["no-such-token"], "site": "L1.mlp_post"}, "is no token of the vocabulary"),
    ({"token": ["TRACKED"], "site": "L9.mlp_post"}, "give one site of this atlas"),
    ({"token": ["TRACKED"], "site": "L1.mlp_post", "tokens": 10**9}, "tokens must be a whole number from 1 to 16384"),
])
def test_bad_probe_requests(server, body, words):
    srv, url = server
    body = {**body, "token": [tracked_text(srv.viewer.atlas, 0) if t == "TRACKED" else t for t in body["token"]]}
    status, answer = call(url, "/api/concept/probe", body)
    assert status == 400 and words in answer["error"]
    assert call(url, "/api/concept/probe")[0] == 405


def test_a_pass_stopped_early_is_the_pass_over_what_it_fed(tmp_path):
    lm, tokens, atlas, cfg = build_tiny_atlas(tmp_path / "atlas", n_tokens=640, sites=("mlp_post",), seq=32,
                                              windows_per_batch=4)
    seen = []

    def stop_after_two(done: int, of: int) -> bool:
        seen.append((done, of))
        return done >= 2 * 4 * 32

    with single_thread():
        early = run_concept_pass(lm, synthetic_source(tokens), cfg, PassRequest(token_labels(tokens, [5, 6]), False),
                                 progress=False, on_batch=stop_after_two)
        head = tokens[: 2 * 4 * 32]
        whole = run_concept_pass(lm, synthetic_source(head), replace(cfg, max_tokens=None),
                                 PassRequest(token_labels(head, [5, 6]), False), progress=False)
    assert early.stopped and early.n_fed == 256 and seen == [(0, 640), (128, 640), (256, 640)]
    assert not whole.stopped and whole.n_fed == 256
    np.testing.assert_array_equal(early.count, whole.count)
    np.testing.assert_allclose(early.mean, whole.mean, atol=1e-6)
    np.testing.assert_allclose(early.m2, whole.m2, rtol=1e-6, atol=1e-6)
