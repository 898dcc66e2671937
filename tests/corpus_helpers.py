"""Shared by the corpus tests (tests/unit/test_corpus_documents.py, test_corpus_errors.py): documents
that trip tokenizers and table writers up, a small byte-level BPE tokenizer, a tokenizer that counts
its calls, a brute-force tokenisation, and writers of every supported format."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from maxact.corpus import (
    CSV,
    HF_DATASETS,
    JSONL,
    PARQUET,
    TEXT_FILES,
    load_source,
    open_corpus,
)
from maxact.errors import MaxactError

# documents with what trips tokenizers and table writers up: leading spaces, newlines, quotes,
# commas, non-ASCII, a long one
DOCS = [
    "Fellow citizens of the Senate and House of Representatives.",
    " leading space, then \"quotes\", commas; and a\nnewline\r\nor two",
    "caf\u00e9 \u00fcber na\u00efve \u2014 \u65e5\u672c\u8a9e \U0001f600",
    "x",
    "the quick brown fox " * 50,
    "Last: tab\tand trailing space ",
]


def _bpe_tokenizer():
    """A small byte-level BPE fast tokenizer (as GPT-2 and SmolLM2 are), trained in a millisecond."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(["the quick brown fox jumps over the lazy dog, " * 3,
                             "Fellow citizens of the Senate and House of Representatives"], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok)


class Counting:
    """A tokenizer that counts its calls (and the documents they carry); everything else delegates."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = 0
        self.docs = 0

    def __call__(self, texts, **kwargs):
        self.calls += 1
        self.docs += len(texts) if isinstance(texts, list) else 1
        return self.inner(texts, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def brute(docs: list[str], tokenizer) -> tuple[list[int], list[int]]:
    """Each document tokenised on its own: (all ids end to end, document starts)."""
    ids, starts = [], []
    for d in docs:
        starts.append(len(ids))
        ids += tokenizer(d, add_special_tokens=False)["input_ids"]
    return ids, starts


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------- writers of every format ----------


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def write_parquet(path: Path, rows: list[dict], row_group_size: int = 2) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def write_datasets_folder(folder: Path, shards: list[list[dict]], names: list[str] | None = None) -> Path:
    """What datasets' save_to_disk writes: Arrow IPC stream shards, state.json, dataset_info.json."""
    folder.mkdir()
    names = names or [f"data-{i:05d}-of-{len(shards):05d}.arrow" for i in range(len(shards))]
    for name, rows in zip(names, shards):
        table = pa.Table.from_pylist(rows)
        with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            for batch in table.to_batches(max_chunksize=2):
                writer.write_batch(batch)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": n} for n in names],
                                                   "_split": "train"}))
    (folder / "dataset_info.json").write_text(json.dumps({"features": {}}))
    return folder


def rows(docs=DOCS, column="text"):
    return [{"id": i, column: d, "year": 1790 + i} for i, d in enumerate(docs)]


def make_source(kind: str, tmp_path: Path) -> tuple[str, str, list[Path]]:
    """(value for --corpus, format, the files in reading order) holding DOCS."""
    if kind in ("jsonl", "jsonl.gz"):
        f = write_jsonl(tmp_path / f"docs.{kind}", rows())
        return str(f), JSONL, [f]
    if kind == "parquet":
        f = write_parquet(tmp_path / "docs.parquet", rows())
        return str(f), PARQUET, [f]
    if kind == "parquet-folder":
        folder = tmp_path / "shards"
        folder.mkdir()
        files = [write_parquet(folder / "part-0.parquet", rows()[:4]), write_parquet(folder / "part-1.parquet", rows()[4:])]
        return str(folder), PARQUET, files
    if kind == "csv":
        f = write_csv(tmp_path / "docs.csv", rows())
        return str(f), CSV, [f]
    if kind == "datasets":
        folder = write_datasets_folder(tmp_path / "ds", [rows()[:3], rows()[3:]])
        return str(folder), HF_DATASETS, sorted(folder.glob("*.arrow"))
    folder = tmp_path / "texts"
    folder.mkdir()
    files = []
    for i, d in enumerate(DOCS):  # names sort in document order: 10 files would need zero padding
        files.append(folder / f"doc{i}.txt")
        files[-1].write_text(d, encoding="utf-8", newline="")
    if kind == "folder":
        return str(folder), TEXT_FILES, files
    return str(folder / "doc*.txt"), TEXT_FILES, files


KINDS = ["jsonl", "jsonl.gz", "parquet", "parquet-folder", "csv", "datasets", "folder", "glob"]


def err(value, tokenizer=None, **kw) -> str:
    with pytest.raises(MaxactError) as e:
        if tokenizer is None:
            open_corpus(value, **kw)
        else:
            load_source(value, tokenizer, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg
