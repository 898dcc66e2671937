"""Qwen family: Qwen2, Qwen2.5 (model_type "qwen2") and Qwen3 ("qwen3"), Llama's module layout.

model.layers[i].{self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj}. Qwen2/2.5 project q, k and v
with biases (always on in HF's Qwen2), so attn_q/k/v include them. Qwen3 has no such biases but an
RMSNorm on each head of q and k (``self_attn.q_norm`` / ``k_norm``) before rotary: attn_q/k are read
at the projection outputs, before that norm and before rotary, as for every family. Sliding-window
layers (``use_sliding_window``, ``max_window_layers``, ``layer_types``) are applied by the attention
mask after q/k/v are read, so every site is read the same way in every layer.
"""

from __future__ import annotations

from maxact.models.adapters.gpt2 import ACTIVATIONS_TEXT, ELEMENTWISE_ACTIVATIONS
from maxact.models.adapters.llama import LlamaAdapter


class QwenAdapter(LlamaAdapter):
    family = "qwen"
    model_types = ("qwen2", "qwen3")
    handled_or_ignored = frozenset(
        {
            "attention_bias", "attention_dropout", "head_dim", "hidden_act", "hidden_size",
            "intermediate_size", "num_attention_heads", "num_hidden_layers", "num_key_value_heads",
            "rms_norm_eps",
            # rotary is applied inside attention, after q/k are read
            "rope_parameters", "rope_scaling", "rope_theta",
            # which layers use a sliding window, and its size: applied by the attention mask
            "layer_types", "max_window_layers", "sliding_window", "use_sliding_window",
            # multimodal rotary of Qwen2-VL, checked to be off (HF's Qwen2 text model ignores it)
            "use_mrope",
        }
    )

    def check_values(self) -> None:
        c = self.config
        if c.hidden_act not in ELEMENTWISE_ACTIVATIONS:
            self.refuse("hidden_act", c.hidden_act, ACTIVATIONS_TEXT)
        if getattr(c, "use_mrope", False):
            self.refuse("use_mrope", c.use_mrope, "False (a Qwen2-VL checkpoint needs its own model class)")
