"""Multi-document corpora: found (a folder, a glob, a JSONL / Parquet / CSV file, a Hugging Face
`datasets` folder), checked before anything loads (files readable, text column present, bytes
hashed) and read back one document at a time (``DocumentStream``).

One row is one document (one file, for text files). A text column whose value is a list of strings
(pre-split words, as in brown-tagged.jsonl.gz's ``words``) is joined with single spaces. A null,
empty or whitespace-only document is refused, naming its file and row, unless ``skip_empty`` is
set; then it is skipped and counted.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from maxact.corpus.readers import READERS
from maxact.corpus.source import CSV, HF_DATASETS, JSONL, PARQUET, TEXT_FILES
from maxact.errors import MaxactError

# file name endings of the table formats (lower case; a longer ending is tried first)
TABLE_SUFFIXES = {".jsonl.gz": JSONL, ".jsonl": JSONL, ".parquet": PARQUET, ".csv": CSV}
# endings of files that are neither text nor a supported table: refused by name, not read as text
UNSUPPORTED_SUFFIXES = (".json", ".json.gz", ".ndjson", ".tsv", ".arrow", ".feather", ".xlsx", ".xls", ".gz",
                        ".bz2", ".xz", ".zst", ".zip", ".tar", ".7z", ".pdf", ".docx", ".npy", ".npz", ".pt")
SUPPORTED_TEXT = ("a named corpus, a UTF-8 text file, a folder or glob of text files (one document each), "
                  ".jsonl, .jsonl.gz, .parquet (a file or a folder of them), .csv, or a Hugging Face datasets "
                  "folder (save_to_disk)")
_GLOB_CHARS = "*?["
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class DocumentCorpus:
    """A multi-document corpus, found and checked, not yet read.

    name: the folder's name, the file's name without its format ending, or the glob as given.
    path: the absolute folder or file, or the absolute glob.
    files: read in this order (sorted paths; a datasets folder's own shard order).
    text_column: the column holding the text (None for text files).
    sha256: of the files' bytes (CorpusInfo.sha256).
    """

    name: str
    path: str
    format: str
    files: tuple[str, ...]
    text_column: str | None
    skip_empty: bool
    sha256: str


class Document(NamedTuple):
    text: str
    file: str
    row: int  # 1-based row (JSONL: line) in file; 1 for a text file


def suffix_of(path: Path) -> str:
    """The lower-case format ending of a file name: ".jsonl.gz", ".parquet", ".txt", "" ..."""
    name = path.name.lower()
    for ending in (*TABLE_SUFFIXES, ".json.gz"):
        if name.endswith(ending):
            return ending
    return path.suffix.lower()


def table_format(path: Path) -> str | None:
    """The table format a file's name says (JSONL, PARQUET, CSV), None for any other file; a name
    that says an unsupported format is refused."""
    suffix = suffix_of(path)
    if suffix in UNSUPPORTED_SUFFIXES:
        raise MaxactError(f"corpus file {path}: format {suffix!r} is not supported; a corpus is {SUPPORTED_TEXT}")
    return TABLE_SUFFIXES.get(suffix)


def is_glob(value: str) -> bool:
    return any(c in value for c in _GLOB_CHARS)


def find_documents(value: str, text_column: str, skip_empty: bool) -> DocumentCorpus:
    """The document corpus at ``value``: an existing folder or table file, or a glob pattern."""
    path = Path(value).expanduser()
    if path.is_dir():
        folder = path.resolve()
        fmt, files = _folder_files(folder)
        name, where = folder.name, str(folder)
    elif path.is_file():
        fmt = table_format(path)
        if fmt is None:
            raise MaxactError(f"corpus file {path} is not a table; text files are read by load_corpus")
        files = [path.resolve()]
        name, where = path.name[: -len(suffix_of(path))] or path.name, str(path.resolve())
    else:
        pattern = os.path.abspath(os.path.expanduser(value))
        files = [Path(p) for p in sorted(glob.glob(pattern, recursive=True)) if _is_data_file(Path(p))]
        if not files:
            raise MaxactError(f"corpus glob {value!r} matches no file; give a pattern that names files, e.g. "
                              "'shards/*.jsonl.gz', or a folder")
        fmt = _files_format(files, f"corpus glob {value!r}")
        name, where = value, pattern
    column = None if fmt == TEXT_FILES else text_column
    if column is not None:
        _check_column(fmt, files, column)
    return DocumentCorpus(name=name, path=where, format=fmt, files=tuple(map(str, files)), text_column=column,
                          skip_empty=skip_empty, sha256=files_sha256(files))


def _is_data_file(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".")


def _folder_files(folder: Path) -> tuple[str, list[Path]]:
    """(format, files) of a folder: a `datasets` folder's shards, or its visible files (not its
    sub-folders), sorted, all of one format."""
    if (folder / "dataset_dict.json").is_file():
        splits = sorted(p.name for p in folder.iterdir() if (p / "state.json").is_file())
        raise MaxactError(f"corpus {folder} is a Hugging Face DatasetDict; pass the folder of one split: "
                          f"{', '.join(str(folder / s) for s in splits) or 'it holds none'}")
    if (folder / "state.json").is_file():
        return HF_DATASETS, _datasets_files(folder)
    files = sorted(p for p in folder.iterdir() if _is_data_file(p))
    if not files:
        raise MaxactError(f"corpus {folder} is a directory with no file to read (hidden files and sub-folders "
                          f"are not read); a corpus is {SUPPORTED_TEXT}")
    return _files_format(files, f"corpus folder {folder}"), files


def _datasets_files(folder: Path) -> list[Path]:
    """The .arrow shards of a `datasets` folder (save_to_disk), in the order its state.json lists them."""
    state_path = folder / "state.json"
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
        names = [entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MaxactError(f"{state_path} is not a datasets state.json listing _data_files ({type(exc).__name__}); "
                          "save the dataset again with save_to_disk") from None
    files = [folder / n for n in names]
    missing = [str(f) for f in files if not f.is_file()]
    if missing or not files:
        raise MaxactError(f"datasets folder {folder} lacks the shards its state.json lists: "
                          f"{', '.join(missing) or 'it lists none'}")
    return files


def _files_format(files: list[Path], what: str) -> str:
    """The one format of a list of files (text files unless their names say a table format)."""
    formats = {f: table_format(f) or TEXT_FILES for f in files}
    kinds = sorted(set(formats.values()))
    if len(kinds) > 1:
        examples = ", ".join(f"{next(f.name for f, k in formats.items() if k == kind)} ({kind})" for kind in kinds)
        raise MaxactError(f"{what} mixes formats: {examples}; read one format at a time, e.g. with a glob "
                          "such as 'folder/*.parquet'")
    return kinds[0]


def _check_column(fmt: str, files: list[Path], column: str) -> None:
    """Every file has the column (JSONL, with no header: its first object)."""
    for f in files:
        names = READERS[fmt].columns(f)
        if fmt == JSONL and not names:
            continue  # a JSONL file with no object holds no document, and no column to check
        if column not in names:
            raise MaxactError(f"{f} has no column {column!r}; its columns: {', '.join(map(repr, names)) or 'none'} "
                              "(choose one with --text-column)")


def files_sha256(files: list[Path]) -> str:
    """One file's sha256; for several, the sha256 of their digests concatenated in order."""
    digests = []
    for f in files:
        h = hashlib.sha256()
        try:
            with open(f, "rb") as fh:
                while chunk := fh.read(_HASH_CHUNK):
                    h.update(chunk)
        except OSError as exc:
            raise MaxactError(f"cannot read corpus file {f}: {exc.strerror or exc}") from None
        digests.append(h.digest())
    return digests[0].hex() if len(digests) == 1 else hashlib.sha256(b"".join(digests)).hexdigest()


def document_text(value, column: str | None, where: str) -> str | None:
    """A value of the text column as a document's text: a string as is, a list of strings joined
    with single spaces; None for null. Any other value is refused."""
    if isinstance(value, str):
        return value
    if value is None:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return " ".join(value)
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise MaxactError(f"{where}: column {column!r} holds a {type(value).__name__} ({shown}), not text; a "
                      "document is a string or a list of strings (joined with spaces)")


def empty_document(where: str, what: str) -> MaxactError:
    return MaxactError(f"{where} is an empty document ({what}); remove it, or skip empty documents with "
                       "--skip-empty (skip_empty=True)")


class DocumentStream:
    """The documents of a corpus, in order, one at a time; ``n_skipped`` counts the empty ones
    skipped so far (with skip_empty; without it, the first one is refused)."""

    def __init__(self, corpus: DocumentCorpus):
        self.corpus = corpus
        self.n_skipped = 0

    def __iter__(self) -> Iterator[Document]:
        reader = READERS[self.corpus.format]
        column = self.corpus.text_column
        for f in self.corpus.files:
            for batch in reader.batches(Path(f), column):
                for row, value in zip(batch.rows, batch.values):
                    text = value if type(value) is str else document_text(value, column, self.where_at(batch.file, row))
                    if text is None or not text or text.isspace():
                        what = "null" if text is None else "whitespace only" if text else "no text"
                        self.skip(self.where_at(batch.file, row), what)
                        continue
                    yield Document(text, batch.file, row)

    def where_at(self, file: str, row: int) -> str:
        """A document's place in errors: the file, and its row (JSONL: line) for a table."""
        word = READERS[self.corpus.format].row_word
        return f"{file} {word} {row}" if word else file

    def skip(self, where: str, what: str) -> None:
        """Count an empty document, or refuse it (without skip_empty)."""
        if not self.corpus.skip_empty:
            raise empty_document(where, what)
        self.n_skipped += 1
