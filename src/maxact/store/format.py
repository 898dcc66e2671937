"""File names and the schema version of an atlas directory, in one place (see docs/STORE.md)."""

SCHEMA_VERSION = 1
FORMAT_NAME = "maxact-atlas"

MANIFEST = "manifest.json"  # written last: its presence marks a complete atlas
CONFIG = "config.json"  # the AtlasConfig that made it
TOKENS = "tokens.npy"  # (n_tokens,) int32 corpus token stream; contexts are cut from it
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
REF = "refstat.npy"  # (U,) structured reference statistic summary (see analysis/refstat.py)
REF_POSITIONS = "ref_positions.npy"  # (U, K) int64 top-K over all window positions (pos 0 too)
REF_PROBS = "ref_probs.npy"  # (U, K) float32 P(batch won by that position), reference geometry
LOGIT_TOP_IDS, LOGIT_TOP_VALUES = "logit_top_ids.npy", "logit_top_values.npy"  # (U, L)
LOGIT_BOTTOM_IDS, LOGIT_BOTTOM_VALUES = "logit_bottom_ids.npy", "logit_bottom_values.npy"

RUN_DIR = ".run"  # checkpoints of a run in progress (resume)
PARTIAL = "partial.pt"  # a shard's accumulated state (merge input)
