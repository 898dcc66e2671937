"""The neurons nearest to each unit of a derived site (docs/DIRECTIONS.md), by the cosine between
the unit's decoder row (its direction, or its SAE decoder row) and each neuron's own direction in
the same space:

- on a residual-stream site (resid_pre, resid_post, attn_out, mlp_out, ln_final), the MLP neurons
  that write into it before it is read: the columns of their down projections (``L{l}.mlp_post:i``)
  of the blocks before the site (``resid_pre`` and ``attn_out`` of block L: blocks < L;
  ``resid_post`` and ``mlp_out``: blocks <= L; ``ln_final``: every block); at block 0 of
  ``resid_pre``, where no MLP has written yet, the residual's own basis (``L0.resid_pre:i``);
- on any other site (an MLP's or attention's own coordinates), the site's basis: neuron i's
  cosine is coordinate i of the unit-length decoder row.

Ranked by |cosine| (a neuron writing the opposite direction is as near), the sign kept.
"""

from __future__ import annotations

import numpy as np
import torch

from maxact.derived import DerivedSpec
from maxact.dictionaries import loaded
from maxact.units import SITE_KINDS, SiteRef

_WRITES_THROUGH = {"resid_pre": 0, "attn_out": 0, "resid_post": 1, "mlp_out": 1}  # blocks < L + this


def _candidates(adapter, base: SiteRef) -> list[tuple[list[str], torch.Tensor]]:
    """(unit ids, (d_in, m) float32 directions) blocks of candidate neurons for a base site."""
    if SITE_KINDS[base.site].logit_path == "residual":
        stop = adapter.n_layers if base.layer is None else base.layer + _WRITES_THROUGH[base.site]
        blocks = [([f"L{layer}.mlp_post:{i}" for i in range(adapter.d_mlp)],
                   adapter.mlp_out_weight(layer).detach().float()) for layer in range(stop)]
        if blocks:
            return blocks
    width = adapter.width(base)
    return [([f"{base.name}:{i}" for i in range(width)], torch.eye(width))]


def nearest_neurons(adapter, spec: DerivedSpec, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(width, n) unit ids (unicode) and (width, n) float32 cosines of each derived unit's n nearest
    neurons, nearest first."""
    rows = loaded(spec.name).decoder_rows.float()  # (width, d_in)
    rows = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-30)
    best_cos = torch.empty(rows.shape[0], 0)  # (width, <= n) signed cosines so far
    best_ids: list[np.ndarray] = []  # candidate ids of each block, as kept
    names: list[str] = []
    with torch.inference_mode():
        for block_names, directions in _candidates(adapter, spec.base_ref):
            directions = directions.to(rows.device)  # (d_in, m)
            unit = directions / directions.norm(dim=0, keepdim=True).clamp_min(1e-30)
            cos = rows @ unit  # (width, m)
            take = min(n, cos.shape[1])
            top = cos.abs().topk(take, dim=1).indices  # (width, take)
            best_cos = torch.cat([best_cos, cos.gather(1, top)], 1)
            best_ids.append(top.numpy() + len(names))
            names.extend(block_names)
        ids = np.concatenate(best_ids, 1)  # (width, sum of takes) indices into names
        order = best_cos.abs().topk(min(n, best_cos.shape[1]), dim=1).indices  # (width, n)
        cos = best_cos.gather(1, order).numpy().astype(np.float32)
        picked = np.take_along_axis(ids, order.numpy(), 1)
    return np.asarray(names)[picked], cos
