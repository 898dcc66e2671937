"""The embedded SmolLM2-135M: hooked sites against output_hidden_states and a hand computation."""

from __future__ import annotations

import pytest
import torch
from tiny_models import hand_sites

from maxact.capture import capture
from maxact.models import load_model
from maxact.units import SiteRef

pytestmark = pytest.mark.integration

CHECKED_BLOCKS = (0, 17)
HAND = dict(atol=1e-5, rtol=1e-5)  # float32 sums in another order than HF's kernels (seen: < 1e-5)


@pytest.fixture(scope="module")
def run():
    loaded = load_model("smollm2-135m")  # ~35 s the first time (dequantizes), then cached
    adapter = loaded.adapter
    ids = torch.randint(0, loaded.model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hidden = loaded.model(ids, output_hidden_states=True).hidden_states  # n_layers + 1 x (B, T, d)
    refs = adapter.site_refs(sites=["resid_pre", "ln_final"])
    refs += adapter.site_refs(sites=[s for s in adapter.sites if s != "ln_final"], layers=CHECKED_BLOCKS)
    return adapter, hidden, capture(adapter, ids, sorted(set(refs), key=str))


def test_residual_sites_equal_hidden_states(run):
    adapter, hidden, acts = run
    assert adapter.family == "llama" and len(hidden) == adapter.n_layers + 1
    for layer in range(adapter.n_layers):
        assert torch.equal(acts[SiteRef("resid_pre", layer)], hidden[layer])
    assert torch.equal(acts[SiteRef("ln_final", None)], hidden[-1])


@pytest.mark.parametrize("layer", CHECKED_BLOCKS)
def test_sites_equal_hand_computation(run, layer):
    adapter, hidden, acts = run
    got = {site: acts[SiteRef(site, layer)] for site in adapter.sites if site != "ln_final"}
    assert torch.equal(got["resid_post"], hidden[layer + 1])
    want = hand_sites(adapter, layer, got["resid_pre"], got["attn_out"])
    for site, expected in want.items():
        assert got[site].shape == (2, 24, adapter.width(SiteRef(site, layer)))
        torch.testing.assert_close(got[site], expected, **HAND, msg=lambda m, s=site: f"L{layer}.{s}: {m}")
