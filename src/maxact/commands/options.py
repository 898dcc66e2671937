"""Click types that check each option where it is parsed, before any model or corpus loads.

A bad value fails with ``OptionError``: the CLI prints its message as the one ``error:`` line (the
message names the option, the bad value and what is valid). Nothing here imports torch: a device
other than ``cpu`` is checked against the torch build only when one is asked for.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import click

from maxact.derived import names_derived_unit
from maxact.errors import MaxactError, choices_text
from maxact.fsio import check_writable_file
from maxact.units import default_atlas_sites, parse_unit, parse_unit_spec, site_kind
from maxact.windows import DOC_TAILS

# ASCII digits only: a full-width digit is refused, not read as its ASCII twin
_INT_RE = re.compile(r"[+-]?[0-9]+", re.ASCII)
_DIGITS_RE = re.compile(r"[0-9]+", re.ASCII)


class OptionError(click.BadParameter):
    """A bad option value; ``message`` is the whole line (it names the option)."""


def _name(param: click.Parameter | None) -> str:
    if param is None:
        return "value"
    return param.opts[0] if isinstance(param, click.Option) else param.human_readable_name


class _Checked(click.ParamType):
    """Subclasses define ``check(text, option name) -> value``; a MaxactError it raises becomes an
    OptionError with the same message."""

    def convert(self, value, param, ctx):
        if not isinstance(value, str):  # a default, already of the right type
            return value
        try:
            return self.check(value, _name(param))
        except MaxactError as e:
            raise OptionError(str(e), ctx=ctx, param=param) from None


def parse_int(text: str, option: str) -> int:
    if not _INT_RE.fullmatch(text.strip()):
        raise MaxactError(f"{option} {text!r} is not a whole number (ASCII digits)")
    return int(text)


class Whole(_Checked):
    """A whole number of either sign, ASCII digits only (the caller checks its range)."""

    name = "integer"

    def check(self, text: str, option: str) -> int:
        return parse_int(text, option)


class Count(_Checked):
    """A whole number at least ``minimum``."""

    name = "integer"

    def __init__(self, minimum: int):
        self.minimum = minimum

    def check(self, text: str, option: str) -> int:
        value = parse_int(text, option)
        if value < self.minimum:
            least = "0 or more" if self.minimum == 0 else f"at least {self.minimum}"
            raise MaxactError(f"{option} must be {least}, got {value}")
        return value


class Seconds(_Checked):
    """A finite number of seconds, 0 or more (0: as often as possible)."""

    name = "seconds"

    def check(self, text: str, option: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise MaxactError(f"{option} {text!r} is not a number of seconds") from None
        if not (math.isfinite(value) and value >= 0):
            raise MaxactError(f"{option} must be a number of seconds, 0 or more, got {text}")
        return value


class BlockList(_Checked):
    """``0-5,12``: blocks and increasing ranges, each once -> tuple of ints."""

    name = "blocks"

    def check(self, text: str, option: str) -> tuple[int, ...]:
        blocks: list[int] = []
        for part in text.split(","):
            bounds = part.split("-")
            if len(bounds) > 2 or not all(_DIGITS_RE.fullmatch(b) for b in bounds):
                raise MaxactError(f"{option} {text!r} must list blocks and ranges, e.g. 0-5,12 (blocks count from 0)")
            first, last = int(bounds[0]), int(bounds[-1])
            if last < first:
                raise MaxactError(f"{option} {text!r}: the range {part} runs backwards; write {last}-{first}")
            for block in range(first, last + 1):
                if block in blocks:
                    raise MaxactError(f"{option} {text!r} names block {block} twice")
                blocks.append(block)
        return tuple(blocks)


class SiteList(_Checked):
    """``resid_pre,mlp_post``: known site names, each once -> tuple of str."""

    name = "sites"

    def check(self, text: str, option: str) -> tuple[str, ...]:
        sites = tuple(site_kind(s.strip()).name for s in text.split(","))
        twice = sorted({s for s in sites if sites.count(s) > 1})
        if twice:
            raise MaxactError(f"{option} {text!r} names {', '.join(twice)} twice")
        return sites


class SiteName(_Checked):
    """One known site name."""

    name = "site"

    def check(self, text: str, option: str) -> str:
        return site_kind(text).name


class Shard(_Checked):
    """``i/N``: the i-th (from 0) of N slices -> (i, N)."""

    name = "i/N"

    def check(self, text: str, option: str) -> tuple[int, int]:
        parts = text.split("/")
        if len(parts) != 2 or not all(_DIGITS_RE.fullmatch(p) for p in parts):
            raise MaxactError(f"{option} {text!r} must look like i/N, e.g. 0/4")
        i, n = int(parts[0]), int(parts[1])
        if not (n >= 1 and 0 <= i < n):
            raise MaxactError(f"{option} {text!r}: i must be in 0..N-1 and N >= 1")
        return i, n


class DocTail(_Checked):
    """What to do with a document's last window shorter than --seq: one of windows.DOC_TAILS."""

    name = "|".join(DOC_TAILS)

    def check(self, text: str, option: str) -> str:
        if text not in DOC_TAILS:
            raise MaxactError(f"{option} {text!r} is not one of {choices_text(DOC_TAILS)}")
        return text


class UnitSpec(_Checked):
    """A unit id or a whole site (``L2.resid_pre:345``, ``L2.resid_pre:*``), checked for syntax
    and site name; the model checks blocks and indices later."""

    name = "unit"

    def check(self, text: str, option: str) -> str:
        if not names_derived_unit(text):  # a derived site's unit is checked once its atlas or weights load
            parse_unit_spec(text)
        return text.strip()


class UnitName(_Checked):
    """One unit id (``L2.resid_pre:345``)."""

    name = "unit"

    def check(self, text: str, option: str) -> str:
        if names_derived_unit(text) and not text.strip().endswith("*"):
            return text.strip()  # a derived site's unit: checked once its atlas or weights load
        return str(parse_unit(text))


class Device(_Checked):
    """cpu, cuda, cuda:N or mps, refused at once when this machine or torch build cannot run it."""

    name = "device"

    def check(self, text: str, option: str) -> str:
        if text != "cpu":  # anything else needs torch to say whether it runs here
            from maxact.models.loading import check_device

            check_device(text, option)
        return text


class OutputFile(_Checked):
    """A file to write at the end, checked now: not a folder, its folder exists and is writable."""

    name = "file"

    def check(self, text: str, option: str) -> Path:
        return check_writable_file(Path(text), option)


DIRECTIONS_HELP = ("NAME=FILE@SITE: units NAME:i are the dot products of SITE's activation (e.g. L6.resid_pre) with "
                   "the rows of FILE (.npy (n, d) or .safetensors); repeatable (docs/DIRECTIONS.md)")
SAE_HELP = ("NAME=DIR: units NAME:i are the latents of the sparse autoencoder in DIR (SAELens's cfg.json and "
            "sae_weights.safetensors; standard, jumprelu or topk), at its hook_name; repeatable")


def _load_derived(ctx, param, values):
    """Eager callback of --directions and --sae: load and register the weights before any other
    option is read, so --sites and --unit know the names."""
    if not values:
        return ()
    from maxact.dictionaries import load_options

    seen = ctx.meta.setdefault("maxact.derived_names", [])
    try:
        pair = (values, ()) if param.name == "directions" else ((), values)
        specs = load_options(*pair, taken=seen)
    except MaxactError as e:
        raise OptionError(str(e), ctx=ctx, param=param) from None
    seen.extend(s.name for s in specs)
    return tuple(specs)


def derived_site_options(command):
    """``--directions NAME=FILE@SITE`` and ``--sae NAME=DIR`` (repeatable), as tuples of DerivedSpec."""
    command = click.option("--sae", "saes", multiple=True, is_eager=True, callback=_load_derived,
                           metavar="NAME=DIR", help=SAE_HELP)(command)
    return click.option("--directions", "directions", multiple=True, is_eager=True, callback=_load_derived,
                        metavar="NAME=FILE@SITE", help=DIRECTIONS_HELP)(command)


def with_derived_sites(sites: tuple[str, ...] | None, derived) -> tuple[str, ...]:
    """The sites of an atlas: --sites (default: the default sites), then every derived site that
    --sites does not name (``--sites NAME`` alone keeps only that derived site)."""
    chosen = tuple(sites) if sites else default_atlas_sites()
    return chosen + tuple(spec.name for spec in derived if spec.name not in chosen)


def register_atlas_sites(ctx, param, value):
    """Eager callback of an ATLAS argument: the atlas's derived sites (docs/DIRECTIONS.md) become
    site names before the other options are read (``--site NAME``). Reads manifest.json only; a
    missing or bad atlas is left for the command to report."""
    if value is not None:
        from maxact.store.manifest import register_recorded_sites

        register_recorded_sites(Path(value))
    return value
