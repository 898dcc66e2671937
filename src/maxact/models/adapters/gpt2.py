"""GPT-2 family: transformer.h[i].{ln_1, attn, ln_2, mlp}, with OpenAI's Conv1D projections.

Conv1D keeps its weight as (in, out) and computes ``x @ W + b``. Queries, keys and values come out of
one fused ``attn.c_attn`` whose 3 * d_model output columns are ``q | k | v``, each with its heads in
order (flat index head * d_head + i), so attn_q/k/v are column slices of it, read before the scaling
that happens inside attention.
"""

from __future__ import annotations

from maxact.models.adapters.base import Adapter, SiteHook, split_heads_take

# transformers' ACT2FN entries, all checked to be elementwise (shape-preserving): with any of them
# the MLP neuron is still exactly what the down projection reads. An unknown name might not be.
ELEMENTWISE_ACTIVATIONS = frozenset(
    {
        "gelu", "gelu_10", "gelu_accurate", "gelu_fast", "gelu_new", "gelu_python",
        "gelu_python_tanh", "gelu_pytorch_tanh", "hardswish", "laplace", "leaky_relu", "linear",
        "mish", "prelu", "quick_gelu", "relu", "relu2", "relu6", "sigmoid", "silu",
        "sqrtsoftplus", "swish", "tanh", "xielu",
    }
)
ACTIVATIONS_TEXT = ", ".join(sorted(ELEMENTWISE_ACTIVATIONS))


class GPT2Adapter(Adapter):
    family = "gpt2"
    model_types = ("gpt2",)
    handled_or_ignored = frozenset(
        {
            "activation_function", "add_cross_attention", "n_embd", "n_head", "n_inner", "n_layer",
            "layer_norm_epsilon",
            # dropout: inactive in eval mode
            "attn_pdrop", "embd_pdrop", "resid_pdrop",
            # n_positions is max_position_embeddings; n_ctx is a legacy copy no module reads
            "n_positions", "n_ctx",
            # change the attention scores only, after q/k/v have been read
            "reorder_and_upcast_attn", "scale_attn_by_inverse_layer_idx", "scale_attn_weights",
            # GPT2DoubleHeadsModel's classification head only
            "summary_activation", "summary_first_dropout", "summary_proj_to_labels",
            "summary_type", "summary_use_proj",
        }
    )

    def __init__(self, model):
        super().__init__(model)
        c = self.config
        self.n_layers = c.n_layer
        self.d_model = c.n_embd
        self.d_mlp = c.n_inner if c.n_inner is not None else 4 * c.n_embd
        self.n_heads = self.n_kv_heads = c.n_head
        self.d_head = c.n_embd // c.n_head

    def check_values(self) -> None:
        if getattr(self.config, "add_cross_attention", False):
            # a second attention sub-block (encoder-decoder use): attn_out would not be the whole story
            self.refuse("add_cross_attention", True, "False")
        if self.config.activation_function not in ELEMENTWISE_ACTIVATIONS:
            self.refuse("activation_function", self.config.activation_function, ACTIVATIONS_TEXT)

    def base_model(self):
        return self.model.transformer

    def final_norm_path(self) -> str:
        return "transformer.ln_f"

    def mlp_out_weight(self, layer: int):
        # Conv1D weight is (in, out) = (d_mlp, d_model); transposed: (d_model, d_mlp)
        return self.model.transformer.h[layer].mlp.c_proj.weight.T

    def _site_hook(self, site: str, layer: int) -> SiteHook:
        p, d = f"transformer.h.{layer}", self.d_model
        table = {
            "resid_pre": SiteHook(p, "input", d),
            "resid_post": SiteHook(p, "output", d),
            "mlp_pre": SiteHook(f"{p}.mlp.c_fc", "output", self.d_mlp),
            "mlp_post": SiteHook(f"{p}.mlp.c_proj", "input", self.d_mlp),
            # c_attn output: (B, T, 3 * d_model) = q | k | v
            "attn_q": SiteHook(f"{p}.attn.c_attn", "output", d, split_heads_take(0, d)),
            "attn_k": SiteHook(f"{p}.attn.c_attn", "output", d, split_heads_take(d, d)),
            "attn_v": SiteHook(f"{p}.attn.c_attn", "output", d, split_heads_take(2 * d, d)),
            "attn_out": SiteHook(f"{p}.attn", "output", d),
            "mlp_out": SiteHook(f"{p}.mlp", "output", d),
        }
        return table[site]
