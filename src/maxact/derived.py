"""Derived sites: sets of directions and sparse-autoencoder latents read off a base site, whose units
work everywhere a neuron works (docs/DIRECTIONS.md).

This module holds what a derived site *is* (``DerivedSpec``: its name, where its weights are, the
base site it reads, its width), the syntax of the ``--directions`` and ``--sae`` options, and the
site-kind entry that makes ``NAME:i`` a unit id. It loads no weights (maxact/dictionaries.py does),
so the store and the viewer can register an atlas's derived sites without torch.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

from maxact.errors import MaxactError, choices_text
from maxact.units import SITE_KINDS, SiteKind, SiteRef, parse_unit_spec

DIRECTIONS = "directions"  # dot products with the rows of a matrix
SAE = "sae"  # latents of a sparse autoencoder (SAELens's format)
KINDS = (DIRECTIONS, SAE)
SAE_ARCHITECTURES = ("standard", "jumprelu", "topk")

_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*", re.ASCII)
BUILTIN_SITES = frozenset(SITE_KINDS)  # the model's own sites: no derived site may take their names


@dataclass(frozen=True)
class DerivedSpec:
    """One derived site. ``NAME:i`` is the dot product of the base site's activation with row i
    (directions), or latent i of the SAE's encoder (sae)."""

    name: str  # the user's name: letters, digits, '-' and '_'
    kind: str  # "directions" or "sae"
    path: str  # the .npy / .safetensors file of directions, or the SAE's directory (absolute)
    base: str  # the base site it reads, e.g. "L6.resid_pre"
    width: int  # units: rows of the matrix, or d_sae
    d_in: int  # width of the base site
    sha256: str  # of the weights file (the directions file, or sae_weights.safetensors)
    architecture: str  # "directions", or the SAE's: "standard", "jumprelu", "topk"
    k: int | None = None  # topk: latents kept per token
    apply_b_dec_to_input: bool = False  # sae: subtract b_dec from the input before encoding

    @property
    def base_ref(self) -> SiteRef:
        ref, _ = parse_unit_spec(f"{self.base}:0")
        return ref

    @property
    def tl_hook(self) -> str:
        """The hook name in TransformerLens/SAELens terms: the base site's hook, then the part read."""
        base = SITE_KINDS[self.base_ref.site].hook_name(self.base_ref.layer)
        return f"{base}.hook_sae_acts_post" if self.kind == SAE else f"{base}.directions.{self.name}"

    def meaning(self) -> str:
        if self.kind == SAE:
            k = f", k={self.k}" if self.k is not None else ""
            return f"latent of a {self.architecture} SAE ({self.width} latents{k}) on {self.base}"
        return f"dot product of {self.base} with one of {self.width} directions"

    def site_kind(self) -> SiteKind:
        """The site-kind entry of ``NAME:i``: no block; logit effects through the decoder rows when
        the base site is the residual stream."""
        base_kind = SITE_KINDS[self.base_ref.site]
        return SiteKind(self.name, self.tl_hook, self.meaning(),  # tl_hook: no "{layer}" left to fill
                        has_block=False, logit_path="decoder" if base_kind.logit_path == "residual" else None)

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(d, what: str = "derived site") -> DerivedSpec:
        if not isinstance(d, dict):
            raise MaxactError(f"{what} must be a JSON object, found {type(d).__name__}")
        try:
            spec = DerivedSpec(**d)
        except TypeError as e:
            raise MaxactError(f"{what} is malformed ({e}): the atlas or its config is corrupt") from None
        check_name(spec.name, what)
        if spec.kind not in KINDS:
            raise MaxactError(f"{what}: kind {spec.kind!r} is not one of {', '.join(KINDS)}")
        return spec


def check_name(name: str, option: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise MaxactError(f"{option}: name {name!r} must be letters, digits, '-' or '_', starting with a letter")
    if name in BUILTIN_SITES:
        raise MaxactError(f"{option}: name {name!r} is a site of the model; choose another name "
                          f"(the model's sites: {choices_text(sorted(BUILTIN_SITES))})")
    return name


def register_derived_kind(spec: DerivedSpec) -> SiteKind:
    """Make ``NAME:i`` a unit id in this process. A later definition of the same name replaces the
    earlier one (one command never defines a name twice: ``check_unique``; a long-lived process,
    such as the tests' or the viewer's, may open several atlases)."""
    check_name(spec.name, f"derived site {spec.name!r}")
    kind = spec.site_kind()
    SITE_KINDS[spec.name] = kind
    return kind


class DirectionsOption:
    """``--directions NAME=FILE@SITE`` (or ``NAME=FILE.safetensors`` whose metadata records the
    site), parsed."""

    def __init__(self, text: str, recorded_site=None):
        """recorded_site(file) -> the site a .safetensors file records in its metadata, or None: used
        when SITE is left out (`maxact concept --save-direction` records it)."""
        option = f"--directions {text}"
        name, eq, rest = text.partition("=")
        file, at, site = rest.rpartition("@")
        if not at and rest.endswith(".safetensors") and recorded_site is not None:
            file, site = rest, recorded_site(Path(rest.strip()).expanduser()) or ""
            if not site:
                raise MaxactError(f"{option}: {rest} records no site in its metadata; write NAME=FILE@SITE")
        if not eq or not name or not file or not site:
            raise MaxactError(f"{option}: write NAME=FILE@SITE, e.g. probe=dirs.npy@L6.resid_pre")
        self.name = check_name(name.strip(), option)
        self.file = Path(file.strip()).expanduser()
        self.site = site.strip()
        ref, _ = parse_unit_spec(f"{self.site}:0")
        if ref.site not in BUILTIN_SITES:
            raise MaxactError(f"{option}: the base site {self.site!r} must be a site of the model, such as "
                              f"L6.resid_pre; valid site kinds: {choices_text(sorted(BUILTIN_SITES))}")


class SaeOption:
    """``--sae NAME=DIR``, parsed (syntax only)."""

    def __init__(self, text: str):
        option = f"--sae {text}"
        name, eq, directory = text.partition("=")
        if not eq or not name or not directory:
            raise MaxactError(f"{option}: write NAME=DIR, DIR holding SAELens's cfg.json and sae_weights.safetensors")
        self.name = check_name(name.strip(), option)
        self.dir = Path(directory.strip()).expanduser()


_DERIVED_UNIT_RE = re.compile(r"(?P<site>[A-Za-z][A-Za-z0-9_-]*):(?:\*|[0-9]+)", re.ASCII)


def names_derived_unit(text: str) -> bool:
    """Whether ``text`` can only be a unit of a derived site not registered yet (``NAME:i`` with a
    name that is no site of the model): its check waits until the atlas or the weights are loaded."""
    m = _DERIVED_UNIT_RE.fullmatch(text.strip())
    return m is not None and m["site"] not in SITE_KINDS


def check_unique(names: list[str]) -> None:
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise MaxactError(f"derived site name(s) {', '.join(twice)} given twice: each --directions and --sae "
                          f"needs its own NAME")
