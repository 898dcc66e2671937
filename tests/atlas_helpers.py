"""Shared helpers for atlas tests (and any test that needs a model folder on disk).

- ``save_tiny_folder(folder, family)``: a tiny random-weight model saved with ``save_pretrained``
  beside a word-level tokenizer (token ``wN`` has id N, ``[UNK]`` is 0), so ``--model <folder>``
  loads offline in well under a second.
- ``write_word_corpus(path, n_words, seed)``: a UTF-8 text of ``n_words`` such words, one token each.
- ``synthetic_corpus(name)``: the corpus metadata ``build_atlas`` records, for token arrays made
  in memory; ``synthetic_source(tokens, name)``: those tokens as a TokenSource.
- ``build_tiny_atlas(out, ...)``: ``build_atlas`` on a tiny in-memory model over random tokens;
  ``merge_tiny_partials(dirs, out, ...)``: ``merge_partials`` of its shards (same model and tokens).
- ``single_thread()``: run torch on one thread (tiny ops are far slower multi-threaded on a busy
  machine).
- ``run_cli(*args)`` / ``error_line(result)``: the CLI in-process, and its one ``error:`` line.
- ``splitmix64(positions, seed)`` / ``expected_bands(acts, positions, seed)``: the activation bands
  by brute force, in plain numpy.

Names here are used by several test modules: keep them stable.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import SimpleNamespace

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
    """The CorpusInfo build_atlas records, for tokens made in memory."""
    from maxact.corpus import CorpusInfo

    return CorpusInfo(name=name, path=f"<{name}>", sha256="0" * 64, stripped=False)


def synthetic_source(tokens: np.ndarray, name: str = "synthetic"):
    """(n,) int32 tokens made in memory as a TokenSource of one document."""
    from dataclasses import replace

    from maxact.corpus import TokenSource

    info = replace(synthetic_corpus(name), n_tokens=len(tokens))
    return TokenSource(np.asarray(tokens, dtype=np.int32), np.zeros(1, dtype=np.int64), info)


def one_text(n_tokens: int, seq: int):
    """The reference windows' StartSpace of a single text of n_tokens tokens, windows of seq tokens."""
    from maxact.windows import StartSpace

    return StartSpace.of(np.zeros(1, dtype=np.int64), n_tokens, seq)


def tiny_tokens(n_tokens: int, seed: int) -> np.ndarray:
    """The random (n_tokens,) int32 corpus of build_tiny_atlas."""
    return np.random.default_rng(seed).integers(0, VOCAB, n_tokens).astype(np.int32)


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
    from maxact.config import AtlasConfig
    from maxact.pipeline import build_atlas
    from maxact.store.reader import Atlas

    lm = tiny_loaded(family)
    tokens = tiny_tokens(n_tokens, seed)
    settings = dict(model=f"tiny-{family}", corpus="synthetic", seq=32, sites=tuple(lm.adapter.sites),
                    k=8, k_ctx=4, max_types=64, windows_per_batch=4, ref_samples=200)
    cfg = AtlasConfig(**{**settings, **config})
    with single_thread():
        build_atlas(lm, synthetic_source(tokens), cfg, Path(out), progress=False, echo=lambda m: None)
    return lm, tokens, (Atlas(out) if cfg.shard is None else None), cfg


def merge_tiny_partials(dirs, out, family: str = "llama", n_tokens: int = 700, seed: int = 0, **kwargs):
    """merge_partials of build_tiny_atlas shards: the model and tokens are handed over, not loaded."""
    from maxact.pipeline import merge_partials

    tokens = tiny_tokens(n_tokens, seed)
    with single_thread():
        merge_partials([Path(d) for d in dirs], Path(out), echo=lambda m: None,
                       load_model=lambda name, device: tiny_loaded(family),
                       load_source=lambda lm, corpus, strip: synthetic_source(tokens), **kwargs)


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
    "synthetic_corpus", "synthetic_source", "one_text", "tiny_tokens", "single_thread", "build_tiny_atlas",
    "merge_tiny_partials", "run_cli", "error_line", "splitmix64", "expected_bands",
]


def splitmix64(positions: np.ndarray, seed: int) -> np.ndarray:
    """The reference hash in plain uint64 numpy: the p-th output of splitmix64 seeded with seed."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + (positions.astype(np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def expected_bands(acts: np.ndarray, positions: np.ndarray, seed: int):
    """(U, B, R) positions and values by brute force: candidates hash below 2**58; per unit and band
    (from BAND_EDGES), the R with the smallest hash."""
    from maxact.engine.bands import BAND_EDGES, N_BANDS, PER_BAND

    h = splitmix64(positions, seed)
    cand = h < np.uint64(1 << 58)
    order = np.argsort(h[cand], kind="stable")
    vals, pos = acts[cand][order], positions[cand][order]  # candidates by increasing hash
    U = acts.shape[1]
    out_p = np.full((U, N_BANDS, PER_BAND), -1, dtype=np.int64)
    out_v = np.full((U, N_BANDS, PER_BAND), np.nan, dtype=np.float32)
    for u in range(U):
        for b in range(N_BANDS):
            lo, hi = BAND_EDGES[b], BAND_EDGES[b + 1]
            inside = (vals[:, u] <= 0) if b == 0 else (vals[:, u] > 0) & (vals[:, u] >= lo) & (vals[:, u] < hi)
            if b == 0:
                inside |= np.isnan(vals[:, u])
            idx = np.flatnonzero(inside)[:PER_BAND]
            out_p[u, b, : len(idx)], out_v[u, b, : len(idx)] = pos[idx], vals[idx, u]
    return out_p, out_v


def simulate_by_coverage(positions, n_tokens, seq, batch, samples, seed):
    """Brute-force reference for refstat.simulate: draw the starts as an exact run does, test every
    window against every top position, keep the best rank covered and its first window."""
    rng = np.random.default_rng(seed)  # METHOD.md's draw: `batch` integers on [0, n - seq) per batch
    starts = np.stack([rng.integers(0, n_tokens - seq, size=batch) for _ in range(samples)])  # (S, B)
    valid = positions >= 0
    covers = (starts[..., None] <= positions) & (positions < starts[..., None] + seq) & valid  # (S,B,K)
    K = len(positions)
    rank_per_window = np.where(covers.any(-1), covers.argmax(-1), K)  # (S, B)
    best = rank_per_window.min(1)
    return starts, np.where(best < K, best, -1), rank_per_window.argmin(1)


FIVE_SITES = ("resid_pre", "mlp_post", "attn_out", "resid_post", "ln_final")


def five_site_atlas(root: Path) -> SimpleNamespace:
    """The tiny Llama's atlas of 300 tokens (seed 2, k 12) over FIVE_SITES at layers 0 and 1, in
    root/atlas: the shared subject of the mutant-killing page tests. root, tokens and path."""
    _, tokens, atlas, _ = build_tiny_atlas(root / "atlas", "llama", n_tokens=300, seed=2, k=12,
                                           sites=FIVE_SITES, layers=(0, 1))
    return SimpleNamespace(root=root, tokens=tokens, path=atlas.path)
