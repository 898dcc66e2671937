"""GPT-Neo family: transformer.h[i].{ln_1, attn.attention, ln_2, mlp}, nn.Linear projections.

Separate q/k/v projections (no bias, no rotary: GPT-Neo has learned position embeddings). Layers
alternate global and local (sliding-window) attention; HF applies the window inside attention, after
q/k/v have been read, so every site is read the same way in both kinds of layer.
"""

from __future__ import annotations

from maxact.models.adapters.base import Adapter, SiteHook
from maxact.models.adapters.gpt2 import ACTIVATIONS_TEXT, ELEMENTWISE_ACTIVATIONS


class GPTNeoAdapter(Adapter):
    family = "gpt_neo"
    model_types = ("gpt_neo",)
    handled_or_ignored = frozenset(
        {
            "activation_function", "hidden_size", "intermediate_size", "num_heads", "num_layers",
            "layer_norm_epsilon",
            # which layers are local, and their window: applied by HF inside attention
            "attention_types", "attention_layers", "window_size",
            # dropout: inactive in eval mode; classifier_dropout is for classification heads
            "attention_dropout", "embed_dropout", "resid_dropout", "classifier_dropout",
            # legacy training flag, and summary head settings some checkpoints carry (unused)
            "gradient_checkpointing", "summary_activation", "summary_first_dropout",
            "summary_proj_to_labels", "summary_type", "summary_use_proj",
        }
    )

    def __init__(self, model):
        super().__init__(model)
        c = self.config
        self.n_layers = c.num_layers
        self.d_model = c.hidden_size
        self.d_mlp = c.intermediate_size if c.intermediate_size is not None else 4 * c.hidden_size
        self.n_heads = self.n_kv_heads = c.num_heads
        self.d_head = c.hidden_size // c.num_heads

    def check_values(self) -> None:
        c = self.config
        if c.activation_function not in ELEMENTWISE_ACTIVATIONS:
            self.refuse("activation_function", c.activation_function, ACTIVATIONS_TEXT)
        kinds = set(c.attention_layers)
        if not kinds <= {"global", "local"}:
            self.refuse("attention_layers", sorted(kinds), "global, local")
        # GPTNeoFlashAttention2 ignores window_size: local layers would silently attend globally
        if "local" in kinds and "flash" in str(getattr(c, "_attn_implementation", "")):
            self.refuse("_attn_implementation", c._attn_implementation, "eager (local attention layers)")

    def base_model(self):
        return self.model.transformer

    def final_norm_path(self) -> str:
        return "transformer.ln_f"

    def mlp_out_weight(self, layer: int):
        return self.model.transformer.h[layer].mlp.c_proj.weight  # (d_model, d_mlp)

    def _site_hook(self, site: str, layer: int) -> SiteHook:
        p, d = f"transformer.h.{layer}", self.d_model
        a = f"{p}.attn.attention"
        table = {
            "resid_pre": SiteHook(p, "input", d),
            "resid_post": SiteHook(p, "output", d),
            "mlp_pre": SiteHook(f"{p}.mlp.c_fc", "output", self.d_mlp),
            "mlp_post": SiteHook(f"{p}.mlp.c_proj", "input", self.d_mlp),
            "attn_q": SiteHook(f"{a}.q_proj", "output", d),
            "attn_k": SiteHook(f"{a}.k_proj", "output", d),
            "attn_v": SiteHook(f"{a}.v_proj", "output", d),
            "attn_out": SiteHook(f"{p}.attn", "output", d),
            "mlp_out": SiteHook(f"{p}.mlp", "output", d),
        }
        return table[site]
