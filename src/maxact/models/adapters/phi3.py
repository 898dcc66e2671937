"""Phi-3 family (model_type "phi3": Phi-3 mini/medium, Phi-3.5 mini, Phi-4 mini): Llama's block with
fused projections.

model.layers[i].self_attn.qkv_proj outputs q | k | v side by side: n_heads * head_dim columns of q,
then n_kv_heads * head_dim of k, then as many of v, each with its heads in order (HF slices it the
same way), so attn_q/k/v are column slices of it, read before rotary. mlp.gate_up_proj outputs
gate | up (HF's ``chunk(2)``): mlp_pre is its first d_mlp columns, and the neuron
act(gate) * up is read as the input of ``mlp.down_proj``. Sliding windows are applied by the
attention mask, after q/k/v are read.
"""

from __future__ import annotations

from maxact.models.adapters.base import SiteHook, split_heads_take
from maxact.models.adapters.gpt2 import ACTIVATIONS_TEXT, ELEMENTWISE_ACTIVATIONS
from maxact.models.adapters.llama import LlamaAdapter


class Phi3Adapter(LlamaAdapter):
    family = "phi3"
    model_types = ("phi3",)
    handled_or_ignored = frozenset(
        {
            "attention_dropout", "hidden_act", "hidden_size", "intermediate_size", "num_attention_heads",
            "num_hidden_layers", "num_key_value_heads", "rms_norm_eps",
            # rotary (partial, long-rope scaling) is applied inside attention, after q/k are read
            "rope_parameters", "rope_scaling", "rope_theta", "original_max_position_embeddings",
            "partial_rotary_factor",
            # applied by the attention mask
            "sliding_window",
            # dropout: inactive in eval mode
            "embd_pdrop", "resid_pdrop",
            # the remote-code class names of the first release: only transformers' own Phi3 is read
            # (checked in check_values)
            "auto_map",
            # published configs carry it; transformers' Phi3 has no attention bias (checked off)
            "attention_bias",
        }
    )

    def check_values(self) -> None:
        c = self.config
        if c.hidden_act not in ELEMENTWISE_ACTIVATIONS:
            self.refuse("hidden_act", c.hidden_act, ACTIVATIONS_TEXT)
        if getattr(c, "attention_bias", False):
            self.refuse("attention_bias", True, "False (transformers' Phi3 has no attention biases)")
        module = type(self.model).__module__
        if not module.startswith("transformers.models.phi3."):
            self.refuse("model class", f"{module}.{type(self.model).__name__}",
                        "transformers' Phi3ForCausalLM (load without trust_remote_code)")

    def _site_hook(self, site: str, layer: int) -> SiteHook:
        p = f"model.layers.{layer}"
        q_w, kv_w = self.n_heads * self.d_head, self.n_kv_heads * self.d_head
        qkv = f"{p}.self_attn.qkv_proj"  # (B, T, q_w + 2 * kv_w) = q | k | v
        if site == "attn_q":
            return SiteHook(qkv, "output", q_w, split_heads_take(0, q_w))
        if site == "attn_k":
            return SiteHook(qkv, "output", kv_w, split_heads_take(q_w, kv_w))
        if site == "attn_v":
            return SiteHook(qkv, "output", kv_w, split_heads_take(q_w + kv_w, kv_w))
        if site == "mlp_pre":  # gate_up_proj: (B, T, 2 * d_mlp) = gate | up
            return SiteHook(f"{p}.mlp.gate_up_proj", "output", self.d_mlp, split_heads_take(0, self.d_mlp))
        return super()._site_hook(site, layer)
