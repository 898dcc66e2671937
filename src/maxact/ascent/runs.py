"""Several seeds of one method, and how their answers compare with each other and with real text.

agreement.mean_jaccard: mean over pairs of seeds of |A ∩ B| / |A ∪ B| of their token-id sets (1.0
with one seed). agreement.data_tokens_found: how many of the data-sampling top tokens appear in at
least one seed's optimised input, of how many; per_seed: the same count for each seed.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import torch

from maxact.ascent.gcg import GcgSettings, gcg
from maxact.ascent.objective import UnitObjective, allowed_tokens
from maxact.ascent.relax import RelaxSettings, RunTrace, relax
from maxact.errors import MaxactError, choices_text
from maxact.units import UnitId

METHODS = ("relax", "gumbel", "gcg")  # relax: softmax + Adam; gumbel: the same with Gumbel noise


@dataclass(frozen=True)
class DataReference:
    """What data sampling found for the unit: its maximum and its top tokens, and where from."""

    data_max: float
    top_token_ids: list[int]
    source: str  # e.g. "atlas /path (every token of looking-glass)" or "exact sample of 20 batches"


@dataclass
class AscentResult:
    unit: str
    method: str
    length: int
    steps: int
    runs: list[dict]
    data: DataReference | None
    agreement: dict
    seconds: float
    stopped: bool = False  # cancelled or out of time: fewer seeds or steps than asked
    token_text: object = field(repr=False, default=None)

    def to_json(self) -> dict:
        d = {"unit": self.unit, "method": self.method, "length": self.length, "steps": self.steps,
             "runs": self.runs, "data_max": None, "data_top_tokens": [], "agreement": self.agreement,
             "seconds": round(self.seconds, 2), "stopped": self.stopped}
        if self.data is not None:
            d["data_max"] = self.data.data_max
            d["data_top_tokens"] = [{"token_id": t, "token": self.token_text(t)} for t in self.data.top_token_ids]
            d["data_source"] = self.data.source
        return d


def agreement(token_sets: list[set[int]], data_tokens: list[int]) -> dict:
    pairs = list(itertools.combinations(token_sets, 2))
    jac = [len(a & b) / len(a | b) for a, b in pairs] if pairs else [1.0]
    data = set(data_tokens)
    union = set().union(*token_sets) if token_sets else set()
    return {"mean_jaccard": sum(jac) / len(jac), "data_tokens_found": len(data & union),
            "data_tokens": len(data), "per_seed": [len(data & s) for s in token_sets]}


def ascend(lm, unit: UnitId, method: str, length: int, steps: int, seeds: list[int],
           data: DataReference | None = None, should_stop=None) -> AscentResult:
    """Run ``method`` from each seed; ``should_stop()`` (optional) is polled before every step, and a
    stopped run keeps what it found so far (``stopped`` in the result)."""
    if method not in METHODS:
        raise MaxactError(f"unknown method {method!r}; valid methods: {choices_text(METHODS)}")
    if length < 1:
        raise MaxactError(f"--length must be at least 1 token, got {length}")
    if steps < 1:
        raise MaxactError(f"--steps must be at least 1, got {steps}")
    if not seeds:
        raise MaxactError("give at least one seed")
    objective = UnitObjective(lm, unit)
    allowed = allowed_tokens(lm, objective.W_E.shape[0])
    t0 = time.perf_counter()
    runs, sets = [], []
    for seed in seeds:
        if should_stop is not None and should_stop():
            break
        torch.manual_seed(seed)
        if method == "gcg":
            trace: RunTrace = gcg(objective, allowed, GcgSettings(steps, length), seed, should_stop)
        else:
            trace = relax(objective, allowed, RelaxSettings(steps, length, gumbel=method == "gumbel"), seed,
                          should_stop)
        if not trace.curve:  # stopped before its first step
            break
        text = lm.tokenizer.decode(trace.token_ids, clean_up_tokenization_spaces=False) if lm.tokenizer else ""
        runs.append({"seed": seed, "token_ids": trace.token_ids,
                     "tokens": [lm.token_text(t) for t in trace.token_ids] if lm.tokenizer else [],
                     "text": text, "soft_value": trace.soft_value, "hard_value": trace.hard_value,
                     "curve": trace.curve})
        sets.append(set(trace.token_ids))
    agree = agreement(sets, data.top_token_ids if data else [])
    stopped = len(runs) < len(seeds) or any(len(r["curve"]) < steps for r in runs)
    return AscentResult(str(unit), method, length, steps, runs, data, agree, time.perf_counter() - t0,
                        stopped=stopped, token_text=lm.token_text)
