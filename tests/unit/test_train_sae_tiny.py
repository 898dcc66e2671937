"""examples/train_sae.py on a tiny random Llama: capture, a few training steps, the SAELens files,
and the TopK encoding (SAELens's: the k largest pre-activations, ReLU applied to them)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from tiny_models import VOCAB, tiny_loaded

from maxact.capture import capture
from maxact.corpus import CorpusInfo, TokenSource
from maxact.units import SiteRef

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "train_sae.py"
D_SAE, K, SEQ = 48, 4, 12


@pytest.fixture(scope="module")
def train_sae():
    spec = importlib.util.spec_from_file_location("train_sae_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _source(n_tokens: int = 600, doc_starts=(0, 250)) -> TokenSource:
    tokens = np.random.default_rng(1).integers(1, VOCAB, n_tokens).astype(np.int32)  # (n_tokens,)
    info = CorpusInfo(name="random", path="-", sha256="0" * 64, n_tokens=n_tokens, format="jsonl",
                      n_docs=len(doc_starts))
    return TokenSource(tokens, np.asarray(doc_starts, dtype=np.int64), info)


def _capture(train_sae, lm, budget=400):
    train, held = train_sae.split_held_out(_source(), 0.1)
    rng = np.random.default_rng(0)
    ref = SiteRef("resid_pre", 1)
    data = train_sae.capture_site(lm, ref, [train], [0], SEQ, budget, rng, "train")
    held_data = train_sae.capture_site(lm, ref, [held], [0], SEQ, budget, rng, "held out")
    return data, held_data


def test_split_and_windows(train_sae):
    train, held = train_sae.split_held_out(_source(), 0.1)
    assert (len(train), len(held)) == (540, 60)
    assert held.doc_starts.tolist() == [0] and train.doc_starts.tolist() == [0, 250]
    # full windows of 11 tokens from each document's start, none across the boundary at 250
    assert train_sae.window_starts(train, 11).tolist() == [11 * i for i in range(22)] + [250 + 11 * i for i in range(26)]
    assert train_sae.share_budget([100, 5000, 30], 900) == [100, 770, 30]
    assert train_sae.share_budget([1000, 1000], 900) == [450, 450]


def test_train_save_and_load_back(train_sae, tmp_path):
    lm = tiny_loaded("llama")
    data, held = _capture(train_sae, lm)
    d_in = lm.adapter.d_model
    assert data.acts.shape == (data.windows * (SEQ - 1), d_in) and len(data.token_ids) == len(data.acts)
    assert data.acts.shape[0] <= 400 and held.acts.shape[0] == 5 * (SEQ - 1)  # 60 held-out tokens: 5 windows
    # the first window's rows are the site at positions 1.. of [BOS] + that window's corpus tokens
    train, _ = train_sae.split_held_out(_source(), 0.1)
    first = next(s for s in train_sae.window_starts(train, SEQ - 1)
                 if (train.tokens[s:s + SEQ - 1] == data.token_ids[:SEQ - 1]).all())
    ids = torch.tensor([[0, *train.tokens[first:first + SEQ - 1].tolist()]])  # (1, SEQ)
    ref = SiteRef("resid_pre", 1)
    torch.testing.assert_close(data.acts[:SEQ - 1], capture(lm.adapter, ids, [ref])[ref][0, 1:])
    settings = train_sae.TrainSettings(d_sae=D_SAE, k=K, steps=6, batch_tokens=64, lr=1e-3, seed=0)
    sae = train_sae.train_topk_sae(data.acts, settings, log_every=0)
    dtype = train_sae.storage_dtype(sae, max_float32_mb=0.001)
    assert dtype == torch.float16 and train_sae.storage_dtype(sae, max_float32_mb=5) == torch.float32
    out = tmp_path / "sae"
    train_sae.save_saelens(sae, out, dtype, lm.name, "blocks.1.hook_resid_pre", {"note": "tiny"})

    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg == {"architecture": "topk", "d_in": d_in, "d_sae": D_SAE, "k": K,
                   "hook_name": "blocks.1.hook_resid_pre", "model_name": lm.name, "apply_b_dec_to_input": True,
                   "normalize_activations": "none", "dtype": "float16", "metadata": {"note": "tiny"}}
    with safe_open(out / "sae_weights.safetensors", framework="pt") as f:
        loaded = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    assert {name: tuple(t.shape) for name, t in loaded.items()} == {
        "W_enc": (d_in, D_SAE), "b_enc": (D_SAE,), "W_dec": (D_SAE, d_in), "b_dec": (d_in,)}
    assert all(t.dtype == torch.float16 for t in loaded.values())
    torch.testing.assert_close(loaded["W_dec"].float(), sae.W_dec.half().float())
    torch.testing.assert_close(loaded["W_dec"].float().norm(dim=1), torch.ones(D_SAE), atol=1e-3, rtol=0)

    figures = train_sae.held_out_figures(train_sae.stored(sae, dtype), held.acts)
    assert figures.n_tokens == len(held.acts) and 0 < figures.l0 <= K
    assert 0 <= figures.dead_latents < D_SAE and figures.fraction_variance_explained < 1


def _hand_encode(x, W_enc, b_enc, b_dec, k):
    """SAELens's TopK written out: pre, the k largest entries per row, ReLU on them, zeros elsewhere."""
    pre = (x - b_dec) @ W_enc + b_enc  # (n, d_sae)
    out = torch.zeros_like(pre)
    for row in range(len(pre)):
        order = sorted(range(pre.shape[1]), key=lambda j: -float(pre[row, j]))[:k]
        for j in order:
            out[row, j] = max(float(pre[row, j]), 0.0)
    return out


def test_topk_encoding_keeps_k(train_sae):
    gen = torch.Generator().manual_seed(3)
    d_in, n = 10, 50
    W_dec = torch.randn(D_SAE, d_in, generator=gen)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    x = torch.randn(n, d_in, generator=gen) * 3  # (n, d_in)
    b_dec = torch.randn(d_in, generator=gen)
    # b_enc: every pre-activation positive; mixed signs; mostly negative (rows with fewer than k positive)
    for b_enc in (torch.full((D_SAE,), 50.0), torch.randn(D_SAE, generator=gen), torch.randn(D_SAE, generator=gen) - 6):
        sae = train_sae.TopKSae(W_enc=W_dec.T.clone(), b_enc=b_enc, W_dec=W_dec, b_dec=b_dec, k=K)
        latents = sae.encode(x)  # (n, d_sae)
        expected = _hand_encode(x, sae.W_enc, b_enc, b_dec, K)
        torch.testing.assert_close(latents, expected, atol=1e-5, rtol=1e-5)
        positive = (sae.pre_acts(x) > 0).sum(-1)  # (n,)
        assert ((latents != 0).sum(-1) == positive.clamp(max=K)).all()
        torch.testing.assert_close(sae.reconstruct(x), latents @ W_dec + b_dec, atol=1e-4, rtol=1e-5)
        figures = train_sae.held_out_figures(sae, x)
        assert figures.l0 == pytest.approx(float(positive.clamp(max=K).float().mean()))
        assert figures.share_exactly_k == pytest.approx(float((positive >= K).float().mean()))
    assert int(positive.min()) < K  # the last b_enc left some tokens fewer than k positive pre-activations
    # with every pre-activation positive, exactly k nonzeros per token
    sae = train_sae.TopKSae(W_enc=W_dec.T.clone(), b_enc=torch.full((D_SAE,), 50.0), W_dec=W_dec, b_dec=b_dec, k=K)
    assert ((sae.encode(x) != 0).sum(-1) == K).all()
    figures = train_sae.held_out_figures(sae, x)
    assert figures.l0 == K and figures.share_exactly_k == 1.0


def test_input_scale_is_folded(train_sae):
    """Training on 10 x gives the same SAE with b_enc, b_dec and the latents 10 times larger: the
    scale that makes the mean norm sqrt(d_in) during training is folded back into the saved weights."""
    gen = torch.Generator().manual_seed(5)
    acts = torch.randn(256, 16, generator=gen) + 2  # (n, d_in)
    settings = train_sae.TrainSettings(d_sae=D_SAE, k=K, steps=4, batch_tokens=64, lr=1e-3, seed=0)
    small = train_sae.train_topk_sae(acts, settings, log_every=0)
    large = train_sae.train_topk_sae(acts * 10, settings, log_every=0)
    torch.testing.assert_close(large.W_enc, small.W_enc, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(large.W_dec, small.W_dec, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(large.b_dec, small.b_dec * 10, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(large.encode(acts * 10), small.encode(acts) * 10, atol=1e-3, rtol=1e-4)
    # and the saved SAE reads raw activations: it reconstructs them better than their mean does
    figures = train_sae.held_out_figures(small, acts)
    assert figures.fraction_variance_explained > 0
