"""The on-disk token cache of document corpora, under ``cache_dir()/tokens/``: per key, the token
stream as an int32 ``.npy`` (``KEY.tokens.npy``), the document starts (``KEY.doc_starts.npy``, int64)
and ``KEY.json`` (counts, what was read), written last so that its presence means a complete entry.

The key hashes the tokenizer (``tokenizer_key``), the source (format, sha256 of its bytes, text
column, skip_empty) and the token limit (None: the whole stream). Tokens are appended to the
``.npy`` while they are made (its header is rewritten with the final length at the end), through
``maxact.fsio.atomic_file``: a reader sees a whole file or none. A second run maps the file
(read-only np.memmap) instead of tokenising again.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np

from maxact.errors import MaxactError
from maxact.fsio import atomic_file, remove_leftovers, write_bytes_atomic, write_json_atomic
from maxact.paths import cache_dir

CACHE_SCHEMA = 1  # bump when what an entry holds, or how a corpus is tokenised, changes
_NPY_HEADER_BYTES = 128  # fixed, so the final length can be written over the placeholder


def token_cache_dir() -> Path:
    return cache_dir() / "tokens"


def cache_key(tokenizer_id: tuple, fmt: str, sha256: str, text_column: str | None, skip_empty: bool,
              max_tokens: int | None) -> str:
    """Hex sha256 of everything the stream depends on."""
    material = [CACHE_SCHEMA, list(tokenizer_id), fmt, sha256, text_column, skip_empty, max_tokens]
    return hashlib.sha256(json.dumps(material).encode()).hexdigest()


class CachedStream(NamedTuple):
    tokens: np.ndarray  # (n_tokens,) int32, read-only np.memmap
    doc_starts: np.ndarray  # (n_docs,) int64
    n_skipped: int  # empty documents skipped while reading


class CacheEntry:
    """The three files of one key."""

    def __init__(self, key: str):
        self.folder = token_cache_dir()
        self.tokens_path = self.folder / f"{key}.tokens.npy"
        self.starts_path = self.folder / f"{key}.doc_starts.npy"
        self.info_path = self.folder / f"{key}.json"

    def load(self) -> CachedStream | None:
        """The cached stream, or None when there is none (or it is damaged: it is made again)."""
        if not self.info_path.is_file():
            return None
        try:
            info = json.loads(self.info_path.read_text(encoding="utf-8"))
            tokens = np.load(self.tokens_path, mmap_mode="r")  # (n_tokens,) int32
            starts = np.load(self.starts_path)  # (n_docs,) int64
            if (tokens.dtype != np.int32 or tokens.shape != (info["n_tokens"],) or starts.dtype != np.int64
                    or starts.shape != (info["n_docs"],)):
                return None
            return CachedStream(tokens, starts, int(info["n_skipped"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @contextlib.contextmanager
    def writer(self) -> Iterator[TokenWriter]:
        """``with entry.writer() as w: w.append(ids) ...; w.finish(starts, n_skipped, about)``: the
        entry appears complete when finish() was called and the block ends, never otherwise."""
        in_body = False
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            remove_leftovers(self.folder)  # temporary files of killed runs
            with atomic_file(self.tokens_path) as f:
                writer = TokenWriter(f, self.folder)
                in_body = True
                yield writer
                in_body = False
                if writer.final is None:
                    raise RuntimeError("TokenWriter.finish() was not called")
                f.seek(0)
                f.write(npy_header(writer.n_tokens))
            starts, n_skipped, about = writer.final
            buf = io.BytesIO()
            np.save(buf, starts)
            write_bytes_atomic(self.starts_path, buf.getvalue())
            write_json_atomic(self.info_path, {"schema": CACHE_SCHEMA, "n_tokens": writer.n_tokens,
                                               "n_docs": len(starts), "n_skipped": n_skipped, **about})
        except OSError as exc:
            if in_body:  # the caller's own error (reading the corpus, say), not the cache's
                raise
            raise unwritable(self.folder, exc) from None


def unwritable(folder: Path, exc: OSError) -> MaxactError:
    return MaxactError(f"cannot write the token cache in {folder}: {exc.strerror or exc}; set MAXACT_CACHE "
                       "to a writable folder")


class TokenWriter:
    """Appends int32 ids to an open .npy file after its placeholder header."""

    def __init__(self, f: IO[bytes], folder: Path):
        self.f = f
        self.folder = folder
        self.n_tokens = 0
        self.final: tuple[np.ndarray, int, dict] | None = None
        f.write(npy_header(0))

    def append(self, ids: np.ndarray) -> None:
        """ids: (n,) int32."""
        try:
            self.f.write(np.ascontiguousarray(ids, dtype="<i4").tobytes())
        except OSError as exc:
            raise unwritable(self.folder, exc) from None
        self.n_tokens += len(ids)

    def finish(self, doc_starts: np.ndarray, n_skipped: int, about: dict) -> None:
        """doc_starts: (n_docs,) int64; about: what was read (kept in the JSON, for people)."""
        self.final = (doc_starts, n_skipped, about)


def npy_header(n: int) -> bytes:
    """A .npy (version 1.0) header for an (n,) little-endian int32 array, always 128 bytes."""
    text = f"{{'descr': '<i4', 'fortran_order': False, 'shape': ({n},), }}"
    text = text.ljust(_NPY_HEADER_BYTES - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")
