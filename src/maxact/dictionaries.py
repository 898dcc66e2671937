"""The weights of derived sites (maxact/derived.py): direction sets and sparse autoencoders, loaded,
checked against the base site, and applied to its activations (docs/DIRECTIONS.md).

A loaded ``Dictionary`` is registered by name for this process; the model adapters read a derived
site through it (``site_hook``), so capture, the atlas engine, ``sample`` and the concept pass need
no change. Encoding goes ``DERIVED.encode_rows`` tokens at a time, so an SAE's temporaries stay
bounded whatever the batch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from maxact.config import DERIVED
from maxact.derived import (
    DIRECTIONS,
    SAE,
    SAE_ARCHITECTURES,
    DerivedSpec,
    DirectionsOption,
    SaeOption,
    check_unique,
    register_derived_kind,
)
from maxact.errors import MaxactError, choices_text
from maxact.units import SITE_KINDS

SAE_CONFIG = "cfg.json"
SAE_WEIGHTS = "sae_weights.safetensors"
SAE_TENSORS = ("W_enc", "b_enc", "W_dec", "b_dec")
# the tensors `maxact concept --save-direction` writes, in the order of its .npy rows
CONCEPT_DIRECTIONS = ("probe", "mean_diff")
# SAELens's normalize_activations values; only "none" keeps the base activations as they are
NORMALIZATIONS_SUPPORTED = ("none",)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Dictionary:
    """A derived site's weights (float32, on the CPU; copied to the activations' device on use)."""

    spec: DerivedSpec
    encoder: torch.Tensor  # (d_in, width): directions.T, or the SAE's W_enc
    bias: torch.Tensor | None  # (width,) b_enc; None for directions
    decoder_rows: torch.Tensor  # (width, d_in): the directions, or the SAE's W_dec
    input_shift: torch.Tensor | None  # (d_in,) b_dec subtracted from the input (apply_b_dec_to_input)
    threshold: torch.Tensor | None  # (width,) jumprelu thresholds

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., d_in) any float dtype -> (..., width) float32, DERIVED.encode_rows tokens at a time."""
        lead = x.shape[:-1]
        flat = x.reshape(-1, x.shape[-1])  # (N, d_in)
        out = torch.empty(flat.shape[0], self.spec.width, dtype=torch.float32, device=x.device)  # (N, width)
        weights = self._on(x.device)
        step = DERIVED.encode_rows
        for lo in range(0, flat.shape[0], step):
            out[lo : lo + step] = self._encode_rows(flat[lo : lo + step].float(), *weights)
        return out.reshape(*lead, self.spec.width)

    def _on(self, device) -> tuple:
        key = str(device)
        cache = self.__dict__.setdefault("_device_weights", {})
        if key not in cache:
            move = lambda t: None if t is None else t.to(device)  # noqa: E731
            cache[key] = (move(self.encoder), move(self.bias), move(self.input_shift), move(self.threshold))
        return cache[key]

    def _encode_rows(self, x, encoder, bias, shift, threshold) -> torch.Tensor:
        """x (n, d_in) float32 -> (n, width) float32."""
        if self.spec.kind == DIRECTIONS:
            return x @ encoder
        if shift is not None:
            x = x - shift
        pre = torch.addmm(bias, x, encoder)  # (n, width) hidden pre-activation
        arch = self.spec.architecture
        if arch == "standard":
            return pre.relu_()
        if arch == "jumprelu":
            return pre.relu() * (pre > threshold)
        top = pre.topk(self.spec.k, dim=1)  # topk: the k largest pre-activations, then ReLU
        return torch.zeros_like(pre).scatter_(1, top.indices, top.values.relu())


_LOADED: dict[str, Dictionary] = {}


def register(d: Dictionary) -> Dictionary:
    """Make ``NAME:i`` a unit id and its site readable in this process."""
    register_derived_kind(d.spec)  # a later definition of a name replaces the earlier one
    _LOADED[d.spec.name] = d
    return d


def loaded(name: str) -> Dictionary:
    d = _LOADED.get(name)
    if d is None:
        raise MaxactError(f"derived site {name!r} has no weights loaded in this process; give its "
                          f"--directions or --sae option (loaded: {choices_text(sorted(_LOADED)) or 'none'})")
    return d


def is_derived(site: str) -> bool:
    """Whether ``site`` names a derived site loaded in this process."""
    return site in _LOADED


def load_directions(option: DirectionsOption) -> Dictionary:
    """``--directions NAME=FILE@SITE``: FILE is .npy (n, d) or .safetensors (one 2-D tensor, or the
    tensor named ``directions``); unit NAME:i = dot(activation, row i)."""
    what = f"--directions {option.name}={option.file}@{option.site}"
    path = option.file.resolve()
    if not path.is_file():
        raise MaxactError(f"{what}: file {str(option.file)!r} does not exist")
    if path.suffix == ".npy":
        try:
            matrix = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise MaxactError(f"{what}: {path.name} is not a readable .npy file ({e})") from None
    elif path.suffix == ".safetensors":
        matrix = _safetensors_matrix(path, what)
    else:
        raise MaxactError(f"{what}: give a .npy or a .safetensors file, not {path.suffix or 'a file without suffix'!r}")
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2 or matrix.shape[0] < 1 or not np.issubdtype(matrix.dtype, np.floating):
        raise MaxactError(f"{what}: expected a float array of shape (n, d), found {matrix.dtype} {tuple(matrix.shape)}")
    if not np.isfinite(matrix).all():
        raise MaxactError(f"{what}: the directions hold NaN or infinite values")
    rows = torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32))  # (n, d)
    spec = DerivedSpec(name=option.name, kind=DIRECTIONS, path=str(path), base=option.site, width=rows.shape[0],
                       d_in=rows.shape[1], sha256=file_sha256(path), architecture=DIRECTIONS)
    return Dictionary(spec, rows.T.contiguous(), None, rows, None, None)


def _safetensors_matrix(path: Path, what: str) -> np.ndarray:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise MaxactError(f"{what}: {path.name} is not a readable safetensors file ({e})") from None
    if "directions" in tensors:
        return tensors["directions"]
    if set(tensors) == set(CONCEPT_DIRECTIONS):  # `maxact concept --save-direction`: rows in that order
        return np.stack([tensors[k] for k in CONCEPT_DIRECTIONS])
    two_d = [k for k, v in tensors.items() if v.ndim == 2]
    if len(two_d) != 1:
        raise MaxactError(f"{what}: {path.name} holds the tensors {choices_text(sorted(tensors))}; name the one "
                          f"to read 'directions' (or keep a single 2-D tensor)")
    return tensors[two_d[0]]


def recorded_site(path: Path) -> str | None:
    """The site a directions .safetensors file records in its metadata (``site``), if any."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "np") as f:
            return (f.metadata() or {}).get("site")
    except (SafetensorError, OSError, ValueError):
        return None


def load_sae(option: SaeOption) -> Dictionary:
    """``--sae NAME=DIR``: SAELens's format, DIR/cfg.json and DIR/sae_weights.safetensors."""
    what = f"--sae {option.name}={option.dir}"
    directory = option.dir.resolve()
    cfg_path, weights_path = directory / SAE_CONFIG, directory / SAE_WEIGHTS
    for p in (cfg_path, weights_path):
        if not p.is_file():
            raise MaxactError(f"{what}: {p} does not exist (an SAE in SAELens's format is a folder with "
                              f"{SAE_CONFIG} and {SAE_WEIGHTS})")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MaxactError(f"{what}: {cfg_path.name} is not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise MaxactError(f"{what}: {cfg_path.name} must hold a JSON object")
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    arch = cfg.get("architecture", "standard")
    if arch not in SAE_ARCHITECTURES:
        raise MaxactError(f"{what}: architecture {arch!r} is not supported; supported: {', '.join(SAE_ARCHITECTURES)}")
    norm = cfg.get("normalize_activations", "none") or "none"
    if norm not in NORMALIZATIONS_SUPPORTED:
        raise MaxactError(f"{what}: normalize_activations {norm!r} is not supported (it rescales the input by "
                          f"statistics the SAE's files do not hold); supported: {', '.join(NORMALIZATIONS_SUPPORTED)}")
    hook_name = cfg.get("hook_name") or meta.get("hook_name")
    if not isinstance(hook_name, str):
        raise MaxactError(f"{what}: {cfg_path.name} has no hook_name (top level or under metadata)")
    base = site_of_hook(hook_name, what)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise MaxactError(f"{what}: {weights_path.name} is not a readable safetensors file ({e})") from None
    needed = SAE_TENSORS + (("threshold",) if arch == "jumprelu" else ())
    missing = [n for n in needed if n not in tensors]
    if missing:
        raise MaxactError(f"{what}: {weights_path.name} lacks {', '.join(missing)} (it holds "
                          f"{choices_text(sorted(tensors))})")
    t = {n: tensors[n].float() for n in needed}
    d_in, d_sae = t["W_enc"].shape if t["W_enc"].ndim == 2 else (None, None)
    shapes = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,),
              "threshold": (d_sae,)}
    bad = [f"{n} {tuple(t[n].shape)} (expected {shapes[n]})" for n in needed if tuple(t[n].shape) != shapes[n]]
    if d_in is None or bad:
        raise MaxactError(f"{what}: tensor shapes do not fit: {', '.join(bad) or 'W_enc is not 2-D'}")
    for key, value in (("d_in", d_in), ("d_sae", d_sae)):
        if key in cfg and cfg[key] != value:
            raise MaxactError(f"{what}: cfg.json says {key}={cfg[key]} but the weights have {value}")
    k = None
    if arch == "topk":
        k = cfg.get("k", (cfg.get("activation_fn_kwargs") or {}).get("k"))
        if not isinstance(k, int) or not 1 <= k <= d_sae:
            raise MaxactError(f"{what}: a topk SAE needs an integer k in 1..{d_sae} in cfg.json, found {k!r}")
    apply_b_dec = bool(cfg.get("apply_b_dec_to_input", True))
    spec = DerivedSpec(name=option.name, kind=SAE, path=str(directory), base=base, width=d_sae, d_in=d_in,
                       sha256=file_sha256(weights_path), architecture=arch, k=k, apply_b_dec_to_input=apply_b_dec)
    return Dictionary(spec, t["W_enc"].contiguous(), t["b_enc"], t["W_dec"].contiguous(),
                      t["b_dec"] if apply_b_dec else None, t.get("threshold"))


def site_of_hook(hook_name: str, what: str) -> str:
    """A TransformerLens hook name (``blocks.6.hook_resid_pre``) as a maxact site (``L6.resid_pre``)."""
    for kind in SITE_KINDS.values():
        if not kind.has_block:
            if kind.tl_hook == hook_name:
                return kind.name
            continue
        head, _, tail = kind.tl_hook.partition("{layer}")
        if hook_name.startswith(head) and hook_name.endswith(tail):
            layer = hook_name[len(head) : len(hook_name) - len(tail)]
            if layer.isdigit() and layer.isascii():
                return f"L{int(layer)}.{kind.name}"
    hooks = sorted(k.tl_hook for k in SITE_KINDS.values() if k.tl_hook.startswith(("blocks.", "ln_final")))
    raise MaxactError(f"{what}: hook_name {hook_name!r} is not a site maxact reads; hooks read: {choices_text(hooks)}")


def load_options(directions=(), saes=(), taken=()) -> list[DerivedSpec]:
    """Parse, load and register every ``--directions`` and ``--sae`` (strings); returns their specs in
    order. ``taken``: names already given by other options of the same command."""
    options = [DirectionsOption(t, recorded_site) for t in directions] + [SaeOption(t) for t in saes]
    check_unique(list(taken) + [o.name for o in options])
    out = []
    for o in options:
        d = load_directions(o) if isinstance(o, DirectionsOption) else load_sae(o)
        out.append(register(d).spec)
    return out


def ensure_loaded(specs) -> None:
    """Load the weights of recorded derived sites (a Ray worker, a merge, a resumed run): the same
    files, by hash."""
    for spec in specs:
        if spec.name in _LOADED and _LOADED[spec.name].spec == spec:
            continue
        if spec.kind == DIRECTIONS:
            d = load_directions(DirectionsOption(f"{spec.name}={spec.path}@{spec.base}"))
        else:
            d = load_sae(SaeOption(f"{spec.name}={spec.path}"))
        if d.spec != spec:
            changed = "its weights changed" if d.spec.sha256 != spec.sha256 else "its shape or settings changed"
            raise MaxactError(f"derived site {spec.name!r}: {spec.path} is not the file this run recorded "
                              f"({changed}); restore it, or start a new run")
        register(d)


def check_base(spec: DerivedSpec, base_width: int) -> None:
    if spec.d_in != base_width:
        raise MaxactError(f"derived site {spec.name!r} reads {spec.d_in}-dimensional vectors, but {spec.base} "
                          f"of this model has width {base_width}")
