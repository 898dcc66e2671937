"""Shared helpers for atlas tests (and any test that needs a model folder on disk).

- ``save_tiny_folder(folder, family)``: a tiny random-weight model saved with ``save_pretrained``
  beside a word-level tokenizer (token ``wN`` has id N, ``[UNK]`` is 0), so ``--model <folder>``
  loads offline in well under a second.
- ``write_word_corpus(path, n_words, seed)``: a UTF-8 text of ``n_words`` such words, one token each.
- ``synthetic_corpus(name)``: the corpus metadata ``build_atlas`` records, for token arrays made
  in memory.
- ``build_tiny_atlas(out, ...)``: ``build_atlas`` on a tiny in-memory model over random tokens.
- ``single_thread()``: run torch on one thread (tiny ops are far slower multi-threaded on a busy
  machine).
- ``run_cli(*args)`` / ``error_line(result)``: the CLI in-process, and its one ``error:`` line.

Names here are used by several test modules: keep them stable.
"""

from __future__ import annotations

import contextlib
import types
from pathlib import Path

import numpy as np
from tiny_models import VOCAB, tiny_loaded, tiny_model

N_LAYERS, D_MODEL = 3, 64  # the tiny Llama (and GPT-2)


def save_tiny_folder(folder, family: str = "llama", seed: int = 0) -> str:
    """Save a tiny model of ``family`` and a word-level tokenizer into ``folder``; returns it."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"[UNK]": 0, **{f"w{i}": i for i in range(1, VOCAB)}}  # "w5" -> 5
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(folder)
    tiny_model(family, seed).save_pretrained(folder)
    return str(folder)


def word_tokens(n_words: int, seed: int | None = None) -> np.ndarray:
    """(n_words,) int32 ids in 1..VOCAB-1: cycling through the vocabulary (seed None) or random."""
    if seed is None:
        return (1 + np.arange(n_words) % (VOCAB - 1)).astype(np.int32)
    return np.random.default_rng(seed).integers(1, VOCAB, n_words).astype(np.int32)


def write_word_corpus(path, n_words: int = 400, seed: int | None = None) -> str:
    """A corpus file whose tokens under the tiny tokenizer are ``word_tokens(n_words, seed)``."""
    path = Path(path)
    path.write_text(" ".join(f"w{t}" for t in word_tokens(n_words, seed)) + "\n", encoding="utf-8")
    return str(path)


def synthetic_corpus(name: str = "synthetic"):
    """What build_atlas reads from a Corpus, for tokens made in memory."""
    return types.SimpleNamespace(name=name, path=f"<{name}>", sha256="0" * 64, stripped=False)


@contextlib.contextmanager
def single_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def build_tiny_atlas(out, family: str = "llama", n_tokens: int = 700, seed: int = 0, **config):
    """build_atlas on tiny_loaded(family) over random tokens; returns (lm, tokens, Atlas, AtlasConfig)
    (the Atlas is None for a shard, which writes a partial).

    ``config`` overrides AtlasConfig fields (defaults: seq 32, K 8, k_ctx 4, every site)."""
    from maxact.engine.build import build_atlas
    from maxact.engine.runner import AtlasConfig
    from maxact.store.reader import Atlas

    lm = tiny_loaded(family)
    tokens = np.random.default_rng(seed).integers(0, VOCAB, n_tokens).astype(np.int32)
    settings = dict(model=f"tiny-{family}", corpus="synthetic", seq=32, sites=tuple(lm.adapter.sites),
                    k=8, k_ctx=4, max_types=64, windows_per_batch=4, ref_samples=200)
    cfg = AtlasConfig(**{**settings, **config})
    with single_thread():
        build_atlas(lm, synthetic_corpus(), tokens, cfg, Path(out), progress=False, echo=lambda m: None)
    return lm, tokens, (Atlas(out) if cfg.shard is None else None), cfg


def run_cli(*args):
    """Invoke ``maxact ARGS`` in-process; returns click's Result (stdout and stderr apart)."""
    from click.testing import CliRunner

    from maxact.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def error_line(result) -> str:
    """The one `error:` line on stderr, after checking exit status and the absence of a traceback."""
    assert result.exit_code != 0, result.output
    # any exception other than SystemExit would have been a traceback for the user
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "error:" not in result.stdout
    return lines[0]


__all__ = [
    "N_LAYERS", "D_MODEL", "VOCAB", "save_tiny_folder", "word_tokens", "write_word_corpus",
    "synthetic_corpus", "single_thread", "build_tiny_atlas", "run_cli", "error_line",
]


def simulate_by_coverage(positions, n_tokens, seq, batch, samples, seed):
    """Brute-force reference for refstat.simulate: draw the starts as an exact run does, test every
    window against every top position, keep the best rank covered and its first window."""
    from maxact.sample import draw_starts

    rng = np.random.default_rng(seed)
    starts = np.stack([draw_starts(rng, n_tokens, seq, batch) for _ in range(samples)])  # (S, B)
    valid = positions >= 0
    covers = (starts[..., None] <= positions) & (positions < starts[..., None] + seq) & valid  # (S,B,K)
    K = len(positions)
    rank_per_window = np.where(covers.any(-1), covers.argmax(-1), K)  # (S, B)
    best = rank_per_window.min(1)
    return starts, np.where(best < K, best, -1), rank_per_window.argmin(1)
