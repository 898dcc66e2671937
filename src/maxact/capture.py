"""Read sites out of the model's own forward pass with hooks.

``capture(adapter, input_ids, refs)`` returns every requested site as a (B, T, width) tensor;
``stream(adapter, input_ids, refs, consumer)`` hands each site to ``consumer`` the moment its module
fires, so the caller can reduce it and let it go (the atlas engine never holds all sites at once).
The forward stops as soon as the last requested site has fired (unless ``ln_final`` is asked, the
head and the blocks after the deepest requested one are never run).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from maxact.models.adapters import Adapter
from maxact.units import SiteRef


class _StopForward(Exception):
    """Raised from a hook once every requested site has been seen."""


def _first_tensor(x):
    return x[0] if isinstance(x, (tuple, list)) else x


def stream(
    adapter: Adapter,
    input_ids: torch.Tensor,  # (B, T) int64
    refs: Sequence[SiteRef],
    consumer: Callable[[SiteRef, torch.Tensor], None],  # receives (B, T, width)
    stop_early: bool = True,
) -> None:
    """Run the base model (no LM head, no attention mask) and feed each requested site to consumer."""
    model = adapter.model
    by_module: dict[str, list[tuple[SiteRef, object]]] = {}
    for ref in refs:
        hook = adapter.site_hook(ref)
        by_module.setdefault((hook.module_path, hook.reads), []).append((ref, hook))
    remaining = {"n": len(refs)}
    handles = []

    def deliver(entries, raw):  # raw: (B, T, raw_width)
        for ref, hook in entries:
            acts = raw if hook.take is None else hook.take(raw)
            consumer(ref, acts)
            remaining["n"] -= 1
        if stop_early and remaining["n"] == 0:
            raise _StopForward

    for (path, reads), entries in by_module.items():
        module = model.get_submodule(path)
        if reads == "input":

            def pre_hook(mod, args, kwargs, entries=entries):
                raw = args[0] if args else kwargs["hidden_states"]
                deliver(entries, raw)

            handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        else:

            def post_hook(mod, args, output, entries=entries):
                deliver(entries, _first_tensor(output))

            handles.append(module.register_forward_hook(post_hook))
    try:
        with torch.inference_mode():
            adapter.base_model()(input_ids=input_ids, use_cache=False)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()


def capture(
    adapter: Adapter,
    input_ids: torch.Tensor,  # (B, T) int64
    refs: Sequence[SiteRef],
) -> dict[SiteRef, torch.Tensor]:
    """Every requested site as a (B, T, width) tensor (a copy, safe to keep)."""
    out: dict[SiteRef, torch.Tensor] = {}

    def keep(ref: SiteRef, acts: torch.Tensor) -> None:
        out[ref] = acts.detach().clone()

    stream(adapter, input_ids, refs, keep)
    return out
