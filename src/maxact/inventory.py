"""What sites a model has, for `maxact units`."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from maxact.models.adapters.base import Adapter
from maxact.units import SITE_KINDS, SiteRef


@dataclass(frozen=True)
class SiteRow:
    """One site of a model: where it is read and what it means."""

    site: str
    blocks: str  # "0..N-1", or "-" for a site with no block
    width: int
    hf_module: str  # native HF module path, block 0 shown as {i}
    reads: str  # "input" or "output" of that module
    tl_hook: str  # TransformerLens hook, block shown as {i}
    meaning: str

    def to_json(self) -> dict:
        return asdict(self)


def site_inventory(adapter: Adapter) -> list[SiteRow]:
    """One row per site of the adapter, in the site table's order."""
    rows = []
    for site in adapter.sites:
        kind = SITE_KINDS[site]
        ref = SiteRef(site, 0 if kind.has_block else None)
        hook = adapter.site_hook(ref)
        path = hook.module_path if ref.layer is None else hook.module_path.replace(".0", ".{i}", 1)
        rows.append(SiteRow(
            site=site,
            blocks="-" if ref.layer is None else f"0..{adapter.n_layers - 1}",
            width=hook.width,
            hf_module=path,
            reads=hook.reads,
            tl_hook=kind.tl_hook.replace("{layer}", "{i}"),
            meaning=kind.meaning,
        ))
    return rows
