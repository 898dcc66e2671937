"""maxact.corpus: finding, reading, stripping and tokenising texts (no model loads, no network)."""

from __future__ import annotations

import hashlib
import logging
import urllib.error
import urllib.request

import numpy as np
import pytest

from maxact.config import DEFAULT_CORPUS
from maxact.corpus import (
    NAMED_CORPORA,
    Corpus,
    load_corpus,
    load_source,
    resolve_corpus_path,
    strip_gutenberg_text,
    tokenize,
    tokenize_corpus,
    tokenizer_key,
)
from maxact.errors import MaxactError
from maxact.paths import cache_dir
from maxact.windows import require_tokens

LG = NAMED_CORPORA["looking-glass"]
FAKE_BOOK = (
    "The Project Gutenberg EBook of Something\n\n"
    "*** START OF THIS PROJECT GUTENBERG EBOOK SOMETHING ***\n\n\n"
    "CHAPTER I\nbefore the first head\n\n"
    "*** END OF THIS PROJECT GUTENBERG EBOOK SOMETHING ***\nlicence footer\n"
)


# ---------- resolving names and paths ----------


def test_named_corpora_and_default():
    assert DEFAULT_CORPUS == "looking-glass"
    assert LG.file == "through-the-looking-glass.txt"
    assert LG.url == "https://www.gutenberg.org/cache/epub/12/pg12.txt"
    wl = NAMED_CORPORA["wonderland"]
    assert (wl.file, wl.ebook, wl.url) == (
        "alices-adventures-in-wonderland.txt",
        11,
        "https://www.gutenberg.org/cache/epub/11/pg11.txt",
    )


def test_existing_path_is_used_as_is(tmp_path):
    f = tmp_path / "wonderland"  # a file that shadows a name still wins: it exists
    f.write_text("hello", encoding="utf-8")
    assert resolve_corpus_path(str(f)) == f
    assert resolve_corpus_path(f) == f


def test_named_corpus_from_maxact_data(tmp_path, monkeypatch):
    (tmp_path / LG.file).write_text(FAKE_BOOK, encoding="utf-8")
    monkeypatch.setenv("MAXACT_DATA", str(tmp_path))
    assert resolve_corpus_path("looking-glass") == tmp_path / LG.file
    corpus = load_corpus("looking-glass")
    assert isinstance(corpus, Corpus)
    assert corpus.name == "looking-glass"
    assert corpus.path == str((tmp_path / LG.file).resolve())
    assert corpus.text == FAKE_BOOK
    assert corpus.sha256 == hashlib.sha256(FAKE_BOOK.encode()).hexdigest()
    assert FAKE_BOOK not in repr(corpus)


def test_named_corpus_from_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MAXACT_DATA", str(tmp_path / "empty"))  # set, but without the file
    monkeypatch.setenv("MAXACT_CACHE", str(tmp_path / "cache"))
    cached = tmp_path / "cache" / "corpora" / LG.file
    cached.parent.mkdir(parents=True)
    cached.write_text("cached text", encoding="utf-8")
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    assert resolve_corpus_path("looking-glass") == cached
    assert load_corpus("looking-glass").text == "cached text"


def _no_network(*args, **kwargs):
    raise AssertionError("must not download")


class _FakeResponse:
    def __init__(self, data: bytes):
        self._data = data

    def read(self) -> bytes:
        return self._data

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_lands_in_cache_once(monkeypatch):
    monkeypatch.delenv("MAXACT_DATA", raising=False)
    calls = []

    def fake_urlopen(request, timeout=None):
        calls.append((getattr(request, "full_url", request), timeout))
        return _FakeResponse(b"\xef\xbb\xbfdownloaded book\n")

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    path = resolve_corpus_path("looking-glass")
    assert path == cache_dir() / "corpora" / LG.file
    assert path.read_bytes() == b"\xef\xbb\xbfdownloaded book\n"
    assert calls == [(LG.url, calls[0][1])] and calls[0][1] is not None
    assert [p.name for p in path.parent.iterdir()] == [LG.file]  # no temp file left behind

    assert resolve_corpus_path("looking-glass") == path
    assert len(calls) == 1  # the second resolve reads the cache
    corpus = load_corpus("looking-glass")
    assert corpus.text == "downloaded book\n"  # the BOM is dropped, nothing else
    assert corpus.sha256 == hashlib.sha256(b"\xef\xbb\xbfdownloaded book\n").hexdigest()


def test_download_failure_says_what_to_do(monkeypatch):
    monkeypatch.delenv("MAXACT_DATA", raising=False)

    def failing_urlopen(request, timeout=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", failing_urlopen)
    with pytest.raises(MaxactError) as err:
        resolve_corpus_path("wonderland")
    msg = str(err.value)
    assert "'wonderland'" in msg
    assert NAMED_CORPORA["wonderland"].url in msg
    assert "MAXACT_DATA" in msg and "local" in msg
    assert not (cache_dir() / "corpora" / NAMED_CORPORA["wonderland"].file).exists()


def test_unknown_name_lists_choices():
    with pytest.raises(MaxactError) as err:
        resolve_corpus_path("jabberwocky")
    msg = str(err.value)
    assert "'jabberwocky'" in msg
    assert "looking-glass" in msg and "wonderland" in msg
    assert "UTF-8 text file" in msg


# ---------- reading and validation ----------


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(MaxactError) as err:
        load_corpus(missing)
    assert str(missing) in str(err.value) and "does not exist" in str(err.value)


def test_directory(tmp_path):
    with pytest.raises(MaxactError) as err:
        load_corpus(tmp_path)
    assert str(tmp_path) in str(err.value) and "directory" in str(err.value)


def test_empty_file(tmp_path):
    f = tmp_path / "empty.txt"
    f.write_bytes(b"")
    with pytest.raises(MaxactError) as err:
        load_corpus(f)
    assert str(f) in str(err.value) and "empty" in str(err.value)


def test_binary_file(tmp_path):
    f = tmp_path / "blob.bin"
    f.write_bytes(b"abc\x00def")
    with pytest.raises(MaxactError) as err:
        load_corpus(f)
    msg = str(err.value)
    assert str(f) in msg and "binary" in msg and "offset 3" in msg


def test_non_utf8_file(tmp_path):
    f = tmp_path / "latin1.txt"
    f.write_bytes("caf\u00e9 au lait".encode("latin-1"))
    with pytest.raises(MaxactError) as err:
        load_corpus(f)
    msg = str(err.value)
    assert str(f) in msg and "offset 3" in msg and "must be UTF-8" in msg


def test_file_corpus_is_raw_and_named_by_stem(tmp_path):
    f = tmp_path / "my-book.txt"
    f.write_bytes(FAKE_BOOK.replace("\n", "\r\n").encode())
    corpus = load_corpus(str(f))
    assert corpus.name == "my-book"
    assert corpus.text == FAKE_BOOK.replace("\n", "\r\n")  # header, footer, CRLF all kept


# ---------- Project Gutenberg header ----------


def test_strip_gutenberg_text():
    assert strip_gutenberg_text(FAKE_BOOK) == "CHAPTER I\nbefore the first head"
    no_footer = FAKE_BOOK.split("*** END")[0]
    assert strip_gutenberg_text(no_footer) == "CHAPTER I\nbefore the first head"
    the = FAKE_BOOK.replace("THIS PROJECT", "THE PROJECT")
    assert strip_gutenberg_text(the) == "CHAPTER I\nbefore the first head"


def test_strip_without_header(tmp_path):
    with pytest.raises(MaxactError, match="no Project Gutenberg header"):
        strip_gutenberg_text("just some text")
    f = tmp_path / "plain.txt"
    f.write_text("just some text", encoding="utf-8")
    with pytest.raises(MaxactError) as err:
        load_corpus(f, strip_gutenberg=True)
    assert str(f) in str(err.value) and "no Project Gutenberg header" in str(err.value)


def test_empty_after_stripping(tmp_path):
    f = tmp_path / "hollow.txt"
    f.write_text("header\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\n\n", encoding="utf-8")
    with pytest.raises(MaxactError) as err:
        load_corpus(f, strip_gutenberg=True)
    assert str(f) in str(err.value) and "no text" in str(err.value)


def test_real_looking_glass(shared_corpora, monkeypatch):
    monkeypatch.setenv("MAXACT_DATA", str(shared_corpora))
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    raw = load_corpus("looking-glass")
    assert raw.sha256 == LG.sha256
    assert raw.path == str((shared_corpora / LG.file).resolve())
    assert raw.text.startswith("The Project Gutenberg EBook of Through the Looking-Glass")
    stripped = load_corpus("looking-glass", strip_gutenberg=True)
    assert stripped.sha256 == LG.sha256  # of the raw bytes, whatever is kept
    assert stripped.stripped and not raw.stripped
    assert stripped.text.startswith("THROUGH THE LOOKING-GLASS")
    assert "The Project Gutenberg" not in stripped.text[:1000]
    assert len(stripped.text) < len(raw.text)


def test_real_wonderland_sha256(shared_corpora, monkeypatch):
    monkeypatch.setenv("MAXACT_DATA", str(shared_corpora))
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    assert load_corpus("wonderland").sha256 == NAMED_CORPORA["wonderland"].sha256


# ---------- tokenising ----------


def _tiny_tokenizer():
    """A word-level fast tokenizer that would add a BOS, with a tiny model_max_length."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "<unk>": 1, "before": 2, "the": 3, "first": 4, "head": 5}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", unk_token="<unk>", model_max_length=4
    )


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_tokenize_int32_no_bos():
    # transformers' loggers do not propagate to the root, so listen on the "transformers" one.
    records = _Records()
    hf_logger = logging.getLogger("transformers")
    hf_logger.addHandler(records)
    try:
        text = "before the first head before the first head"  # 8 tokens > model_max_length 4
        ids = tokenize(text, _tiny_tokenizer())
        assert records.messages == []  # the too-long warning is silenced ...
        assert ids.dtype == np.int32 and ids.shape == (8,)
        assert ids.tolist() == [2, 3, 4, 5, 2, 3, 4, 5]  # no BOS
        bare = _tiny_tokenizer()  # a fresh one: transformers warns once per tokenizer
        assert ids.tolist() == bare(text, add_special_tokens=False)["input_ids"]
        assert any("longer than the specified maximum" in m for m in records.messages)  # ... here
        assert bare(text)["input_ids"][0] == 0  # and this tokenizer would add a BOS
    finally:
        hf_logger.removeHandler(records)


def test_tokenize_empty_and_bad_ids():
    assert tokenize("", lambda text, add_special_tokens: {"input_ids": []}).shape == (0,)
    with pytest.raises(MaxactError, match="int32"):
        tokenize("x", lambda text, add_special_tokens: {"input_ids": [1, 2**31]})


# ---------- enough tokens ----------


def test_require_tokens():
    require_tokens(257, 256, "corpus 'x'")
    with pytest.raises(MaxactError) as err:
        require_tokens(256, 256, "corpus 'x'")
    msg = str(err.value)
    assert "corpus 'x' has 256 tokens" in msg and "--seq 256" in msg
    assert "smaller --seq" in msg and "longer corpus" in msg


# ---------- token sources ----------


def _word_tokenizer(words: list[str]):
    """A word-level fast tokenizer over ``words`` (id = position), named like any other."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token=words[0]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=words[0])


def test_load_source_int32_one_document_and_info(tmp_path):
    f = tmp_path / "book.txt"
    f.write_text(FAKE_BOOK, encoding="utf-8")
    words = ["<unk>", "before", "the", "first", "head", "CHAPTER", "I"]
    raw = load_source(f, _word_tokenizer(words))
    assert raw.tokens.dtype == np.int32 and raw.doc_starts.tolist() == [0]
    assert raw.info.name == "book" and raw.info.sha256 == hashlib.sha256(FAKE_BOOK.encode()).hexdigest()
    assert raw.info.n_tokens == len(raw) and raw.info.stripped is False
    # the Gutenberg option belongs to the book source: its tokens and its info say so
    body = load_source(f, _word_tokenizer(words), strip_gutenberg=True)
    assert body.info.stripped is True and body.tokens.tolist() == [5, 6, 1, 2, 3, 4]
    head = load_source(f, _word_tokenizer(words), strip_gutenberg=True, max_tokens=4)
    assert head.tokens.tolist() == [5, 6, 1, 2] and head.info.n_tokens == 4
    with pytest.raises(MaxactError, match="max_tokens must be at least 1, got 0"):
        load_source(f, _word_tokenizer(words), max_tokens=0)


def test_token_cache_never_mixes_tokenizers(tmp_path):
    """The cache is keyed by what the tokenizer is, not by id(): a tokenizer made after another one
    was freed (and so often at the same address) gets its own tokens."""
    f = tmp_path / "words.txt"
    f.write_text("a b c a b c", encoding="utf-8")
    corpus = load_corpus(f)
    for round_ in range(6):
        words = ["<unk>", "a", "b", "c"] if round_ % 2 == 0 else ["<unk>", "c", "b", "a"]
        tokenizer = _word_tokenizer(words)
        want = [words.index(w) for w in "a b c a b c".split()]
        assert tokenize_corpus(corpus, tokenizer).tokens.tolist() == want, round_
        del tokenizer
    same = _word_tokenizer(["<unk>", "a", "b", "c"])
    first = tokenize_corpus(corpus, same).tokens
    assert tokenize_corpus(corpus, same).tokens is first  # tokenised once
    assert tokenizer_key(same) == tokenizer_key(_word_tokenizer(["<unk>", "a", "b", "c"]))
    assert tokenizer_key(same) != tokenizer_key(_word_tokenizer(["<unk>", "a", "b", "d"]))


@pytest.mark.parametrize("value", [None, 3, b"looking-glass"])
def test_load_corpus_refuses_what_is_not_a_name_or_path(value):
    with pytest.raises(MaxactError, match=r"a corpus is a name \(looking-glass, wonderland\) or the path of a UTF-8 text file"):
        load_corpus(value)
