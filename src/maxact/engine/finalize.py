"""Turn the accumulators of a finished run (or of merged shards) into the atlas arrays."""

from __future__ import annotations

import datetime as dt

import numpy as np

from maxact.analysis.refstat import merge_ranked, token_shares, win_probabilities
from maxact.engine.moments import HIST_STRIDE, bin_bounds
from maxact.engine.topk import C_AFTER, C_BEFORE
from maxact.store import format as F

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
MIN_TUNING_COUNT = 5  # occurrences a token type needs before its mean counts as evidence


def _cat(parts):
    return np.concatenate(parts) if parts else np.zeros((0,))


def build_arrays(accs: list, tokens: np.ndarray, type_ids: np.ndarray, type_counts: np.ndarray,
                 seq: int, ref_batch: int, ref_seq: int) -> dict[str, np.ndarray]:
    """accs: SiteAccumulators in manifest order. Returns every per-unit array of the store."""
    out: dict[str, np.ndarray] = {}
    for a in accs:
        a.flush()
    for part, vname, pname in [
        ("top", F.TOP_VALUES, F.TOP_POSITIONS), ("bottom", F.BOTTOM_VALUES, F.BOTTOM_POSITIONS),
        ("top0", F.TOP0_VALUES, F.TOP0_POSITIONS), ("bottom0", F.BOTTOM0_VALUES, F.BOTTOM0_POSITIONS),
    ]:
        vp = [getattr(a, part).values_positions() for a in accs]
        out[vname] = _cat([v.cpu().numpy() for v, _ in vp]).astype(np.float32)
        out[pname] = _cat([p.cpu().numpy() for _, p in vp]).astype(np.int64)
    out[F.TOP_CONTEXT] = _cat([a.top.context.cpu().numpy() for a in accs]).astype(np.float16)
    out[F.BOTTOM_CONTEXT] = _cat([a.bottom.context.cpu().numpy() for a in accs]).astype(np.float16)

    summaries = [a.moments.summary() for a in accs]
    U = sum(len(s["mean"]) for s in summaries)
    stats = np.zeros(U, dtype=STATS_DTYPE)
    for name in ("count", "mean", "std", "skew", "kurtosis", "frac_pos"):
        stats[name] = _cat([s[name] for s in summaries])
    stats["max"] = np.fmax(out[F.TOP_VALUES][:, 0], out[F.TOP0_VALUES][:, 0])
    stats["min"] = np.fmin(out[F.BOTTOM_VALUES][:, 0], out[F.BOTTOM0_VALUES][:, 0])
    out[F.STATS] = stats
    out[F.HIST] = _cat([a.moments.hist.cpu().numpy() for a in accs]).astype(np.int64)
    out[F.HIST_BOUNDS] = bin_bounds()

    sums = np.concatenate([a.tuning.sums.cpu().numpy() for a in accs], axis=1)  # (V+1, U)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (sums / type_counts[:, None]).astype(np.float32)
    out[F.TUNING_IDS], out[F.TUNING_COUNTS], out[F.TUNING_MEANS] = type_ids, type_counts, means

    # the reference statistic over all window positions, and with position 0 excluded
    k = out[F.TOP_VALUES].shape[1]
    rv, rp = merge_ranked(out[F.TOP_VALUES], out[F.TOP_POSITIONS], out[F.TOP0_VALUES], out[F.TOP0_POSITIONS], k)
    n = len(tokens)
    probs, miss = win_probabilities(rp, n, ref_seq, ref_batch)
    xprobs, xmiss = win_probabilities(out[F.TOP_POSITIONS], n, ref_seq, ref_batch)
    out[F.REF_POSITIONS], out[F.REF_PROBS] = rp, probs.astype(np.float32)
    ref = np.zeros(U, dtype=REF_DTYPE)
    ref["miss"], ref["x_miss"] = miss, xmiss
    tok_at = lambda p: np.where(p >= 0, tokens[np.clip(p, 0, n - 1)], -1)  # noqa: E731
    for name_tok, name_share, pr, pos in [("top_token", "top_share", probs, rp),
                                          ("x_top_token", "x_top_share", xprobs, out[F.TOP_POSITIONS])]:
        shares = token_shares(pr, tok_at(pos))
        ref[name_tok] = [ids[0] if len(ids) else -1 for ids, _ in shares]
        ref[name_share] = [s[0] if len(s) else 0.0 for _, s in shares]
    won = np.maximum(1.0 - miss, 1e-12)
    at_pos0 = (rp >= 0) & (rp % seq == 0)  # computed at window position 0 of the atlas pass
    ref["pos0_share"] = (probs * at_pos0).sum(1) / won

    # tuning selectivity: z of each tracked token's mean, for tokens seen often enough
    std = np.where(stats["std"] > 0, stats["std"], np.nan)
    z = (means[:-1] - stats["mean"][None, :]) / std[None, :]  # (V, U)
    z[type_counts[:-1] < MIN_TUNING_COUNT] = np.nan
    row_of = {int(t): i for i, t in enumerate(type_ids)}
    best = np.nanargmax(np.where(np.isnan(z), -np.inf, z), axis=0)
    ref["best_token"] = type_ids[best]
    ref["best_z"] = z[best, np.arange(U)]
    tt = ref["top_token"]
    rows = np.array([row_of.get(int(t), -1) for t in tt])
    ref["top_token_z"] = np.where(rows >= 0, z[np.maximum(rows, 0), np.arange(U)], np.nan)
    counts_all = np.bincount(tokens, minlength=int(tokens.max()) + 1)
    base = counts_all[np.clip(tt, 0, None)] / n
    ref["top_token_lift"] = np.where(tt >= 0, ref["top_share"] / np.maximum(base, 1e-12), np.nan)
    out[F.REF] = ref
    return out


def manifest_for(lm, refs, config, corpus_meta: dict, n_tokens: int) -> dict:
    a = lm.adapter
    sites, offset = [], 0
    for ref in refs:
        hook = a.site_hook(ref)
        sites.append({
            "name": ref.name, "site": ref.site, "layer": ref.layer, "width": hook.width,
            "offset": offset, "hf_module": hook.module_path, "reads": hook.reads, "tl_hook": ref.tl_hook(),
        })
        offset += hook.width
    return {
        "format": F.FORMAT_NAME,
        "schema_version": F.SCHEMA_VERSION,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "name": config["model"], "family": a.family, "n_layers": a.n_layers, "d_model": a.d_model,
            "d_mlp": a.d_mlp, "n_heads": a.n_heads, "n_kv_heads": a.n_kv_heads, "d_head": a.d_head,
        },
        "corpus": {**corpus_meta, "n_tokens": int(n_tokens)},
        "seq": config["seq"], "k": config["k"], "k_ctx": config["k_ctx"],
        "context": {"before": C_BEFORE, "after": C_AFTER},
        "hist_stride": HIST_STRIDE,
        "min_tuning_count": MIN_TUNING_COUNT,
        "reference": {
            "batch": config["ref_batch"], "seq": config["ref_seq"] or config["seq"],
            "samples": config["ref_samples"], "seed": config["seed"],
        },
        "n_units": offset,
        "sites": sites,
    }


def vocab_texts(lm, size: int) -> list[str]:
    if lm.tokenizer is None:
        return [str(i) for i in range(size)]
    return lm.tokenizer.batch_decode([[i] for i in range(size)], clean_up_tokenization_spaces=False)
