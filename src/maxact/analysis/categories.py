"""Categories of tokens for `maxact concept` (docs/CONCEPTS.md): which corpus tokens are
observations of the category (``in``), of the rest (``out``) or of the groups of a property.

- ``--token TEXT``: exact token texts (leading space included), looked up in a vocabulary;
- ``--words FILE``: words or phrases matched in the text (whole words, case-sensitive), mapped to
  tokens through the fast tokenizer's character offsets;
- ``--tag PATTERN``: part-of-speech tags of a tagged corpus (``brown-tagged.jsonl.gz``: ``words``
  and ``tags`` columns); a pattern that is itself a tag means that tag (``*`` is Brown's negation
  tag), any other is an fnmatch pattern (``np*``, ``vb?``, ``*[*]*``);
- ``--by token-length | capitalized``: groups of token types by a property of their text.

A word or phrase of several tokens is one observation: its last token (``last``), its first
(``first``) or the mean of its tokens (``mean``). numpy and the standard library only: the
tokenizer is called, never imported.
"""

from __future__ import annotations

import difflib
import fnmatch
import gzip
import json
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

from maxact.errors import MaxactError, choices_text

WORD_TOKENS = ("last", "first", "mean")  # how a multi-token word becomes one observation
PROPERTIES = ("token-length", "capitalized")  # --by
MAX_LENGTH_GROUP = 8  # --by token-length: groups 1, 2, ..., 7 and "8+" characters
QUOTES = {"``": '"', "''": '"'}  # Brown's quote words, written as the text has them


class Labels(NamedTuple):
    """Observations of a corpus for a concept pass: each is one token or a span of tokens inside
    one window (``mean``), in one group."""

    group_names: tuple[str, ...]  # ("in", "out") or a property's groups
    token_obs: np.ndarray  # (n_tokens,) int64 observation each token belongs to, -1: none
    obs_group: np.ndarray  # (n_obs,) int64 group of each observation
    obs_size: np.ndarray  # (n_obs,) int64 tokens of each observation (its value is their mean)

    @property
    def n_obs(self) -> int:
        return len(self.obs_group)

    def group_counts(self) -> np.ndarray:
        """(G,) int64 observations per group."""
        return np.bincount(self.obs_group, minlength=len(self.group_names)).astype(np.int64)


def check_word_token(mode: str) -> str:
    if mode not in WORD_TOKENS:
        raise MaxactError(f"--word-token {mode!r} is not one of {choices_text(WORD_TOKENS)}")
    return mode


# ---- token texts ---------------------------------------------------------------------------------
def token_ids_for(vocab: list[str], texts: list[str]) -> list[int]:
    """Token ids whose text is exactly one of ``texts``; an unknown text is an error naming the
    nearest token texts."""
    by_text: dict[str, list[int]] = {}
    for i, t in enumerate(vocab):
        by_text.setdefault(t, []).append(i)
    ids: list[int] = []
    for text in texts:
        if text not in by_text:
            near = difflib.get_close_matches(text, by_text.keys(), n=5, cutoff=0.0)
            hint = f"; the nearest token texts are {', '.join(repr(t) for t in near)}" if near else ""
            raise MaxactError(f"--token {text!r} is no token of the vocabulary (token texts carry their "
                              f"leading space, e.g. ' not'){hint}")
        ids += by_text[text]
    return sorted(set(ids))


def token_labels(tokens: np.ndarray, in_ids: list[int]) -> Labels:
    """Every token one observation: in when its id is one of in_ids, else out."""
    n = len(tokens)
    group = np.where(np.isin(tokens, np.asarray(in_ids, dtype=np.int64)), 0, 1).astype(np.int64)
    return Labels(("in", "out"), np.arange(n, dtype=np.int64), group, np.ones(n, dtype=np.int64))


# ---- properties of token texts -------------------------------------------------------------------
def property_groups(by: str, vocab: list[str]) -> tuple[tuple[str, ...], np.ndarray]:
    """The groups of a property and the (len(vocab),) int64 group of every token id."""
    if by not in PROPERTIES:
        raise MaxactError(f"--by {by!r} is not one of {choices_text(PROPERTIES)}")
    stripped = [t.lstrip() for t in vocab]
    if by == "token-length":
        names = tuple(str(k) for k in range(1, MAX_LENGTH_GROUP)) + (f"{MAX_LENGTH_GROUP}+",)
        lengths = np.array([len(t) for t in stripped], dtype=np.int64)
        group = np.clip(lengths, 1, MAX_LENGTH_GROUP) - 1  # a token of spaces only counts as length 1
        return names, group
    names = ("capitalized", "lowercase", "no letter")
    def first_letter_group(t: str) -> int:
        c = t[:1]
        return 0 if c.isalpha() and c.isupper() else 1 if c.isalpha() else 2
    return names, np.array([first_letter_group(t) for t in stripped], dtype=np.int64)


def property_labels(tokens: np.ndarray, by: str, vocab: list[str]) -> Labels:
    """Every token one observation, in the group of its type's property."""
    names, group_of = property_groups(by, vocab)
    n = len(tokens)
    return Labels(names, np.arange(n, dtype=np.int64), group_of[tokens], np.ones(n, dtype=np.int64))


# ---- words and spans -----------------------------------------------------------------------------
def read_lines(path: Path, option: str) -> list[str]:
    """Non-empty lines of a UTF-8 file (without their line ends)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MaxactError(f"{option} {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise MaxactError(f"{option} {path} cannot be read as UTF-8 text ({e})") from None
    lines = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
    if not lines:
        raise MaxactError(f"{option} {path} holds no line of text: the category would be empty")
    return lines


def phrase_spans(text: str, phrases: list[str]) -> np.ndarray:
    """(k, 2) int64 character spans [start, end) of the phrases in text: whole words (no letter,
    digit or underscore right before or after), case-sensitive, longest first where they overlap,
    in text order."""
    words = sorted({p.strip() for p in phrases if p.strip()}, key=len, reverse=True)
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(w) for w in words) + r")(?!\w)")
    spans = [(m.start(), m.end()) for m in pattern.finditer(text)]
    return np.array(spans, dtype=np.int64).reshape(-1, 2)


def token_spans(offsets: np.ndarray, char_spans: np.ndarray) -> np.ndarray:
    """offsets (n_tokens, 2) character [start, end) of each token, char_spans (k, 2) -> (k, 2)
    token spans [first, last + 1) of the tokens that overlap each character span (first == last + 1
    when none does)."""
    ends, starts = offsets[:, 1], offsets[:, 0]
    first = np.searchsorted(ends, char_spans[:, 0], side="right")  # first token ending after the start
    stop = np.searchsorted(starts, char_spans[:, 1], side="left")  # tokens starting before the end
    return np.stack([first, np.maximum(stop, first)], axis=1).astype(np.int64)


def span_labels(n_tokens: int, spans: np.ndarray, span_group: np.ndarray, mode: str, group_names: tuple[str, ...],
                rest_group: int | None) -> Labels:
    """Observations from token spans (k, 2) [first, stop) with a group each (k,): one token
    (``last``, ``first``) or every token (``mean``) per span; overlapping or empty spans are
    dropped. A span of a negative group, or reaching past ``n_tokens`` (cut by max_tokens), is no
    observation and its tokens are not in the rest. rest_group: the group of every token outside all
    spans, one observation each (None: those tokens are no observation)."""
    check_word_token(mode)
    keep = spans[:, 1] > spans[:, 0]
    spans, span_group = spans[keep], span_group[keep]
    left_out = (spans[:, 1] > n_tokens) | (span_group < 0)  # (k,)
    excluded = np.zeros(n_tokens, dtype=bool)  # tokens of the spans left out: neither in a span nor rest
    for a, b in np.minimum(spans[left_out], n_tokens).tolist():
        excluded[a:b] = True
    spans, span_group = spans[~left_out], span_group[~left_out]
    order = np.argsort(spans[:, 0], kind="stable")
    spans, span_group = spans[order], span_group[order]
    if len(spans) > 1:  # a span that starts before the previous one ends is dropped
        ok = np.ones(len(spans), dtype=bool)
        end = -1
        for i, (a, b) in enumerate(spans.tolist()):
            ok[i] = a >= end
            end = max(end, b) if ok[i] else end
        spans, span_group = spans[ok], span_group[ok]
    sizes = spans[:, 1] - spans[:, 0]  # (k,)
    span_of = np.repeat(np.arange(len(spans)), sizes)  # the span of every covered token
    covered_pos = np.repeat(spans[:, 0], sizes) + (np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes))
    token_obs = np.full(n_tokens, -1, dtype=np.int64)
    covered = np.zeros(n_tokens, dtype=bool)
    covered[covered_pos] = True
    if mode == "mean":
        token_obs[covered_pos] = span_of
        obs_size = sizes.astype(np.int64)
    else:
        rep = spans[:, 1] - 1 if mode == "last" else spans[:, 0]
        token_obs[rep] = np.arange(len(spans))
        obs_size = np.ones(len(spans), dtype=np.int64)
    obs_group = span_group.astype(np.int64)
    if rest_group is not None:
        rest = np.nonzero(~covered & ~excluded)[0]
        token_obs[rest] = len(spans) + np.arange(len(rest))
        obs_group = np.concatenate([obs_group, np.full(len(rest), rest_group, dtype=np.int64)])
        obs_size = np.concatenate([obs_size, np.ones(len(rest), dtype=np.int64)])
    return Labels(group_names, token_obs, obs_group, obs_size)


# ---- tagged corpora ------------------------------------------------------------------------------
class TaggedText(NamedTuple):
    """A part-of-speech tagged corpus as documents of text with each word's place and tag."""

    name: str
    path: str
    texts: list[str]  # one per document: its sentences' words joined by spaces
    word_doc: np.ndarray  # (n_words,) int64 document of each word
    word_chars: np.ndarray  # (n_words, 2) int64 character span of each word in its document's text
    word_tags: np.ndarray  # (n_words,) int64 index of each word's tag in ``tags``
    tags: tuple[str, ...]  # every tag of the corpus, sorted


def is_tagged(path: Path) -> bool:
    """Whether a file is a JSONL (optionally gzipped) corpus whose records carry ``words`` and ``tags``."""
    if not (path.name.endswith(".jsonl") or path.name.endswith(".jsonl.gz")) or not path.is_file():
        return False
    try:
        with (gzip.open if path.name.endswith(".gz") else open)(path, "rt", encoding="utf-8") as f:
            first = json.loads(f.readline() or "null")
    except (OSError, ValueError):
        return False
    return isinstance(first, dict) and isinstance(first.get("words"), list) and isinstance(first.get("tags"), list)


def read_tagged(path: Path, max_words: int | None = None) -> TaggedText:
    """Read a tagged JSONL corpus: one sentence a line with ``words`` and ``tags`` (same length) and
    an optional ``doc`` id; consecutive sentences of one doc id make a document. max_words: stop
    after the sentence that reaches that many words."""
    texts: list[str] = []
    parts: list[str] = []
    pos = 0
    word_doc: list[int] = []
    chars: list[tuple[int, int]] = []
    tag_names: list[str] = []
    unset = object()
    current = unset  # the doc id of the document being read
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                words, tags = rec["words"], rec["tags"]
            except (ValueError, KeyError, TypeError):
                raise MaxactError(f"{path} line {line_no} is no JSON object with `words` and `tags`") from None
            if len(words) != len(tags):
                raise MaxactError(f"{path} line {line_no} has {len(words)} words and {len(tags)} tags")
            if current is unset or rec.get("doc") != current:
                if parts:
                    texts.append("".join(parts))
                parts, pos, current = [], 0, rec.get("doc")
            for w, t in zip(words, tags):
                w = QUOTES.get(w, w)
                if pos:
                    parts.append(" ")
                    pos += 1
                parts.append(w)
                chars.append((pos, pos + len(w)))
                pos += len(w)
                word_doc.append(len(texts))
                tag_names.append(str(t))
            if max_words is not None and len(word_doc) >= max_words:
                break
    if parts:
        texts.append("".join(parts))
    tags = tuple(sorted(set(tag_names)))
    index = {t: i for i, t in enumerate(tags)}
    return TaggedText(path.name, str(path), texts, np.array(word_doc, dtype=np.int64),
                      np.array(chars, dtype=np.int64).reshape(-1, 2),
                      np.array([index[t] for t in tag_names], dtype=np.int64), tags)


def match_tags(patterns: list[str], tags: tuple[str, ...]) -> list[str]:
    """The tags the patterns name: a pattern that is a tag means that tag, any other is an fnmatch
    pattern (case-sensitive); a pattern that matches no tag is an error listing the tags."""
    out: set[str] = set()
    for p in patterns:
        hit = [p] if p in tags else [t for t in tags if fnmatch.fnmatchcase(t, p)]
        if not hit:
            raise MaxactError(f"--tag {p!r} matches no tag of the corpus; its tags are {choices_text(tags, 60)}")
        out |= set(hit)
    return sorted(out)
