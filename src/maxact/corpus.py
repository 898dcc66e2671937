"""Token sources: text found, read, validated and tokenised into what the engine reads.

A corpus is either a *named* corpus (a Project Gutenberg book that the tool knows how to find or
fetch) or a path to any UTF-8 text file. The text is used raw, as the reference experiment used it:
header included, no cleaning (see METHOD.md, step 1), unless the caller asks the book source to
strip the Project Gutenberg header. Tokenising runs the tokenizer once over the whole text with no
special tokens; ``load_source`` returns the result as a ``TokenSource`` (int32 tokens, document
starts, where they came from), memoised per tokenizer and source.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from maxact.errors import MaxactError, choices_text
from maxact.paths import cache_dir


@dataclass(frozen=True)
class NamedCorpus:
    """A book the tool can find by name: in $MAXACT_DATA, in the cache, or online."""

    file: str  # file name, the same in $MAXACT_DATA, the cache and ../shared/corpora
    ebook: int  # Project Gutenberg eBook number
    # sha256 of the 2016 edition kept in ../shared/corpora, for information only: the online
    # edition at `url` is newer (same text, other header), so a download will not match it.
    sha256: str
    title: str

    @property
    def url(self) -> str:
        """Where a missing copy is downloaded from."""
        return f"https://www.gutenberg.org/cache/epub/{self.ebook}/pg{self.ebook}.txt"


NAMED_CORPORA: dict[str, NamedCorpus] = {
    "looking-glass": NamedCorpus(
        "through-the-looking-glass.txt", 12,
        "21005c16c3c935211cc6cea8ce93f3f0f74192a590562da95cb837378d5d02eb",
        "Lewis Carroll, Through the Looking-Glass, and What Alice Found There"),
    "wonderland": NamedCorpus(
        "alices-adventures-in-wonderland.txt", 11,
        "90be41dc68e60a0613997dea1c2e763806a2f2c989ccf2cb04388f36faacfd41",
        "Lewis Carroll, Alice's Adventures in Wonderland"),
}

DOWNLOAD_TIMEOUT_S = 60
_USER_AGENT = "maxact/0.1 (single-file download)"

# Project Gutenberg markers: "*** START OF THE PROJECT GUTENBERG EBOOK ..." (or "THIS PROJECT"),
# and the same with "END OF" before the licence footer.
_START_RE = re.compile(r"^\*\*\*\s*START OF\b.*$", re.MULTILINE | re.IGNORECASE)
_END_RE = re.compile(r"^\*\*\*\s*END OF\b.*$", re.MULTILINE | re.IGNORECASE)


@dataclass(frozen=True)
class Corpus:
    """A loaded text.

    name: the named corpus's name, or the file's stem for a file given by path.
    path: the absolute path of the file read.
    text: the decoded text (raw, or with the Gutenberg header stripped if asked).
    sha256: hex sha256 of the file's raw bytes (before decoding or stripping).
    stripped: whether the Project Gutenberg header was stripped from `text`.
    """

    name: str
    path: str
    text: str = field(repr=False)  # a whole book: keep it out of repr()
    sha256: str
    stripped: bool = False


@dataclass(frozen=True)
class CorpusInfo:
    """Where a token stream came from (the manifest's ``corpus``); n_tokens once it is known."""

    name: str
    path: str
    sha256: str  # of the source's raw bytes
    stripped: bool = False  # the Project Gutenberg header was stripped (book sources only)
    n_tokens: int = 0


@dataclass(frozen=True)
class TokenSource:
    """What the engine reads instead of text: the token stream, its document boundaries and where it
    came from. A single book is one document."""

    tokens: np.ndarray = field(repr=False)  # (n_tokens,) int32
    doc_starts: np.ndarray = field(repr=False)  # (n_docs,) int64, first token of each document
    info: CorpusInfo

    def __post_init__(self):
        if self.tokens.dtype != np.int32 or self.tokens.ndim != 1:
            raise TypeError(f"TokenSource.tokens must be a flat int32 array, got {self.tokens.dtype} {self.tokens.shape}")

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
        return TokenSource(tokens, starts, replace(self.info, n_tokens=int(n)))


def _not_a_corpus(value: str) -> MaxactError:
    names = choices_text(NAMED_CORPORA)
    if os.sep in value or "/" in value or Path(value).suffix:  # meant as a path
        return MaxactError(
            f"corpus file {value} does not exist; pass an existing UTF-8 text file or a named "
            f"corpus ({names})"
        )
    return MaxactError(
        f"unknown corpus {value!r}: not a named corpus ({names}) and no such file; pass one of "
        "those names or a path to a UTF-8 text file"
    )


def resolve_corpus_path(name_or_path: str | os.PathLike[str]) -> Path:
    """Turn a corpus name or a file path into the path of a file to read.

    An existing path is used as is (a directory is returned too, so that `load_corpus` can say what
    is wrong with it). A named corpus is looked up in `$MAXACT_DATA/<file>` when that variable is
    set and the file exists, else in `cache_dir()/corpora/<file>`, else downloaded into the cache.
    Anything else raises MaxactError listing the named corpora.
    """
    value = os.fspath(name_or_path)
    path = Path(value).expanduser()
    if path.exists():
        return path
    named = NAMED_CORPORA.get(value)
    if named is None:
        raise _not_a_corpus(value)
    data_dir = os.environ.get("MAXACT_DATA")
    if data_dir:
        candidate = Path(data_dir).expanduser() / named.file
        if candidate.is_file():
            return candidate
    cached = cache_dir() / "corpora" / named.file
    if cached.is_file():
        return cached
    _download(value, named, cached)
    return cached


def _download(name: str, named: NamedCorpus, dest: Path) -> None:
    """Fetch `named.url` into `dest` atomically (temp file in the same folder, then os.replace)."""
    hint = (
        f"set MAXACT_DATA to a folder holding {named.file}, or pass the path of a local UTF-8 "
        "text file instead of a name"
    )
    try:
        request = urllib.request.Request(named.url, headers={"User-Agent": _USER_AGENT})
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
            data = response.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:  # HTTPError, timeouts, DNS
        raise MaxactError(
            f"could not download corpus {name!r} from {named.url}: {exc}; {hint}"
        ) from exc
    if not data:
        raise MaxactError(f"downloading corpus {name!r} from {named.url} gave no data; {hint}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise MaxactError(
            f"could not save corpus {name!r} to {dest}: {exc}; set MAXACT_CACHE to a writable "
            f"folder, or {hint}"
        ) from exc


def _read_text(path: Path) -> tuple[str, str]:
    """Read and validate a corpus file; return (text, sha256 of the raw bytes).

    Decodes as UTF-8 and drops one leading U+FEFF byte-order mark, if present; nothing else is
    changed (line endings and the Gutenberg header stay).
    """
    if path.is_dir():
        raise MaxactError(f"corpus {path} is a directory; pass a UTF-8 text file or a corpus name")
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise MaxactError(f"corpus file {path} does not exist") from exc
    except OSError as exc:
        raise MaxactError(f"cannot read corpus file {path}: {exc}") from exc
    if not data:
        raise MaxactError(f"corpus file {path} is empty")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise MaxactError(
            f"corpus file {path} looks binary (NUL byte at offset {nul}); "
            "a corpus must be a UTF-8 text file"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MaxactError(
            f"corpus file {path} is not valid UTF-8: byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start} cannot be decoded; the file must be UTF-8 (convert it, e.g. with iconv)"
        ) from exc
    if text.startswith("\ufeff"):
        text = text[1:]
    return text, hashlib.sha256(data).hexdigest()


def load_corpus(name_or_path: str | os.PathLike[str], strip_gutenberg: bool = False) -> Corpus:
    """Resolve, read and validate a corpus.

    The file must be non-empty UTF-8 text without NUL bytes; a leading U+FEFF byte-order mark is
    dropped, and nothing else is cleaned. With `strip_gutenberg`, only the part between the
    Project Gutenberg START and END markers is kept (see `strip_gutenberg_text`).
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise MaxactError(f"a corpus is a name ({choices_text(NAMED_CORPORA)}) or the path of a UTF-8 text "
                          f"file, got {type(name_or_path).__name__}")
    value = os.fspath(name_or_path)
    path = resolve_corpus_path(value).resolve()
    text, digest = _read_text(path)
    if strip_gutenberg:
        text = strip_gutenberg_text(text, source=str(path))
    if not text.strip():
        after = " after stripping the Project Gutenberg header" if strip_gutenberg else ""
        raise MaxactError(f"corpus file {path} has no text{after}")
    name = value if value in NAMED_CORPORA and not Path(value).exists() else path.stem
    return Corpus(name=name, path=str(path), text=text, sha256=digest, stripped=strip_gutenberg)


def strip_gutenberg_text(text: str, *, source: str = "the text") -> str:
    """Keep what lies between the Project Gutenberg START and END marker lines.

    The START marker is the line starting with `*** START OF` (THE / THIS PROJECT GUTENBERG EBOOK
    ...); the END marker, optional (the shared files have no footer), the line starting with
    `*** END OF`. Blank lines right after START and right before END are dropped. `source` names
    the text in the error raised when there is no START marker.
    """
    start = _START_RE.search(text)
    if start is None:
        raise MaxactError(
            f"{source} has no Project Gutenberg header to strip (no line starting with "
            "'*** START OF'); load it without stripping"
        )
    body = text[start.end() :]
    end = _END_RE.search(body)
    if end is not None:
        body = body[: end.start()]
    return body.strip("\r\n")


def tokenize(text: str, tokenizer) -> np.ndarray:
    """Tokenise the whole text in one call, with no special tokens (no BOS).

    Exactly `tokenizer(text, add_special_tokens=False)["input_ids"]`, which for GPT-2 / GPT-Neo is
    what the original `tokenizer.encode(text)` gave. The "sequence length is longer than the
    specified maximum" warning is silenced: the text is cut into windows later.
    Returns int32 ids, shape (n_tokens,).
    """
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    finally:
        hf_logging.set_verbosity(verbosity)
    arr = np.asarray(ids, dtype=np.int64)  # (n_tokens,) int64, before the range check
    if arr.ndim != 1:
        raise MaxactError(f"tokenizer returned ids of shape {arr.shape}; expected one flat list")
    if arr.size and (arr.min() < 0 or arr.max() >= 2**31):
        raise MaxactError(
            f"tokenizer returned ids outside [0, 2**31) (min {arr.min()}, max {arr.max()}); "
            "maxact stores token ids as int32"
        )
    return arr.astype(np.int32)  # (n_tokens,) int32


def load_source(name_or_path: str | os.PathLike[str], tokenizer, strip_gutenberg: bool = False,
                max_tokens: int | None = None) -> TokenSource:
    """The token source of a named corpus or a text file: ``load_corpus`` then ``tokenize_corpus``.
    strip_gutenberg: keep only the book between its Project Gutenberg markers; max_tokens: only the
    first N tokens (all when None)."""
    return tokenize_corpus(load_corpus(name_or_path, strip_gutenberg=strip_gutenberg), tokenizer, max_tokens)


def tokenize_corpus(corpus: Corpus, tokenizer, max_tokens: int | None = None) -> TokenSource:
    """A loaded corpus as a token source (one document), tokenised once per tokenizer and source."""
    if max_tokens is not None and max_tokens < 1:
        raise MaxactError(f"max_tokens must be at least 1, got {max_tokens}")
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


def tokenizer_key(tokenizer) -> tuple[str, int, str]:
    """What identifies a tokenizer's output: its name or path, vocabulary size and a hash of the
    vocabulary (token -> id, added tokens included). Unlike ``id()``, never reused by another one."""
    vocab = tokenizer.get_vocab()
    digest = hashlib.sha256(json.dumps(sorted(vocab.items()), ensure_ascii=False).encode()).hexdigest()
    return str(getattr(tokenizer, "name_or_path", "")), len(vocab), digest


TOKEN_CACHE_SIZE = 4  # token streams kept per process (a book is ~100 k tokens, 400 kB)
_TOKEN_CACHE: dict[tuple, np.ndarray] = {}
