"""sample_exact against a brute-force rerun of METHOD.md on tiny random models.

The brute force is written from METHOD.md alone: for each batch draw the starts with
``np.random.default_rng(seed).integers(0, n - seq, size=batch)``, run the whole model on
``tokens[starts[:, None] + arange(seq)]``, read the site from ``output_hidden_states`` or from a
plain hook on the HF module written here (not our adapters), flatten row-major and take
``np.argmax``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from atlas_helpers import synthetic_source
from tiny_models import FAMILIES, VOCAB, tiny_loaded

from maxact.errors import MaxactError
from maxact.models.adapters.base import resolve_units
from maxact.report import show_token, tally_summary, tally_table
from maxact.sampling import SampleConfig, sample_exact
from maxact.tally import tally_winners
from maxact.units import layer_dim_unit, parse_unit

SEQ, BATCH, SAMPLES = 12, 3, 4


def token_text(token_id: int) -> str:  # tiny models have no tokenizer
    return f" t{token_id}"


@pytest.fixture(scope="module")
def loaded():
    return {family: tiny_loaded(family) for family in FAMILIES}


@pytest.fixture(scope="module")
def tokens():
    return np.random.default_rng(123).integers(0, VOCAB, size=200).astype(np.int32)  # (200,)


def config(**kw) -> SampleConfig:
    base = dict(model="tiny", corpus="synthetic", batch=BATCH, seq=SEQ, samples=SAMPLES, seed=0)
    return SampleConfig(**{**base, **kw})


# ---- brute force, from METHOD.md -----------------------------------------------------------------
def _hook_module(model, family: str, site: str, layer: int):
    """(module, reads, cut) for a plain hook: HF module layout of each family, written out here."""
    d = model.config.hidden_size
    if family == "llama":
        block = model.model.layers[layer]
        q, down = block.self_attn.q_proj, block.mlp.down_proj
        cut_q = None
    elif family == "gpt2":
        block = model.transformer.h[layer]
        q, down = block.attn.c_attn, block.mlp.c_proj
        cut_q = lambda x: x[..., :d]  # noqa: E731  fused (q, k, v)
    elif family == "gpt_neo":
        block = model.transformer.h[layer]
        q, down = block.attn.attention.q_proj, block.mlp.c_proj
        cut_q = None
    elif family == "gpt_neox":
        block = model.gpt_neox.layers[layer]
        q, down = block.attention.query_key_value, block.mlp.dense_4h_to_h
        n_heads = model.config.num_attention_heads
        # fused per head: (B, T, n_heads, 3, d_head), q is entry 0
        cut_q = lambda x: x.unflatten(-1, (n_heads, 3, d // n_heads))[..., 0, :].flatten(-2)  # noqa: E731
    else:
        raise ValueError(family)
    if site == "attn_q":
        return q, "output", cut_q
    if site == "mlp_post":
        return down, "input", None
    raise ValueError(site)


def brute_sites(model, family: str, keys, X: torch.Tensor) -> dict:
    """{(site, layer): (B, T, width) activations}, all from one full forward of the HF model."""
    got, handles = {}, []

    def keep(key, cut, x) -> None:  # returns None: a hook that returns a value replaces it
        got[key] = x if cut is None else cut(x)

    for site, layer in keys:
        if site in ("resid_pre", "ln_final"):
            continue
        module, reads, cut = _hook_module(model, family, site, layer)
        if reads == "input":
            hook = lambda m, args, k=(site, layer), c=cut: keep(k, c, args[0])  # noqa: E731
            handles.append(module.register_forward_pre_hook(hook))
        else:
            hook = lambda m, args, out, k=(site, layer), c=cut: keep(k, c, out)  # noqa: E731
            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            hidden = model(X, output_hidden_states=True).hidden_states  # n_layers + 1 x (B, T, d)
    finally:
        for h in handles:
            h.remove()
    for site, layer in keys:
        if site in ("resid_pre", "ln_final"):
            got[(site, layer)] = hidden[-1 if site == "ln_final" else layer]
    return {k: v.numpy() for k, v in got.items()}


def brute_force(model, family, tokens, units, batch, seq, samples, seed, skip_pos0=False):
    """{unit: (rows, cols, token_ids, values)} and the (samples, batch) starts."""
    rng = np.random.default_rng(seed)
    n = len(tokens)
    starts_all, wins = [], {u: [] for u in units}
    for _ in range(samples):
        starts = rng.integers(0, n - seq, size=batch)
        starts_all.append(starts)
        X = torch.from_numpy(tokens[starts[:, None] + np.arange(seq)].astype(np.int64))  # (B, T)
        acts = brute_sites(model, family, {(u.site, u.layer) for u in units}, X)
        for u in units:
            A = acts[(u.site, u.layer)][:, :, u.index]  # (B, T)
            if skip_pos0:
                A = A[:, 1:]
            i = int(np.argmax(A))  # flattened row-major, first maximum
            row, col = divmod(i, A.shape[1])
            col += 1 if skip_pos0 else 0
            wins[u].append((row, col, int(tokens[starts[row] + col]), float(A.flat[i])))
    out = {u: tuple(np.array(v) for v in zip(*w, strict=True)) for u, w in wins.items()}
    return np.stack(starts_all), out


def assert_matches_brute(lm, family, tokens, units, **kw):
    cfg = config(**kw)
    result = sample_exact(lm, synthetic_source(tokens), units, cfg, progress=False)
    starts, want = brute_force(
        lm.model, family, tokens, units, cfg.batch, cfg.seq, cfg.samples, cfg.seed, cfg.skip_pos0
    )
    np.testing.assert_array_equal(result.starts, starts)
    assert [u.unit for u in result.units] == list(units)
    for u in result.units:
        rows, cols, toks, vals = want[u.unit]
        np.testing.assert_array_equal(u.rows, rows, err_msg=str(u.unit))
        np.testing.assert_array_equal(u.cols, cols, err_msg=str(u.unit))
        np.testing.assert_array_equal(u.token_ids, toks, err_msg=str(u.unit))
        np.testing.assert_allclose(u.values, vals, rtol=1e-5, atol=1e-5, err_msg=str(u.unit))
        assert u.tally.counts.sum() == cfg.samples
    return result


# ---- against brute force -------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_units_match_brute_force(loaded, tokens, family):
    lm = loaded[family]
    n = lm.adapter.n_layers
    units = resolve_units(
        lm.adapter,
        ["L2.resid_pre:5", "L1.attn_q:17", "L0.mlp_post:40", "L0.resid_pre:63", "L1.mlp_post:0"],
    )
    units.append(layer_dim_unit(n, 9, n))  # --layer n: the final normed residual
    assert_matches_brute(lm, family, tokens, units)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_whole_site_matches_brute_force(loaded, tokens, family):
    lm = loaded[family]
    units = resolve_units(lm.adapter, ["L1.resid_pre:*", "L0.mlp_post:*"])
    assert len(units) == 64 + lm.adapter.d_mlp
    result = assert_matches_brute(lm, family, tokens, units)
    assert len(result.units) == len(units)


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
def test_skip_pos0_matches_brute_force(loaded, tokens, family):
    lm = loaded[family]
    units = resolve_units(lm.adapter, ["L0.resid_pre:*", "L1.attn_q:3"])
    result = assert_matches_brute(lm, family, tokens, units, skip_pos0=True)
    assert result.config.skip_pos0
    for u in result.units:
        assert (u.cols >= 1).all() and u.tally.pos0_wins == 0


def test_reference_defaults_shape(loaded, tokens):
    """32 windows per batch, as in the original; seq may be short for a tiny model."""
    lm = loaded["gpt2"]
    units = [parse_unit("L2.resid_pre:7")]
    assert_matches_brute(lm, "gpt2", tokens, units, batch=32, seq=8, samples=3, seed=5)


# ---- seeds ---------------------------------------------------------------------------------------
def _same(a, b):
    np.testing.assert_array_equal(a.starts, b.starts)
    for ua, ub in zip(a.units, b.units, strict=True):
        assert ua.unit == ub.unit
        for name in ("rows", "cols", "token_ids", "values"):
            np.testing.assert_array_equal(getattr(ua, name), getattr(ub, name))


def test_same_seed_identical(loaded, tokens):
    lm = loaded["llama"]
    units = resolve_units(lm.adapter, ["L1.resid_pre:*"])
    a = sample_exact(lm, synthetic_source(tokens), units, config(seed=42), progress=False)
    b = sample_exact(lm, synthetic_source(tokens), units, config(seed=42), progress=False)
    _same(a, b)
    assert a.to_json(token_text) == b.to_json(token_text)


def test_different_seeds_differ(loaded, tokens):
    lm = loaded["llama"]
    units = resolve_units(lm.adapter, ["L1.resid_pre:*"])
    a = sample_exact(lm, synthetic_source(tokens), units, config(seed=1), progress=False)
    b = sample_exact(lm, synthetic_source(tokens), units, config(seed=2), progress=False)
    assert not np.array_equal(a.starts, b.starts)
    assert any(
        not np.array_equal(ua.token_ids, ub.token_ids)
        for ua, ub in zip(a.units, b.units, strict=True)
    )


def test_no_seed_draws_one_and_records_it(loaded, tokens):
    lm = loaded["llama"]
    units = [parse_unit("L1.resid_pre:3")]
    a = sample_exact(lm, synthetic_source(tokens), units, config(seed=None), progress=False)
    assert isinstance(a.config.seed, int)
    b = sample_exact(lm, synthetic_source(tokens), units, config(seed=a.config.seed), progress=False)
    _same(a, b)


def test_config_records_corpus_size(loaded, tokens):
    result = sample_exact(
        loaded["llama"], synthetic_source(tokens), [parse_unit("L0.resid_pre:0")], config(), progress=False
    )
    assert result.config.n_tokens == len(tokens) and result.config.source == "exact"


# ---- ties and position 0 -------------------------------------------------------------------------
def test_constant_corpus_ties_go_to_the_first_position(loaded):
    """Llama's L0.resid_pre is the token embedding (no position term): one token -> all equal."""
    lm = loaded["llama"]
    tokens = np.full(100, 7, dtype=np.int32)
    units = resolve_units(lm.adapter, ["L0.resid_pre:*"])
    result = sample_exact(lm, synthetic_source(tokens), units, config(), progress=False)
    for u in result.units:
        assert (u.rows == 0).all() and (u.cols == 0).all() and (u.token_ids == 7).all()
        assert u.tally.pos0_wins == SAMPLES and u.tally.distinct == 1
    skipped = sample_exact(lm, synthetic_source(tokens), units, config(skip_pos0=True), progress=False)
    for u in skipped.units:
        assert (u.rows == 0).all() and (u.cols == 1).all() and u.tally.pos0_wins == 0


def test_ties_between_repeated_tokens_go_to_the_first_in_row_major_order(loaded):
    lm = loaded["llama"]
    emb = lm.model.get_input_embeddings().weight.detach().numpy()  # (vocab, d_model)
    dim = 11
    lo, hi = (int(t) for t in np.argsort(emb[:, dim])[[0, -1]])  # lowest and highest value at dim
    tokens = np.where(np.random.default_rng(0).random(300) < 0.1, hi, lo).astype(np.int32)
    result = sample_exact(
        lm, synthetic_source(tokens), [parse_unit(f"L0.resid_pre:{dim}")], config(samples=20), progress=False
    )
    u = result.units[0]
    for b, starts in enumerate(result.starts):
        X = tokens[starts[:, None] + np.arange(SEQ)]  # (B, T)
        if not (X == hi).any():
            continue  # every value ties: the first position wins
        first = int(np.argmax((X == hi).ravel()))  # first occurrence of the top token
        assert (u.rows[b], u.cols[b]) == divmod(first, SEQ)
        assert u.token_ids[b] == hi and u.values[b] == pytest.approx(emb[hi, dim], abs=1e-6)


def test_pos0_wins_and_summary(loaded):
    lm = loaded["llama"]
    tokens = np.full(50, 3, dtype=np.int32)
    result = sample_exact(lm, synthetic_source(tokens), [parse_unit("L0.resid_pre:1")], config(), progress=False)
    tally = result.units[0].tally
    assert tally.pos0_wins == SAMPLES
    text = tally_summary(tally)
    assert f"wins at window position 0: {SAMPLES} (100.0%)" in text
    assert "distinct winners: 1" in text and "--skip-pos0" in text


# ---- tally ---------------------------------------------------------------------------------------
def test_tally_counts_order_and_shares():
    token_ids = np.array([5, 9, 5, 2, 9, 5, 2, 7])
    cols = np.array([0, 3, 0, 1, 2, 4, 0, 0])
    tally = tally_winners(token_ids, cols, np.zeros(8, dtype=np.float32))
    assert tally.token_ids.tolist() == [5, 2, 9, 7]  # most wins first, ties: smaller id first
    assert tally.counts.tolist() == [3, 2, 2, 1]
    assert tally.counts.sum() == tally.n_batches == 8
    assert tally.distinct == 4 and tally.pos0_wins == 4 and tally.n_missed == 0
    np.testing.assert_allclose(tally.shares, [3 / 8, 2 / 8, 2 / 8, 1 / 8])
    records = tally.to_records(token_text)
    assert records[0] == {"token_id": 5, "token": " t5", "count": 3, "share": 3 / 8}


def test_tally_table_shows_token_with_its_space_and_id():
    tally = tally_winners(np.array([4, 4, 8]), np.array([1, 2, 3]), np.zeros(3, dtype=np.float32))
    table = tally_table(tally, token_text)
    assert '      2   66.7%  " t4" (id 4)' in table
    assert '      1   33.3%  " t8" (id 8)' in table
    assert show_token(" before") == '" before"' and show_token("\n") == '"\\n"'


def test_tally_counts_sum_to_samples(loaded, tokens):
    lm = loaded["gpt_neo"]
    units = resolve_units(lm.adapter, ["L1.mlp_post:*"])
    result = sample_exact(lm, synthetic_source(tokens), units, config(samples=7), progress=False)
    for u in result.units:
        assert u.tally.counts.sum() == 7 and u.tally.n_batches == 7
        assert u.tally.pos0_wins == int((u.cols == 0).sum())
        assert u.tally.distinct == len(set(u.token_ids.tolist()))


# ---- --json shape --------------------------------------------------------------------------------
def test_to_json_shape(loaded, tokens):
    lm = loaded["llama"]
    units = [parse_unit("L2.resid_pre:5"), parse_unit("L1.attn_q:20")]
    result = sample_exact(
        lm, synthetic_source(tokens), units, config(batch=32, seq=8, samples=3, seed=9), progress=False
    )
    obj = result.to_json(token_text)
    assert json.loads(json.dumps(obj)) == obj  # plain JSON types only
    # one shape whatever the number of units: the config and the starts once, then each unit
    assert set(obj) == {"config", "starts", "units"}
    cfg = obj["config"]
    assert {k: cfg[k] for k in ("model", "corpus", "batch", "seq", "samples", "seed")} == dict(
        model="tiny", corpus="synthetic", batch=32, seq=8, samples=3, seed=9
    )
    assert cfg["n_tokens"] == len(tokens) and cfg["skip_pos0"] is False
    assert len(obj["starts"]) == 3
    for b, starts in enumerate(obj["starts"]):
        assert len(starts) == 32 and all(type(s) is int for s in starts)
        assert all(0 <= s < len(tokens) - 8 for s in starts)
        assert starts == result.starts[b].tolist()
    assert [o["unit"] for o in obj["units"]] == ["L2.resid_pre:5", "L1.attn_q:20"]
    for unit_obj, u in zip(obj["units"], result.units, strict=True):
        # the documented keys, plus the two summary numbers that the terminal report prints
        assert {"unit", "winners", "tally"} <= set(unit_obj)
        assert set(unit_obj) - {"unit", "winners", "tally"} <= {"distinct", "pos0_wins"}
        assert len(unit_obj["winners"]) == 3
        for b, w in enumerate(unit_obj["winners"]):
            assert set(w) == {"row", "col", "token_id", "value"}
            assert [type(w[k]) for k in ("row", "col", "token_id", "value")] == [
                int,
                int,
                int,
                float,
            ]
            assert (w["row"], w["col"], w["token_id"]) == (u.rows[b], u.cols[b], u.token_ids[b])
            assert w["token_id"] == tokens[obj["starts"][b][w["row"]] + w["col"]]
        assert sum(t["count"] for t in unit_obj["tally"]) == 3
        for t in unit_obj["tally"]:
            assert set(t) == {"token_id", "token", "count", "share"}
            assert t["token"] == token_text(t["token_id"]) and t["share"] == t["count"] / 3


def test_to_json_has_the_same_shape_for_one_unit(loaded, tokens):
    lm = loaded["llama"]
    one = sample_exact(lm, synthetic_source(tokens), [parse_unit("L2.resid_pre:5")], config(), progress=False).to_json(token_text)
    two = sample_exact(lm, synthetic_source(tokens), [parse_unit("L2.resid_pre:5"), parse_unit("L0.resid_pre:1")], config(),
                       progress=False).to_json(token_text)
    assert set(one) == set(two) == {"config", "starts", "units"} and len(one["units"]) == 1
    assert one["starts"] == two["starts"] and one["units"][0] == two["units"][0]


# ---- bad input -----------------------------------------------------------------------------------
def test_corpus_shorter_than_one_window(loaded):
    tokens = np.arange(12, dtype=np.int32)
    with pytest.raises(
        MaxactError, match=r"has 12 tokens, too few for --seq 12 \(it needs at least 13\)"
    ):
        sample_exact(
            loaded["llama"], synthetic_source(tokens), [parse_unit("L0.resid_pre:0")], config(), progress=False
        )
    # one token more than a window is enough: every start is 0
    result = sample_exact(
        loaded["llama"],
        synthetic_source(np.arange(13, dtype=np.int32)),
        [parse_unit("L0.resid_pre:0")],
        config(),
        progress=False,
    )
    assert (result.starts == 0).all()


# ---- the Python API ------------------------------------------------------------------------------
def test_maxact_sample_stays_the_function_after_any_import():
    """`maxact.sample` is the API function even once every submodule has been imported (a submodule
    named `sample` used to replace it: TypeError: 'module' object is not callable)."""
    code = ("import maxact, maxact.api, maxact.sampling, maxact.cli, maxact.commands.sample_cmd\n"
            "import pkgutil\n"
            "names = {m.name for m in pkgutil.iter_modules(maxact.__path__)}\n"
            "assert not names & set(maxact._API), names & set(maxact._API)\n"
            "assert maxact.sample is maxact.api.sample and callable(maxact.sample)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.fixture(scope="module")
def folder_lm(tmp_path_factory):
    """The tiny Llama with its word-level tokenizer, loaded as a user would, and a 400-word corpus."""
    from atlas_helpers import save_tiny_folder, write_word_corpus

    import maxact

    tmp = tmp_path_factory.mktemp("api")
    return maxact.load_model(save_tiny_folder(tmp / "model")), write_word_corpus(tmp / "words.txt", 400)


def test_api_takes_a_corpus_name_or_path(folder_lm):
    import maxact

    lm, path = folder_lm
    kw = dict(batch=2, seq=8, samples=3, seed=4, progress=False)
    by_path = maxact.sample(lm, path, "L1.resid_pre:3", **kw)
    by_corpus = maxact.sample(lm, maxact.load_corpus(path), ["L1.resid_pre:3"], **kw)
    by_source = maxact.sample(lm, maxact.load_source(path, lm.tokenizer), ["L1.resid_pre:3"], **kw)
    assert by_path.to_json(lm.token_text) == by_corpus.to_json(lm.token_text) == by_source.to_json(lm.token_text)
    assert by_path.config.n_tokens == 400 and by_path.config.corpus == "words"


@pytest.mark.parametrize(
    "change, expected",
    [
        (dict(lm=None), "lm must be a model from maxact.load_model(...), got NoneType"),
        (dict(corpus=123), "corpus must come from maxact.load_corpus(...)"),
        (dict(corpus="no-such-book"), "unknown corpus 'no-such-book'"),
        (dict(corpus=None), "corpus must come from maxact.load_corpus(...)"),
        (dict(units=[]), "units is empty"),
        (dict(units=[3]), "units must be a list of unit ids"),
        (dict(units=["L9.resid_pre:0"]), "block 9 in L9.resid_pre is out of range"),
        (dict(seed=-1), "seed must be 0 or more, got -1"),
        (dict(seed=1.5), "seed must be a whole number, got float 1.5"),
        (dict(batch=-1), "batch must be at least 1, got -1"),
        (dict(batch=True), "batch must be a whole number, got bool True"),
        (dict(seq="8"), "seq must be a whole number, got str '8'"),
        (dict(samples=0), "samples must be at least 1, got 0"),
        (dict(skip_pos0="no"), "skip_pos0 must be True or False"),
    ],
)
def test_api_refuses_bad_arguments_in_one_line(folder_lm, change, expected):
    import maxact

    lm, path = folder_lm
    kw = dict(lm=lm, corpus=path, units=["L1.resid_pre:3"], batch=2, seq=8, samples=2, seed=0, progress=False)
    with pytest.raises(MaxactError) as err:
        maxact.sample(**{**kw, **change})
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_api_tally_frame_and_plot_refuse_bad_arguments(folder_lm, tmp_path):
    import maxact

    lm, path = folder_lm
    result = maxact.sample(lm, path, ["L1.resid_pre:3"], batch=2, seq=8, samples=2, seed=0, progress=False)
    with pytest.raises(MaxactError, match=r"unit 'L0.resid_pre:1' is not in this result; its units: L1.resid_pre:3"):
        maxact.tally_frame(result, lm, "L0.resid_pre:1")
    with pytest.raises(MaxactError, match="result must come from maxact.sample"):
        maxact.tally_frame(None, lm, "L1.resid_pre:3")
    with pytest.raises(MaxactError, match="is a folder"):
        maxact.plot_sample(result, lm, tmp_path)
    assert maxact.plot_sample(result, lm, tmp_path / "w.png") == 1
    assert list(maxact.tally_frame(result, lm, "L1.resid_pre:3").columns) == ["token_id", "token", "count", "share"]


def test_api_load_model_refuses_bad_arguments(tmp_path):
    import maxact

    with pytest.raises(MaxactError, match="model must be a preset name, a folder, a .gguf file or a hub id, got NoneType"):
        maxact.load_model(None)
    with pytest.raises(MaxactError, match="device 'tpu' is not a device maxact can use; valid devices: cpu, cuda"):
        maxact.load_model(str(tmp_path), device="tpu")
