"""Documents (docs/METHOD.md, "Documents"), without a model: the plan's windows never cross a
document, the reference start space holds every window that fits inside one, and the reference
statistic inside documents equals brute force and exact enumeration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from documents_helpers import (
    BOS,
    DOC_LENGTHS,
    SEQ,
    brute_covered,
    doc_source,
    documents,
    plan_windows,
    valid_starts,
)

from maxact.analysis.refstat import covered_counts, simulate, win_probabilities
from maxact.engine.plan import WindowPlan
from maxact.errors import MaxactError
from maxact.windows import StartSpace, Windowing, require_starts, resolve_bos, window_bounds


# =================================================================================================
# the plan
# =================================================================================================
def legacy_plan(n: int, seq: int, per_batch: int, shard):
    """The plan before documents existed, verbatim: the single-text path must not move."""
    starts = np.arange(0, n, seq, dtype=np.int64)
    length = np.minimum(seq, n - starts)
    lo, hi = 0, len(starts)
    if shard is not None:
        i, k = shard
        lo, hi = len(starts) * i // k, len(starts) * (i + 1) // k
    full = [w for w in range(lo, hi) if length[w] == seq]
    batches = [np.array(full[j : j + per_batch]) for j in range(0, len(full), per_batch)]
    batches += [np.array([w]) for w in range(lo, hi) if length[w] != seq]
    return starts, length, batches


@pytest.mark.parametrize("n, seq, per_batch, shard", [
    (700, 32, 4, None), (704, 32, 4, None), (31, 32, 16, None), (1000, 7, 3, (1, 3)), (513, 256, 16, (0, 2)),
    (3072, 256, 4, (1, 2)), (100, 1, 16, None)])
def test_a_single_text_gets_the_plan_it_had_before_documents(n, seq, per_batch, shard):
    plan = WindowPlan.make(np.zeros(1, dtype=np.int64), n, Windowing(seq, None, "short"), per_batch, shard)
    starts, length, batches = legacy_plan(n, seq, per_batch, shard)
    np.testing.assert_array_equal(plan.starts, starts)
    np.testing.assert_array_equal(plan.length, length)
    assert plan.starts.dtype == plan.length.dtype == np.int64
    assert [b.tolist() for b in plan.batches] == [b.tolist() for b in batches]


@pytest.mark.parametrize("bos", [None, BOS])
@pytest.mark.parametrize("tail", ["short", "drop"])
def test_windows_start_at_each_document_and_never_cross_one(bos, tail):
    source = doc_source()
    windowing = Windowing(SEQ, bos, tail)
    plan = WindowPlan.make(source.doc_starts, len(source), windowing, 3, None)
    want = plan_windows(source, windowing.length, tail)
    assert list(zip(plan.starts.tolist(), (plan.starts + plan.length).tolist())) == want
    assert windowing.length == (SEQ - 1 if bos is not None else SEQ)
    # every batch holds windows of one length; every window is in exactly one batch
    seen = np.concatenate(plan.batches)
    assert sorted(seen.tolist()) == list(range(len(want)))
    assert all(len(set(plan.length[b].tolist())) == 1 for b in plan.batches)
    # short tails of equal length share a forward pass (here: DOC_LENGTHS has tails of equal length)
    tails = [b for b in plan.batches if plan.length[b[0]] != windowing.length]
    assert (tail == "drop") == (not tails)
    fed = plan.fed_tokens(source.tokens)
    expect = np.concatenate([source.tokens[s:e] for s, e in want])
    np.testing.assert_array_equal(fed, expect)
    if tail == "short":
        assert fed is source.tokens  # nothing dropped, nothing copied
    # window_bounds finds each token's window
    pos = np.arange(len(source))
    lo, hi = window_bounds(pos, source.doc_starts, len(source), windowing.length)
    for s, e in want:
        assert (lo[s:e] == s).all() and (hi[s:e] == e).all()
    assert window_bounds(np.array([-1]), source.doc_starts, len(source), SEQ)[0].tolist() == [-1]


def test_short_tails_of_equal_length_go_several_to_a_forward_pass():
    source = doc_source((5, 21, 5, 37, 5, 5, 16))  # four documents of 5 tokens, two tails of 5
    plan = WindowPlan.make(source.doc_starts, len(source), Windowing(SEQ, None, "short"), 2, None)
    by_length = {int(plan.length[b[0]]): len(b) for b in plan.batches if plan.length[b[0]] != SEQ}
    assert by_length == {5: 6}  # 2 windows' worth of tokens (32) holds 6 windows of 5
    assert len([b for b in plan.batches if plan.length[b[0]] == SEQ]) == 2  # 3 full windows, 2 a pass


def test_shards_split_the_windows_of_every_document():
    source = doc_source()
    windowing = Windowing(SEQ, BOS, "short")
    one = WindowPlan.make(source.doc_starts, len(source), windowing, 4, None)
    parts = [WindowPlan.make(source.doc_starts, len(source), windowing, 4, (i, 3)) for i in range(3)]
    ranges = [p.window_range() for p in parts]
    assert ranges[0][0] == 0 and ranges[-1][1] == len(one.starts)
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert sorted(np.concatenate([np.concatenate(p.batches) for p in parts]).tolist()) == list(range(len(one.starts)))


# =================================================================================================
# reference windows: the start space
# =================================================================================================
def test_a_single_text_draws_exactly_what_it_drew_before_documents():
    n, seq = 500, 32
    space = StartSpace.of(np.zeros(1, dtype=np.int64), n, seq)
    a, b = np.random.default_rng(7), np.random.default_rng(7)
    for _ in range(20):
        np.testing.assert_array_equal(space.draw(a, 9), b.integers(0, n - seq, size=9))
    pos = np.array([0, 5, 31, 32, 467, 468, 499, -1])
    lo, hi = space.covering(pos)  # the interval before documents: [max(p - seq + 1, 0), min(p, n - seq - 1)]
    assert lo[:-1].tolist() == np.maximum(pos[:-1] - seq + 1, 0).tolist()
    assert hi[:-1].tolist() == np.minimum(pos[:-1], n - seq - 1).tolist()
    assert lo[-1] > hi[-1]


@pytest.mark.parametrize("length", [1, 3, 15, 16, 39, 50])
def test_start_space_holds_every_window_that_fits_inside_one_document(length):
    source = doc_source()
    space = StartSpace.of(source.doc_starts, len(source), length)
    valid = valid_starts(source, length)
    assert space.n_starts == len(valid)
    assert space.starts_at(np.arange(space.n_starts)).tolist() == valid
    assert space.docs_without_window == sum(e - s <= length for s, e in documents(source))
    assert space.longest_doc == max(DOC_LENGTHS)
    # covering: the numbers of the starts whose window covers each position, against brute force
    pos = np.concatenate([np.arange(len(source)), [-1]])
    lo, hi = space.covering(pos)
    for p, a, b in zip(pos.tolist(), lo.tolist(), hi.tolist()):
        want = [i for i, s in enumerate(valid) if p >= 0 and s <= p < s + length]
        assert (list(range(a, b + 1)) == want) if want else a > b, p
    # the draws are uniform over the valid starts: one rng.integers over their numbers
    rng, again = np.random.default_rng(3), np.random.default_rng(3)
    if valid:
        drawn = space.draw(rng, 500)
        assert drawn.tolist() == [valid[i] for i in again.integers(0, len(valid), size=500)]
    assert StartSpace.of(source.doc_starts, len(source), length) == space  # equal (and hashed) by value
    assert hash(StartSpace.of(source.doc_starts, len(source), length)) == hash(space)
    assert StartSpace.of(source.doc_starts[:-1], len(source), length) != space


def test_no_document_long_enough_is_one_error_naming_seq_and_the_longest():
    source = doc_source((5, 9, 3))
    space = StartSpace.of(source.doc_starts, len(source), 9)
    with pytest.raises(MaxactError, match=r"no document of corpus 'x' can hold a window of --seq 9: .*at least "
                                          r"10 tokens and the longest of its 3 has 9; use a smaller --seq"):
        require_starts(space, 9, "corpus 'x'")
    with pytest.raises(MaxactError, match=r"--seq 10 \(9 corpus tokens after the BOS token\)"):
        require_starts(space, 10, "corpus 'x'")
    require_starts(StartSpace.of(source.doc_starts, len(source), 8), 8, "corpus 'x'")
    one = StartSpace.of(np.zeros(1, dtype=np.int64), 12, 12)  # a single text keeps its message
    with pytest.raises(MaxactError, match=r"has 12 tokens, too few for --seq 12 \(it needs at least 13\)"):
        require_starts(one, 12, "corpus 'x'")


def test_bos_is_on_for_documents_off_for_a_single_text_and_refused_without_a_bos_token():
    assert resolve_bos(None, 5, 7, SEQ, "m") == 7
    assert resolve_bos(None, 1, 7, SEQ, "m") is None
    assert resolve_bos(None, 5, None, SEQ, "m") is None  # no BOS token: off by default
    assert resolve_bos(True, 1, 7, SEQ, "m") == 7 and resolve_bos(False, 5, 7, SEQ, "m") is None
    with pytest.raises(MaxactError, match="--bos: model m has no BOS token .*run with --no-bos"):
        resolve_bos(True, 5, None, SEQ, "m")
    with pytest.raises(MaxactError, match="--seq 1 leaves no corpus token after the BOS token"):
        resolve_bos(True, 5, 7, 1, "m")


# =================================================================================================
# the reference statistic inside documents
# =================================================================================================
def test_covered_counts_inside_documents_equal_brute_force():
    source = doc_source()
    rng = np.random.default_rng(0)
    n = len(source)
    edges = np.array([s for s, _ in documents(source)] + [e - 1 for _, e in documents(source)])
    rows = [rng.permutation(n)[:8], rng.permutation(edges)[:8], np.array([40, 41, 42, 43, 39, 38, -1, -1]),
            np.full(8, -1)]
    pos = np.stack(rows).astype(np.int64)
    for length in (4, 15, 33):
        space = StartSpace.of(source.doc_starts, n, length)
        np.testing.assert_array_equal(covered_counts(pos, space), brute_covered(pos, source, length))


@pytest.mark.parametrize("batch", [1, 2])
def test_win_probabilities_inside_documents_equal_exact_enumeration(batch):
    source = doc_source((6, 2, 9, 4))  # windows of 3: starts 0-2, (none), 8-13, 17
    length = 3
    space = StartSpace.of(source.doc_starts, len(source), length)
    valid = valid_starts(source, length)
    pos = np.array([[5, 14, 8, 17, 2], [7, 6, 16, 0, -1], [19, 20, 3, 13, 12]])
    expect, miss = np.zeros(pos.shape), np.zeros(len(pos))
    tuples = list(itertools.product(valid, repeat=batch))
    for u, row in enumerate(pos):
        for starts in tuples:
            ranks = [k for k, p in enumerate(row) if p >= 0 and any(s <= p < s + length for s in starts)]
            if ranks:
                expect[u, ranks[0]] += 1
            else:
                miss[u] += 1
    probs, got_miss = win_probabilities(pos, space, batch)
    np.testing.assert_allclose(probs, expect / len(tuples), rtol=0, atol=1e-12)
    np.testing.assert_allclose(got_miss, miss / len(tuples), rtol=0, atol=1e-12)


def test_simulated_batches_inside_documents_equal_brute_force_coverage():
    source = doc_source()
    length, batch, samples, seed = 15, 4, 300, 5
    space = StartSpace.of(source.doc_starts, len(source), length)
    valid = np.array(valid_starts(source, length))
    pos = np.array([44, 3, 100, 120, 217, 58, -1, -1])
    starts, rank, row = simulate(pos, space, batch, samples, seed)
    rng = np.random.default_rng(seed)  # the documented draw: `batch` start numbers per batch
    want_starts = np.stack([valid[rng.integers(0, len(valid), size=batch)] for _ in range(samples)])
    np.testing.assert_array_equal(starts, want_starts)
    for b in range(samples):
        ranks = [(k, w) for w, s in enumerate(starts[b]) for k, p in enumerate(pos) if p >= 0 and s <= p < s + length]
        best = min(ranks) if ranks else (-1, 0)
        assert (rank[b], row[b] if rank[b] >= 0 else 0) == best
    assert (rank == -1).any() and (rank >= 0).any()
