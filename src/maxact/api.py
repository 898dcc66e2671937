"""The Python API: what the CLI calls, usable from a notebook.

    import maxact
    lm = maxact.load_model("smollm2-135m")
    corpus = maxact.load_corpus("looking-glass")
    result = maxact.sample(lm, corpus, ["L2.resid_pre:345"], samples=100, seed=0)
    df = maxact.tally_frame(result, lm, "L2.resid_pre:345")   # pandas DataFrame
    maxact.plot_sample(result, lm, "winners.png")

Bad arguments raise MaxactError with one line, as the CLI prints them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from numbers import Integral

import numpy as np
import pandas as pd

from maxact.config import SAMPLE
from maxact.corpus import (
    Corpus,
    DocumentCorpus,
    TokenSource,
    load_corpus,
    load_source,
    tokenize_corpus,
)
from maxact.errors import MaxactError
from maxact.fsio import check_writable_file
from maxact.models.adapters.base import resolve_units
from maxact.models.loading import LoadedModel, load_model
from maxact.plot import save_tally_plots
from maxact.sampling import SampleConfig, SampleResult, sample_exact

__all__ = ["load_model", "load_corpus", "load_source", "sample", "tally_frame", "plot_sample", "corpus_tokens"]


def corpus_tokens(lm: LoadedModel, corpus: Corpus) -> np.ndarray:
    """(n_tokens,) int32 tokens of the corpus, memoised per tokenizer and source."""
    return tokenize_corpus(corpus, _model(lm).tokenizer).tokens


def sample(
    lm: LoadedModel,
    corpus: Corpus | TokenSource | str | os.PathLike,
    units: Sequence[str] | str,
    batch: int = SAMPLE.batch,
    seq: int = SAMPLE.seq,
    samples: int = SAMPLE.samples,
    seed: int | None = None,
    skip_pos0: bool = False,
    progress: bool = True,
    bos: bool | None = None,
) -> SampleResult:
    """The reference experiment for ``units`` (unit ids or whole sites such as ``L2.resid_pre:*``).
    corpus: from ``load_corpus`` or ``load_source``, or a corpus name or text file to load.
    bos: feed the model's BOS token before every window (None: when the corpus has several documents)."""
    lm = _model(lm)
    for name, value in (("batch", batch), ("seq", seq), ("samples", samples)):
        _whole(name, value, 1)
    if seed is not None:
        _whole("seed", seed, 0)
    if not isinstance(skip_pos0, bool):
        raise MaxactError(f"skip_pos0 must be True or False, got {skip_pos0!r}")
    if bos is not None and not isinstance(bos, bool):
        raise MaxactError(f"bos must be True, False or None (on for several documents), got {bos!r}")
    source = _source(lm, corpus)
    unit_ids = resolve_units(lm.adapter, _unit_list(units))
    config = SampleConfig(
        model=lm.name, corpus=source.name, batch=int(batch), seq=int(seq), samples=int(samples),
        seed=None if seed is None else int(seed), skip_pos0=skip_pos0, strip_gutenberg=source.info.stripped,
        bos=bos,
    )
    return sample_exact(lm, source, unit_ids, config, progress=progress)


def tally_frame(result: SampleResult, lm: LoadedModel, unit: str) -> pd.DataFrame:
    """The tally of one unit: token_id, token, count, share (most wins first)."""
    _result(result)
    return pd.DataFrame(result.unit(unit).tally.to_records(_model(lm).token_text))


def plot_sample(result: SampleResult, lm: LoadedModel, path) -> int:
    """Bar chart of winners, one panel per unit (at most 16); returns panels drawn."""
    _result(result)
    lm = _model(lm)
    path = check_writable_file(path, "plot path")
    return save_tally_plots(path, [(str(u.unit), u.tally) for u in result.units], lm.token_text)


def _model(lm) -> LoadedModel:
    if not isinstance(lm, LoadedModel):
        raise MaxactError(f"lm must be a model from maxact.load_model(...), got {type(lm).__name__}")
    return lm


def _result(result) -> None:
    if not isinstance(result, SampleResult):
        raise MaxactError(f"result must come from maxact.sample(...), got {type(result).__name__}")


def _whole(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise MaxactError(f"{name} must be a whole number, got {type(value).__name__} {value!r}")
    if value < minimum:
        least = "0 or more" if minimum == 0 else f"at least {minimum}"
        raise MaxactError(f"{name} must be {least}, got {value}")


def _source(lm: LoadedModel, corpus) -> TokenSource:
    if isinstance(corpus, TokenSource):
        return corpus
    if isinstance(corpus, (Corpus, DocumentCorpus)):
        return tokenize_corpus(corpus, lm.tokenizer)
    if isinstance(corpus, (str, os.PathLike)):
        return load_source(corpus, lm.tokenizer)
    raise MaxactError(
        f"corpus must come from maxact.load_corpus(...) or maxact.load_source(...), or be a corpus name "
        f"or text file, got {type(corpus).__name__}"
    )


def _unit_list(units) -> list[str]:
    if isinstance(units, str):
        return [units]
    if not isinstance(units, Sequence) or not all(isinstance(u, str) for u in units):
        raise MaxactError(f"units must be a list of unit ids such as ['L2.resid_pre:345'], got {units!r:.80}")
    if not units:
        raise MaxactError("units is empty: give at least one unit id, e.g. ['L2.resid_pre:345']")
    return list(units)
