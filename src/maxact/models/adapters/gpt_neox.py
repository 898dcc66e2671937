"""GPT-NeoX family (Pythia): gpt_neox.layers[i].{input_layernorm, attention, post_attention_layernorm, mlp}.

The fused ``attention.query_key_value`` interleaves per head: HF views its (B, T, 3 * d_model)
output as (B, T, n_heads, 3 * d_head) and splits the last axis into q | k | v, so a head's q, k and
v sit side by side. attn_q/k/v undo that layout into flat index head * d_head + i, read before
rotary (HF rotates inside attention, on the first partial_rotary_factor of each head). Parallel
residual (resid_post = resid_pre + attn_out + mlp_out) or not, every site is a module's input or
output, so both forms are read the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from maxact.models.adapters.base import Adapter, SiteHook
from maxact.models.adapters.gpt2 import ACTIVATIONS_TEXT, ELEMENTWISE_ACTIVATIONS


def per_head_take(n_heads: int, d_head: int, part: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A ``take`` for q (part 0), k (1) or v (2) out of NeoX's per-head fused projection."""

    def take(raw: torch.Tensor) -> torch.Tensor:  # (B, T, n_heads * 3 * d_head)
        per_head = raw.unflatten(-1, (n_heads, 3, d_head))  # (B, T, n_heads, 3, d_head)
        return per_head[..., part, :].flatten(-2)  # (B, T, n_heads * d_head)

    return take


class GPTNeoXAdapter(Adapter):
    family = "gpt_neox"
    model_types = ("gpt_neox",)
    handled_or_ignored = frozenset(
        {
            "hidden_act", "hidden_size", "intermediate_size", "num_attention_heads",
            "num_hidden_layers", "layer_norm_eps", "attention_bias", "use_parallel_residual",
            # rotary is applied inside attention, after q/k are read
            "rope_parameters",
            # dropout: inactive in eval mode; classifier_dropout is for classification heads
            "attention_dropout", "hidden_dropout", "classifier_dropout",
            # no module reads it
            "is_decoder",
        }
    )

    def __init__(self, model):
        super().__init__(model)
        c = self.config
        self.n_layers = c.num_hidden_layers
        self.d_model = c.hidden_size
        self.d_mlp = c.intermediate_size
        self.n_heads = self.n_kv_heads = c.num_attention_heads
        self.d_head = c.hidden_size // c.num_attention_heads

    def check_values(self) -> None:
        if self.config.hidden_act not in ELEMENTWISE_ACTIVATIONS:
            self.refuse("hidden_act", self.config.hidden_act, ACTIVATIONS_TEXT)

    def base_model(self):
        return self.model.gpt_neox

    def final_norm_path(self) -> str:
        return "gpt_neox.final_layer_norm"

    def mlp_out_weight(self, layer: int):
        return self.model.gpt_neox.layers[layer].mlp.dense_4h_to_h.weight  # (d_model, d_mlp)

    def _site_hook(self, site: str, layer: int) -> SiteHook:
        p, d = f"gpt_neox.layers.{layer}", self.d_model
        qkv = f"{p}.attention.query_key_value"
        table = {
            "resid_pre": SiteHook(p, "input", d),
            "resid_post": SiteHook(p, "output", d),
            "mlp_pre": SiteHook(f"{p}.mlp.dense_h_to_4h", "output", self.d_mlp),
            "mlp_post": SiteHook(f"{p}.mlp.dense_4h_to_h", "input", self.d_mlp),
            "attn_q": SiteHook(qkv, "output", d, per_head_take(self.n_heads, self.d_head, 0)),
            "attn_k": SiteHook(qkv, "output", d, per_head_take(self.n_heads, self.d_head, 1)),
            "attn_v": SiteHook(qkv, "output", d, per_head_take(self.n_heads, self.d_head, 2)),
            "attn_out": SiteHook(f"{p}.attention", "output", d),
            "mlp_out": SiteHook(f"{p}.mlp", "output", d),
        }
        return table[site]
