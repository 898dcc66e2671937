"""Documents of the tests of tests/unit/test_documents.py and test_documents_windows.py: a
source of several documents of chosen lengths, and the documented windowing rules written out
again in plain Python (the documents, the plan's windows, the valid reference starts)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from atlas_helpers import synthetic_corpus
from tiny_models import VOCAB

from maxact.corpus import TokenSource

# documents shorter than a window, exactly one window long, one token more, several windows with a
# short tail, a single token
DOC_LENGTHS = (40, 3, 15, 16, 31, 1, 50, 22, 7, 33, 17)
SEQ, K, KC = 16, 6, 3
BOS = 0  # the tiny models' config.bos_token_id; corpus tokens are drawn from 1..VOCAB-1


def doc_source(lengths=DOC_LENGTHS, seed: int = 0) -> TokenSource:
    lengths = np.asarray(lengths, dtype=np.int64)
    tokens = np.random.default_rng(seed).integers(1, VOCAB, int(lengths.sum())).astype(np.int32)
    starts = np.cumsum(lengths) - lengths
    return TokenSource(tokens, starts, replace(synthetic_corpus("docs"), n_tokens=len(tokens)))


def documents(source: TokenSource) -> list[tuple[int, int]]:
    """[(start, end)] of every document."""
    ends = [*source.doc_starts[1:].tolist(), len(source)]
    return list(zip(source.doc_starts.tolist(), ends))


def plan_windows(source: TokenSource, length: int, tail: str) -> list[tuple[int, int]]:
    """The documented windows: from each document's start, consecutive runs of `length` tokens; the
    last one ends with the document (kept with tail "short", dropped with "drop")."""
    out = []
    for s, e in documents(source):
        for w in range(s, e, length):
            if tail == "short" or w + length <= e:
                out.append((w, min(w + length, e)))
    return out


def valid_starts(source: TokenSource, length: int) -> list[int]:
    """Starts of reference windows: in each document [s, e), s .. e - length - 1 (a single text:
    [0, n - seq), the reference experiment's range)."""
    return [w for s, e in documents(source) for w in range(s, e - length)]


def brute_covered(positions, source, length):
    valid = valid_starts(source, length)
    out = np.zeros(positions.shape, dtype=np.int64)
    for u, row in enumerate(positions):
        for k in range(len(row)):
            prefix = [p for p in row[: k + 1] if p >= 0]
            out[u, k] = sum(any(s <= p < s + length for p in prefix) for s in valid)
    return out
