"""maxact: activation maximization via data sampling.

Stream real text through a Hugging Face causal LM and keep, for each unit, what drives it hardest.
The public API (``load_model``, ``load_corpus``, ``load_source``, ``sample``, ``tally_frame``,
``plot_sample``) lives in :mod:`maxact.api` and is loaded on first use, so reading an atlas never
imports torch. (The exact procedure is the module ``maxact.sampling``: no submodule is named like an
API function, so ``maxact.sample`` stays the function once any submodule has been imported.)
"""

__version__ = "0.1.0"

from maxact.errors import MaxactError  # noqa: F401

_API = ("load_model", "load_corpus", "load_source", "sample", "tally_frame", "plot_sample", "corpus_tokens")


def __getattr__(name):
    if name in _API:
        from maxact import api

        return getattr(api, name)
    raise AttributeError(f"module 'maxact' has no attribute {name!r}")
