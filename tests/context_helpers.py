"""The context rule of docs/METHOD.md ("Context"), written out literally for the tests of the
context pass and of its mutants (tests/unit/test_context_pass.py, test_mutants_context.py)."""

from __future__ import annotations

import numpy as np

from maxact.analysis.context_shares import MeasuredContexts


def value_at(c: int, m: MeasuredContexts, u: int, k: int, skip_c0: bool) -> float:
    """The documented rule, read literally: the largest measured context <= c, else the smaller one."""
    if skip_c0 and c == 0:
        return -np.inf
    measured = [(int(m.first_context[u, k]), float(m.first_value[u, k]))]
    if m.shift_context[u, k] >= 0:
        measured.append((int(m.shift_context[u, k]), float(m.shift_value[u, k])))
    usable = [(o, v) for o, v in measured if o <= c]
    return max(usable)[1] if usable else min(measured)[1]
