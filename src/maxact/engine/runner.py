"""The atlas run: the corpus once, in consecutive non-overlapping windows, every unit of the chosen
sites at once (docs/METHOD.md, "Why one pass can replace a thousand batches").

A run hands its state to ``on_checkpoint`` every ``checkpoint_s`` seconds; a run that loads that
state continues bit-identical to an uninterrupted run (same batches, same order, same arithmetic).
``shard=(i, n)`` runs the i-th of n contiguous slices of the windows; the pipeline folds the states
of all slices into exactly the result of one run.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import cached_property

import numpy as np
import torch
from tqdm.auto import tqdm

from maxact.capture import stream
from maxact.config import CHECKPOINT_EVERY_S, AtlasConfig
from maxact.corpus import TokenSource
from maxact.dictionaries import ensure_loaded
from maxact.engine.plan import WindowPlan
from maxact.engine.site import SiteAccumulator
from maxact.engine.statistic import StatisticSettings
from maxact.engine.tuning import choose_types, type_rows
from maxact.errors import MaxactError
from maxact.units import SiteRef

STATE_VERSION = 4  # of checkpoints and partials: per-site statistic states, no token stream
# (3: skew and kurtosis over every token; 4: per-type count, mean and M2 in the tuning state)


def tokens_sha256(source: TokenSource) -> str:
    """Hex sha256 of the (n,) int32 token stream's bytes, then of its (n_docs,) int64 document starts
    when there are several documents (what checkpoints and partials are tied to; for a single text,
    the hash of its tokens alone)."""
    digest = hashlib.sha256(np.ascontiguousarray(source.tokens, dtype=np.int32))
    if len(source.doc_starts) > 1:
        digest.update(np.ascontiguousarray(source.doc_starts, dtype=np.int64))
    return digest.hexdigest()


class AtlasRun:
    """Holds the accumulators of one run (or one shard) and drives them through the windows."""

    def __init__(self, lm, source: TokenSource, config: AtlasConfig):
        self.lm, self.config, self.source = lm, config, source
        self.tokens = source.tokens  # (n,) int32: indexed per batch, never widened as a whole
        self.refs: list[SiteRef] = ordered_refs(lm.adapter, config)
        self.plan = WindowPlan.for_atlas(lm, source, config)
        self.type_ids, self.type_counts = choose_types(self.plan.fed_tokens(self.tokens), config.max_types)
        vocab = len(lm.tokenizer) if lm.tokenizer is not None else int(self.tokens.max()) + 1
        self.row_of_token = torch.from_numpy(type_rows(self.tokens, self.type_ids, vocab))  # (vocab,)
        dev = config.device
        self.widths = [lm.adapter.width(ref) for ref in self.refs]
        self.settings = StatisticSettings(config.k, config.k_ctx, len(self.type_ids), config.seed)
        self.fused = config.fuse_sites if config.fuse_sites is not None else str(dev).startswith("cuda")
        if self.fused:
            self.offsets = dict(zip(self.refs, np.cumsum([0] + self.widths[:-1]).tolist()))
            self.all = SiteAccumulator(sum(self.widths), self.settings, dev)
        else:
            self.acc = {r: SiteAccumulator(w, self.settings, dev) for r, w in zip(self.refs, self.widths)}
        self.cursor = 0  # batches done

    def site_states(self) -> dict[str, dict]:
        """Accumulator state per site name (the checkpoint and partial format, fused or not)."""
        if self.fused:
            return {str(r): s for r, s in zip(self.refs, self.all.split(self.widths))}
        return {str(r): self.acc[r].state() for r in self.refs}

    def accumulators(self) -> list[SiteAccumulator]:
        """One accumulator per site, in manifest order."""
        if not self.fused:
            return [self.acc[r] for r in self.refs]
        out = []
        for w, state in zip(self.widths, self.all.split(self.widths)):
            acc = SiteAccumulator(w, self.settings, self.config.device)
            acc.load_state(state)
            out.append(acc)
        return out

    # ---- checkpoints -------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "schema": STATE_VERSION,
            "config": self.config.comparable(),
            "shard": self.config.shard,
            "cursor": self.cursor,
            "window_range": self.plan.window_range(),
            "n_tokens": len(self.tokens),
            "tokens_sha256": self.tokens_sha256,
            "settings": asdict(self.settings),
            "sites": self.site_states(),
        }

    @cached_property
    def tokens_sha256(self) -> str:
        return tokens_sha256(self.source)

    def load_state(self, state: dict, what: str) -> None:
        if state.get("schema") != STATE_VERSION:
            raise MaxactError(f"{what} was written by another version of maxact (state version "
                              f"{state.get('schema')}, this one writes {STATE_VERSION}); start over with --overwrite")
        old, now = dict(state.get("config") or {}), self.config.comparable()
        old["shard"], now["shard"] = state.get("shard"), self.config.shard
        diff = [f"{k}: {old.get(k)!r} there, {now[k]!r} now" for k in now if old.get(k) != now[k]]
        if not diff and state.get("tokens_sha256") not in (None, self.tokens_sha256):
            diff = [f"the corpus tokens differ ({state.get('n_tokens')} tokens there, {len(self.tokens)} now, "
                    f"or their document starts)"]
        if diff:
            raise MaxactError(
                f"{what} was made with a different configuration ({'; '.join(diff)}); rerun without "
                f"--resume into a new --out, or repeat the original options"
            )
        states = [state["sites"][str(r)] for r in self.refs]
        if self.fused:
            self.all.load_joined(states)
        else:
            for r, s in zip(self.refs, states):
                self.acc[r].load_state(s)
        self.cursor = int(state["cursor"])

    # ---- the pass ----------------------------------------------------------------------------
    def run(self, on_checkpoint: Callable[[dict], None] | None = None, checkpoint_s: float = CHECKPOINT_EVERY_S,
            progress=True, stop_after_batches: int | None = None,
            on_progress: Callable[[int], None] | None = None) -> None:
        """Run the remaining batches; every ``checkpoint_s`` seconds hand ``state()`` to on_checkpoint.
        on_progress(tokens done), after every batch: corpus tokens of the plan done so far, resumed
        batches included (how `maxact atlas --ray` tasks report to the driver's progress bar)."""
        device = self.lm.device
        todo = self.plan.batches[self.cursor :]
        done = self.plan.n_tokens(self.plan.batches[: self.cursor])
        bar = tqdm(total=self.plan.n_tokens(), initial=done,
                   unit="tok", unit_scale=True, desc="atlas", disable=not progress, smoothing=0.1)
        last_ckpt = time.monotonic()
        bos_id = self.plan.windowing.bos_id
        first = 0 if bos_id is None else 1  # model position of each window's first corpus token
        for n_done, windows in enumerate(todo):
            T = int(self.plan.length[windows[0]])
            pos = torch.from_numpy(self.plan.starts[windows])[:, None] + torch.arange(T)  # (W, T) int64
            ids_cpu = torch.from_numpy(self.tokens[pos.numpy()].astype(np.int64))  # (W, T)
            if bos_id is None:
                ids = ids_cpu.to(device)  # (W, T)
            else:  # the BOS position is fed, never counted: consumers drop it
                ids = torch.cat([torch.full((len(windows), 1), bos_id), ids_cpu], 1).to(device)  # (W, 1 + T)
            rows = self.row_of_token[ids_cpu.reshape(-1)].to(device)  # (W * T,) tuning row
            pos_d = pos.to(device)

            if self.fused:
                buf = torch.empty(len(windows), T, sum(self.widths), device=device)  # (W, T, U_all)

                def consume(ref: SiteRef, acts: torch.Tensor, buf=buf) -> None:  # acts (W, first + T, width)
                    o = self.offsets[ref]
                    buf[:, :, o : o + acts.shape[2]].copy_(acts[:, first:])
            else:

                def consume(ref: SiteRef, acts: torch.Tensor, pos_d=pos_d, rows=rows) -> None:
                    if first:  # acts (W, 1 + T, width): the corpus tokens, once contiguous
                        acts = acts[:, first:].contiguous()
                    self.acc[ref].update(acts, pos_d, rows)  # acts (W, T, width)

            with torch.inference_mode():
                stream(self.lm.adapter, ids, self.refs, consume)
                if self.fused:
                    self.all.update(buf, pos_d, rows)
            self.cursor += 1
            bar.update(len(windows) * T)
            if on_progress is not None:
                done += int(self.plan.length[windows].sum())
                on_progress(done)
            if stop_after_batches is not None and n_done + 1 >= stop_after_batches:
                break
            if on_checkpoint is not None and time.monotonic() - last_ckpt > checkpoint_s:
                on_checkpoint(self.state())
                last_ckpt = time.monotonic()
        bar.close()

    @property
    def finished(self) -> bool:
        return self.cursor >= len(self.plan.batches)


def ordered_refs(adapter, config: AtlasConfig) -> list[SiteRef]:
    """Sites in model order: by block, then METHOD.md's site order; ln_final, then derived sites last."""
    ensure_loaded(config.derived)
    refs = adapter.site_refs(config.sites, config.layers)
    order = {s: i for i, s in enumerate(adapter.sites)}
    derived = {spec.name: i for i, spec in enumerate(config.derived)}  # last, in the order given
    return sorted(refs, key=lambda r: (r.site in derived, r.layer if r.layer is not None else 1 << 30,
                                       derived[r.site] if r.site in derived else order[r.site]))
