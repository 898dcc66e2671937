"""Windows of a token stream (docs/METHOD.md, "Documents"): how the atlas pass and the reference
experiment cut a stream of one or more documents into windows, never across a document start.

- ``Windowing``: what the model is fed per window: ``seq`` tokens, the first a BOS token when one is
  prepended (then ``seq - 1`` corpus tokens), and what happens to a document's short last window.
- ``StartSpace``: every start a reference window can take, numbered in corpus order, so exact
  sampling, the atlas's simulated reference statistic and `sample --atlas` draw the same starts from
  the same seed. In a single text the draws are exactly ``rng.integers(0, n_tokens - seq)``.
- ``window_bounds``: the atlas-pass window that holds a corpus position.

numpy only (the model and tokenizer are read by attribute, never imported).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from maxact.errors import MaxactError, choices_text

DOC_TAILS = ("short", "drop")  # a document's last window shorter than the others: fed as is, or dropped


@dataclass(frozen=True)
class Windowing:
    """What the model sees per window: ``seq`` tokens; with ``bos_id`` set, that BOS token and then
    ``seq - 1`` corpus tokens (the BOS position is fed but never counted: it is not a corpus token)."""

    seq: int  # tokens the model sees per full window, BOS included
    bos_id: int | None  # the token fed before every window; None: no BOS
    doc_tail: str  # one of DOC_TAILS

    @property
    def length(self) -> int:
        """Corpus tokens per full window."""
        return self.seq - (self.bos_id is not None)


def bos_token_id(lm) -> int | None:
    """The BOS token id of a loaded model: its tokenizer's, or its config's when it has no
    tokenizer (the tiny test models); None when it has none."""
    owner = lm.tokenizer if lm.tokenizer is not None else lm.model.config
    bos = getattr(owner, "bos_token_id", None)
    return None if bos is None else int(bos)


def resolve_bos(bos: bool | None, n_docs: int, model_bos: int | None, seq: int, model: str) -> int | None:
    """The BOS token to feed before every window, or None. bos None: the model's BOS token for a
    multi-document source when it has one (as SAELens and TransformerLens prepend it), none for a
    single text (the reference experiment feeds raw windows)."""
    on = (n_docs > 1 and model_bos is not None) if bos is None else bool(bos)
    if on and model_bos is None:
        raise MaxactError(f"--bos: model {model} has no BOS token (neither its tokenizer nor its config "
                          f"names one); run with --no-bos")
    if on and seq < 2:
        raise MaxactError(f"--seq {seq} leaves no corpus token after the BOS token; use --seq 2 or more, or --no-bos")
    return model_bos if on else None


def resolve_windowing(seq: int, doc_tail: str, bos: bool | None, n_docs: int, model_bos: int | None,
                      model: str) -> Windowing:
    """The windowing of an atlas run (resolve_bos for ``bos``)."""
    if doc_tail not in DOC_TAILS:
        raise MaxactError(f"--doc-tail {doc_tail!r} is not one of {choices_text(DOC_TAILS)}")
    return Windowing(seq, resolve_bos(bos, n_docs, model_bos, seq, model), doc_tail)


def doc_lengths(doc_starts: np.ndarray, n_tokens: int) -> np.ndarray:
    """(n_docs,) int64 tokens of each document, from its start to the next one (or the end)."""
    return np.diff(np.append(np.asarray(doc_starts, dtype=np.int64), n_tokens))


@dataclass(frozen=True, eq=False)
class StartSpace:
    """Every start a reference window of ``length`` corpus tokens can take, numbered 0 ..
    n_starts - 1 in corpus order. In a document [s, e) the starts are s .. e - length - 1: the
    reference draws from [0, n_tokens - seq) in a single text, leaving out the last start that would
    fit, and every document is treated alike, so a document needs at least length + 1 tokens to
    hold a window. Equal (and hashed) by value, so seeded draws can be cached per geometry."""

    doc_starts: np.ndarray  # (n_docs,) int64 first token of each document
    first_index: np.ndarray  # (n_docs + 1,) int64 number of each document's first start; last: n_starts
    n_tokens: int
    length: int  # corpus tokens per window
    _key: tuple = field(init=False, repr=False)

    def __post_init__(self):
        digest = hashlib.sha256(np.ascontiguousarray(self.doc_starts, dtype=np.int64)).hexdigest()
        object.__setattr__(self, "_key", (self.n_tokens, self.length, digest))

    def __eq__(self, other) -> bool:
        return isinstance(other, StartSpace) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    @staticmethod
    def of(doc_starts: np.ndarray, n_tokens: int, length: int) -> StartSpace:
        """doc_starts: (n_docs,) int64, increasing, the first 0."""
        doc_starts = np.asarray(doc_starts, dtype=np.int64)
        per_doc = np.maximum(doc_lengths(doc_starts, n_tokens) - length, 0)  # (n_docs,) starts
        first = np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(per_doc, dtype=np.int64)])
        return StartSpace(doc_starts, first, int(n_tokens), int(length))

    @property
    def n_starts(self) -> int:
        return int(self.first_index[-1])

    @property
    def n_docs(self) -> int:
        return len(self.doc_starts)

    @property
    def docs_without_window(self) -> int:
        """Documents too short to hold a window (length tokens or fewer)."""
        return int((np.diff(self.first_index) == 0).sum())

    @property
    def longest_doc(self) -> int:
        return int(doc_lengths(self.doc_starts, self.n_tokens).max())

    def starts_at(self, index: np.ndarray) -> np.ndarray:
        """(...) start numbers in [0, n_starts) -> (...) int64 corpus positions of those starts."""
        doc = np.searchsorted(self.first_index, index, side="right") - 1
        return self.doc_starts[doc] + (index - self.first_index[doc])

    def draw_index(self, rng: np.random.Generator, batch: int) -> np.ndarray:
        """(batch,) int64 start numbers uniform with replacement on [0, n_starts): one ``rng.integers``
        call, the draw of every sampler of the reference experiment."""
        return rng.integers(0, self.n_starts, size=batch, dtype=np.int64)

    def draw(self, rng: np.random.Generator, batch: int) -> np.ndarray:
        """(batch,) int64 starts uniform with replacement over the space; in a single text exactly
        ``rng.integers(0, n_tokens - seq, size=batch)``."""
        return self.starts_at(self.draw_index(rng, batch))

    def covering(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each corpus position (-1 = none), the numbers of the first and last start whose window
        covers it (a > b: none). Both grow with the position (an empty interval [a, a - 1] too), so
        the starts covering a set of positions can be counted interval by interval."""
        p = np.maximum(positions, 0)
        doc = np.searchsorted(self.doc_starts, p, side="right") - 1
        s, first = self.doc_starts[doc], self.first_index[doc]
        count = self.first_index[doc + 1] - first  # starts in that document
        a = first + np.maximum(p - s - self.length + 1, 0)
        b = first + np.minimum(p - s, count - 1)
        none = positions < 0
        return np.where(none, 1, a), np.where(none, 0, b)


def require_starts(space: StartSpace, seq: int, what: str) -> None:
    """Raise MaxactError unless a reference window of ``seq`` tokens fits somewhere in the stream.
    `what` names the corpus in the message (e.g. "corpus 'looking-glass'")."""
    if seq < 1:
        raise MaxactError(f"--seq must be a positive number of tokens, got {seq}")
    if space.n_starts >= 1:
        return
    if space.n_docs == 1 and space.length == seq:
        require_tokens(space.n_tokens, seq, what)
    bos = f" ({space.length} corpus tokens after the BOS token)" if space.length != seq else ""
    raise MaxactError(
        f"no document of {what} can hold a window of --seq {seq}{bos}: a window needs a document of at "
        f"least {space.length + 1} tokens and the longest of its {space.n_docs} has {space.longest_doc}; "
        f"use a smaller --seq"
    )


def window_bounds(positions: np.ndarray, doc_starts: np.ndarray, n_tokens: int,
                  length: int) -> tuple[np.ndarray, np.ndarray]:
    """(...) corpus positions -> (...) first and end (exclusive) position of the atlas-pass window
    that holds each: windows of ``length`` corpus tokens from each document's start, the last one
    ending with its document. -1 for a position of -1 (an empty slot)."""
    p = np.maximum(positions, 0)
    doc = np.searchsorted(doc_starts, p, side="right") - 1
    s = doc_starts[doc]
    doc_end = np.append(doc_starts[1:], n_tokens)[doc]
    lo = s + (p - s) // length * length
    hi = np.minimum(lo + length, doc_end)
    none = positions < 0
    return np.where(none, -1, lo), np.where(none, -1, hi)


def resolve_seed(seed: int | None) -> int:
    """The seed to use: the given one, or a fresh one (to be recorded) when None."""
    return int(np.random.SeedSequence().entropy % (2**31)) if seed is None else int(seed)


def require_tokens(n_tokens: int, seq: int, what: str) -> None:
    """Raise MaxactError unless a corpus of `n_tokens` tokens can fill one window of `seq` tokens.

    The reference draws window starts from [0, n_tokens - seq), so it needs n_tokens >= seq + 1.
    `what` names the corpus in the message (e.g. "corpus 'looking-glass'").
    """
    if seq < 1:
        raise MaxactError(f"--seq must be a positive number of tokens, got {seq}")
    if n_tokens < seq + 1:
        raise MaxactError(
            f"{what} has {n_tokens} tokens, too few for --seq {seq} (it needs at least "
            f"{seq + 1}); use a smaller --seq or a longer corpus"
        )
