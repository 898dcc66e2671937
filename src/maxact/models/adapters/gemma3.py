"""Gemma 3 family, text models (model_type "gemma3_text", ``Gemma3ForCausalLM``: Gemma 3 270M, 1B).

Gemma 2's block (norms after attention and after the MLP, (1 + w) RMSNorm, scaled embedding: see
``gemma2.py``) with an RMSNorm on each head of q and k (``self_attn.q_norm`` / ``k_norm``) before
rotary: attn_q/k are read at the projection outputs, before that norm and before rotary, as for
every family. Local (sliding-window) and global layers differ only in their mask and rotary base,
both applied after q/k/v are read. HF's Gemma 3 attention does not apply ``attn_logit_softcapping``
(the published configs set it to null), so a config that sets it is refused: the HF model would not
compute what the checkpoint was trained with. The multimodal ``gemma3`` model type is not a text LM
and has no adapter.
"""

from __future__ import annotations

from maxact.models.adapters.gemma2 import Gemma2Adapter


class Gemma3Adapter(Gemma2Adapter):
    family = "gemma3"
    model_types = ("gemma3_text",)
    handled_or_ignored = Gemma2Adapter.handled_or_ignored | {
        # the local layers' rotary base and the sliding/global pattern (spelled out in layer_types)
        "rope_local_base_freq", "_sliding_window_pattern", "sliding_window_pattern",
    }

    def check_values(self) -> None:
        if self.config.attn_logit_softcapping is not None:
            self.refuse("attn_logit_softcapping", self.config.attn_logit_softcapping,
                        "null (transformers' Gemma 3 attention does not apply it)")
        super().check_values()
