"""Named books and single text files: found (by name in $MAXACT_DATA, the cache or online, or by
path), read, validated and, for a Project Gutenberg book, stripped of its header on request.

The text is used raw, as the reference experiment used it: header included, no cleaning (see
METHOD.md, step 1). A text file is one document, tokenised whole in one call (``load.py``).
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from maxact.corpus.documents import SUPPORTED_TEXT, table_format
from maxact.errors import MaxactError, choices_text
from maxact.fsio import write_bytes_atomic
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


def _not_a_corpus(value: str) -> MaxactError:
    names = choices_text(NAMED_CORPORA)
    if os.sep in value or "/" in value or Path(value).suffix:  # meant as a path
        return MaxactError(
            f"corpus file {value} does not exist; pass an existing UTF-8 text file or a named "
            f"corpus ({names}); a corpus is {SUPPORTED_TEXT}"
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
    """Fetch `named.url` into `dest` atomically (maxact.fsio: temp file beside it, then renamed)."""
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
        write_bytes_atomic(dest, data)
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
        raise MaxactError(f"corpus {path} is a directory; load_corpus reads one UTF-8 text file or a named "
                          "corpus: read a folder of documents with load_source (or --corpus)")
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


def corpus_value(name_or_path) -> str:
    """A corpus argument as a string, refused in one line when it is neither a name nor a path."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise MaxactError(f"a corpus is a name ({choices_text(NAMED_CORPORA)}) or the path of a UTF-8 text "
                          f"file, a folder or a table of documents, got {type(name_or_path).__name__}")
    return os.fspath(name_or_path)


def load_corpus(name_or_path: str | os.PathLike[str], strip_gutenberg: bool = False) -> Corpus:
    """Resolve, read and validate a corpus.

    The file must be non-empty UTF-8 text without NUL bytes; a leading U+FEFF byte-order mark is
    dropped, and nothing else is cleaned. With `strip_gutenberg`, only the part between the
    Project Gutenberg START and END markers is kept (see `strip_gutenberg_text`).
    """
    value = corpus_value(name_or_path)
    path = resolve_corpus_path(value).resolve()
    if path.is_file() and table_format(path) is not None:
        raise MaxactError(f"corpus {path} is a {table_format(path)} table of documents; load_corpus reads one UTF-8 "
                          "text file: read it with load_source (or --corpus)")
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
