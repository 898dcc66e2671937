"""Gemma 2 family (model_type "gemma2"): Gemma's (1 + w) RMSNorm and scaled embedding, plus norms
after attention and after the MLP, soft-capping and sliding-window layers.

model.layers[i]: input_layernorm -> self_attn -> post_attention_layernorm -> (+ residual) ->
pre_feedforward_layernorm -> mlp -> post_feedforward_layernorm -> (+ residual). So, as
TransformerLens's ``hook_attn_out`` / ``hook_mlp_out`` ("what is added to the residual stream"),
``attn_out`` is the output of ``post_attention_layernorm`` and ``mlp_out`` the output of
``post_feedforward_layernorm``: resid_post = resid_pre + attn_out + mlp_out still holds. Note that
``post_attention_layernorm`` here is a norm *after* attention, not Llama's pre-MLP norm.

MLP neuron i no longer writes a fixed vector: mlp_out = (1 + w_post) * down / rms(down), with down =
W_down @ post. Its direction is the column i of ``(1 + w_post)[:, None] * W_down``, and the 1 / rms
factor is one positive number per token shared by every neuron, so ``mlp_out_weight`` returns that
column (logit effects rank tokens exactly; their values are per unit of that 1 / rms).

Soft-capping: ``attn_logit_softcapping`` acts on attention scores after q/k/v are read (HF's eager,
flash and flex kernels apply it; SDPA cannot, and is refused); ``final_logit_softcapping`` acts on
the logits, which no site reads (logit effects are direct effects before the cap). Sliding-window
layers (``layer_types``) are applied by the attention mask after q/k/v are read.
"""

from __future__ import annotations

import torch

from maxact.models.adapters.base import SiteHook
from maxact.models.adapters.gemma import GemmaAdapter, gemma_norm_scale
from maxact.models.adapters.gpt2 import ACTIVATIONS_TEXT, ELEMENTWISE_ACTIVATIONS


class Gemma2Adapter(GemmaAdapter):
    family = "gemma2"
    model_types = ("gemma2",)
    handled_or_ignored = frozenset(
        {
            "attention_bias", "attention_dropout", "head_dim", "hidden_activation", "hidden_size",
            "intermediate_size", "num_attention_heads", "num_hidden_layers", "num_key_value_heads",
            "rms_norm_eps",
            # rotary and the score scale are applied inside attention, after q/k are read
            "rope_parameters", "rope_scaling", "rope_theta", "query_pre_attn_scalar",
            # see the module docstring
            "attn_logit_softcapping", "final_logit_softcapping", "layer_types", "sliding_window",
            # checked to be off: the method reads causal models only
            "use_bidirectional_attention",
            # published configs carry it beside hidden_activation; Gemma 2/3 MLPs read hidden_activation
            "hidden_act",
            # generation settings (the KV-cache kind), no module reads them
            "cache_implementation",
        }
    )

    def check_values(self) -> None:
        c = self.config
        if c.hidden_activation not in ELEMENTWISE_ACTIVATIONS:
            self.refuse("hidden_activation", c.hidden_activation, ACTIVATIONS_TEXT)
        self.refuse_bidirectional()
        if c.attn_logit_softcapping is not None and c._attn_implementation == "sdpa":
            self.refuse("_attn_implementation", "sdpa", "eager, flash or flex attention (SDPA drops soft-capping)")

    def mlp_out_weight(self, layer: int) -> torch.Tensor:
        block = self.model.model.layers[layer]
        scale = gemma_norm_scale(block.post_feedforward_layernorm)  # (d_model,)
        return scale[:, None] * block.mlp.down_proj.weight  # (d_model, d_mlp)

    def _site_hook(self, site: str, layer: int) -> SiteHook:
        p = f"model.layers.{layer}"
        if site == "attn_out":
            return SiteHook(f"{p}.post_attention_layernorm", "output", self.d_model)
        if site == "mlp_out":
            return SiteHook(f"{p}.post_feedforward_layernorm", "output", self.d_model)
        return super()._site_hook(site, layer)
