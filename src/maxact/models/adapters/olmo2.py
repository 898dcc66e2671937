"""OLMo 2 family (model_type "olmo2"): norms after attention and after the MLP, none before.

model.layers[i]: self_attn -> post_attention_layernorm -> (+ residual) -> mlp ->
post_feedforward_layernorm -> (+ residual); q and k are RMS-normed over their whole width
(``self_attn.q_norm`` / ``k_norm``, not per head) before rotary. Sites, as for Gemma 2:
``attn_out`` / ``mlp_out`` are the outputs of the two norms (what is added to the residual stream),
attn_q/k the projection outputs before the q/k norm and rotary, and ``mlp_out_weight`` folds the
post-MLP norm's weight into the down projection (the per-token 1 / rms factor is shared by every
neuron and left out). RMSNorm here scales by ``weight`` (not 1 + weight), so the base class's
final-norm fold is right.
"""

from __future__ import annotations

import torch

from maxact.models.adapters.base import SiteHook
from maxact.models.adapters.gpt2 import ACTIVATIONS_TEXT, ELEMENTWISE_ACTIVATIONS
from maxact.models.adapters.llama import LlamaAdapter


class Olmo2Adapter(LlamaAdapter):
    family = "olmo2"
    model_types = ("olmo2",)
    handled_or_ignored = frozenset(
        {
            "attention_bias", "attention_dropout", "hidden_act", "hidden_size", "intermediate_size",
            "num_attention_heads", "num_hidden_layers", "num_key_value_heads", "rms_norm_eps",
            # rotary is applied inside attention, after q/k are read
            "rope_parameters", "rope_scaling", "rope_theta",
        }
    )

    def check_values(self) -> None:
        if self.config.hidden_act not in ELEMENTWISE_ACTIVATIONS:
            self.refuse("hidden_act", self.config.hidden_act, ACTIVATIONS_TEXT)

    def mlp_out_weight(self, layer: int) -> torch.Tensor:
        block = self.model.model.layers[layer]
        return block.post_feedforward_layernorm.weight[:, None] * block.mlp.down_proj.weight  # (d_model, d_mlp)

    def _site_hook(self, site: str, layer: int) -> SiteHook:
        p = f"model.layers.{layer}"
        if site == "attn_out":
            return SiteHook(f"{p}.post_attention_layernorm", "output", self.d_model)
        if site == "mlp_out":
            return SiteHook(f"{p}.post_feedforward_layernorm", "output", self.d_model)
        return super()._site_hook(site, layer)
