"""maxact: activation maximization via data sampling.

Stream real text through a Hugging Face causal LM and keep, for each unit, what drives it hardest.
The public API is re-exported from :mod:`maxact.api`.
"""

__version__ = "0.1.0"

from maxact.errors import MaxactError  # noqa: F401
