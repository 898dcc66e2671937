"""The atlas run: the corpus once, in consecutive non-overlapping windows, every unit of the chosen
sites at once (docs/METHOD.md, "Why one pass can replace a thousand batches").

A run checkpoints its accumulators atomically every ``checkpoint_s`` seconds; ``resume=True`` picks
up from the last checkpoint and ends bit-identical to an uninterrupted run (same batches, same
order, same arithmetic). ``shard=(i, n)`` runs the i-th of n contiguous slices of the windows and
writes a partial that ``merge_partials`` folds into exactly the result of one run.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from maxact.capture import stream
from maxact.engine.site import SiteAccumulator, join_states, split_state
from maxact.engine.tuning import choose_types, type_index
from maxact.errors import MaxactError
from maxact.store import format as F
from maxact.units import SiteRef

DEFAULT_SITES = ("resid_pre", "ln_final", "mlp_post")


@dataclass(frozen=True)
class AtlasConfig:
    """How an atlas is made; saved as config.json beside it."""

    model: str = "smollm2-135m"
    corpus: str = "looking-glass"
    seq: int = 256  # tokens per window
    sites: tuple[str, ...] = DEFAULT_SITES
    layers: tuple[int, ...] | None = None  # None: every block
    k: int = 64  # top-K and bottom-K kept per unit
    k_ctx: int = 20  # of which this many keep their context activations
    max_types: int = 512  # token types tracked for tuning (most frequent in the corpus)
    windows_per_batch: int = 16  # windows per forward pass
    max_tokens: int | None = None  # only the first N corpus tokens
    strip_gutenberg: bool = False
    shard: tuple[int, int] | None = None  # (i, n): the i-th of n slices of the windows
    ref_batch: int = 32  # geometry of the simulated reference statistic
    ref_seq: int | None = None  # None: = seq
    ref_samples: int = 1000
    seed: int = 0
    logit_k: int = 16  # tokens kept per unit for direct logit effects
    device: str = field(default="cpu", compare=False)
    # one accumulator over all units, fed once per batch from a buffer of every site: far fewer
    # kernel launches (GPU), at the cost of holding all sites of a batch at once. None: on CUDA.
    fuse_sites: bool | None = field(default=None, compare=False)

    def __post_init__(self):
        # contexts are kept for the first k_ctx of the K examples: never more than K
        if self.k_ctx > self.k:
            object.__setattr__(self, "k_ctx", self.k)

    def comparable(self) -> dict:
        """What must agree between a checkpoint (or a partial) and the run that continues it."""
        d = asdict(self)
        for k in ("device", "shard", "fuse_sites"):
            d.pop(k)
        return d


@dataclass
class WindowPlan:
    """Windows [start, start + length) covering tokens; batches of equal-length windows."""

    starts: np.ndarray  # (n_windows,) int64
    length: np.ndarray  # (n_windows,) int64
    batches: list[np.ndarray]  # each (W,) window indices, all of one length

    @staticmethod
    def make(n_tokens: int, seq: int, per_batch: int, shard: tuple[int, int] | None) -> WindowPlan:
        starts = np.arange(0, n_tokens, seq, dtype=np.int64)
        length = np.minimum(seq, n_tokens - starts)
        lo, hi = 0, len(starts)
        if shard is not None:
            i, n = shard
            lo, hi = len(starts) * i // n, len(starts) * (i + 1) // n
        full = [w for w in range(lo, hi) if length[w] == seq]
        batches = [np.array(full[j : j + per_batch]) for j in range(0, len(full), per_batch)]
        batches += [np.array([w]) for w in range(lo, hi) if length[w] != seq]
        return WindowPlan(starts, length, batches)

    def window_range(self) -> tuple[int, int]:
        ws = np.concatenate(self.batches) if self.batches else np.array([0])
        return int(ws.min()), int(ws.max()) + 1


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class AtlasRun:
    """Holds the accumulators of one run (or one shard) and drives them through the windows."""

    def __init__(self, lm, tokens: np.ndarray, config: AtlasConfig):
        self.lm, self.config = lm, config
        self.tokens = tokens  # (n,) int32
        self.refs: list[SiteRef] = ordered_refs(lm.adapter, config)
        self.plan = WindowPlan.make(len(tokens), config.seq, config.windows_per_batch, config.shard)
        self.type_ids, self.type_counts = choose_types(tokens, config.max_types)
        vocab = len(lm.tokenizer) if lm.tokenizer is not None else int(tokens.max()) + 1
        self.rows = torch.from_numpy(type_index(tokens, self.type_ids, vocab))  # (n,) tuning row
        dev = config.device
        self.widths = [lm.adapter.width(ref) for ref in self.refs]
        self.fused = config.fuse_sites if config.fuse_sites is not None else str(dev).startswith("cuda")
        n_types = len(self.type_ids)
        if self.fused:
            self.offsets = dict(zip(self.refs, np.cumsum([0] + self.widths[:-1]).tolist()))
            self.all = SiteAccumulator(sum(self.widths), config.k, config.k_ctx, n_types, dev)
        else:
            self.acc = {r: SiteAccumulator(w, config.k, config.k_ctx, n_types, dev)
                        for r, w in zip(self.refs, self.widths)}
        self.cursor = 0  # batches done

    def site_states(self) -> dict[str, dict]:
        """Accumulator state per site name (the checkpoint and partial format, fused or not)."""
        if self.fused:
            return {str(r): s for r, s in zip(self.refs, split_state(self.all.state(), self.widths))}
        return {str(r): self.acc[r].state() for r in self.refs}

    def accumulators(self) -> list[SiteAccumulator]:
        """One accumulator per site, in manifest order."""
        if not self.fused:
            return [self.acc[r] for r in self.refs]
        out = []
        for w, state in zip(self.widths, split_state(self.all.state(), self.widths)):
            acc = SiteAccumulator(w, self.config.k, self.config.k_ctx, len(self.type_ids), self.config.device)
            acc.load_state(state)
            out.append(acc)
        return out

    # ---- checkpoints -------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "schema": F.SCHEMA_VERSION,
            "config": self.config.comparable(),
            "shard": self.config.shard,
            "cursor": self.cursor,
            "window_range": self.plan.window_range(),
            "n_tokens": len(self.tokens),
            "tokens_sha256": self.tokens_sha256(),
            "sites": self.site_states(),
        }

    def tokens_sha256(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.tokens, dtype=np.int32).tobytes()).hexdigest()

    def load_state(self, state: dict, what: str) -> None:
        old, now = dict(state.get("config") or {}), self.config.comparable()
        old["shard"], now["shard"] = state.get("shard"), self.config.shard
        diff = [f"{k}: {old.get(k)!r} there, {now[k]!r} now" for k in now if old.get(k) != now[k]]
        if not diff and state.get("tokens_sha256") not in (None, self.tokens_sha256()):
            diff = [f"the corpus tokens differ ({state.get('n_tokens')} tokens there, {len(self.tokens)} now)"]
        if diff:
            raise MaxactError(
                f"{what} was made with a different configuration ({'; '.join(diff)}); rerun without "
                f"--resume into a new --out, or repeat the original options"
            )
        states = [state["sites"][str(r)] for r in self.refs]
        if self.fused:
            self.all.load_state(join_states(states))
        else:
            for r, s in zip(self.refs, states):
                self.acc[r].load_state(s)
        self.cursor = int(state["cursor"])

    # ---- the pass ----------------------------------------------------------------------------
    def run(self, checkpoint: Path | None = None, checkpoint_s: float = 120.0, progress=True,
            stop_after_batches: int | None = None) -> None:
        device = self.lm.device
        tokens_t = torch.from_numpy(self.tokens.astype(np.int64))
        todo = self.plan.batches[self.cursor :]
        total = int(sum(self.plan.length[b].sum() for b in self.plan.batches))
        done = int(sum(self.plan.length[b].sum() for b in self.plan.batches[: self.cursor]))
        bar = tqdm(total=total, initial=done, unit="tok", unit_scale=True, desc="atlas",
                   disable=not progress, smoothing=0.1)
        last_ckpt = time.monotonic()
        for n_done, windows in enumerate(todo):
            T = int(self.plan.length[windows[0]])
            pos = torch.from_numpy(self.plan.starts[windows])[:, None] + torch.arange(T)  # (W, T)
            ids = tokens_t[pos].to(device)  # (W, T)
            rows = self.rows[pos.reshape(-1)].to(device)  # (W * T,)
            pos_d = pos.to(device)

            if self.fused:
                buf = torch.empty(len(windows), T, sum(self.widths), device=device)  # (W, T, U_all)

                def consume(ref: SiteRef, acts: torch.Tensor, buf=buf) -> None:  # acts (W, T, width)
                    o = self.offsets[ref]
                    buf[:, :, o : o + acts.shape[2]].copy_(acts)
            else:

                def consume(ref: SiteRef, acts: torch.Tensor, pos_d=pos_d, rows=rows) -> None:
                    self.acc[ref].update(acts, pos_d, rows)  # acts (W, T, width)

            with torch.inference_mode():
                stream(self.lm.adapter, ids, self.refs, consume)
                if self.fused:
                    self.all.update(buf, pos_d, rows)
            self.cursor += 1
            bar.update(len(windows) * T)
            if stop_after_batches is not None and n_done + 1 >= stop_after_batches:
                break
            if checkpoint is not None and time.monotonic() - last_ckpt > checkpoint_s:
                save_atomic(self.state(), checkpoint)
                last_ckpt = time.monotonic()
        bar.close()

    @property
    def finished(self) -> bool:
        return self.cursor >= len(self.plan.batches)


def ordered_refs(adapter, config: AtlasConfig) -> list[SiteRef]:
    """Sites in model order: by block, then METHOD.md's site order; ln_final last."""
    refs = adapter.site_refs(config.sites, config.layers)
    order = {s: i for i, s in enumerate(adapter.sites)}
    return sorted(refs, key=lambda r: (r.layer if r.layer is not None else 1 << 30, order[r.site]))
