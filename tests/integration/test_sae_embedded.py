"""The bundled TopK SAE of the embedded model (examples/sae/, docs/DIRECTIONS.md) on real text:

- its latents from the atlas pass equal the SAE's encoder applied by hand (numpy, float64) to
  ``hidden_states[6]`` of a plain transformers forward, top-K lists included;
- it reconstructs the residual stream of held-out text (the last tokens of Through the
  Looking-Glass, past the 90% it was trained on) about as its README says;
- exact `sample --sae` and `show` on one of its latents.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from atlas_helpers import run_cli
from safetensors.numpy import load_file

from maxact.corpus import open_corpus, tokenize_corpus
from maxact.models import load_model

pytestmark = pytest.mark.integration

SAE = Path(__file__).resolve().parents[2] / "examples" / "sae" / "smollm2-135m-L6-resid_pre-topk"
LAYER, K_SAE = 6, 32
N_TOKENS, SEQ = 512, 64


@pytest.fixture(scope="module")
def weights():
    w = {k: v.astype(np.float64) for k, v in load_file(str(SAE / "sae_weights.safetensors")).items()}
    assert json.loads((SAE / "cfg.json").read_text())["k"] == K_SAE
    return w


def encode(x, w):
    """SAELens's TopK encoder written out: x (n, 576) float64 -> (n, 2048)."""
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    out = np.zeros_like(pre)
    top = np.argpartition(-pre, K_SAE - 1, axis=1)[:, :K_SAE]
    rows = np.arange(len(pre))[:, None]
    out[rows, top] = np.maximum(pre[rows, top], 0.0)
    return out


@pytest.fixture(scope="module")
def model():
    lm = load_model("smollm2-135m")
    tokens = tokenize_corpus(open_corpus("looking-glass"), lm.tokenizer, None).tokens.astype(np.int64)
    return lm, tokens


def hidden6(lm, ids):
    with torch.no_grad():
        return lm.model(torch.from_numpy(ids)[None], output_hidden_states=True).hidden_states[LAYER][0].double().numpy()


def test_atlas_latents_equal_the_encoder_by_hand(model, weights, tmp_path):
    from maxact.store.reader import Atlas

    lm, tokens = model
    out = tmp_path / "atlas"
    r = run_cli("atlas", "--corpus", "looking-glass", "--out", out, "--max-tokens", N_TOKENS, "--seq", SEQ,
                "--k", 8, "--sites", "feat", "--sae", f"feat={SAE}", "--ref-samples", 50)
    assert r.exit_code == 0, r.output
    atlas = Atlas(out)
    x = np.concatenate([hidden6(lm, tokens[s : s + SEQ]) for s in range(0, N_TOKENS, SEQ)])  # (512, 576)
    acts = encode(x, weights)  # (512, 2048)
    site = atlas.manifest.site("feat")
    assert site.width == 2048 and atlas.manifest.derived[0].k == K_SAE
    top_v, top_p = atlas["top_values.npy"][site.rows], atlas["top_positions.npy"][site.rows]
    masked = np.where((np.arange(N_TOKENS) % SEQ > 0)[:, None], acts, -np.inf)
    fired = np.nonzero((acts > 0).any(0))[0]
    assert len(fired) > 300
    for i in fired[:: max(1, len(fired) // 60)]:  # 60 latents spread over those that fire
        want = np.sort(masked[:, i])[::-1][:8]
        np.testing.assert_allclose(top_v[i], want, rtol=2e-3, atol=2e-3, err_msg=f"feat:{i}")
        np.testing.assert_allclose(acts[top_p[i], i], top_v[i], rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(atlas["stats.npy"]["frac_pos"][site.rows], (acts > 0).mean(0), atol=3 / N_TOKENS)
    page = json.loads(run_cli("show", out, f"feat:{fired[0]}", "--json").stdout)
    assert page["derived"]["architecture"] == "topk" and len(page["derived"]["nearest_neurons"]) == 8
    assert page["derived"]["nearest_neurons"][0]["unit"].split(".")[1].startswith("mlp_post")


def test_reconstructs_held_out_text(model, weights):
    lm, tokens = model
    start = int(len(tokens) * 0.92)
    x = np.concatenate([hidden6(lm, tokens[s : s + 256])[1:] for s in (start, start + 256)])  # (510, 576)
    acts = encode(x, weights)
    x_hat = acts @ weights["W_dec"] + weights["b_dec"]
    fve = 1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert fve > 0.8, fve  # the README: 0.8945 over 19,890 held-out tokens of three corpora
    assert ((acts > 0).sum(1) <= K_SAE).all() and (acts > 0).sum(1).mean() > K_SAE - 1


def test_sample_exact_on_a_latent(model, weights, tmp_path):
    lm, tokens = model
    r = run_cli("sample", "--sae", f"feat={SAE}", "--unit", "feat:7", "--seq", 32,
                "--batch", 4, "--samples", 3, "--seed", 1, "--json", tmp_path / "s.json")
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "s.json").read_text())
    for b, w in enumerate(result["units"][0]["winners"]):
        start = result["starts"][b][w["row"]]
        x = hidden6(lm, tokens[start : start + 32])
        assert encode(x, weights)[w["col"], 7] == pytest.approx(w["value"], rel=2e-3, abs=2e-3)
        assert encode(x, weights)[:, 7].max() == pytest.approx(w["value"], rel=2e-3, abs=2e-3)
