"""What a concept pass reads (docs/CONCEPTS.md): a corpus as tokens with each token's character
offsets (fast tokenizers only), so words and tags can be placed on tokens; a part-of-speech tagged
corpus as documents; contrast sets fed one text per sequence, with the value of each target."""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from maxact.analysis.categories import (
    Labels,
    TaggedText,
    is_tagged,
    phrase_spans,
    read_tagged,
    span_labels,
    token_spans,
)
from maxact.capture import stream
from maxact.config import DEFAULT_TEXT_COLUMN
from maxact.corpus import Corpus, CorpusInfo, TokenSource, open_corpus
from maxact.corpus.documents import DocumentStream
from maxact.corpus.source import JSONL
from maxact.errors import MaxactError
from maxact.units import SiteRef

SPAN_OPEN, SPAN_CLOSE = "[[", "]]"  # a contrast text's target span


def tokens_with_offsets(text: str, tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """(n,) int32 ids exactly as the corpus is tokenised (no special tokens) and (n, 2) int64
    character offsets [start, end) of each token in ``text``."""
    if not getattr(tokenizer, "is_fast", False):
        raise MaxactError("words, tags and marked spans are placed on tokens through a fast tokenizer's "
                          "character offsets; this model's tokenizer is not a fast one")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    ids = np.asarray(enc["input_ids"], dtype=np.int64)
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    return ids.astype(np.int32), offsets


def tagged_path(value: str) -> Path | None:
    """The tagged corpus a --corpus value names (a path, or a file in $MAXACT_DATA with or without
    its .jsonl.gz suffix), or None when it names no tagged corpus."""
    candidates = [Path(value).expanduser()]
    data = os.environ.get("MAXACT_DATA")
    if data:
        candidates += [Path(data) / value, Path(data) / f"{value}.jsonl.gz", Path(data) / f"{value}.jsonl"]
    return next((p for p in candidates if is_tagged(p)), None)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class TaggedSource(NamedTuple):
    source: TokenSource
    word_spans: np.ndarray  # (n_words, 2) int64 token span [first, stop) of each word
    word_tags: np.ndarray  # (n_words,) int64 index of each word's tag in tagged.tags
    tagged: TaggedText


def tagged_source(path: Path, tokenizer, max_tokens: int | None) -> TaggedSource:
    """A tagged corpus as a token source of its documents (each tokenised on its own) and the token
    span of every word; max_tokens: only as many documents as reach that many tokens."""
    tagged = read_tagged(path)
    ids, spans, doc_starts = [], [], []
    n = 0
    n_words_kept = 0
    for d, text in enumerate(tagged.texts):
        doc_ids, offsets = tokens_with_offsets(text, tokenizer)
        if len(doc_ids) == 0:
            continue
        words = np.nonzero(tagged.word_doc == d)[0]
        spans.append(token_spans(offsets, tagged.word_chars[words]) + n)
        doc_starts.append(n)
        ids.append(doc_ids)
        n += len(doc_ids)
        n_words_kept = int(words[-1]) + 1 if len(words) else n_words_kept
        if max_tokens is not None and n >= max_tokens:
            break
    tokens = np.concatenate(ids).astype(np.int32)
    info = CorpusInfo(name=path.name, path=str(path), sha256=_sha256(path), n_tokens=len(tokens), format=JSONL,
                      n_docs=len(doc_starts), text_column="words")
    source = TokenSource(tokens, np.asarray(doc_starts, dtype=np.int64), info).head(max_tokens)
    word_spans = np.concatenate(spans) if spans else np.zeros((0, 2), dtype=np.int64)
    return TaggedSource(source, word_spans, tagged.word_tags[:n_words_kept], tagged)


def tag_labels(ts: TaggedSource, tags: list[str], mode: str, against: list[str] | None = None) -> Labels:
    """in: the words whose tag is one of ``tags``; out: the words tagged one of ``against``, or every
    other word when None (one observation a word; a word cut by max_tokens is none)."""
    names = np.asarray(ts.tagged.tags)[ts.word_tags]
    rest = np.ones(len(names), dtype=bool) if against is None else np.isin(names, against)
    group = np.where(np.isin(names, tags), 0, np.where(rest, 1, -1))
    return span_labels(len(ts.source), ts.word_spans, group, mode, ("in", "out"), rest_group=None)


class WordSource(NamedTuple):
    """A corpus with the matches of a word list as the category (`maxact concept --words`)."""

    source: TokenSource
    labels: Labels  # in: each match (one observation); out: every token outside all matches
    n_matches: int  # matches wholly inside the tokens fed


def _word_documents(docs: Iterable[tuple[str, str]], tokenizer, phrases: list[str], max_tokens: int | None,
                    no_token: Callable[[str], None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each document (text, where) tokenised on its own with offsets and the phrases matched in its
    own text (never across documents): (n,) int32 tokens, (n_docs,) int64 document starts and
    (k, 2) int64 token spans of the matches. Stops after the document that reaches max_tokens; a
    document with no token goes to ``no_token(where)``."""
    ids, spans, starts = [], [], []
    n = 0
    for text, where in docs:
        doc_ids, offsets = tokens_with_offsets(text, tokenizer)
        if len(doc_ids) == 0:
            no_token(where)
            continue
        spans.append(token_spans(offsets, phrase_spans(text, phrases)) + n)
        starts.append(n)
        ids.append(doc_ids)
        n += len(doc_ids)
        if max_tokens is not None and n >= max_tokens:
            break
    if not ids:
        raise MaxactError("the corpus has no document with a token: no word can be matched")
    return (np.concatenate(ids).astype(np.int32), np.asarray(starts, dtype=np.int64),
            np.concatenate(spans).reshape(-1, 2).astype(np.int64))


def word_source(corpus_value: str, tokenizer, phrases: list[str], mode: str, *, strip_gutenberg: bool,
                max_tokens: int | None, text_column: str = DEFAULT_TEXT_COLUMN,
                skip_empty: bool = False) -> WordSource:
    """A corpus with its phrase matches as the category: in = each match (one observation), out =
    every token outside all matches. A single text is tokenised whole; a corpus of documents (a
    folder, JSONL, Parquet, CSV, datasets) and a tagged corpus (its documents' words joined by
    spaces) each document on its own, as the concept pass feeds them, so no match spans two
    documents. max_tokens: the first N tokens; a match cut there is no observation."""
    tagged = tagged_path(corpus_value)
    if tagged is not None:
        text = read_tagged(tagged)
        docs = ((t, f"{tagged} document {i + 1}") for i, t in enumerate(text.texts))
        tokens, starts, spans = _word_documents(docs, tokenizer, phrases, max_tokens, lambda where: None)
        info = CorpusInfo(name=tagged.name, path=str(tagged), sha256=_sha256(tagged), n_tokens=len(tokens),
                          format=JSONL, n_docs=len(starts), text_column="words")
    else:
        corpus = open_corpus(corpus_value, strip_gutenberg=strip_gutenberg, text_column=text_column,
                             skip_empty=skip_empty)
        if isinstance(corpus, Corpus):
            tokens, offsets = tokens_with_offsets(corpus.text, tokenizer)
            starts = np.zeros(1, dtype=np.int64)
            spans = token_spans(offsets, phrase_spans(corpus.text, phrases))
            info = CorpusInfo(name=corpus.name, path=corpus.path, sha256=corpus.sha256, stripped=corpus.stripped,
                              n_tokens=len(tokens))
        else:
            stream = DocumentStream(corpus)
            docs = ((d.text, stream.where_at(d.file, d.row)) for d in stream)
            tokens, starts, spans = _word_documents(docs, tokenizer, phrases, max_tokens,
                                                    lambda where: stream.skip(where, "no token"))
            info = CorpusInfo(name=corpus.name, path=corpus.path, sha256=corpus.sha256, n_tokens=len(tokens),
                              format=corpus.format, n_docs=len(starts), text_column=corpus.text_column,
                              n_skipped=stream.n_skipped)
    source = TokenSource(tokens, starts, info).head(max_tokens)
    labels = span_labels(len(source), spans, np.zeros(len(spans), dtype=np.int64), mode, ("in", "out"), rest_group=1)
    return WordSource(source, labels, int((spans[:, 1] <= len(source)).sum()))


class ContrastText(NamedTuple):
    ids: np.ndarray  # (n,) int64 tokens fed, BOS first when one is fed
    target: tuple[int, int]  # token span [first, stop) of the target in ids


def parse_contrast(text: str, tokenizer, bos_id: int | None, where: str) -> ContrastText:
    """One contrast line: its target is the span marked [[...]] (markers removed), else its last token."""
    a, b = text.find(SPAN_OPEN), text.find(SPAN_CLOSE)
    marked = a >= 0 or b >= 0
    if marked and not (0 <= a < b) or text.count(SPAN_OPEN) > 1:
        raise MaxactError(f"{where}: mark one target as [[words]] (one opening and one closing pair), got {text!r}")
    plain = text[:a] + text[a + 2 : b] + text[b + 2 :] if marked else text
    ids, offsets = tokens_with_offsets(plain, tokenizer)
    if len(ids) == 0:
        raise MaxactError(f"{where}: the text {text!r} has no token")
    if marked:
        first, stop = token_spans(offsets, np.array([[a, b - 2]], dtype=np.int64))[0]
        if stop <= first:
            raise MaxactError(f"{where}: the marked span of {text!r} holds no token")
    else:
        first, stop = len(ids) - 1, len(ids)
    shift = 0 if bos_id is None else 1
    fed = ids.astype(np.int64) if bos_id is None else np.concatenate([[bos_id], ids]).astype(np.int64)
    return ContrastText(fed, (int(first) + shift, int(stop) + shift))


def contrast_values(lm, texts: list[ContrastText], refs: list[SiteRef], mode: str) -> np.ndarray:
    """(n_texts, U) float32 each text's target value for every unit of refs side by side: each text
    fed as its own sequence (texts of one length batched together); a multi-token target is its
    last token, its first, or their mean (``mode``)."""
    widths = [lm.adapter.width(r) for r in refs]
    offsets = dict(zip(refs, np.cumsum([0] + widths[:-1]).tolist()))
    out = np.zeros((len(texts), sum(widths)), dtype=np.float32)
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, t in enumerate(texts):
        by_len[len(t.ids)].append(i)
    for idx in by_len.values():
        ids = torch.from_numpy(np.stack([texts[i].ids for i in idx])).to(lm.device)  # (B, T) int64

        def consume(ref: SiteRef, acts: torch.Tensor, idx=idx) -> None:  # acts (B, T, width)
            a = acts.float().cpu().numpy()
            o = offsets[ref]
            for row, i in enumerate(idx):
                first, stop = texts[i].target
                span = a[row, first:stop]  # (k, width)
                out[i, o : o + a.shape[2]] = span[-1] if mode == "last" else span[0] if mode == "first" else span.mean(0)

        with torch.inference_mode():
            stream(lm.adapter, ids, refs, consume)
    return out
