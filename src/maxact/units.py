"""Unit and site names, following TransformerLens's hook vocabulary (see docs/METHOD.md).

A unit id is ``L{block}.{site}:{index}``, blocks counted from 0, e.g. ``L2.resid_pre:345``, which is
``hidden_states[2][..., 345]`` in Hugging Face terms. The final, normed residual (HF's last
``hidden_states`` entry) has no block: ``ln_final:{index}``. A whole site is ``L2.resid_pre:*``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from maxact.errors import MaxactError, choices_text


@dataclass(frozen=True)
class SiteKind:
    """What one kind of site is: the single table every module reads (docs/DEVELOPING.md, "Add a
    site kind"). A derived kind (a set of directions, an SAE) registers itself with
    ``register_site_kind`` and needs no edit of the engine."""

    name: str  # as in unit ids: L{block}.{name}:{index}
    tl_hook: str  # TransformerLens hook name, "{layer}" standing for the block
    meaning: str  # one line for listings and pages
    has_block: bool = True  # False: one per model (ln_final), written without "L{block}."
    per_head: bool = False  # flat index = head * d_head + i
    # how the unit's output reaches the logits for direct logit effects: "residual" (a basis
    # direction of the residual stream), "mlp_down" (the down-projection column it writes), None
    logit_path: str | None = None
    atlas_default: int | None = None  # rank in an atlas's default sites; None: not a default

    def hook_name(self, layer: int | None) -> str:
        return self.tl_hook.format(layer=layer)


SITE_KINDS: dict[str, SiteKind] = {}


def register_site_kind(kind: SiteKind) -> SiteKind:
    """Add a site kind to the table (names are letters, digits, '-' and '_'); returns it."""
    if not _SITE_NAME_RE.fullmatch(kind.name):
        raise MaxactError(f"site name {kind.name!r} must be letters, digits, '-' or '_', starting with a letter")
    if kind.name in SITE_KINDS and SITE_KINDS[kind.name] != kind:
        raise MaxactError(f"site {kind.name!r} is already defined differently; choose another name")
    SITE_KINDS[kind.name] = kind
    return kind


def site_kind(name: str) -> SiteKind:
    """The table entry of a site name; an unknown name lists the valid ones."""
    kind = SITE_KINDS.get(name)
    if kind is None:
        raise MaxactError(f"unknown site {name!r}; valid sites: {choices_text(SITE_KINDS)}")
    return kind


def default_atlas_sites() -> tuple[str, ...]:
    """The sites an atlas keeps unless told otherwise, in their documented order."""
    ranked = sorted((k.atlas_default, k.name) for k in SITE_KINDS.values() if k.atlas_default is not None)
    return tuple(name for _, name in ranked)


_SITE_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*", re.ASCII)

for _kind in (
    SiteKind("resid_pre", "blocks.{layer}.hook_resid_pre",
             "residual stream entering the block (= HF hidden_states[layer])", logit_path="residual",
             atlas_default=0),
    SiteKind("resid_post", "blocks.{layer}.hook_resid_post", "residual stream leaving the block",
             logit_path="residual"),
    SiteKind("mlp_pre", "blocks.{layer}.mlp.hook_pre", "MLP pre-activation: c_fc(x), or gate(x) in gated MLPs"),
    SiteKind("mlp_post", "blocks.{layer}.mlp.hook_post", "MLP neuron: what the down projection reads",
             logit_path="mlp_down", atlas_default=2),
    SiteKind("attn_q", "blocks.{layer}.attn.hook_q",
             "attention query, flat index head * d_head + i (before rotary)", per_head=True),
    SiteKind("attn_k", "blocks.{layer}.attn.hook_k",
             "attention key, flat index head * d_head + i (before rotary)", per_head=True),
    SiteKind("attn_v", "blocks.{layer}.attn.hook_v", "attention value, flat index head * d_head + i",
             per_head=True),
    SiteKind("attn_out", "blocks.{layer}.hook_attn_out", "attention block output, after the output projection",
             logit_path="residual"),
    SiteKind("mlp_out", "blocks.{layer}.hook_mlp_out", "MLP block output, after the down projection",
             logit_path="residual"),
    SiteKind("ln_final", "ln_final.hook_normalized", "final normed residual (= HF hidden_states[-1])",
             has_block=False, logit_path="residual", atlas_default=1),
):
    register_site_kind(_kind)

# unit ids: ASCII digits only (a full-width digit is not a block or an index)
_UNIT_RE = re.compile(
    r"^(?:L(?P<layer>[0-9]+)\.)?(?P<site>[A-Za-z][A-Za-z0-9_-]*):(?P<index>\*|[0-9]+)$", re.ASCII)


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
        return SITE_KINDS[self.site].hook_name(self.layer)

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
    how = ("write L{block}.{site}:{index} such as L2.resid_pre:345, L2.resid_pre:* for a whole site, "
           "or ln_final:{index}")
    m = _UNIT_RE.match(text.strip())
    if not m:
        raise MaxactError(f"unit {text!r} is not a unit id; {how}")
    site = m["site"]
    if site not in SITE_KINDS:
        raise MaxactError(f"unit {text!r} is not a unit id: unknown site {site!r}; valid sites: "
                          f"{choices_text(SITE_KINDS)}; {how}")
    layer = None if m["layer"] is None else int(m["layer"])
    if not SITE_KINDS[site].has_block and layer is not None:
        raise MaxactError(f"site {site!r} has no block: write {site}:{m['index']}, not {text!r}")
    if SITE_KINDS[site].has_block and layer is None:
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


def unit_specs(layer: int | None, dim: int | None, specs, n_layers: int, width: int | None = None) -> list[str]:
    """The unit specs of `maxact sample`: ``--layer L --dim D`` (first, when given) and ``--unit``s.
    width: d_model, for the range in messages."""
    out = list(specs)
    if (layer is None) != (dim is None):
        raise MaxactError("--layer and --dim go together (hidden_states[layer][..., dim]); give both, or use --unit")
    if dim is not None and dim < 0:  # else it would read as the unit id "L2.resid_pre:-1"
        valid = f"0..{width - 1}" if width else "0 and up"
        raise MaxactError(f"--dim {dim} is out of range: valid dimensions are {valid}")
    if layer is not None:
        out.insert(0, str(layer_dim_unit(layer, dim, n_layers)))
    if not out:
        raise MaxactError("no unit given: use --layer L --dim D, or --unit L2.resid_pre:345 (repeatable)")
    return out
