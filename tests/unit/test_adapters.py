"""Every adapter against the model itself: hooks vs output_hidden_states, and vs a hand computation."""

from __future__ import annotations

import pytest
import torch
from tiny_models import FAMILIES, hand_sites, tiny_input_ids, tiny_loaded, tiny_model

from maxact.capture import capture
from maxact.errors import MaxactError
from maxact.models.adapters import adapter_for
from maxact.units import SITE_KINDS, SiteRef

HAND = dict(atol=1e-5, rtol=1e-5)  # hand matmuls sum in another order than HF's kernels


@pytest.fixture(scope="module", params=FAMILIES)
def run(request):
    """(adapter, hidden_states, every site of every block captured) for one tiny model."""
    loaded = tiny_loaded(request.param)
    ids = tiny_input_ids()
    with torch.no_grad():
        hidden = loaded.model(ids, output_hidden_states=True).hidden_states  # n_layers + 1 x (B, T, d)
    acts = capture(loaded.adapter, ids, loaded.adapter.site_refs())
    return loaded.adapter, hidden, acts


def test_residual_sites_equal_hidden_states(run):
    adapter, hidden, acts = run
    n = adapter.n_layers
    assert len(hidden) == n + 1
    for layer in range(n):
        assert torch.equal(acts[SiteRef("resid_pre", layer)], hidden[layer])
    for layer in range(n - 1):
        assert torch.equal(acts[SiteRef("resid_post", layer)], hidden[layer + 1])
    assert torch.equal(acts[SiteRef("ln_final", None)], hidden[n])
    final_norm = adapter.model.get_submodule(adapter.final_norm_path())
    with torch.no_grad():
        assert torch.equal(final_norm(acts[SiteRef("resid_post", n - 1)]), hidden[n])


def test_sites_equal_hand_computation(run):
    adapter, hidden, acts = run
    for layer in range(adapter.n_layers):
        got = {site: acts[SiteRef(site, layer)] for site in adapter.sites if site != "ln_final"}
        want = hand_sites(adapter, layer, got["resid_pre"], got["attn_out"])
        for site, expected in want.items():
            where = f"L{layer}.{site}"
            torch.testing.assert_close(got[site], expected, **HAND, msg=lambda m, w=where: f"{w}: {m}")
        # attn_out is what the block adds besides the MLP (resid_mid - resid_pre when sequential)
        rest = got["resid_post"] - got["resid_pre"] - want["mlp_out"]
        torch.testing.assert_close(got["attn_out"], rest, **HAND)


def test_mlp_out_weight_columns_are_what_neurons_write(run):
    adapter, _, acts = run
    for layer in range(adapter.n_layers):
        w = adapter.mlp_out_weight(layer).detach()
        assert w.shape == (adapter.d_model, adapter.d_mlp)
        post, out = acts[SiteRef("mlp_post", layer)], acts[SiteRef("mlp_out", layer)]
        # the bias cancels in differences between positions: out - out[0] = (post - post[0]) @ W.T
        torch.testing.assert_close(out - out[:1, :1], (post - post[:1, :1]) @ w.T, **HAND)


def test_widths_match_captured_shapes(run):
    adapter, hidden, acts = run
    B, T, d = hidden[0].shape
    assert d == adapter.d_model
    expected = {
        "mlp_pre": adapter.d_mlp, "mlp_post": adapter.d_mlp,
        "attn_q": adapter.n_heads * adapter.d_head,
        "attn_k": adapter.n_kv_heads * adapter.d_head, "attn_v": adapter.n_kv_heads * adapter.d_head,
    }
    for ref, tensor in acts.items():
        assert tensor.shape == (B, T, adapter.width(ref)), ref
        assert adapter.width(ref) == expected.get(ref.site, adapter.d_model), ref
    assert adapter.unembedding().shape == (adapter.model.config.vocab_size, adapter.d_model)


def test_tiny_model_shapes_are_what_the_tests_rely_on():
    assert tiny_loaded("llama").adapter.n_kv_heads == 2  # GQA: k/v narrower than q
    gpt2 = tiny_loaded("gpt2").adapter
    assert gpt2.d_mlp == 4 * gpt2.d_model  # n_inner=None
    assert set(tiny_model("gpt_neo").config.attention_layers) == {"global", "local"}
    assert tiny_loaded("gpt_neox").model.gpt_neox.layers[0].attention.rotary_ndims < 16  # partial rotary


def test_describe_index_names_head_and_dim():
    adapter = tiny_loaded("gpt_neox").adapter
    for site in [name for name, kind in SITE_KINDS.items() if kind.per_head]:
        assert adapter.describe_index(SiteRef(site, 0), 2 * adapter.d_head + 3) == "head 2, dim 3"


# ---- refusals ---------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_unknown_config_attribute_is_refused(family):
    model = tiny_model(family)
    model.config.some_new_feature = 3
    with pytest.raises(MaxactError, match="some_new_feature"):
        adapter_for(model)


@pytest.mark.parametrize(
    "family, attribute, value",
    [
        ("gpt2", "add_cross_attention", True),
        ("gpt2", "activation_function", "made_up_act"),
        ("gpt_neo", "activation_function", "made_up_act"),
        ("gpt_neo", "_attn_implementation", "flash_attention_2"),
        ("gpt_neox", "hidden_act", "made_up_act"),
        ("llama", "pretraining_tp", 2),
    ],
)
def test_unreadable_config_values_are_refused(family, attribute, value):
    model = tiny_model(family)
    setattr(model.config, attribute, value)
    with pytest.raises(MaxactError, match=attribute):
        adapter_for(model)


@pytest.mark.parametrize("family", FAMILIES)
def test_out_of_range_errors_name_the_valid_range(family):
    adapter = tiny_loaded(family).adapter
    n = adapter.n_layers
    with pytest.raises(MaxactError, match=rf"blocks 0\.\.{n - 1}"):
        adapter.site_hook(SiteRef("mlp_post", n))
    with pytest.raises(MaxactError, match=rf"blocks 0\.\.{n - 1}"):
        adapter.site_refs(layers=[-1])
    ref = SiteRef("mlp_post", 0)
    with pytest.raises(MaxactError, match=rf"0\.\.{adapter.d_mlp - 1}"):
        adapter.check_index(ref, adapter.d_mlp)
    adapter.check_index(ref, adapter.d_mlp - 1)
    with pytest.raises(MaxactError, match="valid sites: resid_pre"):
        adapter.site_hook(SiteRef("attn_z", 0))
