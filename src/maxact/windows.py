"""Windows of a token stream, as the reference experiment draws them (docs/METHOD.md): a window is
``seq`` consecutive tokens from a start drawn uniformly with replacement from ``[0, n_tokens - seq)``.
Exact sampling, the atlas's simulated reference statistic and `sample --atlas` share these draws, so
the same seed gives the same starts everywhere (numpy only)."""

from __future__ import annotations

import numpy as np

from maxact.errors import MaxactError


def draw_starts(rng: np.random.Generator, n_tokens: int, seq: int, batch: int) -> np.ndarray:
    """(batch,) int64 starts uniform with replacement on [0, n_tokens - seq)."""
    return rng.integers(0, n_tokens - seq, size=batch, dtype=np.int64)


def resolve_seed(seed: int | None) -> int:
    """The seed to use: the given one, or a fresh one (to be recorded) when None."""
    return int(np.random.SeedSequence().entropy % (2**31)) if seed is None else int(seed)


def require_tokens(n_tokens: int, seq: int, what: str) -> None:
    """Raise MaxactError unless a corpus of `n_tokens` tokens can fill one window of `seq` tokens.

    The reference draws window starts from [0, n_tokens - seq), so it needs n_tokens >= seq + 1.
    `what` names the corpus in the message (e.g. "corpus 'looking-glass'").
    """
    if seq < 1:
        raise MaxactError(f"--seq must be a positive number of tokens, got {seq}")
    if n_tokens < seq + 1:
        raise MaxactError(
            f"{what} has {n_tokens} tokens, too few for --seq {seq} (it needs at least "
            f"{seq + 1}); use a smaller --seq or a longer corpus"
        )
