"""Tokenising: a whole text in one call (a book), or a batch of documents in one batch call (the fast
tokenizer spreads it over its Rust threads). Always with no special tokens, so each document's ids
are exactly ``tokenizer(doc, add_special_tokens=False)["input_ids"]``."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from maxact.errors import MaxactError


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence the "sequence length is longer than the specified maximum" warning: the stream is cut
    into windows later."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


def _checked_int32(ids: np.ndarray) -> np.ndarray:
    """(n,) int64 ids -> (n,) int32, refusing ids outside [0, 2**31)."""
    if ids.size and (ids.min() < 0 or ids.max() >= 2**31):
        raise MaxactError(
            f"tokenizer returned ids outside [0, 2**31) (min {ids.min()}, max {ids.max()}); "
            "maxact stores token ids as int32"
        )
    return ids.astype(np.int32)  # (n,) int32


def tokenize(text: str, tokenizer) -> np.ndarray:
    """Tokenise the whole text in one call, with no special tokens (no BOS).

    Exactly `tokenizer(text, add_special_tokens=False)["input_ids"]`, which for GPT-2 / GPT-Neo is
    what the original `tokenizer.encode(text)` gave. The "sequence length is longer than the
    specified maximum" warning is silenced: the text is cut into windows later.
    Returns int32 ids, shape (n_tokens,).
    """
    with _quiet_transformers():
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    arr = np.asarray(ids, dtype=np.int64)  # (n_tokens,) int64, before the range check
    if arr.ndim != 1:
        raise MaxactError(f"tokenizer returned ids of shape {arr.shape}; expected one flat list")
    return _checked_int32(arr)  # (n_tokens,) int32


class TokenBatch(NamedTuple):
    """A batch of documents tokenised: their ids end to end and each one's length."""

    ids: np.ndarray  # (n_tokens,) int32, the documents' ids concatenated in order
    lengths: np.ndarray  # (n_docs,) int64, tokens of each document


def tokenize_batch(texts: list[str], tokenizer) -> TokenBatch:
    """Tokenise documents with one batch call, each on its own with no special tokens: the ids of
    document i are exactly ``tokenizer(texts[i], add_special_tokens=False)["input_ids"]``."""
    with _quiet_transformers():
        per_doc = tokenizer(texts, add_special_tokens=False)["input_ids"]
    lengths = np.fromiter(map(len, per_doc), dtype=np.int64, count=len(per_doc))  # (n_docs,)
    flat = np.fromiter(itertools.chain.from_iterable(per_doc), dtype=np.int64, count=int(lengths.sum()))  # (n,)
    return TokenBatch(_checked_int32(flat), lengths)


def tokenizer_key(tokenizer) -> tuple[str, int, str]:
    """What identifies a tokenizer's output: its name or path, vocabulary size and a hash of what
    maps text to ids: a fast tokenizer's whole pipeline (vocabulary, added tokens, normalizer,
    pre-tokenizer, merges, ...; without the truncation and padding each call sets), else its
    vocabulary (token -> id, added tokens included). Unlike ``id()``, never reused by another one;
    the same in every process (it keys the on-disk token cache)."""
    vocab = tokenizer.get_vocab()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        state = json.dumps(sorted(vocab.items()), ensure_ascii=False)
    else:
        if backend.truncation is not None or backend.padding is not None:
            backend = type(backend).from_str(backend.to_str())
            backend.no_truncation()
            backend.no_padding()
        state = backend.to_str()
    return str(getattr(tokenizer, "name_or_path", "")), len(vocab), hashlib.sha256(state.encode()).hexdigest()
