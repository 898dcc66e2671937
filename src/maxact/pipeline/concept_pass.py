"""The concept pass (docs/CONCEPTS.md): one forward pass over a corpus, windows and batches exactly
as the atlas pass feeds them (engine/plan.py, BOS included), every unit of the chosen sites read
through ``capture.stream``, and per unit and group of observations count, mean and M2 folded in
float64 (engine/concept.py). Memory is flat in corpus length."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from maxact.analysis.categories import Labels
from maxact.capture import stream
from maxact.config import AtlasConfig
from maxact.corpus import TokenSource
from maxact.engine.concept import BatchObservations, ConceptAccumulator, ObservationMap
from maxact.engine.plan import WindowPlan
from maxact.engine.runner import ordered_refs
from maxact.errors import MaxactError
from maxact.units import SiteRef, UnitId


@dataclass(frozen=True)
class PassRequest:
    """What a concept pass accumulates besides the moments of every unit."""

    labels: Labels
    skip_pos0: bool  # observations touching window position 0 are left out
    hist_units: tuple[UnitId, ...] = ()  # units whose observations are binned per group
    probe_sites: tuple[SiteRef, ...] = ()  # sites whose probe observations are kept
    probe_per_group: int = 0  # observations of each group kept for the probe (seeded choice)
    seed: int = 0


class ProbeData(NamedTuple):
    """The observations kept for a probe of one site."""

    site: SiteRef
    values: np.ndarray  # (m, width) float32
    groups: np.ndarray  # (m,) int64


class GroupPass(NamedTuple):
    """A concept pass's result: units of ``refs`` side by side, in that order."""

    refs: list[SiteRef]
    widths: list[int]
    count: np.ndarray  # (G,) int64 observations of each group
    mean: np.ndarray  # (G, U) float64
    m2: np.ndarray  # (G, U) float64
    hist: np.ndarray  # (H, G, N_BINS) int64, the units of PassRequest.hist_units
    probes: list[ProbeData]
    n_fed: int  # corpus tokens fed to the model
    n_dropped: int  # observations left out (a span across windows, window position 0 with skip_pos0)
    seconds: float
    stopped: bool  # on_batch stopped the pass early: the moments are of the first n_fed tokens

    def unit_names(self) -> list[str]:
        return [str(UnitId(r.site, r.layer, i)) for r, w in zip(self.refs, self.widths) for i in range(w)]


def observation_map(labels: Labels, plan: WindowPlan, n_tokens: int, request: PassRequest) -> tuple[ObservationMap, int]:
    """The labels with the observations a pass cannot form (a span across a window boundary) or must
    leave out (window position 0 with skip_pos0) removed, and the probe's observations chosen."""
    token_obs = labels.token_obs.copy()
    has = token_obs >= 0
    pos = np.nonzero(has)[0]
    obs = token_obs[pos]
    n_obs = labels.n_obs
    drop = np.zeros(n_obs, dtype=bool)
    window = np.searchsorted(plan.starts, pos, side="right") - 1  # (k,) window of each token
    first_w = np.full(n_obs, np.iinfo(np.int64).max)
    last_w = np.full(n_obs, -1)
    np.minimum.at(first_w, obs, window)
    np.maximum.at(last_w, obs, window)
    drop |= (last_w >= 0) & (first_w != last_w)
    if request.skip_pos0:
        drop[obs[np.isin(pos, plan.starts)]] = True
    token_obs[pos[drop[obs]]] = -1
    probe = np.zeros(n_obs, dtype=bool)
    if request.probe_per_group:
        rng = np.random.default_rng(request.seed)
        seen = np.zeros(n_obs, dtype=bool)
        seen[token_obs[token_obs >= 0]] = True
        for g in range(len(labels.group_names)):
            cand = np.nonzero(seen & (labels.obs_group == g))[0]
            probe[rng.choice(cand, size=min(len(cand), request.probe_per_group), replace=False)] = True
    return ObservationMap(token_obs, labels.obs_group, labels.obs_size, probe, len(labels.group_names)), int(drop.sum())


def run_concept_pass(lm, source: TokenSource, config: AtlasConfig, request: PassRequest,
                     progress: bool = True, on_batch: Callable[[int, int], bool] | None = None) -> GroupPass:
    """One pass over ``source`` with the windows, batches, sites and device of ``config``.
    on_batch(tokens fed so far, tokens of the plan), called before each batch and once after the last:
    True before a batch stops the pass there (GroupPass.stopped)."""
    if len(request.labels.token_obs) != len(source):
        raise ValueError(f"labels cover {len(request.labels.token_obs)} tokens, the source has {len(source)}")
    refs = ordered_refs(lm.adapter, config)
    widths = [lm.adapter.width(r) for r in refs]
    offsets = dict(zip(refs, np.cumsum([0] + widths[:-1]).tolist()))
    plan = WindowPlan.for_atlas(lm, source, replace(config, shard=None))  # every window
    obs_map, dropped = observation_map(request.labels, plan, len(source), request)
    if not (obs_map.token_obs >= 0).any():
        raise MaxactError("no token of the corpus is an observation of the category (after leaving out "
                          f"{dropped} across windows or at window position 0)")
    device = lm.device
    G = obs_map.n_groups
    hist_cols = []
    for u in request.hist_units:
        ref = u.site_ref
        if ref not in offsets:
            raise MaxactError(f"unit {u} is not among the sites of the pass ({', '.join(r.name for r in refs)})")
        hist_cols.append(offsets[ref] + u.index)
    fused = config.fuse_sites if config.fuse_sites is not None else str(config.device).startswith("cuda")
    if fused:
        accs = {None: ConceptAccumulator(sum(widths), G, hist_cols,
                                         [slice(offsets[r], offsets[r] + lm.adapter.width(r)) for r in request.probe_sites],
                                         device)}
    else:
        accs = {r: ConceptAccumulator(w, G, [c - offsets[r] for c in hist_cols if offsets[r] <= c < offsets[r] + w],
                                      [slice(0, w)] if r in request.probe_sites else [], device)
                for r, w in zip(refs, widths)}
    bos_id = plan.windowing.bos_id
    first = 0 if bos_id is None else 1
    total = plan.n_tokens()
    bar = tqdm(total=total, unit="tok", unit_scale=True, desc="concept", disable=not progress)
    t0 = time.perf_counter()
    fed, stopped = 0, False
    for windows in plan.batches:
        if on_batch is not None and on_batch(fed, total):
            stopped = True
            break
        T = int(plan.length[windows[0]])
        fed += len(windows) * T
        pos = plan.starts[windows][:, None] + np.arange(T)  # (W, T) int64 corpus positions
        batch_obs = BatchObservations.of(obs_map, pos, device)
        ids = torch.from_numpy(source.tokens[pos].astype(np.int64))  # (W, T)
        if bos_id is not None:
            ids = torch.cat([torch.full((len(windows), 1), bos_id), ids], 1)  # (W, 1 + T)
        ids = ids.to(device)
        if batch_obs.n_obs == 0:
            bar.update(len(windows) * T)
            continue
        buf = torch.empty(len(windows), T, sum(widths), device=device) if fused else None  # (W, T, U_all)

        def consume(ref: SiteRef, acts: torch.Tensor, buf=buf, batch_obs=batch_obs) -> None:  # (W, first + T, width)
            if buf is not None:
                buf[:, :, offsets[ref] : offsets[ref] + acts.shape[2]].copy_(acts[:, first:])
                return
            accs[ref].update(acts[:, first:].reshape(-1, acts.shape[2]), batch_obs)  # (W * T, width)

        with torch.inference_mode():
            stream(lm.adapter, ids, refs, consume)
            if fused:
                accs[None].update(buf.reshape(-1, buf.shape[2]), batch_obs)
        bar.update(len(windows) * T)
    if on_batch is not None and not stopped:
        on_batch(fed, total)  # the last progress: every token fed
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    bar.close()
    return _result(refs, widths, accs, request, fused, fed, dropped, seconds, stopped)


def _result(refs, widths, accs, request: PassRequest, fused: bool, fed: int, dropped: int, seconds: float,
            stopped: bool) -> GroupPass:
    ordered = [accs[None]] if fused else [accs[r] for r in refs]
    count = ordered[0].moments.count.cpu().numpy().astype(np.int64)
    mean = np.concatenate([a.moments.mean.cpu().numpy() for a in ordered], axis=1)
    m2 = np.concatenate([a.moments.m2.cpu().numpy() for a in ordered], axis=1)
    hists = [a.histograms() for a in ordered if len(a.hist_columns)]
    if fused or not hists:
        hist = hists[0] if hists else np.zeros((0, len(count), 0), dtype=np.int64)
    else:  # per-site accumulators hold their units' histograms: back into the order asked
        by_unit = {}
        for r, a in zip(refs, ordered):
            counts = a.histograms()
            for j, col in enumerate(a.hist_columns.tolist()):
                by_unit[(r, col)] = counts[j]
        hist = np.stack([by_unit[(u.site_ref, u.index)] for u in request.hist_units])
    probes = []
    for k, site in enumerate(request.probe_sites):
        acc, i = (accs[None], k) if fused else (accs[site], 0)
        values, ids = acc.probe_matrix(i)
        probes.append(ProbeData(site, values, request.labels.obs_group[ids]))
    return GroupPass(refs, widths, count, mean, m2, hist, probes, fed, dropped, seconds, stopped)
