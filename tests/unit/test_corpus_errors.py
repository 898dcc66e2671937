"""maxact.corpus, multi-document sources: every bad input gives one clear error naming the value
(formats, folders, columns, rows, encodings, empty documents, book options)."""

from __future__ import annotations

import gzip
import json

import pytest
from corpus_helpers import (
    _bpe_tokenizer,
    brute,
    err,
    rows,
    write_csv,
    write_datasets_folder,
    write_jsonl,
    write_parquet,
)

from maxact.corpus import (
    load_corpus,
    load_source,
    open_corpus,
)
from maxact.errors import MaxactError


@pytest.fixture(scope="module")
def bpe():
    return _bpe_tokenizer()


# ---------- errors ----------


@pytest.mark.parametrize("name", ["data.json", "data.tsv", "data.arrow", "data.txt.gz", "data.zip"])
def test_unsupported_format(tmp_path, name):
    f = tmp_path / name
    f.write_bytes(b"{}")
    msg = err(f)
    assert str(f) in msg and "is not supported" in msg
    for supported in (".jsonl", ".jsonl.gz", ".parquet", ".csv", "datasets", "text file"):
        assert supported in msg


def test_unsupported_format_inside_a_folder(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "b.json").write_text("{}")
    msg = err(tmp_path)
    assert "b.json" in msg and "'.json' is not supported" in msg


def test_mixed_formats(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", rows())
    (tmp_path / "README.md").write_text("about")
    msg = err(tmp_path)
    assert "mixes formats" in msg and "a.jsonl (jsonl)" in msg and "README.md (text-files)" in msg
    assert "*.parquet" in msg  # how to pick one format


def test_glob_matching_nothing(tmp_path):
    msg = err(str(tmp_path / "*.jsonl"))
    assert "matches no file" in msg and str(tmp_path / "*.jsonl") in msg


def test_empty_folder(tmp_path):
    msg = err(tmp_path)
    assert str(tmp_path) in msg and "is a directory with no file" in msg and ".jsonl" in msg


@pytest.mark.parametrize("make, where", [
    (lambda p: write_jsonl(p / "d.jsonl", [{"body": "a"}]), "d.jsonl has no column 'text'; its columns: 'body'"),
    (lambda p: write_parquet(p / "d.parquet", [{"body": "a", "id": 1}]),
     "d.parquet has no column 'text'; its columns: 'body', 'id'"),
    (lambda p: write_csv(p / "d.csv", [{"body": "a", "id": 1}]), "d.csv has no column 'text'; its columns: 'body', 'id'"),
    (lambda p: write_datasets_folder(p / "ds", [[{"body": "a"}]]), "has no column 'text'; its columns: 'body'"),
])
def test_missing_column_names_the_columns(tmp_path, make, where):
    make(tmp_path)
    target = next(p for p in tmp_path.iterdir())
    msg = err(target)
    assert where in msg and "--text-column" in msg


def test_missing_column_in_a_later_jsonl_line(tmp_path, bpe):
    f = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}, {"text": "b"}, {"body": "c"}])
    assert f"{f} line 3 has no column 'text'; its columns: 'body'" in err(f, bpe)


def test_bad_json_line(tmp_path, bpe):
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "a"}\n{"text": "b",}\n', encoding="utf-8")
    msg = err(f, bpe)
    assert f"{f} line 2 is not valid JSON" in msg


def test_non_object_json_line(tmp_path, bpe):
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "a"}\n["text"]\n', encoding="utf-8")
    assert f"{f} line 2 is a JSON list, not an object" in err(f, bpe)


def test_non_utf8_jsonl_line(tmp_path, bpe):
    f = tmp_path / "d.jsonl"
    f.write_bytes(b'{"text": "a"}\n{"text": "caf\xe9"}\n')
    assert f"{f} line 2 is not valid UTF-8" in err(f, bpe)


def test_corrupt_gzip(tmp_path, bpe):
    f = tmp_path / "d.jsonl.gz"
    lines = "".join(json.dumps({"text": f"document {i} " * (i % 7 + 1)}) + "\n" for i in range(3000)).encode()
    data = gzip.compress(lines)
    f.write_bytes(data[: len(data) // 2])  # truncated
    open_corpus(f)  # the first line reads: the cut shows when the whole file is read
    msg = err(f, bpe)
    assert f"cannot read {f} after line" in msg and "corrupt or truncated" in msg
    g = tmp_path / "e.jsonl.gz"
    g.write_bytes(b"not gzip at all")
    assert str(g) in err(g) and "corrupt" in err(g)


def test_corrupt_parquet(tmp_path):
    f = tmp_path / "d.parquet"
    f.write_bytes(b"PAR1 but nothing else")
    msg = err(f)
    assert f"cannot read Parquet file {f}" in msg and "corrupt" in msg


def test_corrupt_arrow_shard(tmp_path):
    folder = write_datasets_folder(tmp_path / "ds", [rows()])
    shard = next(folder.glob("*.arrow"))
    shard.write_bytes(b"garbage")
    assert f"cannot read Arrow file {shard}" in err(folder)


def test_bad_csv_row(tmp_path, bpe):
    f = tmp_path / "d.csv"
    f.write_text('text,id\n"a",1\n"b",2,3\n', encoding="utf-8")
    msg = err(f, bpe)
    assert f"cannot read CSV file {f}" in msg


@pytest.mark.parametrize("value, shown", [(7, "a int (7)"), ({"a": 1}, "a dict"), (["a", 2], "a list (['a', 2])"),
                                          (True, "a bool (True)")])
def test_non_string_value(tmp_path, bpe, value, shown):
    f = write_jsonl(tmp_path / "d.jsonl", [{"text": "ok"}, {"text": value}])
    msg = err(f, bpe)
    assert f"{f} line 2: column 'text' holds {shown}" in msg and "not text" in msg


def test_non_string_parquet_column(tmp_path, bpe):
    f = write_parquet(tmp_path / "d.parquet", [{"text": 1}, {"text": 2}])
    assert f"{f} row 1: column 'text' holds a int (1)" in err(f, bpe)


@pytest.mark.parametrize("kind", ["jsonl", "parquet", "csv", "datasets", "folder"])
@pytest.mark.parametrize("empty", ["", "  \n\t "])
def test_empty_document_refused_or_skipped(tmp_path, bpe, kind, empty):
    docs = ["first", empty, "third", empty]
    if kind == "jsonl":
        value, where = write_jsonl(tmp_path / "d.jsonl", rows(docs)), "d.jsonl line 2"
    elif kind == "parquet":
        value, where = write_parquet(tmp_path / "d.parquet", rows(docs)), "d.parquet row 2"
    elif kind == "csv":
        value, where = write_csv(tmp_path / "d.csv", rows(docs)), "d.csv row 2"
    elif kind == "datasets":
        value, where = write_datasets_folder(tmp_path / "ds", [rows(docs)]), ".arrow row 2"
    else:
        value = tmp_path / "t"
        value.mkdir()
        for i, d in enumerate(docs):
            (value / f"{i}.txt").write_text(d, encoding="utf-8")
        where = "1.txt"
    msg = err(value, bpe)
    assert where in msg and "is an empty document" in msg and "--skip-empty" in msg
    source = load_source(value, bpe, skip_empty=True)
    assert source.tokens.tolist() == brute(["first", "third"], bpe)[0]
    assert (source.info.n_docs, source.info.n_skipped) == (2, 2)


def test_null_is_an_empty_document(tmp_path, bpe):
    f = write_parquet(tmp_path / "d.parquet", [{"text": "a"}, {"text": None}])
    assert f"{f} row 2 is an empty document (null)" in err(f, bpe)
    assert load_source(f, bpe, skip_empty=True).info.n_skipped == 1


def test_a_document_the_tokenizer_turns_into_nothing(tmp_path):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab={"<unk>": 0, "a": 1}, unk_token="<unk>"))
    tok.normalizer = normalizers.Replace("x", "")
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
    f = write_jsonl(tmp_path / "d.jsonl", [{"text": "a a"}, {"text": "xxx"}, {"text": "a"}])
    assert f"{f} line 2 is an empty document (no token)" in err(f, tokenizer)
    source = load_source(f, tokenizer, skip_empty=True)
    assert source.tokens.tolist() == [1, 1, 1] and source.doc_starts.tolist() == [0, 2]
    assert source.info.n_skipped == 1


@pytest.mark.parametrize("content", [b"", b"\n\n"])
def test_source_with_no_document(tmp_path, bpe, content):
    f = tmp_path / "d.jsonl"
    f.write_bytes(content)
    assert f"corpus {f} has no document" in err(f, bpe, text_column="text")


def test_source_whose_documents_are_all_skipped(tmp_path, bpe):
    f = write_jsonl(tmp_path / "d.jsonl", [{"text": " "}, {"text": ""}])
    assert "has no document (2 empty documents skipped)" in err(f, bpe, skip_empty=True)


def test_datasets_dict_and_broken_state(tmp_path):
    dd = tmp_path / "dd"
    dd.mkdir()
    write_datasets_folder(dd / "train", [rows()])
    (dd / "dataset_dict.json").write_text(json.dumps({"splits": ["train"]}))
    msg = err(dd)
    assert "DatasetDict" in msg and str(dd / "train") in msg
    broken = write_datasets_folder(tmp_path / "broken", [rows()])
    (broken / "state.json").write_text("{}")
    assert "state.json" in err(broken) and "_data_files" in err(broken)
    missing = write_datasets_folder(tmp_path / "missing", [rows()])
    next(missing.glob("*.arrow")).unlink()
    assert "lacks the shards" in err(missing)


def test_binary_and_latin1_files_in_a_folder(tmp_path, bpe):
    (tmp_path / "a.txt").write_bytes(b"ok")
    (tmp_path / "b.txt").write_bytes("caf\u00e9".encode("latin-1"))
    assert f"{tmp_path / 'b.txt'} is not valid UTF-8: byte 0xe9 at offset 3" in err(tmp_path, bpe)
    (tmp_path / "b.txt").write_bytes(b"a\x00b")
    assert "looks binary (NUL byte at offset 1)" in err(tmp_path, bpe)


def test_book_options_and_bad_arguments(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", rows())
    assert "--strip-gutenberg" in err(f, strip_gutenberg=True) and "applies to a Project Gutenberg book" in err(
        f, strip_gutenberg=True)
    assert "column name" in err(f, text_column="")
    assert "skip_empty must be True or False" in err(f, skip_empty="yes")
    # load_corpus reads one text file: a table is pointed to load_source
    with pytest.raises(MaxactError, match="table of documents; load_corpus reads one UTF-8 text file"):
        load_corpus(f)
