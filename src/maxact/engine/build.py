"""`maxact atlas` and `maxact merge` as library calls: run (or resume) the pass, then write the
atlas, or a shard's partial; fold partials into one atlas."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from maxact.engine.finalize import build_arrays, manifest_for, vocab_texts
from maxact.engine.logit_effects import logit_effects
from maxact.engine.runner import AtlasConfig, AtlasRun, save_atomic
from maxact.engine.site import SiteAccumulator
from maxact.errors import MaxactError
from maxact.store import format as F
from maxact.store.writer import write_atlas, write_json_atomic


def _json_config(config: AtlasConfig) -> dict:
    d = asdict(config)
    d["ref_seq"] = config.ref_seq or config.seq
    return d


def _check_out(out: Path, resume: bool, overwrite: bool) -> None:
    if (out / F.MANIFEST).exists() and not overwrite:
        raise MaxactError(f"{out} already holds a finished atlas; use --overwrite to replace it, or another --out")
    if (out / F.PARTIAL).exists() and not overwrite:
        raise MaxactError(f"{out} already holds a finished shard partial; use --overwrite, or another --out")
    ckpt = out / F.RUN_DIR / "checkpoint.pt"
    if ckpt.exists() and not resume and not overwrite:
        raise MaxactError(
            f"{out} holds an interrupted run; continue it with --resume (same options), or start over with --overwrite"
        )


def build_atlas(lm, corpus, tokens: np.ndarray, config: AtlasConfig, out: Path, *, resume=False,
                overwrite=False, checkpoint_s=120.0, progress=True, echo=print) -> dict:
    """Run the pass (resuming if asked), then write the atlas or the shard's partial. Returns timing."""
    from maxact.corpus import require_tokens

    out = Path(out)
    _check_out(out, resume, overwrite)
    if config.max_tokens is not None:
        tokens = tokens[: config.max_tokens]
    require_tokens(len(tokens), config.seq, corpus.name)
    run_dir = out / F.RUN_DIR
    if overwrite and not resume:
        shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = run_dir / "checkpoint.pt"
    run = AtlasRun(lm, tokens, config)
    if resume and ckpt.exists():
        run.load_state(torch.load(ckpt, weights_only=True), f"the checkpoint in {run_dir}")
        echo(f"resuming after batch {run.cursor} of {len(run.plan.batches)}")
    elif resume:
        echo("no checkpoint to resume from: starting from the beginning")
    write_json_atomic(run_dir / "config.json", _json_config(config))
    t0 = time.perf_counter()
    run.run(checkpoint=ckpt, checkpoint_s=checkpoint_s, progress=progress)
    seconds = time.perf_counter() - t0
    n_run = int(sum(run.plan.length[b].sum() for b in run.plan.batches))
    corpus_meta = {"name": corpus.name, "path": corpus.path, "sha256": corpus.sha256, "stripped": corpus.stripped}
    window_range = run.plan.window_range()
    meta = {
        "manifest": manifest_for(lm, run.refs, _json_config(config), corpus_meta, len(tokens)),
        "vocab": vocab_texts(lm, _vocab_size(lm, tokens)),
        "logit": {k: torch.from_numpy(v) for k, v in logit_effects(lm.adapter, run.refs, config.logit_k).items()},
        "tokens": torch.from_numpy(tokens.astype(np.int32)),
        "type_ids": torch.from_numpy(run.type_ids), "type_counts": torch.from_numpy(run.type_counts),
        "config": _json_config(config),
    }
    timing = {"seconds": round(seconds, 2), "tokens": n_run, "tokens_per_s": round(n_run / max(seconds, 1e-9), 1)}
    if config.shard is not None:
        save_atomic({"state": run.state(), "meta": meta, "timing": timing}, out / F.PARTIAL)
        write_json_atomic(out / "partial.json", {
            "shard": list(config.shard), "window_range": list(window_range), "config": meta["config"], **timing})
    else:
        accs = run.accumulators()
        _finalize(out, accs, meta, {"windows": [0, len(run.plan.starts)], "timing": timing})
    shutil.rmtree(run_dir, ignore_errors=True)
    return timing


def _vocab_size(lm, tokens) -> int:
    size = len(lm.tokenizer) if lm.tokenizer is not None else 0
    return max(size, int(tokens.max()) + 1)


def _finalize(out: Path, accs, meta: dict, extra: dict) -> None:
    cfg = meta["config"]
    tokens = meta["tokens"].numpy()
    arrays = build_arrays(accs, tokens, meta["type_ids"].numpy(), meta["type_counts"].numpy(),
                          cfg["seq"], cfg["ref_batch"], cfg["ref_seq"])
    arrays.update({k: v.numpy() for k, v in meta["logit"].items()})
    arrays[F.TOKENS] = tokens.astype(np.int32)
    write_atlas(out, {(k if k.endswith(".npy") else k + ".npy"): v for k, v in arrays.items()},
                {**meta["manifest"], **extra}, cfg, meta["vocab"])


def merge_partials(partial_dirs: list[Path], out: Path, overwrite=False, echo=print) -> None:
    """Fold shard partials into one atlas, exactly what one run over their windows gives."""
    out = Path(out)
    if (out / F.MANIFEST).exists() and not overwrite:
        raise MaxactError(f"{out} already holds a finished atlas; use --overwrite or another --out")
    loaded = []
    for d in partial_dirs:
        path = Path(d) / F.PARTIAL
        if not path.is_file():
            raise MaxactError(f"{d} holds no shard partial ({F.PARTIAL}); make one with maxact atlas --shard i/N")
        try:
            loaded.append(torch.load(path, weights_only=True))
        except Exception as e:  # noqa: BLE001 - any unreadable file is a corrupt partial
            raise MaxactError(f"{path} is corrupt or truncated ({type(e).__name__}); rerun that shard") from None
    first = loaded[0]
    for d, p in zip(partial_dirs[1:], loaded[1:]):
        if p["state"]["config"] != first["state"]["config"] or not torch.equal(p["meta"]["tokens"], first["meta"]["tokens"]):
            raise MaxactError(f"{d} was made with another model, corpus or options than {partial_dirs[0]}; cannot merge")
    ranges = sorted((tuple(p["state"]["window_range"]), str(d)) for p, d in zip(loaded, partial_dirs))
    for (r1, d1), (r2, d2) in zip(ranges, ranges[1:]):
        if r2[0] < r1[1]:
            raise MaxactError(f"partials {d1} (windows {r1[0]}..{r1[1] - 1}) and {d2} (windows {r2[0]}..{r2[1] - 1}) overlap; refusing to count windows twice")
    meta = first["meta"]
    cfg = meta["config"]
    names = [s["name"] for s in meta["manifest"]["sites"]]
    accs = []
    for s in meta["manifest"]["sites"]:
        acc = SiteAccumulator(s["width"], cfg["k"], cfg["k_ctx"], len(meta["type_ids"]))
        acc.load_state(first["state"]["sites"][s["name"]])
        accs.append(acc)
    for p in loaded[1:]:
        for name, acc in zip(names, accs):
            other = SiteAccumulator(acc.width, cfg["k"], cfg["k_ctx"], len(meta["type_ids"]))
            other.load_state(p["state"]["sites"][name])
            acc.merge(other)
    n_windows = -(-len(meta["tokens"]) // cfg["seq"])
    covered = sum(r[1] - r[0] for r, _ in ranges)
    if covered < n_windows:
        echo(f"note: the partials cover {covered} of {n_windows} windows; the atlas covers only those")
    timing = {"seconds": round(sum(p["timing"]["seconds"] for p in loaded), 2),
              "tokens": int(sum(p["timing"]["tokens"] for p in loaded))}
    _finalize(out, accs, meta, {"windows": [list(r) for r, _ in ranges], "merged_from": len(loaded), "timing": timing})


def atlas_config_from_json(path: Path) -> AtlasConfig:
    d = json.loads(Path(path).read_text())
    for k in ("sites", "layers", "shard"):
        if d.get(k) is not None:
            d[k] = tuple(d[k])
    return replace(AtlasConfig(), **d)
