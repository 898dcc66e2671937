"""Finalize once: turn the accumulators of a finished run (or of folded shards) into the atlas's
arrays and manifest. Everything that needs the whole corpus or the model (tuning means, the
reference statistic, direct logit effects, token texts) is computed here, once, never per shard."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from maxact.analysis.context_shares import (
    context_segments,
    context_win_probabilities,
    measured_contexts,
)
from maxact.analysis.refstat import merge_ranked, token_shares, win_probabilities
from maxact.config import DERIVED, AtlasConfig
from maxact.corpus import CorpusInfo, TokenSource
from maxact.engine.bands import PER_BAND, SAMPLE_SHIFT
from maxact.engine.context_pass import gather_shifted
from maxact.engine.logit_effects import logit_effects
from maxact.engine.moments import HIST_STRIDE
from maxact.engine.neighbors import nearest_neurons
from maxact.engine.plan import WindowPlan
from maxact.engine.site import SiteAccumulator
from maxact.engine.topk import C_AFTER, C_BEFORE
from maxact.engine.tuning import TokenTuning, choose_types, type_moments
from maxact.store import format as F
from maxact.store.manifest import (
    BandSampling,
    ContextSpan,
    DocumentLayout,
    Manifest,
    ModelInfo,
    ReferenceGeometry,
    SiteInfo,
)
from maxact.units import SiteRef
from maxact.windows import StartSpace, Windowing, window_bounds

MIN_TUNING_COUNT = 5  # occurrences a token type needs before its mean counts as evidence


@dataclass(frozen=True)
class FinishedAtlas:
    """What the store writes: arrays by file name, the manifest (files filled in by the writer) and
    the text of every token id."""

    arrays: dict[str, np.ndarray]
    manifest: Manifest
    vocab: list[str]


class WindowGeometry(NamedTuple):
    """Where the atlas pass's windows lie and where the reference statistic's windows may start."""

    doc_starts: np.ndarray  # (n_docs,) int64 first token of each document
    windowing: Windowing  # the atlas pass's windows
    reference: StartSpace  # starts of the reference geometry's windows
    ref_batch: int  # windows per reference batch


class ShiftedMeasure:
    """The context pass (engine/context_pass.py) over one atlas's sites, timed: called once at finalize
    with every unit's candidate positions."""

    def __init__(self, lm, source: TokenSource, windowing: Windowing, refs: list[SiteRef], per_batch: int):
        self.lm, self.source, self.windowing, self.refs, self.per_batch = lm, source, windowing, refs, per_batch
        self.seconds = 0.0

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        """positions (U, K) int64 -> (U, K) float32 activations in the shifted partition (NaN: none)."""
        t0 = time.perf_counter()
        widths = [self.lm.adapter.width(r) for r in self.refs]
        values = gather_shifted(self.lm, self.source.tokens, self.source.doc_starts, self.windowing, self.refs,
                                widths, positions, self.per_batch)
        self.seconds += time.perf_counter() - t0
        return values


def reference_space(source: TokenSource, config: AtlasConfig, windowing: Windowing) -> StartSpace:
    """The starts of the reference geometry's windows (ref_seq tokens, the BOS token among them if
    the atlas feeds one) inside the documents of ``source``."""
    ref_seq = config.ref_seq or config.seq
    return StartSpace.of(source.doc_starts, len(source), ref_seq - (windowing.bos_id is not None))


def finalize(lm, source: TokenSource, corpus: CorpusInfo, config: AtlasConfig, refs: list[SiteRef],
             accs: list[SiteAccumulator], *, windows, timing: dict, merged_from: int | None = None) -> FinishedAtlas:
    """accs: one SiteAccumulator per site of ``refs``, in that (manifest) order, over ``windows``."""
    tokens = source.tokens  # (n,) int32
    plan = WindowPlan.for_atlas(lm, source, config)
    fed = plan.fed_tokens(tokens)  # (n_fed,) what the windows fed: all tokens unless tails are dropped
    type_ids, type_counts = choose_types(fed, config.max_types)
    geometry = WindowGeometry(source.doc_starts, plan.windowing, reference_space(source, config, plan.windowing),
                              config.ref_batch)
    shifted = ShiftedMeasure(lm, source, plan.windowing, refs, config.windows_per_batch) if config.context_pass else None
    arrays = build_arrays(accs, tokens, fed, type_ids, type_counts, geometry, shifted)
    arrays.update({name + ".npy": v for name, v in logit_effects(lm.adapter, refs, config.logit_k).items()})
    for spec in config.derived:  # each derived unit's nearest neurons (docs/DIRECTIONS.md)
        ids, cosines = nearest_neurons(lm.adapter, spec, DERIVED.neighbors)
        arrays[F.near_units_file(spec.name)], arrays[F.near_cosines_file(spec.name)] = ids, cosines
    arrays[F.TOKENS] = tokens.astype(np.int32)
    arrays[F.DOC_STARTS] = np.asarray(source.doc_starts, dtype=np.int64)
    manifest = manifest_for(lm, refs, config, replace(corpus, n_tokens=len(tokens)), geometry)
    if shifted is not None:
        timing = timing | {"context_pass_seconds": round(shifted.seconds, 2)}
    manifest = replace(manifest, windows=windows, timing=timing, merged_from=merged_from)
    return FinishedAtlas(arrays, manifest, vocab_texts(lm, vocab_size(lm, tokens)))


def vocab_size(lm, tokens: np.ndarray) -> int:
    size = len(lm.tokenizer) if lm.tokenizer is not None else 0
    return max(size, int(tokens.max()) + 1)


def _cat(parts):
    return np.concatenate(parts) if parts else np.zeros((0,))


def build_arrays(accs: list[SiteAccumulator], tokens: np.ndarray, fed: np.ndarray, type_ids: np.ndarray,
                 type_counts: np.ndarray, geometry: WindowGeometry,
                 shifted: Callable[[np.ndarray], np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """accs: SiteAccumulators in manifest order; tokens (n,) the corpus stream, fed (n_fed,) the
    tokens its windows fed; shifted: the context pass ((U, K) positions -> (U, K) values), None
    without it. Returns every per-unit array of the store."""
    out: dict[str, np.ndarray] = {}
    for a in accs:
        a.flush()
    # each statistic's own per-unit arrays, concatenated over sites, and its shared arrays
    for name, stat in accs[0].statistics.items():
        per_site = [a.statistics[name].arrays() for a in accs]
        for stem in per_site[0]:
            out[stem + ".npy"] = _cat([arrays[stem] for arrays in per_site])
        for stem, arr in stat.SHARED_ARRAYS.items():
            out[stem + ".npy"] = arr

    summaries = [a.moments.summary() for a in accs]
    U = sum(len(s["mean"]) for s in summaries)
    stats = np.zeros(U, dtype=F.STATS_DTYPE)
    for name in ("count", "mean", "std", "skew", "kurtosis", "frac_pos"):
        stats[name] = _cat([s[name] for s in summaries])
    stats["max"] = np.fmax(out[F.TOP_VALUES][:, 0], out[F.TOP0_VALUES][:, 0])
    stats["min"] = np.fmin(out[F.BOTTOM_VALUES][:, 0], out[F.BOTTOM0_VALUES][:, 0])
    out[F.STATS] = stats

    sums = np.concatenate([a.tuning.sums.cpu().numpy() for a in accs], axis=1)  # (V+1, U)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (sums / type_counts[:, None]).astype(np.float32)
    out[F.TUNING_IDS], out[F.TUNING_COUNTS], out[F.TUNING_MEANS] = type_ids, type_counts, means
    out.update(_type_moments([a.tuning for a in accs]))
    out.update(_reference(out, stats, means, tokens, fed, type_ids, type_counts, geometry, shifted))
    return out


def _type_moments(tunings: list[TokenTuning]) -> dict[str, np.ndarray]:
    """Per-type second moments and eta squared (docs/STORE.md, "Per-type moments")."""
    tm = type_moments(tunings)
    total = np.zeros(len(tm.mean), dtype=F.TYPE_STATS_DTYPE)
    total["count"], total["mean"], total["m2"], total["eta2"] = int(tm.count.sum()), tm.mean, tm.total_m2, tm.eta2
    return {F.TYPE_COUNTS: tm.count, F.TYPE_DEV: tm.dev, F.TYPE_M2: tm.m2, F.TYPE_STATS: total}


def _reference(out, stats, means, tokens, fed, type_ids, type_counts, geometry: WindowGeometry,
               shifted: Callable[[np.ndarray], np.ndarray] | None) -> dict[str, np.ndarray]:
    """The reference statistic over all window positions and with position 0 excluded, and the
    tuning selectivity of the tokens that win it; with ``shifted``, each candidate valued at the
    context a reference window gives it (analysis/context_shares.py)."""
    U = len(stats)
    k = out[F.TOP_VALUES].shape[1]
    rv, rp = merge_ranked(out[F.TOP_VALUES], out[F.TOP_POSITIONS], out[F.TOP0_VALUES], out[F.TOP0_POSITIONS], k)
    n = len(tokens)
    extra: dict[str, np.ndarray] = {}
    if shifted is None:
        probs, miss = win_probabilities(rp, geometry.reference, geometry.ref_batch)
        xprobs, xmiss = win_probabilities(out[F.TOP_POSITIONS], geometry.reference, geometry.ref_batch)
    else:
        both = shifted(np.concatenate([rp, out[F.TOP_POSITIONS]], axis=1))  # (U, 2K)
        extra = {F.REF_SHIFT_VALUES: both[:, :k], F.TOP_SHIFT_VALUES: both[:, k:]}
        length = geometry.windowing.length
        space, batch = geometry.reference, geometry.ref_batch
        seg = context_segments(rp, measured_contexts(rp, rv, both[:, :k], geometry.doc_starts, length), space)
        probs, miss = context_win_probabilities(seg, k, space.n_starts, batch)
        xseg = context_segments(out[F.TOP_POSITIONS], measured_contexts(
            out[F.TOP_POSITIONS], out[F.TOP_VALUES], both[:, k:], geometry.doc_starts, length), space, skip_c0=True)
        xprobs, xmiss = context_win_probabilities(xseg, k, space.n_starts, batch)
    ref = np.zeros(U, dtype=F.REF_DTYPE)
    ref["miss"], ref["x_miss"] = miss, xmiss
    tok_at = lambda p: np.where(p >= 0, tokens[np.clip(p, 0, n - 1)], -1)  # noqa: E731
    for name_tok, name_share, pr, pos in [("top_token", "top_share", probs, rp),
                                          ("x_top_token", "x_top_share", xprobs, out[F.TOP_POSITIONS])]:
        shares = token_shares(pr, tok_at(pos))
        ref[name_tok] = [ids[0] if len(ids) else -1 for ids, _ in shares]
        ref[name_share] = [s[0] if len(s) else 0.0 for _, s in shares]
    won = np.maximum(1.0 - miss, 1e-12)
    window_start, _ = window_bounds(rp, geometry.doc_starts, n, geometry.windowing.length)
    at_pos0 = (rp >= 0) & (rp == window_start)  # computed at window position 0 of the atlas pass
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
    counts_all = np.bincount(fed, minlength=int(tokens.max()) + 1)
    base = counts_all[np.clip(tt, 0, None)] / len(fed)
    ref["top_token_lift"] = np.where(tt >= 0, ref["top_share"] / np.maximum(base, 1e-12), np.nan)
    return {F.REF_POSITIONS: rp, F.REF_PROBS: probs.astype(np.float32), F.REF: ref} | extra


def manifest_for(lm, refs: list[SiteRef], config: AtlasConfig, corpus: CorpusInfo,
                 geometry: WindowGeometry) -> Manifest:
    a = lm.adapter
    sites, offset = [], 0
    for ref in refs:
        hook = a.site_hook(ref)
        sites.append(SiteInfo(name=ref.name, site=ref.site, layer=ref.layer, width=hook.width, offset=offset,
                              hf_module=hook.module_path, reads=hook.reads, tl_hook=ref.tl_hook()))
        offset += hook.width
    return Manifest(
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        model=ModelInfo(name=config.model, family=a.family, n_layers=a.n_layers, d_model=a.d_model,
                        d_mlp=a.d_mlp, n_heads=a.n_heads, n_kv_heads=a.n_kv_heads, d_head=a.d_head),
        corpus=corpus,
        seq=config.seq, k=config.k, k_ctx=config.k_ctx,
        context=ContextSpan(before=C_BEFORE, after=C_AFTER),
        hist_stride=HIST_STRIDE,
        min_tuning_count=MIN_TUNING_COUNT,
        reference=ReferenceGeometry(batch=config.ref_batch, seq=config.ref_seq or config.seq,
                                    samples=config.ref_samples, seed=config.seed,
                                    docs_without_window=geometry.reference.docs_without_window,
                                    contexts=2 if config.context_pass else 1),
        documents=DocumentLayout(n_docs=len(geometry.doc_starts), doc_tail=geometry.windowing.doc_tail,
                                 bos=geometry.windowing.bos_id is not None, bos_id=geometry.windowing.bos_id,
                                 window_tokens=geometry.windowing.length),
        n_units=offset,
        sites=tuple(sites),
        bands=BandSampling(per_band=PER_BAND, one_in=1 << SAMPLE_SHIFT, hash="splitmix64", seed=config.seed),
        derived=config.derived,
    )


def vocab_texts(lm, size: int) -> list[str]:
    if lm.tokenizer is None:
        return [str(i) for i in range(size)]
    return lm.tokenizer.batch_decode([[i] for i in range(size)], clean_up_tokenization_spaces=False)
