"""File names, structured dtypes and the schema version of an atlas directory, in one place (see
docs/STORE.md). Numpy only: the pipeline that writes an atlas and the reader that checks it both
take the layout from here."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

SCHEMA_VERSION = 1
FORMAT_NAME = "maxact-atlas"

MANIFEST = "manifest.json"  # written last: its presence marks a complete atlas
CONFIG = "config.json"  # the AtlasConfig that made it
TOKENS = "tokens.npy"  # (n_tokens,) int32 corpus token stream; contexts are cut from it
DOC_STARTS = "doc_starts.npy"  # (n_docs,) int64 first token of each document (0 first); windows never span two
VOCAB = "vocab.json"  # list of token texts by id (the reader needs no tokenizer)

# per-unit arrays: row u is unit u in manifest order
TOP_VALUES, TOP_POSITIONS = "top_values.npy", "top_positions.npy"  # (U, K) away from window pos 0
BOTTOM_VALUES, BOTTOM_POSITIONS = "bottom_values.npy", "bottom_positions.npy"
TOP0_VALUES, TOP0_POSITIONS = "top0_values.npy", "top0_positions.npy"  # (U, K) at window pos 0
BOTTOM0_VALUES, BOTTOM0_POSITIONS = "bottom0_values.npy", "bottom0_positions.npy"
TOP_CONTEXT, BOTTOM_CONTEXT = "top_context.npy", "bottom_context.npy"  # (U, K_ctx, C) float16
STATS = "stats.npy"  # (U,) structured: count mean std skew kurtosis frac_pos min max
HIST = "hist.npy"  # (U, N_BINS) int64
HIST_BOUNDS = "hist_bounds.npy"  # (N_BINS, 2) float64 [low, high) of each bin
TUNING_IDS = "tuning_token_ids.npy"  # (V,) int64 tracked token types
TUNING_COUNTS = "tuning_counts.npy"  # (V + 1,) int64 occurrences; last = all other tokens
TUNING_MEANS = "tuning_means.npy"  # (V + 1, U) float32 mean activation per type (type-major)
# per-type second moments (docs/STORE.md, "Per-type moments"): rows as tuning_counts, type-major
TYPE_COUNTS = "type_counts.npy"  # (V + 1,) int64 tokens fed of each type; last = all other tokens
TYPE_DEV = "type_dev.npy"  # (V + 1, U) float32 mean on the type minus the unit's mean (float64 sums)
TYPE_M2 = "type_m2.npy"  # (V + 1, U) float32 sum of squared deviations from the type's own mean
TYPE_STATS = "type_stats.npy"  # (U,) structured: count, mean, m2 (total), eta2 (token identity's share)
REF = "refstat.npy"  # (U,) structured reference statistic summary (see analysis/refstat.py)
REF_POSITIONS = "ref_positions.npy"  # (U, K) int64 top-K over all window positions (pos 0 too)
REF_PROBS = "ref_probs.npy"  # (U, K) float32 P(batch won by that position), reference geometry
# atlases made with --context-pass only (docs/METHOD.md, "Context"): each candidate's activation in
# the partition shifted by half a window, NaN where not measured (a document's first half window)
REF_SHIFT_VALUES = "ref_shift_values.npy"  # (U, K) float32 aligned with ref_positions
TOP_SHIFT_VALUES = "top_shift_values.npy"  # (U, K) float32 aligned with top_positions
LOGIT_TOP_IDS, LOGIT_TOP_VALUES = "logit_top_ids.npy", "logit_top_values.npy"  # (U, L)
LOGIT_BOTTOM_IDS, LOGIT_BOTTOM_VALUES = "logit_bottom_ids.npy", "logit_bottom_values.npy"
# examples at a spread of activation levels (docs/STORE.md, "Activation bands"): per unit and band,
# up to R positions of a seeded 1-in-64 subsample, by increasing hash
BAND_POSITIONS = "band_positions.npy"  # (U, B, R) int64, -1: empty
BAND_VALUES = "band_values.npy"  # (U, B, R) float32, NaN: empty
BAND_EDGES = "band_edges.npy"  # (B + 1,) float64: band 0 holds x <= 0, band b >= 1 the x > 0 in [edge b, edge b+1)
# derived sites only (docs/DIRECTIONS.md): per unit of site NAME, its nearest neurons by |cosine|
def near_units_file(name: str) -> str:
    return f"near_{name}_units.npy"  # (width, N) unicode unit ids, nearest first


def near_cosines_file(name: str) -> str:
    return f"near_{name}_cosines.npy"  # (width, N) float32 signed cosines, aligned with the ids


class RankedFiles(NamedTuple):
    """The files of one ranked example list: values, positions and, for top/bottom, contexts."""

    values: str
    positions: str
    context: str | None


RANKED: dict[str, RankedFiles] = {
    "top": RankedFiles(TOP_VALUES, TOP_POSITIONS, TOP_CONTEXT),
    "bottom": RankedFiles(BOTTOM_VALUES, BOTTOM_POSITIONS, BOTTOM_CONTEXT),
    "top0": RankedFiles(TOP0_VALUES, TOP0_POSITIONS, None),
    "bottom0": RankedFiles(BOTTOM0_VALUES, BOTTOM0_POSITIONS, None),
}

STATS_DTYPE = np.dtype([
    ("count", "i8"), ("mean", "f8"), ("std", "f8"), ("skew", "f8"), ("kurtosis", "f8"),
    ("frac_pos", "f8"), ("min", "f4"), ("max", "f4"),
])
REF_DTYPE = np.dtype([
    ("top_token", "i8"), ("top_share", "f4"), ("pos0_share", "f4"), ("miss", "f4"),
    ("x_top_token", "i8"), ("x_top_share", "f4"), ("x_miss", "f4"),  # window position 0 excluded
    ("top_token_z", "f4"), ("top_token_lift", "f4"),  # tuning z of top_token; share / base rate
    ("best_token", "i8"), ("best_z", "f4"),  # the tracked token with the highest tuning z
])
TYPE_STATS_DTYPE = np.dtype([
    ("count", "i8"), ("mean", "f8"), ("m2", "f8"),  # every token fed: count, mean, sum of squared deviations
    ("eta2", "f8"),  # between-type sum of squares / m2: tracked types and the rest as one group (NaN: m2 = 0)
])
# the structured arrays by file name; the manifest records their dtype as "structured"
STRUCTURED: dict[str, np.dtype] = {STATS: STATS_DTYPE, REF: REF_DTYPE, TYPE_STATS: TYPE_STATS_DTYPE}
STRUCTURED_TAG = "structured"

RUN_DIR = ".run"  # checkpoints of a run in progress (resume)
PARTIAL = "partial.pt"  # a shard's accumulated state (merge input)
PARTIAL_INFO = "partial.json"  # a shard's window range, config and timing, readable without torch
CHECKPOINT = "checkpoint.pt"  # inside RUN_DIR: the accumulators and batch cursor of a run
