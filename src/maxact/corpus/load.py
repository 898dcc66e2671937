"""From a corpus name or path to a ``TokenSource``.

``open_corpus`` finds and checks a corpus before any model loads: a named book or a text file is
read (``Corpus``, one document); any other source is found and hashed (``DocumentCorpus``).
``tokenize_corpus`` makes the token stream: a book in one tokenizer call, memoised in this process;
a document corpus streamed in batches of documents, each batch in one batch call, the ids appended
as int32 to the on-disk token cache (``cache.py``), which a second run maps instead of tokenising.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from maxact.config import DEFAULT_TEXT_COLUMN
from maxact.corpus import readers
from maxact.corpus.books import Corpus, corpus_value, load_corpus
from maxact.corpus.cache import CachedStream, CacheEntry, TokenWriter, cache_key
from maxact.corpus.documents import (
    Document,
    DocumentCorpus,
    DocumentStream,
    find_documents,
    is_glob,
    table_format,
)
from maxact.corpus.source import CorpusInfo, TokenSource
from maxact.corpus.tokenize import tokenize, tokenize_batch, tokenizer_key
from maxact.errors import MaxactError

_MIN_BATCH_CHARS = 4096  # the smallest batch near max_tokens
TOKEN_CACHE_SIZE = 4  # book token streams kept per process (a book is ~100 k tokens, 400 kB)
_TOKEN_CACHE: dict[tuple, np.ndarray] = {}


def open_corpus(name_or_path: str | os.PathLike[str], *, strip_gutenberg: bool = False,
                text_column: str = DEFAULT_TEXT_COLUMN, skip_empty: bool = False) -> Corpus | DocumentCorpus:
    """Find and check a corpus, before any model loads.

    A named corpus or a text file: read and validated (``load_corpus``; text_column and skip_empty
    do not apply). A folder, a glob, a .jsonl / .jsonl.gz / .parquet / .csv file or a `datasets`
    folder: its files found, their text column checked and their bytes hashed (``DocumentCorpus``).
    strip_gutenberg applies to books only.
    """
    value = corpus_value(name_or_path)
    path = Path(value).expanduser()
    if path.is_dir() or (path.is_file() and table_format(path) is not None) or (not path.exists() and is_glob(value)):
        if strip_gutenberg:
            raise MaxactError(f"--strip-gutenberg (strip_gutenberg) applies to a Project Gutenberg book, not to "
                              f"the corpus {value}; drop it")
        if not isinstance(text_column, str) or not text_column:
            raise MaxactError(f"the text column must be a column name such as {DEFAULT_TEXT_COLUMN!r}, got "
                              f"{text_column!r}")
        if not isinstance(skip_empty, bool):
            raise MaxactError(f"skip_empty must be True or False, got {skip_empty!r}")
        return find_documents(value, text_column, skip_empty)
    return load_corpus(value, strip_gutenberg=strip_gutenberg)


def load_source(name_or_path: str | os.PathLike[str], tokenizer, strip_gutenberg: bool = False,
                max_tokens: int | None = None, text_column: str = DEFAULT_TEXT_COLUMN,
                skip_empty: bool = False) -> TokenSource:
    """The token source of any corpus: ``open_corpus`` then ``tokenize_corpus``.
    strip_gutenberg: keep only the book between its Project Gutenberg markers; max_tokens: only the
    first N tokens (all when None); text_column: the column holding the text (tables);
    skip_empty: skip empty documents instead of refusing them."""
    corpus = open_corpus(name_or_path, strip_gutenberg=strip_gutenberg, text_column=text_column,
                         skip_empty=skip_empty)
    return tokenize_corpus(corpus, tokenizer, max_tokens)


def tokenize_corpus(corpus: Corpus | DocumentCorpus, tokenizer, max_tokens: int | None = None) -> TokenSource:
    """A corpus as a token source: a book as one document, tokenised once per tokenizer and source in
    this process; a document corpus through the on-disk token cache. max_tokens: only the first N
    tokens, documents cut at N (a document corpus is then read only as far as needed)."""
    if max_tokens is not None and max_tokens < 1:
        raise MaxactError(f"max_tokens must be at least 1, got {max_tokens}")
    if isinstance(corpus, DocumentCorpus):
        return _document_source(corpus, tokenizer, max_tokens)
    key = (tokenizer_key(tokenizer), corpus.sha256, corpus.stripped)
    tokens = _TOKEN_CACHE.pop(key, None)
    if tokens is None:
        tokens = tokenize(corpus.text, tokenizer)  # (n_tokens,) int32
    _TOKEN_CACHE[key] = tokens  # most recently used last
    while len(_TOKEN_CACHE) > TOKEN_CACHE_SIZE:
        del _TOKEN_CACHE[next(iter(_TOKEN_CACHE))]
    info = CorpusInfo(name=corpus.name, path=corpus.path, sha256=corpus.sha256, stripped=corpus.stripped,
                      n_tokens=len(tokens))
    return TokenSource(tokens, np.zeros(1, dtype=np.int64), info).head(max_tokens)


def _document_source(corpus: DocumentCorpus, tokenizer, max_tokens: int | None) -> TokenSource:
    """From the cache of the whole stream, else of this prefix, else tokenised into the cache."""
    tok_id = tokenizer_key(tokenizer)
    entries = [CacheEntry(cache_key(tok_id, corpus.format, corpus.sha256, corpus.text_column, corpus.skip_empty,
                                    limit)) for limit in dict.fromkeys([None, max_tokens])]
    cached = next((c for c in (e.load() for e in entries) if c is not None), None)
    if cached is None:
        cached = _tokenize_into(entries[-1], corpus, tokenizer, max_tokens)
    info = CorpusInfo(name=corpus.name, path=corpus.path, sha256=corpus.sha256, n_tokens=len(cached.tokens),
                      format=corpus.format, n_docs=len(cached.doc_starts), text_column=corpus.text_column,
                      n_skipped=cached.n_skipped)
    return TokenSource(cached.tokens, cached.doc_starts, info).head(max_tokens)


class _Sink:
    """Tokenises batches of documents and appends them to the cache file, keeping document starts;
    stops taking documents once ``max_tokens`` are written."""

    def __init__(self, writer: TokenWriter, stream: DocumentStream, tokenizer, max_tokens: int | None):
        self.writer, self.stream, self.tokenizer, self.max_tokens = writer, stream, tokenizer, max_tokens
        self.starts: list[np.ndarray] = []  # (n_docs_of_batch,) int64 each
        self.n_tokens = 0

    def batch_chars(self) -> int:
        """Characters per batch: fewer when near max_tokens (a token is rarely less than a
        character), so that little past the limit is tokenised."""
        if self.max_tokens is None:
            return readers.BATCH_CHARS
        return min(readers.BATCH_CHARS, max(self.max_tokens - self.n_tokens, _MIN_BATCH_CHARS))

    @property
    def full(self) -> bool:
        return self.max_tokens is not None and self.n_tokens >= self.max_tokens

    def add(self, docs: list[Document]) -> None:
        batch = tokenize_batch([d.text for d in docs], self.tokenizer)
        lengths = batch.lengths  # (n_docs,) int64
        for i in np.flatnonzero(lengths == 0):  # text the tokenizer turns into nothing
            self.stream.skip(self.stream.where_at(docs[i].file, docs[i].row), "no token")
        lengths = lengths[lengths > 0]
        offsets = np.cumsum(lengths) - lengths  # (n_docs,) int64, first token of each in the batch
        ids = batch.ids  # (n,) int32
        if self.max_tokens is not None and self.n_tokens + len(ids) > self.max_tokens:
            room = self.max_tokens - self.n_tokens
            ids, offsets = ids[:room], offsets[offsets < room]
        self.writer.append(ids)
        self.starts.append(self.n_tokens + offsets)
        self.n_tokens += len(ids)


def _tokenize_into(entry: CacheEntry, corpus: DocumentCorpus, tokenizer, max_tokens: int | None) -> CachedStream:
    from tqdm import tqdm

    stream = DocumentStream(corpus)
    with entry.writer() as writer, tqdm(desc=f"tokenizing {corpus.name}", unit=" docs", disable=None,
                                        leave=False) as bar:
        sink = _Sink(writer, stream, tokenizer, max_tokens)
        pending: list[Document] = []
        chars = 0
        for doc in stream:
            pending.append(doc)
            chars += len(doc.text)
            if len(pending) >= readers.BATCH_ROWS or chars >= sink.batch_chars():
                sink.add(pending)
                bar.update(len(pending))
                pending, chars = [], 0
                if sink.full:
                    break
        if pending and not sink.full:
            sink.add(pending)
        starts = np.concatenate(sink.starts) if sink.starts else np.zeros(0, dtype=np.int64)  # (n_docs,) int64
        if sink.n_tokens == 0:
            skipped = f" ({stream.n_skipped} empty documents skipped)" if stream.n_skipped else ""
            raise MaxactError(f"corpus {corpus.path} has no document{skipped}; a corpus needs at least one "
                              "document with text")
        writer.finish(starts, stream.n_skipped, {"corpus": corpus.path, "format": corpus.format,
                                                 "text_column": corpus.text_column, "max_tokens": max_tokens})
    tokens = np.load(entry.tokens_path, mmap_mode="r")  # (n_tokens,) int32
    return CachedStream(tokens, starts, stream.n_skipped)
