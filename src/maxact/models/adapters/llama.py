"""Llama family (SmolLM2, Llama 2/3): model.layers[i].{self_attn, mlp}.

Gated MLP: neuron = act(gate_proj(x)) * up_proj(x), read as the input of down_proj; mlp_pre is
gate_proj(x). Grouped-query attention: attn_k / attn_v have n_kv_heads * head_dim columns.
The families that share this module layout (Mistral, Qwen, Gemma, OLMo 2) subclass this adapter and
change only what differs.
"""

from __future__ import annotations

from maxact.models.adapters.base import Adapter, SiteHook


class LlamaAdapter(Adapter):
    family = "llama"
    model_types = ("llama",)
    handled_or_ignored = frozenset(
        {
            "attention_bias", "attention_dropout", "head_dim", "hidden_act", "hidden_size",
            "intermediate_size", "mlp_bias", "num_attention_heads", "num_hidden_layers",
            "num_key_value_heads", "pretraining_tp", "rms_norm_eps", "rope_parameters",
            "rope_scaling", "rope_theta", "sliding_window", "layer_types",
        }
    )

    def __init__(self, model):
        super().__init__(model)
        c = self.config
        self.n_layers = c.num_hidden_layers
        self.d_model = c.hidden_size
        self.d_mlp = c.intermediate_size
        self.n_heads = c.num_attention_heads
        self.n_kv_heads = c.num_key_value_heads or c.num_attention_heads
        self.d_head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads

    def check_values(self) -> None:
        if getattr(self.config, "pretraining_tp", 1) not in (1, None):
            self.refuse("pretraining_tp", self.config.pretraining_tp, "1")

    def base_model(self):
        return self.model.model

    def final_norm_path(self) -> str:
        return "model.norm"

    def mlp_out_weight(self, layer: int):
        return self.model.model.layers[layer].mlp.down_proj.weight  # (d_model, d_mlp)

    def _site_hook(self, site: str, layer: int) -> SiteHook:
        p = f"model.layers.{layer}"
        q_w, kv_w = self.n_heads * self.d_head, self.n_kv_heads * self.d_head
        table = {
            "resid_pre": SiteHook(p, "input", self.d_model),
            "resid_post": SiteHook(p, "output", self.d_model),
            "mlp_pre": SiteHook(f"{p}.mlp.gate_proj", "output", self.d_mlp),
            "mlp_post": SiteHook(f"{p}.mlp.down_proj", "input", self.d_mlp),
            "attn_q": SiteHook(f"{p}.self_attn.q_proj", "output", q_w),
            "attn_k": SiteHook(f"{p}.self_attn.k_proj", "output", kv_w),
            "attn_v": SiteHook(f"{p}.self_attn.v_proj", "output", kv_w),
            "attn_out": SiteHook(f"{p}.self_attn", "output", self.d_model),
            "mlp_out": SiteHook(f"{p}.mlp", "output", self.d_model),
        }
        return table[site]
