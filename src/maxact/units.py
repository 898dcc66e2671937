"""Unit and site names, following TransformerLens's hook vocabulary (see docs/METHOD.md).

A unit id is ``L{block}.{site}:{index}``, blocks counted from 0, e.g. ``L2.resid_pre:345``, which is
``hidden_states[2][..., 345]`` in Hugging Face terms. The final, normed residual (HF's last
``hidden_states`` entry) has no block: ``ln_final:{index}``. A whole site is ``L2.resid_pre:*``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from maxact.errors import MaxactError, choices_text

# site -> (TransformerLens hook name template, one-line meaning)
SITES: dict[str, tuple[str, str]] = {
    "resid_pre": ("blocks.{layer}.hook_resid_pre", "residual stream entering the block (= HF hidden_states[layer])"),
    "resid_post": ("blocks.{layer}.hook_resid_post", "residual stream leaving the block"),
    "mlp_pre": ("blocks.{layer}.mlp.hook_pre", "MLP pre-activation: c_fc(x), or gate(x) in gated MLPs"),
    "mlp_post": ("blocks.{layer}.mlp.hook_post", "MLP neuron: what the down projection reads"),
    "attn_q": ("blocks.{layer}.attn.hook_q", "attention query, flat index head * d_head + i (before rotary)"),
    "attn_k": ("blocks.{layer}.attn.hook_k", "attention key, flat index head * d_head + i (before rotary)"),
    "attn_v": ("blocks.{layer}.attn.hook_v", "attention value, flat index head * d_head + i"),
    "attn_out": ("blocks.{layer}.hook_attn_out", "attention block output, after the output projection"),
    "mlp_out": ("blocks.{layer}.hook_mlp_out", "MLP block output, after the down projection"),
    "ln_final": ("ln_final.hook_normalized", "final normed residual (= HF hidden_states[-1])"),
}
LAYERLESS_SITES = ("ln_final",)
HEAD_SITES = ("attn_q", "attn_k", "attn_v")

_UNIT_RE = re.compile(r"^(?:L(?P<layer>\d+)\.)?(?P<site>[a-z_]+):(?P<index>\*|\d+)$")


@dataclass(frozen=True, order=True)
class SiteRef:
    """One site of one block (layer is None for layer-less sites such as ln_final)."""

    site: str
    layer: int | None

    @property
    def name(self) -> str:
        return self.site if self.layer is None else f"L{self.layer}.{self.site}"

    def unit(self, index: int) -> UnitId:
        return UnitId(self.site, self.layer, index)

    def tl_hook(self) -> str:
        return SITES[self.site][0].format(layer=self.layer)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, order=True)
class UnitId:
    """One unit: a scalar coordinate of one site."""

    site: str
    layer: int | None
    index: int

    @property
    def site_ref(self) -> SiteRef:
        return SiteRef(self.site, self.layer)

    def __str__(self) -> str:
        return f"{self.site_ref.name}:{self.index}"


def parse_unit_spec(text: str) -> tuple[SiteRef, int | None]:
    """Parse ``L2.resid_pre:345`` or ``L2.resid_pre:*`` (index None = whole site). Syntax only."""
    m = _UNIT_RE.match(text.strip())
    if not m:
        raise MaxactError(
            f"unit {text!r} is not a unit id; write L{{block}}.{{site}}:{{index}} such as "
            f"L2.resid_pre:345, L2.resid_pre:* for a whole site, or ln_final:{{index}}"
        )
    site = m["site"]
    if site not in SITES:
        raise MaxactError(f"unknown site {site!r} in {text!r}; valid sites: {choices_text(SITES)}")
    layer = None if m["layer"] is None else int(m["layer"])
    if site in LAYERLESS_SITES and layer is not None:
        raise MaxactError(f"site {site!r} has no block: write {site}:{m['index']}, not {text!r}")
    if site not in LAYERLESS_SITES and layer is None:
        raise MaxactError(f"site {site!r} needs a block: write L{{block}}.{site}:{m['index']}")
    index = None if m["index"] == "*" else int(m["index"])
    return SiteRef(site, layer), index


def parse_unit(text: str) -> UnitId:
    ref, index = parse_unit_spec(text)
    if index is None:
        raise MaxactError(f"{text!r} names a whole site; give one index, e.g. {ref.name}:0")
    return ref.unit(index)


def layer_dim_unit(layer: int, dim: int, n_layers: int) -> UnitId:
    """The reference experiment's ``--layer L --dim D``: ``hidden_states[L][..., D]``."""
    if 0 <= layer < n_layers:
        return UnitId("resid_pre", layer, dim)
    if layer == n_layers:
        return UnitId("ln_final", None, dim)
    raise MaxactError(
        f"--layer {layer} is out of range: hidden_states has entries 0..{n_layers} for this model "
        f"(0..{n_layers - 1} are L{{layer}}.resid_pre, {n_layers} is ln_final, the normed output)"
    )
