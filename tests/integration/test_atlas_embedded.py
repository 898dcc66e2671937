"""`maxact atlas` on the embedded SmolLM2-135M over the first 1200 tokens of Through the
Looking-Glass (windows of 128, blocks 0-2), checked against plain transformers.

The corpus is tokenised here by hand (raw file, BOM dropped, no special tokens) and the windows are
run through ``model(X, output_hidden_states=True)`` in the same batches as the atlas pass, none of
maxact's capture code: every resid_pre and ln_final unit's top-K / bottom-K must come out exactly.
Then `show`, `find --token " the"` and `sample --atlas` answer from the atlas.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from atlas_helpers import run_cli, single_thread

from maxact.config import AtlasConfig
from maxact.corpus import NAMED_CORPORA
from maxact.engine.plan import WindowPlan
from maxact.models import load_model
from maxact.store import format as F
from maxact.store.reader import Atlas
from maxact.windows import Windowing

pytestmark = pytest.mark.integration

N_TOKENS, SEQ, LAYERS = 1200, 128, (0, 1, 2)


@pytest.fixture(scope="module")
def lm():
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def tokens(lm, shared_corpora):
    text = (shared_corpora / NAMED_CORPORA["looking-glass"].file).read_bytes().decode("utf-8")
    ids = lm.tokenizer(text.removeprefix("\ufeff"), add_special_tokens=False)["input_ids"]
    return np.asarray(ids[:N_TOKENS], dtype=np.int64)


@pytest.fixture(scope="module")
def atlas_dir(tmp_path_factory, shared_corpora):
    out = tmp_path_factory.mktemp("embedded") / "atlas"
    with single_thread(), pytest.MonkeyPatch.context() as mp:
        mp.setenv("MAXACT_DATA", str(shared_corpora))  # module fixtures run before the autouse env one
        result = run_cli("atlas", "--max-tokens", N_TOKENS, "--seq", SEQ, "--layers", "0-2",
                         "--out", out)
    assert result.exit_code == 0, (result.output, result.exception)
    return out


@pytest.fixture(scope="module")
def hidden(lm, tokens):
    """hidden_states[L] (L in LAYERS) and hidden_states[-1] ("ln_final") of every window, by corpus
    position, (n, d_model) each; "mlp1": block 1's down projection input, from a plain hook."""
    plan = WindowPlan.make(np.zeros(1, dtype=np.int64), N_TOKENS, Windowing(SEQ, None, "short"),
                           AtlasConfig().windows_per_batch, None)
    out: dict = {}
    down = lm.model.model.layers[1].mlp.down_proj
    got = {}
    handle = down.register_forward_pre_hook(lambda m, args: got.update(x=args[0]))
    try:
        with single_thread(), torch.no_grad():
            for windows in plan.batches:
                starts = plan.starts[windows]
                T = int(plan.length[windows[0]])
                X = torch.from_numpy(tokens[starts[:, None] + np.arange(T)])
                hs = lm.model(X, output_hidden_states=True).hidden_states
                for key, i in [*((L, L) for L in LAYERS), ("ln_final", len(hs) - 1)]:
                    out.setdefault(key, {}).update({int(s): hs[i][w].numpy() for w, s in enumerate(starts)})
                out.setdefault("mlp1", {}).update({int(s): got["x"][w].numpy() for w, s in enumerate(starts)})
    finally:
        handle.remove()
    return {i: np.concatenate([d[s] for s in sorted(d)]) for i, d in out.items()}  # (n, width)


def ranked(acts, largest, k):
    """(U, k) values and positions by (value desc/asc, position asc), window position 0 excluded."""
    pos = np.arange(len(acts))
    keep = pos % SEQ != 0
    v = acts[keep]
    p = np.broadcast_to(pos[keep][:, None], v.shape)
    order = np.lexsort((p, -v if largest else v), axis=0)[:k]
    return np.take_along_axis(v, order, 0).T, np.take_along_axis(p, order, 0).T


def test_tokens_and_sites(atlas_dir, tokens):
    a = Atlas(atlas_dir)
    np.testing.assert_array_equal(a.tokens, tokens)
    assert a.manifest.corpus.name == "looking-glass" and a.manifest.corpus.n_tokens == N_TOKENS
    assert [s.name for s in a.sites] == [
        "L0.resid_pre", "L0.mlp_post", "L1.resid_pre", "L1.mlp_post", "L2.resid_pre", "L2.mlp_post", "ln_final"]
    assert (a[F.STATS]["count"] == N_TOKENS).all()


@pytest.mark.parametrize("site, key", [("L0.resid_pre", 0), ("L1.resid_pre", 1), ("L2.resid_pre", 2),
                                       ("ln_final", "ln_final"), ("L1.mlp_post", "mlp1")])
def test_top_and_bottom_equal_plain_transformers(atlas_dir, hidden, site, key):
    a = Atlas(atlas_dir)
    acts = hidden[key]
    rows = a.site_rows(site)
    K = a.manifest.k
    for part, largest in (("top", True), ("bottom", False)):
        bv, bp = ranked(acts, largest, K)
        np.testing.assert_array_equal(a[f"{part}_positions.npy"][rows], bp, err_msg=f"{site} {part}")
        np.testing.assert_array_equal(a[f"{part}_values.npy"][rows], bv, err_msg=f"{site} {part}")
    np.testing.assert_allclose(a[F.STATS]["mean"][rows], acts.astype(np.float64).mean(0), rtol=1e-5, atol=1e-6)


def test_show_the_reference_unit(atlas_dir, hidden, tokens):
    result = run_cli("show", atlas_dir, "L2.resid_pre:345", "--json")
    assert result.exit_code == 0, result.output
    page = json.loads(result.stdout)
    assert page["unit"] == "L2.resid_pre:345"
    assert {"top", "bottom", "stats", "tally", "logit_effects"} <= page.keys()
    for item in page["top"] + page["bottom"]:
        p = item["position"]
        assert tokens[p] == item["token_id"]
        assert item["value"] == float(hidden[2][p, 345])  # hidden_states[2][..., 345] at that token
    assert page["tally"] and page["logit_effects"]["promoted"]
    text = run_cli("show", atlas_dir, "L2.resid_pre:345").stdout
    assert "L2.resid_pre:345" in text


def test_find_the(atlas_dir, lm):
    result = run_cli("find", atlas_dir, "--token", " the", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["token_id"] == lm.tokenizer.convert_tokens_to_ids("Ġthe")
    assert found["occurrences"] > 20 and len(found["units"]) == 20
    zs = [u["z"] for u in found["units"]]
    assert zs == sorted(zs, reverse=True) and zs[0] > 1


def test_sample_from_the_atlas(atlas_dir, tmp_path):
    from maxact.atlas_sample import sample_from_atlas_dir

    args = ["sample", "--atlas", atlas_dir, "--layer", "2", "--dim", "345", "--seq", SEQ,
            "--samples", "200", "--seed", "7", "--json", tmp_path / "s.json"]
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    obj = json.loads((tmp_path / "s.json").read_text())
    assert [u["unit"] for u in obj["units"]] == ["L2.resid_pre:345"] and obj["config"]["source"] == "atlas"
    assert {"config", "starts", "units"} == obj.keys()
    assert {"unit", "winners", "tally", "distinct", "pos0_wins"} == obj["units"][0].keys()
    rng = np.random.default_rng(7)  # the starts exact sampling would draw with this seed
    for starts in obj["starts"]:
        assert starts == rng.integers(0, N_TOKENS - SEQ, size=32).tolist()
    t0 = time.perf_counter()
    res, _, _ = sample_from_atlas_dir(atlas_dir, layer=None, dim=None, unit_specs=["L1.mlp_post:7"],
                                      batch=32, seq=SEQ, samples=1000, seed=0, skip_pos0=False)
    assert time.perf_counter() - t0 < 1.0
    assert res.units[0].tally.distinct >= 1
