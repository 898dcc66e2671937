"""Gemma family (Gemma 1, model_type "gemma"): Llama's module layout, Gemma's norms and embedding.

model.layers[i].{input_layernorm, self_attn.{q,k,v,o}_proj, post_attention_layernorm (the norm
before the MLP, as in Llama), mlp.{gate,up,down}_proj}, model.norm. Two things differ from Llama:

- RMSNorm scales by ``(1 + weight)``, not ``weight`` (HF initialises the weight at 0): the logit-effect
  fold takes ``1 + weight`` of the final norm (``final_norm_fold``).
- The token embedding is multiplied by sqrt(d_model) (inside ``model.embed_tokens``, in the weight's
  dtype) before block 0, so ``L0.resid_pre`` (the input of block 0, = HF ``hidden_states[0]``) is the
  scaled embedding, as TransformerLens's ``blocks.0.hook_resid_pre`` is.
"""

from __future__ import annotations

import torch

from maxact.models.adapters.gpt2 import ACTIVATIONS_TEXT, ELEMENTWISE_ACTIVATIONS
from maxact.models.adapters.llama import LlamaAdapter


def gemma_norm_scale(norm: torch.nn.Module) -> torch.Tensor:
    """(d,) what a Gemma RMSNorm multiplies the normalised input by: 1 + weight."""
    return 1.0 + norm.weight


class GemmaAdapter(LlamaAdapter):
    family = "gemma"
    model_types = ("gemma",)
    handled_or_ignored = frozenset(
        {
            "attention_bias", "attention_dropout", "head_dim", "hidden_act", "hidden_size",
            "intermediate_size", "num_attention_heads", "num_hidden_layers", "num_key_value_heads",
            "rms_norm_eps",
            # rotary is applied inside attention, after q/k are read
            "rope_parameters", "rope_scaling", "rope_theta",
            # checked to be off: the method reads causal models only (see check_values)
            "use_bidirectional_attention",
            # older Gemma configs carry it beside hidden_act; GemmaMLP reads hidden_act only
            "hidden_activation",
        }
    )

    def check_values(self) -> None:
        c = self.config
        if c.hidden_act not in ELEMENTWISE_ACTIVATIONS:
            self.refuse("hidden_act", c.hidden_act, ACTIVATIONS_TEXT)
        self.refuse_bidirectional()

    def refuse_bidirectional(self) -> None:
        # a bidirectional (embedding) variant: a token's activation would depend on later tokens
        if getattr(self.config, "use_bidirectional_attention", False):
            self.refuse("use_bidirectional_attention", True, "False (causal attention)")

    def final_norm_fold(self) -> tuple[torch.Tensor, bool]:
        return gemma_norm_scale(self.model.get_submodule(self.final_norm_path())), False
