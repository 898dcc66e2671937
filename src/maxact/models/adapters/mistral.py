"""Mistral family (Mistral 7B v0.1-v0.3, Ministral-style configs): Llama's module layout.

model.layers[i].{self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj}, RMSNorm before attention and
MLP, grouped-query attention. What differs from Llama is ``sliding_window`` (4096 in v0.1, null
later): HF applies it through the attention mask, after q/k/v have been read, so every site is read
the same way whatever the window.
"""

from __future__ import annotations

from maxact.models.adapters.gpt2 import ACTIVATIONS_TEXT, ELEMENTWISE_ACTIVATIONS
from maxact.models.adapters.llama import LlamaAdapter


class MistralAdapter(LlamaAdapter):
    family = "mistral"
    model_types = ("mistral",)
    handled_or_ignored = frozenset(
        {
            "attention_dropout", "head_dim", "hidden_act", "hidden_size", "intermediate_size",
            "num_attention_heads", "num_hidden_layers", "num_key_value_heads", "rms_norm_eps",
            # rotary is applied inside attention, after q/k are read
            "rope_parameters", "rope_scaling", "rope_theta",
            # applied by the attention mask (see above)
            "sliding_window",
        }
    )

    def check_values(self) -> None:
        if self.config.hidden_act not in ELEMENTWISE_ACTIVATIONS:
            self.refuse("hidden_act", self.config.hidden_act, ACTIVATIONS_TEXT)
