"""One reader per document format: the column names a file has, and its text values streamed in
batches (``RawBatch``), never a whole file at once. Row numbers are 1-based; JSONL counts lines.

A reader hands over values as the file holds them (a string, a list, null, a number); what counts as
a document's text is decided in ``documents.document_text``. pyarrow is imported where it is used,
so importing this module stays light (the store imports ``maxact.corpus``).
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from maxact.corpus.source import CSV, HF_DATASETS, JSONL, PARQUET, TEXT_FILES
from maxact.errors import MaxactError

BATCH_ROWS = 1024  # documents per batch, at most
BATCH_CHARS = 4 << 20  # characters per batch, at most (unless one document is longer)
CSV_BLOCK_BYTES = 4 << 20  # bytes pyarrow's CSV reader parses at a time


@dataclass(frozen=True)
class RawBatch:
    """Consecutive values of one file's text column, as the file holds them."""

    file: str
    rows: range | list[int]  # 1-based row (JSONL: line) of each value
    values: list  # str, list of str, None, or anything else the file holds (refused later)


@dataclass(frozen=True)
class Reader:
    """How one format is read. columns(file) lists the columns (None for text files, which have
    none); batches(file, column) streams the column's values."""

    format: str
    row_word: str  # how a position in the file is named in errors: "line", "row" or "" (whole file)
    columns: Callable[[Path], list[str]] | None
    batches: Callable[[Path, str | None], Iterator[RawBatch]]


def _arrow_error(what: str, path: Path, exc: Exception, after_row: int | None = None) -> MaxactError:
    where = f" after row {after_row}" if after_row else ""
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return MaxactError(f"cannot read {what} file {path}{where}: {reason}; the file is corrupt or not {what}")


# ---------- text files: each file one document ----------


def read_text_document(path: Path) -> str:
    """One text file as one document: UTF-8, no NUL byte, a leading U+FEFF dropped."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MaxactError(f"cannot read corpus file {path}: {exc.strerror or exc}") from None
    nul = data.find(b"\x00")
    if nul >= 0:
        raise MaxactError(f"corpus file {path} looks binary (NUL byte at offset {nul}); every file of a "
                          "folder or glob of text files must be UTF-8 text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MaxactError(f"corpus file {path} is not valid UTF-8: byte 0x{data[exc.start]:02x} at offset "
                          f"{exc.start} cannot be decoded; the file must be UTF-8 (convert it, e.g. with iconv)") from None
    return text[1:] if text.startswith("\ufeff") else text


def _text_batches(path: Path, column: str | None) -> Iterator[RawBatch]:
    yield RawBatch(str(path), [1], [read_text_document(path)])


# ---------- JSONL (.jsonl, .jsonl.gz): one JSON object a line ----------


def _open_lines(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _jsonl_objects(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line; a bad line is refused with its number."""
    line_no = 0
    try:
        with _open_lines(path) as f:
            for line_no, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue  # blank lines (a trailing one, say) hold no document
                try:
                    obj = json.loads(raw)
                except UnicodeDecodeError as exc:
                    raise MaxactError(f"{path} line {line_no} is not valid UTF-8 ({exc.reason} at byte "
                                      f"{exc.start}); JSONL must be UTF-8") from None
                except json.JSONDecodeError as exc:
                    raise MaxactError(f"{path} line {line_no} is not valid JSON ({exc.msg} at column {exc.colno}); "
                                      "JSONL holds one JSON object a line") from None
                if not isinstance(obj, dict):
                    raise MaxactError(f"{path} line {line_no} is a JSON {type(obj).__name__}, not an object; "
                                      "JSONL holds one JSON object a line")
                yield line_no, obj
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise MaxactError(f"cannot read {path} after line {line_no}: {exc}; the file is corrupt or truncated") from None


def _jsonl_columns(path: Path) -> list[str]:
    """The keys of the file's first object (JSONL has no header); [] for a file with no object."""
    for _, obj in _jsonl_objects(path):
        return list(obj)
    return []


def _jsonl_batches(path: Path, column: str | None) -> Iterator[RawBatch]:
    rows: list[int] = []
    values: list = []
    chars = 0
    for line_no, obj in _jsonl_objects(path):
        if column not in obj:
            raise MaxactError(f"{path} line {line_no} has no column {column!r}; its columns: "
                              f"{', '.join(map(repr, obj)) or 'none'} (choose one with --text-column)")
        value = obj[column]
        rows.append(line_no)
        values.append(value)
        chars += len(value) if isinstance(value, str) else 0
        if len(values) >= BATCH_ROWS or chars >= BATCH_CHARS:
            yield RawBatch(str(path), rows, values)
            rows, values, chars = [], [], 0
    if values:
        yield RawBatch(str(path), rows, values)


# ---------- Arrow-backed formats: Parquet, CSV, Hugging Face datasets ----------


def _record_batches(what: str, path: Path, column: str, batches) -> Iterator[RawBatch]:
    """RawBatches of ``column`` from an iterator of pyarrow record batches, errors named by row."""
    import pyarrow as pa

    row = 0
    try:
        for batch in batches:
            values = batch.column(column).to_pylist()
            for lo in range(0, len(values), BATCH_ROWS):
                chunk = values[lo:lo + BATCH_ROWS]
                yield RawBatch(str(path), range(row + lo + 1, row + lo + 1 + len(chunk)), chunk)
            row += len(values)
    except (pa.ArrowException, OSError) as exc:
        raise _arrow_error(what, path, exc, row) from None


def _parquet_columns(path: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(path).names)
    except (pa.ArrowException, OSError) as exc:
        raise _arrow_error("Parquet", path, exc) from None


def _parquet_batches(path: Path, column: str | None) -> Iterator[RawBatch]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise _arrow_error("Parquet", path, exc) from None
    with parquet:
        yield from _record_batches("Parquet", path, column, parquet.iter_batches(batch_size=BATCH_ROWS, columns=[column]))


def _csv_reader(path: Path, column: str | None):
    import pyarrow as pa
    from pyarrow import csv

    convert = csv.ConvertOptions(strings_can_be_null=False)
    if column is not None:  # read only that column, as text whatever it looks like
        convert = csv.ConvertOptions(include_columns=[column], column_types={column: pa.string()},
                                     strings_can_be_null=False)
    try:
        return csv.open_csv(path, read_options=csv.ReadOptions(block_size=CSV_BLOCK_BYTES),
                            parse_options=csv.ParseOptions(newlines_in_values=True), convert_options=convert)
    except (pa.ArrowException, OSError) as exc:
        raise _arrow_error("CSV", path, exc) from None


def _csv_columns(path: Path) -> list[str]:
    return list(_csv_reader(path, None).schema.names)


def _csv_batches(path: Path, column: str | None) -> Iterator[RawBatch]:
    yield from _record_batches("CSV", path, column, _csv_reader(path, column))


def _arrow_stream(path: Path):
    """A `datasets` .arrow file: the Arrow IPC stream format (what save_to_disk writes), or the file
    format; memory-mapped."""
    import pyarrow as pa

    try:
        source = pa.memory_map(str(path))
        try:
            return pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            source.seek(0)
            return pa.ipc.open_file(source)
    except (pa.ArrowException, OSError) as exc:
        raise _arrow_error("Arrow", path, exc) from None


def _arrow_columns(path: Path) -> list[str]:
    return list(_arrow_stream(path).schema.names)


def _arrow_batches(path: Path, column: str | None) -> Iterator[RawBatch]:
    import pyarrow as pa

    reader = _arrow_stream(path)
    if isinstance(reader, pa.ipc.RecordBatchFileReader):
        batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
    else:
        batches = iter(reader)
    yield from _record_batches("Arrow", path, column, batches)


READERS: dict[str, Reader] = {
    TEXT_FILES: Reader(TEXT_FILES, "", None, _text_batches),
    JSONL: Reader(JSONL, "line", _jsonl_columns, _jsonl_batches),
    PARQUET: Reader(PARQUET, "row", _parquet_columns, _parquet_batches),
    CSV: Reader(CSV, "row", _csv_columns, _csv_batches),
    HF_DATASETS: Reader(HF_DATASETS, "row", _arrow_columns, _arrow_batches),
}
