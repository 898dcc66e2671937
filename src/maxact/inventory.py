"""What sites a model has, for `maxact units` and the viewer."""

from __future__ import annotations

from maxact.models.adapters.base import Adapter
from maxact.units import LAYERLESS_SITES, SITES, SiteRef


def site_inventory(adapter: Adapter) -> list[dict]:
    """One row per site: blocks, width, native HF module path (block 0 shown as {i}) and TL hook."""
    rows = []
    for site in adapter.sites:
        ref = SiteRef(site, None if site in LAYERLESS_SITES else 0)
        hook = adapter.site_hook(ref)
        path = hook.module_path if ref.layer is None else hook.module_path.replace(".0", ".{i}", 1)
        rows.append(
            {
                "site": site,
                "blocks": "-" if ref.layer is None else f"0..{adapter.n_layers - 1}",
                "width": hook.width,
                "hf_module": path,
                "reads": hook.reads,
                "tl_hook": SITES[site][0].replace("{layer}", "{i}"),
                "meaning": SITES[site][1],
            }
        )
    return rows
