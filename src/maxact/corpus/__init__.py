"""Token sources: corpora found, read, validated and tokenised into what the engine reads.

A corpus is a *named* corpus (a Project Gutenberg book the tool can find or fetch), a UTF-8 text
file (one document, tokenised whole in one call, as the reference experiment did), or a source of
many documents: a folder or glob of text files, JSONL (.jsonl, .jsonl.gz), Parquet, CSV, or a
Hugging Face `datasets` folder saved with save_to_disk. ``load_source`` returns a ``TokenSource``
(int32 tokens, document starts, ``CorpusInfo``); a document corpus is tokenised in streamed batches
into the on-disk token cache, so a second run maps it instead of tokenising again.

Modules: ``books`` (named books and text files), ``documents`` (finding and checking document
corpora, one document at a time), ``readers`` (one reader per format), ``tokenize``, ``cache``
(the on-disk token cache), ``load`` (open, tokenise, load), ``source`` (TokenSource, CorpusInfo).
"""

from maxact.corpus.books import (
    NAMED_CORPORA,
    Corpus,
    NamedCorpus,
    load_corpus,
    resolve_corpus_path,
    strip_gutenberg_text,
)
from maxact.corpus.cache import token_cache_dir
from maxact.corpus.documents import DocumentCorpus
from maxact.corpus.load import TOKEN_CACHE_SIZE, load_source, open_corpus, tokenize_corpus
from maxact.corpus.source import (
    CSV,
    HF_DATASETS,
    JSONL,
    PARQUET,
    TEXT,
    TEXT_FILES,
    CorpusInfo,
    TokenSource,
)
from maxact.corpus.tokenize import tokenize, tokenize_batch, tokenizer_key

__all__ = [
    "CSV", "HF_DATASETS", "JSONL", "NAMED_CORPORA", "PARQUET", "TEXT", "TEXT_FILES", "TOKEN_CACHE_SIZE",
    "Corpus", "CorpusInfo", "DocumentCorpus", "NamedCorpus", "TokenSource", "load_corpus", "load_source",
    "open_corpus", "resolve_corpus_path", "strip_gutenberg_text", "token_cache_dir", "tokenize",
    "tokenize_batch", "tokenize_corpus", "tokenizer_key",
]
