"""Continuous relaxation: each input position is a softmax over the vocabulary, optimised with Adam.

logits (L, V) start as seeded Gaussian noise; at step t the input is softmax((logits + g) / tau_t)
@ W_E, with tau annealed geometrically from ``tau_start`` to ``tau_end`` and g Gumbel noise when
``gumbel`` is set (else 0). The loss is minus the unit's activation. After every step the argmax
tokens are evaluated exactly (a plain forward); the run returns the best such decoding seen, its
exact value, and the final soft objective.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from maxact.ascent.objective import UnitObjective
from maxact.config import ASCENT


@dataclass(frozen=True)
class RelaxSettings:
    steps: int
    length: int
    lr: float = ASCENT.lr
    tau_start: float = ASCENT.tau_start
    tau_end: float = ASCENT.tau_end
    gumbel: bool = False


@dataclass(frozen=True)
class RunTrace:
    """One seed's result (curve shorter than the steps asked when the run was stopped)."""

    token_ids: list[int]
    soft_value: float  # the objective of the relaxed input at the last step
    hard_value: float  # the exact activation of token_ids (a plain forward)
    curve: list[dict]  # per step: {"step", "soft", "hard"}


def relax(objective: UnitObjective, allowed: torch.Tensor, settings: RelaxSettings, seed: int,
          should_stop=None) -> RunTrace:
    """One seed; ``should_stop()`` (optional) is polled before every step: a stopped run keeps its steps so far."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    V = objective.W_E.shape[0]
    block = torch.where(allowed, 0.0, float("-inf")).to(objective.device)  # (V,)
    logits = torch.randn(settings.length, V, generator=gen).to(objective.device)  # (L, V)
    logits.requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=settings.lr)
    ratio = settings.tau_end / settings.tau_start
    curve, best_ids, best_hard, soft = [], None, float("-inf"), float("nan")
    for step in range(settings.steps):
        if should_stop is not None and should_stop():
            break
        tau = settings.tau_start * ratio ** (step / max(settings.steps - 1, 1))
        noise = 0.0
        if settings.gumbel:
            u = torch.rand(settings.length, V, generator=gen).clamp_(1e-10, 1 - 1e-10).to(objective.device)
            noise = -torch.log(-torch.log(u))
        probs = torch.softmax((logits + noise) / tau + block, dim=-1)  # (L, V)
        value = objective.value(objective.embed(probs[None]))[0]
        opt.zero_grad(set_to_none=True)
        (-value).backward()
        opt.step()
        soft = float(value.detach())
        with torch.no_grad():
            ids = (logits.detach() + block).argmax(-1)  # (L,)
            hard = float(objective.exact(ids[None])[0])
        if hard > best_hard:
            best_hard, best_ids = hard, ids.tolist()
        curve.append({"step": step, "soft": soft, "hard": hard})
    return RunTrace(best_ids, soft, best_hard, curve)
