"""maxact.corpus, multi-document sources: every format against tokenising each document on its own,
the on-disk token cache, max_tokens, and the real shared datasets (no model loads); every error is
in test_corpus_errors.py."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from corpus_helpers import (
    DOCS,
    KINDS,
    Counting,
    _bpe_tokenizer,
    brute,
    err,
    make_source,
    rows,
    sha,
    write_csv,
    write_datasets_folder,
    write_jsonl,
)

from maxact.corpus import (
    JSONL,
    TEXT_FILES,
    CorpusInfo,
    DocumentCorpus,
    TokenSource,
    load_source,
    open_corpus,
    token_cache_dir,
    tokenizer_key,
)
from maxact.corpus import readers as corpus_readers
from maxact.corpus.cache import npy_header


@pytest.fixture(scope="module")
def bpe():
    return _bpe_tokenizer()


# ---------- every format, against tokenising each document on its own ----------


@pytest.mark.parametrize("kind", KINDS)
def test_every_format_tokenises_each_document_on_its_own(kind, tmp_path, bpe, monkeypatch):
    monkeypatch.setattr(corpus_readers, "BATCH_ROWS", 4)  # batches that end inside files and row groups
    value, fmt, files = make_source(kind, tmp_path)
    source = load_source(value, bpe)
    ids, starts = brute(DOCS, bpe)
    assert source.tokens.dtype == np.int32 and source.doc_starts.dtype == np.int64
    assert source.tokens.tolist() == ids
    assert source.doc_starts.tolist() == starts
    info = source.info
    assert (info.format, info.n_docs, info.n_tokens, info.n_skipped) == (fmt, len(DOCS), len(ids), 0)
    assert info.text_column == (None if fmt == TEXT_FILES else "text")
    want_sha = sha(files[0]) if len(files) == 1 else hashlib.sha256(
        b"".join(hashlib.sha256(f.read_bytes()).digest() for f in files)).hexdigest()
    assert info.sha256 == want_sha
    assert info.stripped is False


def test_names_and_paths(tmp_path, bpe):
    f = write_jsonl(tmp_path / "sotu-mini.jsonl.gz", rows())
    corpus = open_corpus(f)
    assert isinstance(corpus, DocumentCorpus)
    assert (corpus.name, corpus.path, corpus.files) == ("sotu-mini", str(f.resolve()), (str(f.resolve()),))
    value, _, _ = make_source("glob", tmp_path)
    assert open_corpus(value).name == value  # a glob is named as given


def test_a_text_file_stays_one_document_in_one_call(tmp_path, bpe):
    f = tmp_path / "book.txt"
    f.write_text("\n\n".join(DOCS), encoding="utf-8")
    counting = Counting(bpe)
    source = load_source(f, counting)
    assert counting.calls == 1 and counting.docs == 1  # the whole text, one call
    assert source.tokens.tolist() == bpe("\n\n".join(DOCS), add_special_tokens=False)["input_ids"]
    assert source.doc_starts.tolist() == [0] and source.info.format == "text" and source.info.n_docs == 1
    assert not list(token_cache_dir().glob("*")) if token_cache_dir().exists() else True  # no disk cache


def test_list_of_strings_is_joined_with_spaces(tmp_path, bpe):
    sentences = [["The", "jury", "said", "."], ["It", "'s", "caf\u00e9"], ["one"]]
    f = write_jsonl(tmp_path / "tagged.jsonl", [{"words": w, "tags": ["x"] * len(w)} for w in sentences])
    source = load_source(f, bpe, text_column="words")
    ids, starts = brute([" ".join(w) for w in sentences], bpe)
    assert source.tokens.tolist() == ids and source.doc_starts.tolist() == starts
    assert source.info.text_column == "words"


def test_no_special_tokens_even_where_the_tokenizer_adds_them(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab={"<s>": 0, "<unk>": 1, "a": 2, "b": 3}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", unk_token="<unk>", model_max_length=2)
    assert tokenizer("a b")["input_ids"] == [0, 2, 3]  # this tokenizer would add a BOS
    f = write_jsonl(tmp_path / "d.jsonl", [{"text": "a b a"}, {"text": "b"}])
    source = load_source(f, tokenizer)  # also: documents longer than model_max_length are whole
    assert source.tokens.tolist() == [2, 3, 2, 3] and source.doc_starts.tolist() == [0, 3]


def test_datasets_folder_reads_shards_in_state_order(tmp_path, bpe):
    # state.json lists b before a: its order wins over the sorted names
    folder = write_datasets_folder(tmp_path / "ds", [rows()[:2], rows()[2:]], names=["b.arrow", "a.arrow"])
    source = load_source(folder, bpe)
    assert source.tokens.tolist() == brute(DOCS, bpe)[0]


def test_blank_jsonl_lines_are_no_documents(tmp_path, bpe):
    f = tmp_path / "gaps.jsonl"
    f.write_text(json.dumps({"text": "a"}) + "\n\n   \n" + json.dumps({"text": "b"}) + "\n\n", encoding="utf-8")
    assert load_source(f, bpe).doc_starts.tolist() == [0, len(bpe("a", add_special_tokens=False)["input_ids"])]


def test_custom_column_and_csv_keeps_numbers_as_text(tmp_path, bpe):
    f = write_csv(tmp_path / "t.csv", [{"body": "12", "n": 1}, {"body": "007", "n": 2}])
    source = load_source(f, bpe, text_column="body")
    assert source.tokens.tolist() == brute(["12", "007"], bpe)[0]  # "007" is not read as the number 7


# ---------- the on-disk token cache ----------


def test_second_run_reads_the_cache(tmp_path, bpe):
    value, _, _ = make_source("jsonl.gz", tmp_path)
    first_tok = Counting(bpe)
    first = load_source(value, first_tok)
    assert first_tok.calls >= 1 and first_tok.docs == len(DOCS)
    files = sorted(p.name for p in token_cache_dir().iterdir())
    assert len(files) == 3 and [f.split(".", 1)[1] for f in files] == ["doc_starts.npy", "json", "tokens.npy"]
    second_tok = Counting(_bpe_tokenizer())  # another tokenizer object, the same tokenizer
    second = load_source(value, second_tok)
    assert second_tok.calls == 0  # not tokenised again
    assert isinstance(second.tokens, np.memmap) and not second.tokens.flags.writeable
    assert second.tokens.tolist() == first.tokens.tolist()
    assert second.doc_starts.tolist() == first.doc_starts.tolist() and second.info == first.info
    # the cached stream is a plain .npy of int32
    key = files[0].split(".", 1)[0]
    on_disk = np.load(token_cache_dir() / f"{key}.tokens.npy")
    assert on_disk.dtype == np.int32 and on_disk.tolist() == first.tokens.tolist()


def test_cache_key_follows_source_column_options_and_tokenizer(tmp_path, bpe):
    f = write_jsonl(tmp_path / "d.jsonl", [{"text": "a b", "other": "c", "e": "x"}, {"text": "d", "other": " ", "e": "y"}])
    counting = Counting(bpe)
    load_source(f, counting)
    load_source(f, counting, text_column="other", skip_empty=True)  # another column: tokenised
    load_source(f, counting, text_column="e")
    assert counting.calls == 3
    f.write_text(json.dumps({"text": "changed"}) + "\n", encoding="utf-8")  # other bytes: tokenised
    assert load_source(f, counting).tokens.tolist() == brute(["changed"], bpe)[0]
    assert counting.calls == 4
    words = Counting(_word_tokenizer())  # another tokenizer: tokenised
    load_source(f, words)
    assert words.calls == 1
    assert tokenizer_key(bpe) != tokenizer_key(_word_tokenizer())


def _word_tokenizer(words=("<unk>", "a", "b")):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token=words[0]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=words[0])


def test_tokenizer_key_sees_the_pipeline_not_only_the_vocabulary():
    from tokenizers import normalizers

    plain, lower = _word_tokenizer(), _word_tokenizer()
    lower.backend_tokenizer.normalizer = normalizers.Lowercase()
    assert plain.get_vocab() == lower.get_vocab()
    assert tokenizer_key(plain) != tokenizer_key(lower)  # "A" gives another id: another key
    truncating = _word_tokenizer()
    truncating.backend_tokenizer.enable_truncation(2)
    assert tokenizer_key(truncating) == tokenizer_key(plain)  # each call sets truncation itself


def test_a_failed_run_leaves_no_cache_entry(tmp_path, bpe, monkeypatch):
    monkeypatch.setattr(corpus_readers, "BATCH_ROWS", 2)
    f = write_jsonl(tmp_path / "d.jsonl", rows(["a", "b", "c", "d", " "]))  # the 5th is empty
    err(f, bpe)
    assert [p.name for p in token_cache_dir().iterdir()] == []  # no entry, no temporary file
    assert load_source(f, bpe, skip_empty=True).info.n_docs == 4


def test_a_damaged_entry_is_made_again(tmp_path, bpe):
    value, _, _ = make_source("jsonl", tmp_path)
    want = load_source(value, bpe).tokens.tolist()
    tokens_file = next(token_cache_dir().glob("*.tokens.npy"))
    tokens_file.write_bytes(tokens_file.read_bytes()[:150])  # truncated
    counting = Counting(bpe)
    assert load_source(value, counting).tokens.tolist() == want and counting.calls >= 1


def test_npy_header_is_fixed_length():
    for n in (0, 7, 10**12):
        header = npy_header(n)
        assert len(header) == 128 and header.endswith(b"\n")
    import io

    buf = io.BytesIO(npy_header(3) + np.array([1, 2, 3], dtype="<i4").tobytes())
    assert np.load(buf).tolist() == [1, 2, 3]


# ---------- max_tokens ----------


def test_max_tokens_cuts_documents_and_stops_reading(tmp_path, bpe, monkeypatch):
    monkeypatch.setattr(corpus_readers, "BATCH_ROWS", 1)  # one document per batch
    value, _, _ = make_source("parquet", tmp_path)
    ids, starts = brute(DOCS, bpe)
    n = starts[2] + 1  # the third document's first token
    counting = Counting(bpe)
    head = load_source(value, counting, max_tokens=n)
    assert head.tokens.tolist() == ids[:n] and head.doc_starts.tolist() == starts[:3]
    assert (head.info.n_tokens, head.info.n_docs) == (n, 3)
    assert counting.docs == 3  # the documents after the third were never tokenised
    again = Counting(bpe)
    assert load_source(value, again, max_tokens=n).tokens.tolist() == ids[:n] and again.calls == 0  # cached prefix
    whole = load_source(value, again)
    assert whole.tokens.tolist() == ids and again.docs == len(DOCS)
    # with the whole stream cached, any prefix comes from it
    other = Counting(bpe)
    assert load_source(value, other, max_tokens=5).tokens.tolist() == ids[:5] and other.calls == 0
    assert "max_tokens must be at least 1, got 0" in err(value, bpe, max_tokens=0)


# ---------- the token source contract ----------


def test_token_source_checks_document_starts():
    info = CorpusInfo(name="x", path="", sha256="0" * 64)
    tokens = np.arange(10, dtype=np.int32)
    TokenSource(tokens, np.array([0, 3, 9], dtype=np.int64), info)
    for bad in ([1, 3], [0, 3, 3], [0, 10], [0, 5, 2]):
        with pytest.raises(ValueError):
            TokenSource(tokens, np.array(bad, dtype=np.int64), info)
    with pytest.raises(TypeError):
        TokenSource(tokens, np.array([0], dtype=np.int32), info)
    head = TokenSource(tokens, np.array([0, 3, 9], dtype=np.int64), info).head(5)
    assert head.doc_starts.tolist() == [0, 3] and (head.info.n_tokens, head.info.n_docs) == (5, 2)


def test_old_corpus_info_loads_with_book_defaults():
    old = {"name": "looking-glass", "path": "/x", "sha256": "0" * 64, "stripped": False, "n_tokens": 5}
    info = CorpusInfo(**old)
    assert (info.format, info.n_docs, info.text_column, info.n_skipped) == ("text", 1, None, 0)


# ---------- the real datasets in ../shared/corpora ----------


def _shared(name: str, shared_corpora: Path) -> Path:
    path = shared_corpora / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def _jsonl_values(path: Path, column: str) -> list:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)[column] for line in f]


def test_sotu(shared_corpora):
    path = _shared("sotu.jsonl.gz", shared_corpora)
    corpus = open_corpus(path)
    assert corpus.format == JSONL and corpus.sha256 == "37fcb5744505562636fb68c4fdfe3f351b80432574dedb11184da515451452f1"
    from maxact.corpus.documents import DocumentStream

    texts = [d.text for d in DocumentStream(corpus)]
    assert len(texts) == 233 and texts == _jsonl_values(path, "text")
    tokenizer = _bpe_tokenizer()
    head = load_source(path, tokenizer, max_tokens=60_000)  # the first documents, in bounded time
    ids, starts = brute(texts[:12], tokenizer)
    assert len(ids) > 60_000 and head.tokens.tolist() == ids[:60_000]
    assert head.doc_starts.tolist() == [s for s in starts if s < 60_000]
    assert head.info.name == "sotu" and head.info.sha256 == corpus.sha256


def test_brown_words(shared_corpora):
    path = _shared("brown-tagged.jsonl.gz", shared_corpora)
    corpus = open_corpus(path, text_column="words")
    assert corpus.text_column == "words"
    from maxact.corpus.documents import DocumentStream

    words = _jsonl_values(path, "words")
    texts = [d.text for d in DocumentStream(corpus)]
    assert len(texts) == 57_340 and texts == [" ".join(w) for w in words]
    tokenizer = _bpe_tokenizer()
    head = load_source(path, tokenizer, text_column="words", max_tokens=5_000)
    ids, starts = brute(texts[:300], tokenizer)
    assert head.tokens.tolist() == ids[:5_000] and head.doc_starts.tolist() == [s for s in starts if s < 5_000]
    assert "its columns: 'doc', 'genre', 'sentence', 'words', 'tags'" in err(path)  # no 'text' column


# ---------- through the command line ----------


def test_cli_checks_the_column_before_the_model(tmp_path):
    from atlas_helpers import error_line, run_cli

    f = write_jsonl(tmp_path / "d.jsonl", [{"body": "w1 w2"}])
    line = error_line(run_cli("sample", "--model", "no-such-model-folder/x", "--corpus", f, "--layer", "0",
                              "--dim", "0"))
    assert "has no column 'text'; its columns: 'body' (choose one with --text-column)" in line
    line = error_line(run_cli("atlas", "--model", "no-such-model-folder/x", "--corpus", str(tmp_path / "*.parquet"),
                              "--out", tmp_path / "atlas"))
    assert "matches no file" in line


def test_cli_atlas_shards_and_merge_read_the_text_column(tmp_path):
    """atlas --text-column records the column; merge reloads the source with it (from the config)."""
    from atlas_helpers import run_cli, save_tiny_folder, single_thread, word_tokens

    from maxact.store.reader import Atlas

    model = save_tiny_folder(tmp_path / "model")
    ids = word_tokens(600, seed=3)
    cuts = [0, 150, 160, 400, 600]
    docs = [" ".join(f"w{t}" for t in ids[a:b]) for a, b in zip(cuts, cuts[1:])]
    f = write_jsonl(tmp_path / "docs.jsonl", [{"body": d, "text": 1} for d in docs])  # "text" is no text
    args = ["atlas", "--model", model, "--corpus", f, "--text-column", "body", "--seq", "16", "--k", "4",
            "--sites", "resid_pre", "--windows-per-batch", "4", "--max-types", "20", "--ref-samples", "20"]
    with single_thread():
        for i in range(2):
            result = run_cli(*args, "--shard", f"{i}/2", "--out", tmp_path / f"s{i}")
            assert result.exit_code == 0, (result.output, result.exception)
        result = run_cli("merge", tmp_path / "s0", tmp_path / "s1", "--out", tmp_path / "atlas")
    assert result.exit_code == 0, (result.output, result.exception)
    atlas = Atlas(tmp_path / "atlas")
    corpus = atlas.manifest.corpus
    assert (corpus.format, corpus.text_column, corpus.n_docs, corpus.n_tokens) == (JSONL, "body", 4, 600)
    assert corpus.sha256 == sha(f) and np.asarray(atlas.tokens).tolist() == ids.tolist()
