"""The Python API: what the CLI calls, usable from a notebook.

    import maxact
    lm = maxact.load_model("smollm2-135m")
    corpus = maxact.load_corpus("looking-glass")
    result = maxact.sample(lm, corpus, ["L2.resid_pre:345"], samples=100, seed=0)
    df = maxact.tally_frame(result, lm, "L2.resid_pre:345")   # pandas DataFrame
    maxact.plot_sample(result, lm, "winners.png")
"""

from __future__ import annotations

import pandas as pd

from maxact.corpus import Corpus, load_corpus, tokenize
from maxact.models.adapters.base import resolve_units
from maxact.models.loading import LoadedModel, load_model
from maxact.plot import save_tally_plots
from maxact.sample import SampleConfig, SampleResult, sample_exact

__all__ = ["load_model", "load_corpus", "sample", "tally_frame", "plot_sample", "corpus_tokens"]

_TOKEN_CACHE: dict[tuple[int, str], object] = {}


def corpus_tokens(lm: LoadedModel, corpus: Corpus):
    """(n_tokens,) int32 tokens of the corpus, memoised per tokenizer and text."""
    key = (id(lm.tokenizer), corpus.sha256 + str(len(corpus.text)))
    if key not in _TOKEN_CACHE:
        _TOKEN_CACHE[key] = tokenize(corpus.text, lm.tokenizer)
    return _TOKEN_CACHE[key]


def sample(
    lm: LoadedModel,
    corpus: Corpus,
    units: list[str],
    batch: int = 32,
    seq: int = 256,
    samples: int = 1000,
    seed: int | None = None,
    skip_pos0: bool = False,
    progress: bool = True,
) -> SampleResult:
    """The reference experiment for ``units`` (unit ids or whole sites such as ``L2.resid_pre:*``)."""
    unit_ids = resolve_units(lm.adapter, units)
    config = SampleConfig(
        model=lm.name, corpus=corpus.name, batch=batch, seq=seq, samples=samples, seed=seed,
        skip_pos0=skip_pos0, strip_gutenberg=getattr(corpus, "stripped", False),
    )
    return sample_exact(lm, corpus_tokens(lm, corpus), unit_ids, config, progress=progress)


def tally_frame(result: SampleResult, lm: LoadedModel, unit: str) -> pd.DataFrame:
    """The tally of one unit: token_id, token, count, share (most wins first)."""
    return pd.DataFrame(result.unit(unit).tally.to_records(lm.token_text))


def plot_sample(result: SampleResult, lm: LoadedModel, path) -> int:
    """Bar chart of winners, one panel per unit (at most 16); returns panels drawn."""
    return save_tally_plots(path, [(str(u.unit), u.tally) for u in result.units], lm.token_text)
