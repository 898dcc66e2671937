"""Tiny random-weight models of every supported family, and every site computed by hand from them.

``tiny_model(family)`` is deterministic (its own seeded RNG; the global one is left as it was),
float32, in eval mode. Biases and norm weights are perturbed away from HF's 0 / 1 init, so a
reading that drops a bias or a norm shows up. ``hand_sites`` recomputes each site of one block from
the module weights (plain matmuls), taking only the attention mixing itself from the model.
"""

from __future__ import annotations

import math

import torch
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GemmaConfig,
    GemmaForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoConfig,
    GPTNeoForCausalLM,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from maxact.models import LoadedModel
from maxact.models.adapters import adapter_for

FAMILIES = ("llama", "gpt2", "gpt_neo", "gpt_neox")
# the families tested in tests/unit/test_adapters_families.py; keys of _build, not adapter families
# ("qwen2" and "qwen3" are both read by the qwen adapter)
MORE_FAMILIES = ("mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3", "olmo2")
VOCAB = 97
SEQ = 16  # longer than every sliding window below (4), so local attention differs from global


def _build(family: str):
    common = dict(vocab_size=VOCAB, max_position_embeddings=64, initializer_range=0.1,
                  bos_token_id=0, eos_token_id=0)
    if family == "llama":  # grouped-query attention: k/v are half as wide as q
        cfg = LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                          num_attention_heads=4, num_key_value_heads=2, **common)
        return LlamaForCausalLM(cfg)
    if family == "gpt2":  # n_inner=None: the MLP is 4 * n_embd wide
        cfg = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=64, n_layer=3, n_head=4,
                         n_inner=None, initializer_range=0.1, bos_token_id=0, eos_token_id=0)
        return GPT2LMHeadModel(cfg)
    if family == "gpt_neo":  # global, local, global, local with a 4-token window
        cfg = GPTNeoConfig(hidden_size=64, intermediate_size=96, num_layers=4, num_heads=4,
                           attention_types=[[["global", "local"], 2]], window_size=4, **common)
        return GPTNeoForCausalLM(cfg)
    if family == "gpt_neox":  # parallel residual, rotary on half of each head
        rope = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}
        cfg = GPTNeoXConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                            num_attention_heads=4, use_parallel_residual=True,
                            rope_parameters=rope, **common)
        return GPTNeoXForCausalLM(cfg)
    return _build_more(family, common)


def _build_more(family: str, common: dict):
    """The MORE_FAMILIES: grouped-query attention and a 4-token sliding window wherever the family has one."""
    sizes = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                 num_key_value_heads=2, **common)
    if family == "mistral":
        return MistralForCausalLM(MistralConfig(sliding_window=4, **sizes))
    if family == "qwen2":  # q/k/v biases; layers 1 and 2 slide (use_sliding_window, max_window_layers)
        return Qwen2ForCausalLM(Qwen2Config(use_sliding_window=True, sliding_window=4, max_window_layers=1, **sizes))
    if family == "qwen3":  # per-head q/k norms; head_dim 24, so q is 96 wide, not d_model
        return Qwen3ForCausalLM(Qwen3Config(head_dim=24, **sizes))
    if family == "gemma":  # (1 + w) RMSNorm, embedding scaled by sqrt(d_model), head_dim 24
        return GemmaForCausalLM(GemmaConfig(head_dim=24, hidden_act="gelu_pytorch_tanh", **sizes))
    if family == "gemma2":  # post-norms, both soft-caps, sliding / global layers, eager attention
        cfg = Gemma2Config(head_dim=24, query_pre_attn_scalar=20, attn_logit_softcapping=5.0,
                           final_logit_softcapping=3.0, sliding_window=4,
                           layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                           attn_implementation="eager", **sizes)
        return Gemma2ForCausalLM(cfg)
    if family == "gemma3":  # post-norms, per-head q/k norms, two local layers then a global one
        cfg = Gemma3TextConfig(head_dim=24, query_pre_attn_scalar=20, sliding_window=4,
                               layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                               **sizes)
        return Gemma3ForCausalLM(cfg)
    if family == "phi3":  # fused qkv_proj and gate_up_proj; rotary on half of each head
        rope = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}
        return Phi3ForCausalLM(Phi3Config(sliding_window=4, rope_parameters=rope, pad_token_id=0, **sizes))
    if family == "olmo2":  # no pre-norms: post-norms, and q/k normed over their whole width
        return Olmo2ForCausalLM(Olmo2Config(**sizes))
    raise ValueError(f"unknown family {family!r}; valid: {', '.join(FAMILIES + MORE_FAMILIES)}")


def tiny_model(family: str, seed: int = 0) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build(family)
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim == 1:  # biases and norm weights
                    p.add_(torch.randn_like(p), alpha=0.1)
    return model.float().eval()


def tiny_loaded(family: str, seed: int = 0) -> LoadedModel:
    model = tiny_model(family, seed)
    return LoadedModel(name=f"tiny-{family}", model=model, tokenizer=None, adapter=adapter_for(model))


def tiny_input_ids(batch: int = 2, seq: int = SEQ, vocab: int = VOCAB, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


# ---- sites by hand -----------------------------------------------------------------------------
HAND_ACT = {
    "gelu_new": lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
    "silu": lambda x: x * torch.sigmoid(x),
}
HAND_ACT["gelu_pytorch_tanh"] = HAND_ACT["gelu_new"]  # the same tanh approximation


def rms_norm(x, scale, eps):  # RMSNorm by hand: x / rms(x) * scale, in float32
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * scale


def norm_scale(adapter, norm):
    """What an RMSNorm module of this family multiplies by: 1 + weight for Gemma, weight otherwise."""
    return 1.0 + norm.weight if adapter.family.startswith("gemma") else norm.weight


def linear(x, lin):  # nn.Linear: weight (out, in)
    y = x @ lin.weight.T
    return y if lin.bias is None else y + lin.bias


def conv1d(x, conv):  # GPT-2 Conv1D: weight (in, out)
    return x @ conv.weight + conv.bias


@torch.no_grad()
def hand_sites(adapter, layer: int, resid_pre: torch.Tensor, attn_out: torch.Tensor) -> dict:
    """Sites of block ``layer`` from resid_pre (B, T, d_model) and the captured attn_out.

    Returns attn_q/k/v, mlp_pre, mlp_post, mlp_out and resid_post (= resid_pre + attn_out +
    mlp_out), so comparing resid_post with the model's also checks attn_out.
    """
    family, cfg = adapter.family, adapter.config
    resid_mid = resid_pre + attn_out
    if family == "llama":
        b = adapter.model.model.layers[layer]
        x = b.input_layernorm(resid_pre)
        q, k, v = (linear(x, getattr(b.self_attn, f"{n}_proj")) for n in "qkv")
        m = b.post_attention_layernorm(resid_mid)
        pre = linear(m, b.mlp.gate_proj)
        post = HAND_ACT[cfg.hidden_act](pre) * linear(m, b.mlp.up_proj)
        out = linear(post, b.mlp.down_proj)
    elif family == "gpt2":
        b = adapter.model.transformer.h[layer]
        q, k, v = conv1d(b.ln_1(resid_pre), b.attn.c_attn).split(adapter.d_model, dim=-1)  # (B, T, 3 * d)
        pre = conv1d(b.ln_2(resid_mid), b.mlp.c_fc)
        post = HAND_ACT[cfg.activation_function](pre)
        out = conv1d(post, b.mlp.c_proj)
    elif family == "gpt_neo":
        b = adapter.model.transformer.h[layer]
        x = b.ln_1(resid_pre)
        q, k, v = (linear(x, getattr(b.attn.attention, f"{n}_proj")) for n in "qkv")
        pre = linear(b.ln_2(resid_mid), b.mlp.c_fc)
        post = HAND_ACT[cfg.activation_function](pre)
        out = linear(post, b.mlp.c_proj)
    elif family == "gpt_neox":
        b = adapter.model.gpt_neox.layers[layer]
        qkv = linear(b.input_layernorm(resid_pre), b.attention.query_key_value)  # (B, T, 3 * d)
        qkv = qkv.unflatten(-1, (adapter.n_heads, 3, adapter.d_head))  # (B, T, n_heads, 3, d_head)
        q, k, v = (qkv[..., i, :].flatten(-2) for i in range(3))  # (B, T, n_heads * d_head)
        mlp_in = resid_pre if cfg.use_parallel_residual else resid_mid
        pre = linear(b.post_attention_layernorm(mlp_in), b.mlp.dense_h_to_4h)
        post = HAND_ACT[cfg.hidden_act](pre)
        out = linear(post, b.mlp.dense_4h_to_h)
    else:
        q, k, v, pre, post, out = _hand_more(adapter, layer, resid_pre, resid_mid)
    return {
        "attn_q": q, "attn_k": k, "attn_v": v, "mlp_pre": pre, "mlp_post": post, "mlp_out": out,
        "resid_post": resid_pre + attn_out + out,
    }


def _hand_more(adapter, layer: int, resid_pre: torch.Tensor, resid_mid: torch.Tensor):
    """q, k, v, mlp_pre, mlp_post, mlp_out of one block of a MORE_FAMILIES model, every norm by hand."""
    family, cfg = adapter.family, adapter.config
    b = adapter.model.model.layers[layer]
    eps = cfg.rms_norm_eps

    def norm(x, module):
        return rms_norm(x, norm_scale(adapter, module), eps)

    act = HAND_ACT[cfg.hidden_activation if family in ("gemma2", "gemma3") else cfg.hidden_act]
    if family == "olmo2":  # no norm before attention or MLP
        x, m = resid_pre, resid_mid
    elif family in ("gemma2", "gemma3"):  # post_attention_layernorm follows attention here
        x, m = norm(resid_pre, b.input_layernorm), norm(resid_mid, b.pre_feedforward_layernorm)
    elif family in ("mistral", "qwen", "gemma", "phi3"):
        x, m = norm(resid_pre, b.input_layernorm), norm(resid_mid, b.post_attention_layernorm)
    else:
        raise ValueError(f"no hand computation for family {family!r}")
    if family == "phi3":  # qkv_proj: q | k | v; gate_up_proj: gate | up
        q_w, kv_w = adapter.n_heads * adapter.d_head, adapter.n_kv_heads * adapter.d_head
        q, k, v = linear(x, b.self_attn.qkv_proj).split([q_w, kv_w, kv_w], dim=-1)
        pre, up = linear(m, b.mlp.gate_up_proj).chunk(2, dim=-1)
    else:
        q, k, v = (linear(x, getattr(b.self_attn, f"{n}_proj")) for n in "qkv")
        pre, up = linear(m, b.mlp.gate_proj), linear(m, b.mlp.up_proj)
    post = act(pre) * up
    out = linear(post, b.mlp.down_proj)
    if family in ("gemma2", "gemma3", "olmo2"):  # the norm after the MLP is part of what it adds
        out = norm(out, b.post_feedforward_layernorm)
    return q, k, v, pre, post, out
