"""Derived sites (docs/DIRECTIONS.md): direction sets and SAE latents as units, checked against
numbers computed here by hand from ``output_hidden_states`` of a tiny Llama:

- the encoders (directions; SAE standard, jumprelu, topk, with and without apply_b_dec_to_input);
- an atlas with --directions and --sae through the CLI: every derived unit's top-K values and
  positions by brute force, logit effects through the direction / decoder row, nearest neurons by
  cosine, density (frac_pos), the manifest's record, show / find / export / sample;
- bad input: one line naming the bad value.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from atlas_helpers import error_line, run_cli, save_tiny_folder, write_word_corpus
from safetensors.torch import save_file

D = 64  # d_model of the tiny Llama
LAYER = 2  # the base site: L2.resid_pre = hidden_states[2]


def write_sae(folder, arch="topk", d_sae=24, k=3, seed=1, apply_b_dec=True, hook="blocks.2.hook_resid_pre",
              in_metadata=False, **cfg_extra):
    g = torch.Generator().manual_seed(seed)
    t = {"W_enc": torch.randn(D, d_sae, generator=g) * 0.3, "b_enc": torch.randn(d_sae, generator=g) * 0.1,
         "W_dec": torch.randn(d_sae, D, generator=g), "b_dec": torch.randn(D, generator=g) * 0.2}
    if arch == "jumprelu":
        t["threshold"] = torch.rand(d_sae, generator=g) * 0.5
    folder.mkdir(parents=True, exist_ok=True)
    save_file(t, str(folder / "sae_weights.safetensors"))
    cfg = {"architecture": arch, "d_in": D, "d_sae": d_sae, "apply_b_dec_to_input": apply_b_dec,
           "normalize_activations": "none", **cfg_extra}
    if arch == "topk":
        cfg["k"] = k
    if in_metadata:
        cfg["metadata"] = {"hook_name": hook}
    else:
        cfg["hook_name"] = hook
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return t


def hand_encode(x, t, arch, k=3, apply_b_dec=True):
    """SAELens's encoders, written out: x (N, D) float64."""
    W_enc, b_enc, b_dec = (t[n].double().numpy() for n in ("W_enc", "b_enc", "b_dec"))
    pre = (x - b_dec if apply_b_dec else x) @ W_enc + b_enc
    if arch == "standard":
        return np.maximum(pre, 0)
    if arch == "jumprelu":
        return np.where(pre > t["threshold"].double().numpy(), np.maximum(pre, 0), 0.0)
    out = np.zeros_like(pre)
    top = np.argsort(-pre, axis=1)[:, :k]
    rows = np.arange(len(pre))[:, None]
    out[rows, top] = np.maximum(pre[rows, top], 0)
    return out


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("derived")
    model = save_tiny_folder(root / "model")
    corpus = write_word_corpus(root / "corpus.txt", n_words=600, seed=3)
    rng = np.random.default_rng(0)
    dirs = rng.standard_normal((5, D)).astype(np.float32)
    np.save(root / "dirs.npy", dirs)
    sae_t = write_sae(root / "sae", arch="topk", k=3)
    return root, model, corpus, dirs, sae_t


def hidden(model_dir, corpus, seq):
    """hidden_states[LAYER] of every atlas window, and the corpus positions (float64 numpy)."""
    from transformers import AutoModelForCausalLM

    from maxact.corpus import open_corpus, tokenize_corpus
    from maxact.models.loading import load_model

    lm = load_model(model_dir, device="cpu")
    tokens = tokenize_corpus(open_corpus(corpus), lm.tokenizer, None).tokens.astype(np.int64)
    hf = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    n = len(tokens) // seq * seq
    acts = []
    with torch.no_grad():
        for s in range(0, len(tokens), seq):
            ids = torch.from_numpy(tokens[s : s + seq])[None]
            acts.append(hf(ids, output_hidden_states=True).hidden_states[LAYER][0].double().numpy())
    assert n <= len(tokens)
    return np.concatenate(acts), tokens, hf


@pytest.fixture(scope="module")
def atlas_case(case, tmp_path_factory):
    root, model, corpus, dirs, sae_t = case
    out = tmp_path_factory.mktemp("atlas") / "a"
    r = run_cli("atlas", "--model", model, "--corpus", corpus, "--out", out, "--seq", 16, "--k", 6,
                "--sites", "resid_pre,mlp_post", "--max-types", 20, "--ref-samples", 50,
                "--directions", f"dirs={root / 'dirs.npy'}@L{LAYER}.resid_pre", "--sae", f"feat={root / 'sae'}")
    assert r.exit_code == 0, r.output
    x, tokens, hf = hidden(model, corpus, 16)
    return out, x, tokens, hf


def test_encoders_match_hand_computation(tmp_path):
    from maxact.derived import SaeOption
    from maxact.dictionaries import load_sae

    x = torch.randn(50, D, generator=torch.Generator().manual_seed(5))
    for arch in ("standard", "jumprelu", "topk"):
        for apply in (True, False):
            folder = tmp_path / f"{arch}-{apply}"
            t = write_sae(folder, arch=arch, apply_b_dec=apply, in_metadata=apply)
            d = load_sae(SaeOption(f"s={folder}"))
            got = d.encode(x[None])[0].double().numpy()  # (50, d_sae)
            want = hand_encode(x.double().numpy(), t, arch, apply_b_dec=apply)
            np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"{arch} apply_b_dec={apply}")
            if arch == "topk":
                assert ((got != 0).sum(1) <= 3).all()


def test_encoding_is_chunked_without_changing_values(tmp_path, monkeypatch):
    from maxact import dictionaries
    from maxact.config import DerivedDefaults
    from maxact.derived import SaeOption

    write_sae(tmp_path / "s", arch="standard")
    d = dictionaries.load_sae(SaeOption(f"s={tmp_path / 's'}"))
    x = torch.randn(3, 7, D)
    whole = d.encode(x)
    monkeypatch.setattr(dictionaries, "DERIVED", DerivedDefaults(encode_rows=4))
    # the same numbers up to float32 rounding (BLAS may block a 4-row product differently)
    np.testing.assert_allclose(d.encode(x).numpy(), whole.numpy(), rtol=1e-5, atol=1e-5)
    assert whole.shape == (3, 7, 24)


def test_atlas_derived_top_values_by_brute_force(case, atlas_case):
    from maxact.store.reader import Atlas

    root, _, _, dirs, sae_t = case
    out, x, tokens, _ = atlas_case
    atlas = Atlas(out)
    n = len(x)
    pos_in_window = np.arange(n) % 16
    for name, acts in (("dirs", x @ dirs.astype(np.float64).T), ("feat", hand_encode(x, sae_t, "topk"))):
        site = atlas.manifest.site(name)
        assert site is not None and site.layer is None and site.width == acts.shape[1]
        top_v = atlas["top_values.npy"][site.rows]  # (width, K) away from window position 0
        top_p = atlas["top_positions.npy"][site.rows]
        masked = np.where(pos_in_window[:, None] > 0, acts, -np.inf)  # (n, width)
        for i in range(site.width):
            want = np.sort(masked[:, i])[::-1][:6]
            np.testing.assert_allclose(top_v[i], want, rtol=1e-4, atol=1e-4, err_msg=f"{name}:{i}")
            np.testing.assert_allclose(acts[top_p[i], i], top_v[i], rtol=1e-4, atol=1e-4)
        stats = atlas["stats.npy"][site.rows]
        np.testing.assert_allclose(stats["frac_pos"], (acts > 0).mean(0), atol=1e-12)
        np.testing.assert_allclose(stats["mean"], acts.mean(0), rtol=1e-4, atol=1e-5)


def test_manifest_records_the_derived_sites(case, atlas_case):
    import hashlib

    root = case[0]
    out = atlas_case[0]
    manifest = json.loads((out / "manifest.json").read_text())
    by_name = {d["name"]: d for d in manifest["derived"]}
    assert by_name["dirs"]["sha256"] == hashlib.sha256((root / "dirs.npy").read_bytes()).hexdigest()
    assert by_name["dirs"]["base"] == f"L{LAYER}.resid_pre" and by_name["dirs"]["width"] == 5
    assert by_name["feat"]["architecture"] == "topk" and by_name["feat"]["k"] == 3
    assert by_name["feat"]["sha256"] == hashlib.sha256((root / "sae" / "sae_weights.safetensors").read_bytes()).hexdigest()
    assert [s["name"] for s in manifest["sites"]][-2:] == ["dirs", "feat"]
    config = json.loads((out / "config.json").read_text())
    assert "dirs" in config["sites"] and "feat" in config["sites"]


def test_logit_effects_through_the_direction(case, atlas_case):
    from maxact.store.reader import Atlas

    root, _, _, dirs, sae_t = case
    out, _, _, hf = atlas_case
    atlas = Atlas(out)
    W_U = hf.lm_head.weight.detach().double().numpy()  # (vocab, D)
    gamma = hf.model.norm.weight.detach().double().numpy()
    for name, rows in (("dirs", dirs.astype(np.float64)), ("feat", sae_t["W_dec"].double().numpy())):
        site = atlas.manifest.site(name)
        logits = rows @ (W_U * gamma).T  # (width, vocab)
        top_ids = atlas["logit_top_ids.npy"][site.rows]
        top_values = atlas["logit_top_values.npy"][site.rows]
        L = top_ids.shape[1]
        for i in range(site.width):
            want = np.argsort(-logits[i])[:L]
            np.testing.assert_allclose(top_values[i], logits[i][want], rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(logits[i][top_ids[i]], logits[i][want], rtol=1e-4, atol=1e-4)
        bottom = atlas["logit_bottom_values.npy"][site.rows]
        np.testing.assert_allclose(bottom[:, 0], logits.min(1), rtol=1e-4, atol=1e-4)


def test_nearest_neurons_by_cosine(case, atlas_case):
    from maxact.store.reader import Atlas

    root, _, _, dirs, sae_t = case
    out, _, _, hf = atlas_case
    atlas = Atlas(out)
    # L2.resid_pre: the MLP neurons of blocks 0 and 1 write into it (down_proj columns)
    cands, names = [], []
    for layer in range(LAYER):
        w = hf.model.layers[layer].mlp.down_proj.weight.detach().double().numpy()  # (D, d_mlp)
        cands.append(w / np.linalg.norm(w, axis=0))
        names += [f"L{layer}.mlp_post:{i}" for i in range(w.shape[1])]
    C = np.concatenate(cands, 1)
    rows = dirs.astype(np.float64)
    cos = (rows / np.linalg.norm(rows, axis=1, keepdims=True)) @ C  # (5, m)
    ids = atlas["near_dirs_units.npy"]
    got = atlas["near_dirs_cosines.npy"]
    assert ids.shape == got.shape == (5, 8)
    for i in range(5):
        order = np.argsort(-np.abs(cos[i]))[:8]
        assert list(ids[i]) == [names[j] for j in order]
        np.testing.assert_allclose(got[i], cos[i][order], atol=1e-5)


def test_show_find_export_and_unit_page(atlas_case, tmp_path):
    out = atlas_case[0]
    r = run_cli("show", out, "feat:2", "--json")
    assert r.exit_code == 0, r.output
    page = json.loads(r.stdout)
    assert page["unit"] == "feat:2"
    assert page["derived"]["kind"] == "sae" and page["derived"]["base"] == f"L{LAYER}.resid_pre"
    assert len(page["derived"]["nearest_neurons"]) == 8
    assert page["derived"]["density"] == pytest.approx(page["stats"]["frac_pos"])
    r = run_cli("show", out, "dirs:4")
    assert r.exit_code == 0, r.output and "dirs:4" in r.stdout
    from maxact.store.reader import Atlas

    tracked = Atlas(out).token_text(int(Atlas(out)["tuning_token_ids.npy"][0]))
    r = run_cli("find", out, "--token", tracked, "--site", "feat", "--json")
    assert r.exit_code == 0, r.output
    assert all(u["unit"].startswith("feat:") for u in json.loads(r.stdout)["units"])
    r = run_cli("export", out, "--parquet", tmp_path / "pq")
    assert r.exit_code == 0, r.output
    import pyarrow.parquet as pq

    units = pq.read_table(tmp_path / "pq" / "units.parquet").column("unit").to_pylist()
    assert "feat:2" in units and "dirs:4" in units


def test_sample_exact_on_a_direction(case, atlas_case):
    root, model, corpus, dirs, _ = case
    tokens = atlas_case[2]
    r = run_cli("sample", "--model", model, "--corpus", corpus, "--unit", "dirs:1", "--batch", 4,
                "--seq", 16, "--samples", 5, "--seed", 3, "--json", root / "s.json",
                "--directions", f"dirs={root / 'dirs.npy'}@L{LAYER}.resid_pre")
    assert r.exit_code == 0, r.output
    result = json.loads((root / "s.json").read_text())
    unit = result["units"][0]
    assert unit["unit"] == "dirs:1"
    # each winner's value is the direction's dot product with hidden_states[2] in its own window
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model).eval()
    for b, w in enumerate(unit["winners"]):
        start = result["starts"][b][w["row"]]
        ids = torch.from_numpy(tokens[start : start + 16])[None]
        with torch.no_grad():
            h = hf(ids, output_hidden_states=True).hidden_states[LAYER][0, w["col"]].double().numpy()
        assert h @ dirs[1].astype(np.float64) == pytest.approx(w["value"], rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("option,value,expected", [
    ("--directions", "dirs.npy@L2.resid_pre", "write NAME=FILE@SITE"),
    ("--directions", "x=missing.npy@L2.resid_pre", "does not exist"),
    ("--directions", "mlp_post=dirs.npy@L2.resid_pre", "is a site of the model"),
    ("--directions", "x=dirs.npy@L2.bogus", "unknown site 'bogus'"),
    ("--directions", "x=dirs.npy@L2.mlp_post", "reads 64-dimensional vectors, but L2.mlp_post"),
    ("--directions", "x=dirs.npy@L9.resid_pre", "block 9 in L9.resid_pre is out of range"),
    ("--sae", "s=nowhere", "cfg.json does not exist"),
    ("--sae", "s=badnorm", "normalize_activations 'layer_norm' is not supported"),
    ("--sae", "s=gated", "architecture 'gated' is not supported; supported: standard, jumprelu, topk"),
    ("--sae", "s=badhook", "hook_name 'blocks.2.hook_resid_mid' is not a site maxact reads"),
])
def test_bad_derived_options_give_one_line(case, tmp_path, monkeypatch, option, value, expected):
    root, model, corpus, dirs, _ = case
    monkeypatch.chdir(root)
    write_sae(root / "badnorm", arch="standard", normalize_activations="layer_norm")
    write_sae(root / "gated", arch="standard")
    cfg = json.loads((root / "gated" / "cfg.json").read_text())
    (root / "gated" / "cfg.json").write_text(json.dumps(cfg | {"architecture": "gated"}))
    write_sae(root / "badhook", arch="standard", hook="blocks.2.hook_resid_mid")
    line = error_line(run_cli("atlas", "--model", model, "--corpus", corpus, "--out", tmp_path / "o",
                              "--seq", 16, option, value))
    assert expected in line, line


def test_same_name_twice_is_refused(case, tmp_path):
    root, model, corpus, _, _ = case
    line = error_line(run_cli("atlas", "--model", model, "--corpus", corpus, "--out", tmp_path / "o",
                              "--directions", f"twice={root / 'dirs.npy'}@L1.resid_pre",
                              "--sae", f"twice={root / 'sae'}"))
    assert "twice" in line and "given twice" in line


def test_viewer_unit_json_and_live_text_on_a_derived_unit(case, atlas_case):
    from e2e.viewer_atlas import api_call, start_server

    root, model, _, dirs, _ = case
    out = atlas_case[0]
    server, url = start_server(out, model)
    try:
        status, page = api_call(url, "/api/unit/dirs:3")
        assert status == 200 and page["derived"]["kind"] == "directions"
        assert page["derived"]["nearest_neurons"][0]["in_atlas"] is True  # L0/L1.mlp_post are in the atlas
        status, live = api_call(url, "/api/live", {"text": "w3 w7 w11 w5", "unit": "dirs:3"})
        assert status == 200, live
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(model).eval()
        with torch.no_grad():
            h = hf(torch.tensor([live["token_ids"]]), output_hidden_states=True).hidden_states[LAYER][0]
        np.testing.assert_allclose(live["values"], h.double().numpy() @ dirs[3].astype(np.float64), atol=1e-4)
    finally:
        server.shutdown()
        server.server_close()


def test_shards_merge_to_the_one_run_result(case, atlas_case, tmp_path):
    root, model, corpus, _, _ = case
    common = ["--model", model, "--corpus", corpus, "--seq", 16, "--k", 6, "--sites", "resid_pre,mlp_post",
              "--max-types", 20, "--ref-samples", 50, "--directions", f"dirs={root / 'dirs.npy'}@L{LAYER}.resid_pre",
              "--sae", f"feat={root / 'sae'}"]
    for i in (0, 1):
        r = run_cli("atlas", *common, "--out", tmp_path / f"s{i}", "--shard", f"{i}/2")
        assert r.exit_code == 0, r.output
    r = run_cli("merge", tmp_path / "s0", tmp_path / "s1", "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    one = atlas_case[0]
    for name in ("top_values.npy", "top_positions.npy", "bottom_values.npy", "near_feat_units.npy",
                 "near_feat_cosines.npy", "logit_top_ids.npy"):
        np.testing.assert_array_equal(np.load(tmp_path / "m" / name), np.load(one / name), err_msg=name)


def test_a_changed_weights_file_is_refused_on_merge(case, tmp_path, monkeypatch):
    root, model, corpus, dirs, _ = case
    mine = tmp_path / "mine.npy"
    np.save(mine, dirs)
    common = ["--model", model, "--corpus", corpus, "--seq", 16, "--sites", "resid_pre",
              "--directions", f"mine={mine}@L1.resid_pre"]
    for i in (0, 1):
        assert run_cli("atlas", *common, "--out", tmp_path / f"s{i}", "--shard", f"{i}/2").exit_code == 0
    np.save(mine, dirs * 2)
    from maxact import dictionaries

    monkeypatch.delitem(dictionaries._LOADED, "mine")  # as in the new process `maxact merge` is
    line = error_line(run_cli("merge", tmp_path / "s0", tmp_path / "s1", "--out", tmp_path / "m"))
    assert "derived site 'mine'" in line and "its weights changed" in line


def test_concept_pass_on_directions_against_scipy(case):
    from scipy import stats as sps

    from maxact.config import AtlasConfig

    root, model, corpus, dirs, _ = case
    seq = AtlasConfig().seq
    x, tokens, _ = hidden(model, corpus, seq)
    target = int(np.bincount(tokens).argmax())
    r = run_cli("concept", "--model", model, "--corpus", corpus, "--token", f"w{target}", "--json",
                "--directions", f"dirs={root / 'dirs.npy'}@L{LAYER}.resid_pre", "--sites", "dirs")
    assert r.exit_code == 0, r.output
    table = json.loads(r.stdout)
    acts = x @ dirs.astype(np.float64).T  # (n, 5)
    is_in = tokens == target
    t, p = sps.ttest_ind(acts[is_in], acts[~is_in], equal_var=False)
    got = {u["unit"]: u for u in table["units"]}
    assert sorted(got) == [f"dirs:{i}" for i in range(5)]
    for i in range(5):
        assert got[f"dirs:{i}"]["n_in"] == int(is_in.sum())
        assert got[f"dirs:{i}"]["t"] == pytest.approx(t[i], rel=1e-4, abs=1e-4)
        assert got[f"dirs:{i}"]["p"] == pytest.approx(p[i], rel=1e-3, abs=1e-12)


def test_pca_directions_read_back_as_units(case, tmp_path):
    root, model, corpus, _, _ = case
    pcs = tmp_path / "pcs.npy"
    r = run_cli("pca", "--model", model, "--corpus", corpus, "--site", f"L{LAYER}.resid_pre", "-n", 3, "--out", pcs,
                "--seq", 16)
    assert r.exit_code == 0, r.output
    rows = np.load(pcs).astype(np.float64)  # (3, D)
    r = run_cli("sample", "--model", model, "--corpus", corpus, "--unit", "pc:0", "--batch", 4, "--seq", 16,
                "--samples", 3, "--seed", 2, "--json", tmp_path / "s.json", "--directions", f"pc={pcs}@L{LAYER}.resid_pre")
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "s.json").read_text())
    x, tokens, hf = hidden(model, corpus, 16)
    for b, w in enumerate(result["units"][0]["winners"]):
        start = result["starts"][b][w["row"]]
        with torch.no_grad():
            h = hf(torch.from_numpy(tokens[start : start + 16])[None], output_hidden_states=True).hidden_states[LAYER]
        assert h[0, w["col"]].double().numpy() @ rows[0] == pytest.approx(w["value"], rel=1e-4, abs=1e-4)
    # the first component is the direction of largest variance of the activations it was fitted on
    centred = x - x.mean(0)
    variances = ((centred @ rows.T) ** 2).mean(0)
    assert variances[0] >= variances[1] >= variances[2]


def test_concept_probe_directions_read_back_as_units(case, tmp_path):
    """`concept --probe --save-direction` writes [probe, mean_diff]; both files read back as units, the
    .safetensors one without @SITE (its metadata records the site)."""
    root, model, corpus, _, _ = case
    for name in ("d.npy", "d.safetensors"):
        r = run_cli("concept", "--model", model, "--corpus", corpus, "--token", "w5", "--sites", "resid_pre",
                    "--layers", LAYER, "--probe", "--save-direction", tmp_path / name)
        assert r.exit_code == 0, r.output
    rows = np.load(tmp_path / "d.npy").astype(np.float64)  # (2, D): probe, mean difference
    assert rows.shape == (2, D)
    for option in (f"p={tmp_path / 'd.npy'}@L{LAYER}.resid_pre", f"p={tmp_path / 'd.safetensors'}"):
        r = run_cli("sample", "--model", model, "--corpus", corpus, "--unit", "p:1", "--batch", 4, "--seq", 16,
                    "--samples", 2, "--seed", 4, "--json", tmp_path / "s.json", "--directions", option)
        assert r.exit_code == 0, r.output
        result = json.loads((tmp_path / "s.json").read_text())
        _, tokens, hf = hidden(model, corpus, 16)
        for b, w in enumerate(result["units"][0]["winners"]):
            start = result["starts"][b][w["row"]]
            with torch.no_grad():
                h = hf(torch.from_numpy(tokens[start : start + 16])[None], output_hidden_states=True).hidden_states
            assert h[LAYER][0, w["col"]].double().numpy() @ rows[1] == pytest.approx(w["value"], rel=1e-4, abs=1e-4)
    np.save(tmp_path / "bare.npy", rows)
    line = error_line(run_cli("sample", "--model", model, "--corpus", corpus, "--unit", "p:0",
                              "--directions", f"p={tmp_path / 'bare.npy'}"))
    assert "write NAME=FILE@SITE" in line
