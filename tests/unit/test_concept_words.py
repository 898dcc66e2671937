"""`maxact concept --words` on corpora of documents and on a tagged corpus (docs/CONCEPTS.md):
each document tokenised as the pass feeds it, matches placed through the tokenizer's offsets and
never across documents, against expectations written out by hand; and the pass's moments against
a forward of each document alone."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch
from atlas_helpers import run_cli, save_tiny_folder, single_thread
from tiny_models import tiny_loaded

from maxact.capture import capture
from maxact.corpus import load_source
from maxact.pipeline.concept_inputs import word_source
from maxact.units import SiteRef

# the word-level tokenizer of save_tiny_folder: "wN" is token N, one token a word
DOCS = ["w1 w5 w7 w8 w2 w7", "w8 w5 w3", "w7 w8 w9 w5"]  # "w7" ending doc 1 + "w8" opening doc 2: no match
PHRASES = ["w5", "w7 w8"]
TOKENS = [1, 5, 7, 8, 2, 7, 8, 5, 3, 7, 8, 9, 5]
STARTS = [0, 6, 9]
MATCHES = [(1, 2), (2, 4), (7, 8), (9, 11), (12, 13)]  # token spans [first, stop) of the matches
REST = [0, 4, 5, 6, 8, 11]  # tokens outside every match


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_folder(tmp_path_factory.mktemp("tiny") / "llama", "llama")


@pytest.fixture(scope="module")
def tokenizer(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def jsonl(tmp_path_factory):
    path = tmp_path_factory.mktemp("docs") / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(DOCS)))
    return path


def expected_obs(mode: str, n_tokens: int, matches=MATCHES, rest=REST) -> list[int]:
    """token -> observation by hand: matches first (in text order), then the rest, one each."""
    obs = [-1] * n_tokens
    for o, (a, b) in enumerate(matches):
        for p in ([b - 1] if mode == "last" else [a] if mode == "first" else range(a, b)):
            obs[p] = o
    for o, p in enumerate(rest):
        obs[p] = len(matches) + o
    return obs


@pytest.mark.parametrize("mode", ["last", "first", "mean"])
def test_words_on_documents_are_matched_document_by_document(tokenizer, jsonl, mode):
    w = word_source(str(jsonl), tokenizer, PHRASES, mode, strip_gutenberg=False, max_tokens=None)
    assert w.source.tokens.tolist() == TOKENS and w.source.doc_starts.tolist() == STARTS
    fed = load_source(str(jsonl), tokenizer)  # what an atlas (and the pass) of this corpus reads
    assert w.source.tokens.tolist() == fed.tokens.tolist() and w.source.doc_starts.tolist() == fed.doc_starts.tolist()
    assert w.source.info.n_docs == 3 and w.source.info.format == "jsonl"
    assert w.labels.token_obs.tolist() == expected_obs(mode, len(TOKENS))
    assert w.labels.obs_group.tolist() == [0] * 5 + [1] * 6 and w.n_matches == 5
    assert w.labels.obs_size.tolist() == ([1, 2, 1, 2, 1] if mode == "mean" else [1] * 5) + [1] * 6


def test_words_on_documents_cut_by_max_tokens(tokenizer, jsonl):
    # 10 tokens: the third document is cut inside "w7 w8", which is then no observation and not rest
    w = word_source(str(jsonl), tokenizer, PHRASES, "mean", strip_gutenberg=False, max_tokens=10)
    assert w.source.tokens.tolist() == TOKENS[:10] and w.source.doc_starts.tolist() == STARTS
    assert w.labels.token_obs.tolist() == expected_obs("mean", 10, MATCHES[:3], REST[:5])
    assert w.n_matches == 3


def test_words_on_a_folder_and_csv(tokenizer, tmp_path):
    (tmp_path / "folder").mkdir()
    for i, t in enumerate(DOCS):
        (tmp_path / "folder" / f"{i}.txt").write_text(t)
    (tmp_path / "docs.csv").write_text("text\n" + "".join(f"{t}\n" for t in DOCS))
    for corpus in (tmp_path / "folder", tmp_path / "docs.csv"):
        w = word_source(str(corpus), tokenizer, PHRASES, "last", strip_gutenberg=False, max_tokens=None)
        assert w.source.doc_starts.tolist() == STARTS and w.labels.token_obs.tolist() == expected_obs("last", 13)


def test_words_on_a_tagged_corpus(tokenizer, tmp_path):
    # two documents of two sentences: a document's words are joined by spaces across its sentences
    rows = [{"doc": "a", "words": ["w5", "w7"], "tags": ["nn", "vb"]},
            {"doc": "a", "words": ["w8", "w3"], "tags": ["nn", "nn"]},
            {"doc": "b", "words": ["w7"], "tags": ["vb"]},
            {"doc": "b", "words": ["w8", "w5", "w7"], "tags": ["nn", "nn", "vb"]}]
    path = tmp_path / "tagged.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    w = word_source(str(path), tokenizer, PHRASES, "last", strip_gutenberg=False, max_tokens=None)
    assert w.source.tokens.tolist() == [5, 7, 8, 3, 7, 8, 5, 7] and w.source.doc_starts.tolist() == [0, 4]
    # matches: w5 (0), "w7 w8" (1-2, across doc a's sentences), "w7 w8" (4-5), w5 (6); the last w7 is rest
    assert w.labels.token_obs.tolist() == [0, -1, 1, 4, -1, 2, 3, 5] and w.n_matches == 4


def brute_in_out(lm, docs: list[list[int]], matches, ref: SiteRef):
    """(n_in, U), (n_out, U): the last token of each match and every other token, each document
    fed alone (the pass's windows of 32 tokens hold a whole document)."""
    acts = []
    for ids in docs:
        with single_thread():
            acts.append(capture(lm.adapter, torch.tensor([ids]), [ref])[ref][0].numpy().astype(np.float64))
    x = np.concatenate(acts)
    last = [b - 1 for _, b in matches]
    return x[last], x[REST]


def test_cli_words_on_documents_equals_each_document_alone(folder, jsonl, tmp_path):
    (tmp_path / "w.txt").write_text("\n".join(PHRASES) + "\n")
    r = run_cli("concept", "--words", tmp_path / "w.txt", "--model", folder, "--corpus", jsonl, "--sites", "mlp_post",
                "--layers", "1", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["n_in"] == 5 and out["n_out"] == 6 and "(5 matches, last token)" in out["category"]
    docs = [TOKENS[a:b] for a, b in zip(STARTS, STARTS[1:] + [len(TOKENS)])]
    x_in, x_out = brute_in_out(tiny_loaded("llama"), docs, MATCHES, SiteRef("mlp_post", 1))
    for u in out["units"][:8]:
        i = int(u["unit"].split(":")[1])
        assert u["mean_in"] == pytest.approx(x_in[:, i].mean(), abs=1e-5)
        assert u["mean_out"] == pytest.approx(x_out[:, i].mean(), abs=1e-5)
