"""The objective of activation maximization: one unit's activation at the last position of an input.

Inputs enter as embeddings, so a distribution over the vocabulary (relaxation) or a one-hot matrix
(gradient of a token swap) can be fed: ``embed(weights)`` is ``weights @ W_E`` times the
embedding module's own scale (Gemma 3 scales inside its embedding module; other families scale,
if at all, inside the model's forward, which ``inputs_embeds`` also passes through). A test checks
that ``embed(one_hot(ids))`` equals the embedding module applied to ``ids``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from maxact.errors import MaxactError
from maxact.units import UnitId


class _Stop(Exception):
    """Raised from the unit's hook: nothing after its module is needed."""


@dataclass
class UnitObjective:
    """``value(embeds)``: (B, L, d) float -> (B,) the unit's activation at position L - 1."""

    lm: object  # LoadedModel
    unit: UnitId

    def __post_init__(self):
        adapter = self.lm.adapter
        ref = self.unit.site_ref
        adapter.check_site(ref)
        adapter.check_index(ref, self.unit.index)
        self.hook = adapter.site_hook(ref)
        self.module = adapter.model.get_submodule(self.hook.module_path)
        emb = adapter.model.get_input_embeddings()
        self.W_E = emb.weight  # (V_model, d)
        self.embed_scale = float(getattr(emb, "embed_scale", 1.0))
        for p in adapter.model.parameters():
            p.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return self.W_E.device

    def embed(self, weights: torch.Tensor) -> torch.Tensor:
        """(B, L, V) weights over the vocabulary -> (B, L, d) input embeddings."""
        return (weights.to(self.W_E.dtype) @ self.W_E) * self.embed_scale

    def value(self, embeds: torch.Tensor) -> torch.Tensor:
        """(B, L, d) -> (B,) activation of the unit at the last position (differentiable)."""
        got: dict[str, torch.Tensor] = {}

        def keep(raw: torch.Tensor) -> None:  # raw: (B, L, raw_width)
            acts = raw if self.hook.take is None else self.hook.take(raw)
            got["acts"] = acts
            raise _Stop

        if self.hook.reads == "input":
            handle = self.module.register_forward_pre_hook(
                lambda mod, args, kwargs: keep(args[0] if args else kwargs["hidden_states"]), with_kwargs=True)
        else:
            handle = self.module.register_forward_hook(
                lambda mod, args, out: keep(out[0] if isinstance(out, (tuple, list)) else out))
        try:
            self.lm.adapter.base_model()(inputs_embeds=embeds, use_cache=False)
        except _Stop:
            pass
        finally:
            handle.remove()
        if "acts" not in got:
            raise MaxactError(f"the forward pass never reached {self.hook.module_path} for unit {self.unit}")
        return got["acts"][:, -1, self.unit.index].float()  # (B,)

    def exact(self, token_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) int64 -> (B,) the unit's activation for these tokens, by a plain forward (no grad)."""
        from maxact.capture import capture

        acts = capture(self.lm.adapter, token_ids.to(self.device), [self.unit.site_ref])[self.unit.site_ref]
        return acts[:, -1, self.unit.index].float()  # (B,)


def allowed_tokens(lm, vocab_rows: int) -> torch.Tensor:
    """(vocab_rows,) bool: ids the tokenizer can produce as text (no special tokens, no padding rows
    of the embedding matrix beyond the tokenizer)."""
    mask = torch.zeros(vocab_rows, dtype=torch.bool)
    n = min(len(lm.tokenizer), vocab_rows) if lm.tokenizer is not None else vocab_rows
    mask[:n] = True
    if lm.tokenizer is not None:
        special = [i for i in getattr(lm.tokenizer, "all_special_ids", []) if 0 <= i < vocab_rows]
        mask[special] = False
    if not mask.any():
        raise MaxactError("no token of the vocabulary can be optimised over")
    return mask
