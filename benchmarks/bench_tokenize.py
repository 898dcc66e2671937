"""Tokenisation of a document corpus: the first run (streamed batches into the on-disk token cache)
against the cached run (the cache mapped), and the batch call against one call per document.

    python benchmarks/bench_tokenize.py [--corpus ../shared/corpora/sotu.jsonl.gz] [--repeats 3]

Each repeat uses a fresh, empty MAXACT_CACHE, so its first run tokenises; the cached run follows in
the same process (nothing is memoised in memory for document corpora: it reads the disk cache).
The loop/batch comparison tokenises the same documents both ways, alternating. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from maxact.config import DEFAULT_MODEL, DEFAULT_TEXT_COLUMN

SOTU = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "sotu.jsonl.gz"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--corpus", default=str(SOTU))
    p.add_argument("--text-column", default=DEFAULT_TEXT_COLUMN)
    p.add_argument("--model", default=DEFAULT_MODEL, help="whose tokenizer")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    from maxact.corpus import load_source, open_corpus
    from maxact.corpus.documents import DocumentStream
    from maxact.corpus.tokenize import tokenize_batch
    from maxact.models.loading import load_model

    tokenizer = load_model(args.model).tokenizer
    first, cached, n_tokens, n_docs = [], [], 0, 0
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="maxact-bench-tok-") as cache:
            os.environ["MAXACT_CACHE"] = cache
            t0 = time.perf_counter()
            source = load_source(args.corpus, tokenizer, text_column=args.text_column)
            first.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            again = load_source(args.corpus, tokenizer, text_column=args.text_column)
            int(again.tokens[-1])  # touch the mapped file
            cached.append(time.perf_counter() - t0)
            n_tokens, n_docs = len(source), len(source.doc_starts)

    texts = [d.text for d in DocumentStream(open_corpus(args.corpus, text_column=args.text_column))]
    loop, batch = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for t in texts:
            tokenizer(t, add_special_tokens=False)
        loop.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        tokenize_batch(texts, tokenizer)
        batch.append(time.perf_counter() - t0)

    first_s, cached_s = statistics.median(first), statistics.median(cached)
    print(json.dumps({
        "corpus": args.corpus, "model": args.model, "n_docs": n_docs, "n_tokens": n_tokens, "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "first_run_s": round(first_s, 3), "first_run_tokens_per_s": round(n_tokens / first_s),
        "cached_run_s": round(cached_s, 3), "cached_run_tokens_per_s": round(n_tokens / cached_s),
        "cached_speedup": round(first_s / cached_s, 1),
        "per_document_calls_tokens_per_s": round(n_tokens / statistics.median(loop)),
        "one_batch_call_tokens_per_s": round(n_tokens / statistics.median(batch)),
    }))


if __name__ == "__main__":
    main()
