"""What the engine reads instead of text: a token stream, its document boundaries and where it came
from (``TokenSource``, ``CorpusInfo``). Standard library and numpy only: the store imports it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

# the formats a corpus can have (CorpusInfo.format); "text" is the single text file (a book)
TEXT = "text"
TEXT_FILES = "text-files"
JSONL = "jsonl"
PARQUET = "parquet"
CSV = "csv"
HF_DATASETS = "hf-datasets"


@dataclass(frozen=True)
class CorpusInfo:
    """Where a token stream came from (the manifest's ``corpus``); n_tokens once it is known.

    The fields after n_tokens came with multi-document corpora; their defaults describe a book, so
    manifests and partials written before them still load."""

    name: str
    path: str
    # of the source's raw bytes: the file's sha256 for one file; for several files, the sha256 of
    # their sha256 digests (32 bytes each) concatenated in reading order
    sha256: str
    stripped: bool = False  # the Project Gutenberg header was stripped (book sources only)
    n_tokens: int = 0
    format: str = TEXT  # one of TEXT, TEXT_FILES, JSONL, PARQUET, CSV, HF_DATASETS
    n_docs: int = 1  # documents in the token stream
    text_column: str | None = None  # the column read (JSONL, Parquet, CSV, datasets); None for text
    n_skipped: int = 0  # empty or whitespace-only documents skipped (skip_empty)


@dataclass(frozen=True)
class TokenSource:
    """What the engine reads instead of text: the token stream, its document boundaries and where it
    came from. A single book is one document.

    tokens may be a read-only np.memmap (a stream loaded from the on-disk token cache). doc_starts
    is strictly increasing from 0 and every document holds at least one token."""

    tokens: np.ndarray = field(repr=False)  # (n_tokens,) int32
    doc_starts: np.ndarray = field(repr=False)  # (n_docs,) int64, first token of each document
    info: CorpusInfo

    def __post_init__(self):
        if self.tokens.dtype != np.int32 or self.tokens.ndim != 1:
            raise TypeError(f"TokenSource.tokens must be a flat int32 array, got {self.tokens.dtype} {self.tokens.shape}")
        starts = self.doc_starts
        if starts.dtype != np.int64 or starts.ndim != 1:
            raise TypeError(f"TokenSource.doc_starts must be a flat int64 array, got {starts.dtype} {starts.shape}")
        if len(starts) and (starts[0] != 0 or np.any(np.diff(starts) <= 0) or starts[-1] >= max(len(self.tokens), 1)):
            raise ValueError("TokenSource.doc_starts must start at 0 and increase strictly, every document "
                             "holding at least one token")

    @property
    def name(self) -> str:
        return self.info.name

    def __len__(self) -> int:
        return len(self.tokens)

    def head(self, n: int | None) -> TokenSource:
        """The first n tokens (all when n is None), documents cut at n."""
        if n is None or n >= len(self.tokens):
            return self
        tokens = self.tokens[:n]
        starts = self.doc_starts[self.doc_starts < n]
        return TokenSource(tokens, starts, replace(self.info, n_tokens=int(n), n_docs=len(starts)))
