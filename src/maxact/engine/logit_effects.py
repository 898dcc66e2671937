"""Direct logit effects: the tokens a unit's output direction promotes and suppresses through the
unembedding, with the final norm's weight folded in (and its centring, for LayerNorm), as
Neuroscope and SAEDashboard show them. Residual-stream sites use the basis direction e_d; MLP
neurons use the column of the down projection they write; derived sites on the residual stream
(docs/DIRECTIONS.md) use their direction, or their SAE decoder row. Other sites (q/k/v, pre-activations) have
no direct path to the logits and get no row.
"""

from __future__ import annotations

import numpy as np
import torch

from maxact.dictionaries import loaded
from maxact.units import SITE_KINDS, SiteRef

CHUNK = 512  # directions per matmul


def _effective_unembedding(adapter) -> torch.Tensor:
    """(vocab, d_model) W_U with the final norm's scale folded in, centred for LayerNorm."""
    W_U = adapter.unembedding().detach().float()
    gamma, centres = adapter.final_norm_fold()
    W = W_U * gamma.detach().float()[None, :]
    if centres:  # LayerNorm subtracts the mean over d_model first: fold that projection in
        W = W - W.mean(1, keepdim=True)
    return W


def _top_bottom(W: torch.Tensor, directions: torch.Tensor, k: int):
    """directions: (d_model, n) -> ids/values (n, k) of the most promoted and most suppressed."""
    top_i, top_v, bot_i, bot_v = [], [], [], []
    for s in range(0, directions.shape[1], CHUNK):
        logits = directions[:, s : s + CHUNK].T @ W.T  # (c, vocab): topk along contiguous rows
        tv, ti = logits.topk(k, dim=1)
        bv, bi = logits.topk(k, dim=1, largest=False)
        top_i.append(ti), top_v.append(tv), bot_i.append(bi), bot_v.append(bv)
    cat = lambda xs: torch.cat(xs).cpu().numpy()  # noqa: E731
    return cat(top_i), cat(top_v), cat(bot_i), cat(bot_v)


def logit_effects(adapter, refs: list[SiteRef], k: int) -> dict[str, np.ndarray]:
    """Arrays with one row per unit of ``refs`` in order: top/bottom ids (int64, -1 = none) and
    values (float32, NaN = none), each (U, k)."""
    with torch.inference_mode():
        W = _effective_unembedding(adapter)
        d_model = W.shape[1]
        resid = None
        rows = []
        for ref in refs:
            width = adapter.width(ref)
            if SITE_KINDS[ref.site].logit_path == "residual":
                if resid is None:
                    resid = _top_bottom(W, torch.eye(d_model, device=W.device), k)
                rows.append(resid)
            elif SITE_KINDS[ref.site].logit_path == "decoder":  # a direction, or an SAE's decoder row
                rows.append(_top_bottom(W, loaded(ref.site).decoder_rows.to(W.device).T, k))
            elif SITE_KINDS[ref.site].logit_path == "mlp_down":
                out = adapter.mlp_out_weight(ref.layer).detach().float()  # (d_model, d_mlp)
                rows.append(_top_bottom(W, out, k))
            else:
                none_i = np.full((width, k), -1, dtype=np.int64)
                none_v = np.full((width, k), np.nan, dtype=np.float32)
                rows.append((none_i, none_v, none_i, none_v))
    names = ("logit_top_ids", "logit_top_values", "logit_bottom_ids", "logit_bottom_values")
    return {
        name: np.concatenate([r[j] for r in rows]).astype(np.int64 if "ids" in name else np.float32)
        for j, name in enumerate(names)
    }
