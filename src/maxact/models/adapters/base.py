"""The adapter contract: how one model family exposes each site of docs/METHOD.md.

An adapter does not reimplement the model. It names the real Hugging Face module that produces (or
reads) each site, so activations come from the model's own forward pass. What it must know is the
module layout and any fused projection, and it refuses a config attribute it has not been reviewed
for (the penzai habit): a model we cannot read correctly fails loudly instead of giving plausible
numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from maxact.dictionaries import check_base, is_derived, loaded
from maxact.errors import MaxactError, choices_text
from maxact.units import SITE_KINDS, SiteRef

# Attributes every transformers config carries; they never change how a site is read.
GENERIC_CONFIG_ATTRIBUTES = frozenset(
    {
        "_name_or_path", "_model_name_or_path", "architectures", "chunk_size_feed_forward", "dtype", "torch_dtype",
        "id2label", "label2id", "is_encoder_decoder", "model_type", "output_attentions",
        "output_hidden_states", "problem_type", "return_dict", "transformers_version",
        "quantization_config", "bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id",
        "use_cache", "initializer_range", "tie_word_embeddings", "_attn_implementation",
        "_attn_implementation_autoset", "tokenizer_class", "task_specific_params",
        "max_position_embeddings", "vocab_size",
    }
)


@dataclass(frozen=True)
class SiteHook:
    """Where one site lives: a module, whether we read its input or output, and how to cut it."""

    module_path: str  # native HF path, e.g. "model.layers.2.mlp.down_proj"
    reads: str  # "input": first positional input (pre-hook); "output": the module's output
    width: int
    # (B, T, raw) -> (B, T, width), for fused projections such as GPT-2's c_attn; None = as is
    take: Callable[[torch.Tensor], torch.Tensor] | None = None


class Adapter:
    """Base class: subclasses fill in family, model_types, the config review and ``_site_hook``."""

    family: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]
    # config attributes this adapter reads, or has checked do not change how sites are read
    handled_or_ignored: ClassVar[frozenset[str]]
    # sites the family has (all of METHOD.md's, unless a subclass says otherwise)
    sites: ClassVar[tuple[str, ...]] = tuple(SITE_KINDS)

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config
        self.check_config()

    # ---- config review -------------------------------------------------------------------
    def check_config(self) -> None:
        cfg = self.config.to_dict()
        unknown = sorted(
            k for k in cfg if k not in GENERIC_CONFIG_ATTRIBUTES and k not in self.handled_or_ignored
        )
        if unknown:
            raise MaxactError(
                f"the {self.family} adapter has not been reviewed for config attribute(s) "
                f"{', '.join(unknown)} of this {cfg.get('model_type')!r} model; refusing rather than "
                f"reading it wrongly. Reviewed attributes: {choices_text(sorted(self.handled_or_ignored), 40)}"
            )
        self.check_values()

    def check_values(self) -> None:
        """Refuse config values the adapter cannot read correctly (override per family)."""

    def refuse(self, attribute: str, value, supported) -> None:
        raise MaxactError(
            f"the {self.family} adapter cannot read a model with {attribute}={value!r}; "
            f"supported: {supported}"
        )

    # ---- shape of the model ---------------------------------------------------------------
    n_layers: int
    d_model: int
    d_mlp: int
    n_heads: int
    n_kv_heads: int
    d_head: int

    def base_model(self) -> nn.Module:
        """The module that maps input_ids to the final normed residual, without the LM head."""
        raise NotImplementedError

    def final_norm_path(self) -> str:
        raise NotImplementedError

    def unembedding(self) -> torch.Tensor:
        """(vocab, d_model) LM-head weight."""
        return self.model.get_output_embeddings().weight

    def final_norm_fold(self) -> tuple[torch.Tensor, bool]:
        """(d_model,) weight of the final norm and whether it centres (LayerNorm) before scaling."""
        norm = self.model.get_submodule(self.final_norm_path())
        return norm.weight, isinstance(norm, nn.LayerNorm)

    def mlp_out_weight(self, layer: int) -> torch.Tensor:
        """(d_model, d_mlp): the column i is what MLP neuron i writes to the residual stream."""
        raise NotImplementedError

    # ---- sites ----------------------------------------------------------------------------
    def _site_hook(self, site: str, layer: int) -> SiteHook:
        raise NotImplementedError

    def site_hook(self, ref: SiteRef) -> SiteHook:
        self.check_site(ref)
        if is_derived(ref.site):  # read the base site, then encode (maxact/dictionaries.py)
            dictionary = loaded(ref.site)
            base = self.site_hook(dictionary.spec.base_ref)
            return SiteHook(base.module_path, base.reads, dictionary.spec.width,
                            take=_then_encode(base.take, dictionary))
        if ref.site == "ln_final":
            return SiteHook(self.final_norm_path(), "output", self.d_model)
        return self._site_hook(ref.site, ref.layer)

    def check_site(self, ref: SiteRef) -> None:
        if is_derived(ref.site):
            spec = loaded(ref.site).spec
            base = spec.base_ref
            self.check_site(base)
            check_base(spec, self.site_hook(base).width)
            return
        if ref.site not in self.sites:
            raise MaxactError(
                f"site {ref.site!r} is not available for {self.family}; valid sites: {choices_text(self.sites)}"
            )
        if not SITE_KINDS[ref.site].has_block:
            return
        if not 0 <= ref.layer < self.n_layers:
            raise MaxactError(
                f"block {ref.layer} in {ref.name} is out of range: this model has blocks 0..{self.n_layers - 1}"
            )

    def width(self, ref: SiteRef) -> int:
        return self.site_hook(ref).width

    def site_refs(self, sites=None, layers=None) -> list[SiteRef]:
        """All SiteRefs for the given sites (default: all) and layers (default: all blocks)."""
        sites = list(self.sites) if sites is None else list(sites)
        for s in sites:
            if is_derived(s):
                self.check_site(SiteRef(s, None))
            elif s not in self.sites:
                raise MaxactError(f"unknown site {s!r}; valid sites: {choices_text(self.sites)}")
        layers = list(range(self.n_layers)) if layers is None else list(layers)
        for layer in layers:
            if not 0 <= layer < self.n_layers:
                raise MaxactError(f"layer {layer} is out of range: this model has blocks 0..{self.n_layers - 1}")
        refs = []
        for s in sites:
            if not SITE_KINDS[s].has_block:
                refs.append(SiteRef(s, None))
            else:
                refs.extend(SiteRef(s, layer) for layer in layers)
        return refs

    def check_index(self, ref: SiteRef, index: int) -> None:
        width = self.width(ref)
        if not 0 <= index < width:
            raise MaxactError(f"index {index} of {ref.name} is out of range: valid indices are 0..{width - 1}")

    def describe_index(self, ref: SiteRef, index: int) -> str:
        """Human form of an index: head and dim for attention q/k/v."""
        if SITE_KINDS[ref.site].per_head:
            return f"head {index // self.d_head}, dim {index % self.d_head}"
        return ""


def _then_encode(take, dictionary) -> Callable[[torch.Tensor], torch.Tensor]:
    """A ``take`` for a derived site: the base site's own cut, then the dictionary's encoding."""

    def encode(raw: torch.Tensor) -> torch.Tensor:  # (B, T, raw) -> (B, T, width) float32
        return dictionary.encode(raw if take is None else take(raw))

    return encode


def split_heads_take(start: int, width: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A ``take`` that cuts the columns [start, start + width) of a fused projection."""

    def take(raw: torch.Tensor) -> torch.Tensor:  # (B, T, raw) -> (B, T, width)
        return raw[..., start : start + width]

    return take


def resolve_units(adapter: Adapter, specs) -> list:
    """Expand and validate unit specs (``L2.resid_pre:345``, ``L2.resid_pre:*``) for this model."""
    from maxact.units import parse_unit_spec

    units = []
    for spec in specs:
        ref, index = parse_unit_spec(spec)
        adapter.check_site(ref)
        if index is None:
            units.extend(ref.unit(i) for i in range(adapter.width(ref)))
        else:
            adapter.check_index(ref, index)
            units.append(ref.unit(index))
    seen, unique = set(), []
    for u in units:
        if u not in seen:
            seen.add(u)
            unique.append(u)
    return unique
