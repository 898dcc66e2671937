"""Greedy coordinate gradient: a discrete search guided by the gradient of the one-hot input.

Start from seeded random tokens. Each step takes the gradient of the unit's activation with respect
to the one-hot input matrix (L, V); for each position the ``top_k`` tokens with the largest gradient
are the promising swaps. ``candidates`` single-token swaps are drawn among them (seeded), every one
is evaluated exactly in one batched forward, and the best replaces the current input when it is
higher. The curve is the exact value of the current input after each step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from maxact.ascent.objective import UnitObjective
from maxact.ascent.relax import RunTrace
from maxact.config import ASCENT


@dataclass(frozen=True)
class GcgSettings:
    steps: int
    length: int
    top_k: int = ASCENT.top_k
    candidates: int = ASCENT.candidates


def gcg(objective: UnitObjective, allowed: torch.Tensor, settings: GcgSettings, seed: int,
        should_stop=None) -> RunTrace:
    """One seed; ``should_stop()`` (optional) is polled before every step: a stopped run keeps its steps so far."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    V = objective.W_E.shape[0]
    pool = allowed.nonzero().squeeze(1)  # (A,) ids that may be used
    ids = pool[torch.randint(len(pool), (settings.length,), generator=gen)].to(objective.device)  # (L,)
    current = float(objective.exact(ids[None])[0])
    block = torch.where(allowed, 0.0, float("-inf")).to(objective.device)  # (V,)
    curve = []
    for step in range(settings.steps):
        if should_stop is not None and should_stop():
            break
        one_hot = torch.zeros(settings.length, V, device=objective.device)
        one_hot[torch.arange(settings.length), ids] = 1.0
        one_hot.requires_grad_(True)
        value = objective.value(objective.embed(one_hot[None]))[0]
        (grad,) = torch.autograd.grad(value, one_hot)  # (L, V)
        top = (grad + block).topk(min(settings.top_k, len(pool)), dim=-1).indices.cpu()  # (L, k)
        where = torch.randint(settings.length, (settings.candidates,), generator=gen)  # (C,)
        pick = torch.randint(top.shape[1], (settings.candidates,), generator=gen)  # (C,)
        trial = ids.cpu().repeat(settings.candidates, 1)  # (C, L)
        trial[torch.arange(settings.candidates), where] = top[where, pick]
        with torch.no_grad():
            values = objective.exact(trial.to(objective.device)).cpu()  # (C,)
        best = int(values.argmax())
        if float(values[best]) > current:
            current, ids = float(values[best]), trial[best].to(objective.device)
        curve.append({"step": step, "soft": float(value.detach()), "hard": current})
    return RunTrace(ids.tolist(), current, current, curve)
