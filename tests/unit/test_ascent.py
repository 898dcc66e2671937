"""Gradient ascent (maxact.ascent): the objective against output_hidden_states and a hand
computation, exact values of the decoded tokens, determinism, and the agreement measures."""

from __future__ import annotations

import itertools

import pytest
import torch

from maxact.ascent.gcg import GcgSettings, gcg
from maxact.ascent.objective import UnitObjective, allowed_tokens
from maxact.ascent.relax import RelaxSettings, relax
from maxact.ascent.runs import agreement, ascend
from maxact.errors import MaxactError
from maxact.units import parse_unit
from tests.tiny_models import FAMILIES, VOCAB, tiny_input_ids, tiny_loaded


def hidden(lm, ids: torch.Tensor, layer: int) -> torch.Tensor:
    """(B, T, d) hidden_states[layer] of a plain transformers forward: resid_pre of block `layer`."""
    with torch.no_grad():
        return lm.model(input_ids=ids, output_hidden_states=True).hidden_states[layer]


@pytest.mark.parametrize("family", FAMILIES)
def test_objective_is_the_unit_at_the_last_position(family):
    lm = tiny_loaded(family)
    obj = UnitObjective(lm, parse_unit("L1.resid_pre:5"))
    ids = tiny_input_ids(batch=3, seq=7)
    one_hot = torch.nn.functional.one_hot(ids, obj.W_E.shape[0]).float()  # (3, 7, V)
    torch.testing.assert_close(obj.embed(one_hot), lm.model.get_input_embeddings()(ids), rtol=0, atol=1e-6)
    want = hidden(lm, ids, 1)[:, -1, 5]  # (3,)
    torch.testing.assert_close(obj.value(obj.embed(one_hot)), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(obj.exact(ids), want, rtol=1e-5, atol=1e-5)


def test_objective_gradient_matches_finite_difference():
    lm = tiny_loaded("llama")
    obj = UnitObjective(lm, parse_unit("L0.mlp_post:3"))
    torch.manual_seed(0)
    w = torch.softmax(torch.randn(1, 4, VOCAB, dtype=torch.float64), -1).float().requires_grad_(True)
    value = obj.value(obj.embed(w))[0]
    (grad,) = torch.autograd.grad(value, w)
    direction = torch.randn_like(w)
    eps = 1e-2
    with torch.no_grad():
        fd = (obj.value(obj.embed(w + eps * direction)) - obj.value(obj.embed(w - eps * direction)))[0] / (2 * eps)
    assert float((grad * direction).sum()) == pytest.approx(float(fd), rel=2e-2, abs=1e-4)


@pytest.mark.parametrize("method", ["relax", "gumbel", "gcg"])
def test_hard_value_is_a_plain_forward_and_runs_are_deterministic(method):
    lm = tiny_loaded("llama")
    unit = parse_unit("L2.resid_pre:7")
    a = ascend(lm, unit, method, length=5, steps=6, seeds=[0, 1])
    b = ascend(lm, unit, method, length=5, steps=6, seeds=[0, 1])
    assert a.to_json()["runs"] == b.to_json()["runs"]  # same seeds, same everything (CPU)
    for run in a.runs:
        ids = torch.tensor([run["token_ids"]])
        assert ids.shape == (1, 5)
        assert run["hard_value"] == pytest.approx(float(hidden(lm, ids, 2)[0, -1, 7]), rel=1e-5, abs=1e-5)
        assert len(run["curve"]) == 6
        assert run["hard_value"] == pytest.approx(max(c["hard"] for c in run["curve"]), rel=1e-6) \
            or method == "gcg"


def test_gcg_never_goes_down_and_beats_its_start():
    lm = tiny_loaded("gpt2")
    obj = UnitObjective(lm, parse_unit("L1.mlp_post:11"))
    allowed = torch.ones(obj.W_E.shape[0], dtype=torch.bool)
    trace = gcg(obj, allowed, GcgSettings(steps=15, length=4, top_k=8, candidates=16), seed=3)
    hard = [c["hard"] for c in trace.curve]
    assert all(b >= a for a, b in itertools.pairwise(hard))
    gen = torch.Generator().manual_seed(3)
    start = torch.arange(obj.W_E.shape[0])[torch.randint(obj.W_E.shape[0], (4,), generator=gen)]
    assert trace.hard_value >= float(obj.exact(start[None])[0])
    assert trace.hard_value == pytest.approx(float(obj.exact(torch.tensor([trace.token_ids]))[0]), rel=1e-6)


def test_relax_finds_more_than_random_tokens():
    lm = tiny_loaded("llama")
    obj = UnitObjective(lm, parse_unit("L1.mlp_post:2"))
    allowed = torch.ones(obj.W_E.shape[0], dtype=torch.bool)
    trace = relax(obj, allowed, RelaxSettings(steps=25, length=3), seed=0)
    random_ids = tiny_input_ids(batch=64, seq=3, seed=5)
    assert trace.hard_value > float(obj.exact(random_ids).median())


def test_disallowed_tokens_are_never_used():
    lm = tiny_loaded("llama")
    obj = UnitObjective(lm, parse_unit("L0.resid_post:1"))
    allowed = torch.zeros(obj.W_E.shape[0], dtype=torch.bool)
    allowed[10:20] = True
    for trace in (relax(obj, allowed, RelaxSettings(steps=8, length=4), seed=1),
                  gcg(obj, allowed, GcgSettings(steps=8, length=4, top_k=5, candidates=8), seed=1)):
        assert all(10 <= t < 20 for t in trace.token_ids)


def test_agreement_by_hand():
    sets = [{1, 2, 3}, {2, 3, 4}, {9}]
    a = agreement(sets, [3, 9, 42])
    # pairs: {1,2,3}/{2,3,4} -> 2/4; {1,2,3}/{9} -> 0; {2,3,4}/{9} -> 0
    assert a["mean_jaccard"] == pytest.approx((0.5 + 0 + 0) / 3)
    assert (a["data_tokens_found"], a["data_tokens"], a["per_seed"]) == (2, 3, [1, 1, 1])
    assert agreement([{5}], [])["mean_jaccard"] == 1.0


def test_bad_requests_are_one_line_errors():
    lm = tiny_loaded("llama")
    with pytest.raises(MaxactError, match="unknown method 'adam'.*gcg"):
        ascend(lm, parse_unit("L0.mlp_post:1"), "adam", 4, 5, [0])
    with pytest.raises(MaxactError, match="out of range"):
        ascend(lm, parse_unit("L0.mlp_post:100000"), "gcg", 4, 5, [0])
    with pytest.raises(MaxactError, match="--length"):
        ascend(lm, parse_unit("L0.mlp_post:1"), "gcg", 0, 5, [0])


def test_allowed_tokens_without_tokenizer_is_every_row():
    lm = tiny_loaded("llama")
    assert allowed_tokens(lm, VOCAB).all()
