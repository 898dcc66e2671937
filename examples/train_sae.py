"""Train a small TopK sparse autoencoder on one site of the embedded model; save it in SAELens's format.

    MAXACT_DATA=../shared/corpora OMP_NUM_THREADS=2 .venv/bin/python examples/train_sae.py \\
        --out examples/sae/smollm2-135m-L6-resid_pre-topk

(``make sae`` runs exactly that.) No SAE for SmolLM2-135M is published where this project can reach
it, so this script makes one, small enough to train on two CPU cores in under ten minutes, so that
``--sae NAME=DIR`` has a real dictionary to read.

What it does, deterministically for a given seed and thread count:

1. Activations. Each corpus (default: *Through the Looking-Glass*, *Alice's Adventures in Wonderland*
   and the State of the Union addresses in ``$MAXACT_DATA``) is loaded with maxact's own corpus
   loader and split by position: its first 90% of tokens are for training, its last 10% held out.
   Each part is cut into windows as an atlas cuts it (``--seq`` tokens from each document's start,
   full windows only; the model's BOS token fed first for a corpus of several documents, as
   ``maxact atlas`` does by default). A seeded subset of the windows is kept so that the corpora
   share the token budget equally (a corpus with fewer tokens gives all it has, the others share
   the rest). The windows run through the model with ``maxact.capture.stream``, which stops the
   forward after the site. Window position 0 (the BOS token, or the window's first corpus token,
   whose activation is an outlier of huge norm) is left out.
2. Training: plain torch (SAELens itself trains through TransformerLens, which does not read this
   GGUF-dequantized model). A TopK SAE (Gao et al. 2024): decoder rows random unit vectors, encoder
   initialised to the decoder's transpose, ``b_enc`` zero, ``b_dec`` the training mean; Adam on the
   mean squared reconstruction error summed over the input dimensions, learning rate constant then
   decayed linearly to 0 over the last fifth of the steps; decoder rows renormalised to unit norm
   after each step. Inputs are scaled during training so that their mean norm is sqrt(d_in); the
   scale is folded back into the saved weights (``b_enc`` and ``b_dec`` divided by it; the decoder
   keeps unit rows), so the saved SAE reads raw activations (``normalize_activations: "none"``).
3. Figures on the held-out tokens, computed with the weights as saved: fraction of variance
   explained (1 - sum |x - x_hat|^2 / sum |x - mean|^2), MSE (per element and per token), L0 (mean
   nonzero latents per token), dead latents (never nonzero on the held-out set), and the share of
   tokens with exactly k nonzero latents.
4. Saves ``cfg.json`` and ``sae_weights.safetensors`` (``W_enc`` (d_in, d_sae), ``b_enc`` (d_sae,),
   ``W_dec`` (d_sae, d_in), ``b_dec`` (d_in,)); float32, or float16 when float32 would exceed
   ``--max-float32-mb`` (cfg.json's ``dtype`` says which).

Encoding convention: SAELens's ``TopKSAE.encode`` (``sae_lens/saes/topk_sae.py``, class ``TopK``):

    pre   = (x - b_dec) @ W_enc + b_enc          # apply_b_dec_to_input: true
    top   = torch.topk(pre, k, dim=-1)            # the k largest pre-activations
    acts  = zeros; acts[top.indices] = relu(top.values)
    x_hat = acts @ W_dec + b_dec

that is, the k largest *pre*-activations are kept and ReLU is applied to them (not top-k of
``relu(pre)``: the two give the same nonzero values and differ only in which zeros are "kept"). A
token therefore has at most k nonzero latents, exactly k whenever its k-th largest pre-activation is
positive. The same function (``TopKSae.encode``) is used in training and for the held-out figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from safetensors.torch import save

from maxact.capture import stream
from maxact.corpus import TokenSource, load_source
from maxact.errors import MaxactError
from maxact.fsio import write_bytes_atomic, write_json_atomic
from maxact.models.loading import LoadedModel, load_model
from maxact.units import SiteRef, parse_unit_spec
from maxact.windows import bos_token_id, resolve_bos

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "examples" / "sae" / "smollm2-135m-L6-resid_pre-topk"
BOOKS = ("looking-glass", "wonderland")
SOTU_FILE = "sotu.jsonl.gz"
HELD_OUT_FRACTION = 0.1  # the last 10% of each corpus's tokens
WINDOWS_PER_BATCH = 16  # windows per forward pass while capturing
WEIGHTS_FILE = "sae_weights.safetensors"
CFG_FILE = "cfg.json"
SHOWN_UNITS = 8  # latents and neurons described after training


@dataclass(frozen=True)
class TrainSettings:
    """How the SAE is trained (recorded in cfg.json's metadata)."""

    d_sae: int = 2048
    k: int = 32
    steps: int = 400
    batch_tokens: int = 4096
    lr: float = 2e-3
    decay_fraction: float = 0.2  # the learning rate falls linearly to 0 over this last share of steps
    seed: int = 0


class ActivationSet(NamedTuple):
    """Captured activations of one site, one row per kept corpus token."""

    acts: torch.Tensor  # (n_tokens, d_in) float32
    token_ids: np.ndarray  # (n_tokens,) int32, the corpus token each row was read at
    windows: int  # windows fed


class HeldOutFigures(NamedTuple):
    """How well the SAE reconstructs the held-out tokens."""

    n_tokens: int
    fraction_variance_explained: float
    mse_per_element: float
    mse_per_token: float  # summed over d_in
    l0: float  # mean nonzero latents per token
    share_exactly_k: float  # tokens with exactly k nonzero latents
    dead_latents: int  # never nonzero on the held-out tokens


@dataclass
class TopKSae:
    """A TopK SAE in SAELens's layout, encoding as SAELens's TopKSAE does (module docstring)."""

    W_enc: torch.Tensor  # (d_in, d_sae)
    b_enc: torch.Tensor  # (d_sae,)
    W_dec: torch.Tensor  # (d_sae, d_in), unit rows
    b_dec: torch.Tensor  # (d_in,)
    k: int

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:  # x (n, d_in) -> (n, d_sae)
        # == (x - b_dec) @ W_enc + b_enc, without a gradient through x's (n, d_in) product
        return x @ self.W_enc + (self.b_enc - self.b_dec @ self.W_enc)

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # x (n, d_in) -> (n, d_sae), <= k nonzero per row
        top = torch.topk(self.pre_acts(x), self.k, dim=-1)
        return torch.zeros(x.shape[0], self.W_enc.shape[1], dtype=x.dtype).scatter_(-1, top.indices,
                                                                                    top.values.relu())

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:  # x (n, d_in) -> (n, d_in)
        top = torch.topk(self.pre_acts(x), self.k, dim=-1)  # values, indices (n, k)
        return sparse_decode(top.indices, top.values.relu(), self.W_dec) + self.b_dec

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"W_enc": self.W_enc, "b_enc": self.b_enc, "W_dec": self.W_dec, "b_dec": self.b_dec}


def sparse_decode(indices: torch.Tensor, values: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """sum_j values[:, j] * W_dec[indices[:, j]]: (n, k) indices and values -> (n, d_in), without
    the (n, d_sae) dense product."""
    return torch.nn.functional.embedding_bag(indices, W_dec, per_sample_weights=values, mode="sum")


# ---- activations --------------------------------------------------------------------------------
def split_held_out(source: TokenSource, fraction: float) -> tuple[TokenSource, TokenSource]:
    """(training part, held-out part): the first and the last ``fraction`` of the tokens, documents
    cut at the boundary."""
    n_train = len(source) - int(round(fraction * len(source)))
    starts = source.doc_starts  # (n_docs,) int64
    tail_starts = np.concatenate([[0], starts[starts > n_train] - n_train]).astype(np.int64)  # (n_tail_docs,)
    tail = TokenSource(np.ascontiguousarray(source.tokens[n_train:]), tail_starts, source.info)
    return source.head(n_train), tail


def window_starts(source: TokenSource, length: int) -> np.ndarray:
    """(n_windows,) int64: every full window of ``length`` tokens from each document's start."""
    ends = np.append(source.doc_starts[1:], len(source))  # (n_docs,)
    per_doc = [start + length * np.arange((end - start) // length)
               for start, end in zip(source.doc_starts.tolist(), ends.tolist())]
    return np.concatenate(per_doc).astype(np.int64) if per_doc else np.zeros(0, dtype=np.int64)


def share_budget(available: Sequence[int], budget: int) -> list[int]:
    """Tokens taken from each source: equal shares of ``budget``, a source with less than its share
    giving all it has and the others sharing what it leaves."""
    taken = [0] * len(available)
    left = budget
    order = sorted(range(len(available)), key=lambda i: available[i])
    for rank, i in enumerate(order):
        taken[i] = min(available[i], left // (len(order) - rank))
        left -= taken[i]
    return taken


def capture_site(lm: LoadedModel, ref: SiteRef, parts: Sequence[TokenSource], bos_ids: Sequence[int | None],
                 seq: int, budget: int, rng: np.random.Generator, what: str) -> ActivationSet:
    """The site's activations at up to ``budget`` tokens from ``parts`` (one per corpus), window
    position 0 left out; windows chosen by ``rng`` and fed in corpus order."""
    lengths = [seq - (bos is not None) for bos in bos_ids]  # corpus tokens per window
    starts = [window_starts(part, length) for part, length in zip(parts, lengths)]
    kept_per_window = seq - 1
    taken = share_budget([len(s) * kept_per_window for s in starts], budget)
    acts: list[torch.Tensor] = []  # (n_window_tokens, d_in) each
    token_ids: list[np.ndarray] = []
    n_windows = 0
    t0 = time.perf_counter()
    for part, bos, length, all_starts, n_tok in zip(parts, bos_ids, lengths, starts, taken):
        chosen = np.sort(rng.choice(all_starts, size=n_tok // kept_per_window, replace=False))  # (n_win,)
        for b in range(0, len(chosen), WINDOWS_PER_BATCH):
            batch = chosen[b:b + WINDOWS_PER_BATCH]
            corpus_ids = np.stack([part.tokens[s:s + length] for s in batch]).astype(np.int64)  # (W, length)
            if bos is not None:
                corpus_ids = np.concatenate([np.full((len(batch), 1), bos, np.int64), corpus_ids], axis=1)
            ids = torch.from_numpy(corpus_ids).to(lm.device)  # (W, seq)

            def keep(_ref: SiteRef, site_acts: torch.Tensor) -> None:  # site_acts (W, seq, d_in)
                acts.append(site_acts[:, 1:].reshape(-1, site_acts.shape[-1]).float().cpu())

            stream(lm.adapter, ids, [ref], keep)
            token_ids.append(corpus_ids[:, 1:].reshape(-1).astype(np.int32))
            n_windows += len(batch)
        print(f"  {what}: {part.name}: {len(chosen)} windows, {len(chosen) * kept_per_window} tokens "
              f"({time.perf_counter() - t0:.0f} s so far)", flush=True)
    return ActivationSet(torch.cat(acts), np.concatenate(token_ids), n_windows)


# ---- training -----------------------------------------------------------------------------------
def input_scale(acts: torch.Tensor) -> float:
    """The factor that makes the mean norm of the rows sqrt(d_in) (SAELens's
    ``expected_average_only_in``, folded into the weights after training)."""
    return math.sqrt(acts.shape[1]) / float(acts.norm(dim=1).mean())


def train_topk_sae(acts: torch.Tensor, settings: TrainSettings, log_every: int = 50) -> TopKSae:
    """A TopK SAE trained on ``acts`` (n, d_in) float32 (module docstring, step 2), weights as saved:
    the input scale folded in."""
    gen = torch.Generator().manual_seed(settings.seed)
    scale = input_scale(acts)
    d_in = acts.shape[1]
    W_dec = torch.randn(settings.d_sae, d_in, generator=gen)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    sae = TopKSae(W_enc=W_dec.T.clone().requires_grad_(), b_enc=torch.zeros(settings.d_sae, requires_grad=True),
                  W_dec=W_dec.requires_grad_(), b_dec=(acts.mean(0) * scale).requires_grad_(), k=settings.k)
    params = [sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec]
    opt = torch.optim.Adam(params, lr=settings.lr)
    decay_from = int(settings.steps * (1 - settings.decay_fraction))
    order = torch.randperm(len(acts), generator=gen)
    at = 0
    t0 = time.perf_counter()
    for step in range(settings.steps):
        if at + settings.batch_tokens > len(order):
            order, at = torch.randperm(len(acts), generator=gen), 0
        x = acts[order[at:at + settings.batch_tokens]] * scale  # (batch, d_in)
        at += settings.batch_tokens
        if step >= decay_from:
            for group in opt.param_groups:
                group["lr"] = settings.lr * (settings.steps - step) / (settings.steps - decay_from)
        loss = (sae.reconstruct(x) - x).pow(2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            sae.W_dec /= sae.W_dec.norm(dim=1, keepdim=True)
        if log_every and (step % log_every == 0 or step == settings.steps - 1):
            fve = 1 - loss.item() / float((x - x.mean(0)).pow(2).sum(-1).mean())
            print(f"  step {step:5d}/{settings.steps}  loss {loss.item():9.3f}  batch FVE {fve:.3f}  "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    with torch.no_grad():
        return TopKSae(W_enc=sae.W_enc.detach().clone(), b_enc=sae.b_enc.detach() / scale,
                       W_dec=sae.W_dec.detach().clone(), b_dec=sae.b_dec.detach() / scale, k=settings.k)


def stored(sae: TopKSae, dtype: torch.dtype) -> TopKSae:
    """The SAE with its weights rounded to ``dtype`` and read back as float32 (what a loader sees)."""
    t = {name: w.to(dtype).float() for name, w in sae.tensors().items()}
    return TopKSae(W_enc=t["W_enc"], b_enc=t["b_enc"], W_dec=t["W_dec"], b_dec=t["b_dec"], k=sae.k)


@torch.no_grad()
def held_out_figures(sae: TopKSae, acts: torch.Tensor, chunk: int = 8192) -> HeldOutFigures:
    """Reconstruction figures of ``acts`` (n, d_in), chunked."""
    mean = acts.mean(0)  # (d_in,)
    sq_err = total_var = 0.0
    nonzero = exactly_k = 0
    fired = torch.zeros(sae.W_enc.shape[1], dtype=torch.bool)  # (d_sae,)
    for b in range(0, len(acts), chunk):
        x = acts[b:b + chunk]  # (c, d_in)
        latents = sae.encode(x)  # (c, d_sae)
        x_hat = latents @ sae.W_dec + sae.b_dec  # (c, d_in)
        sq_err += float((x - x_hat).double().pow(2).sum())
        total_var += float((x - mean).double().pow(2).sum())
        per_token = (latents != 0).sum(-1)  # (c,)
        nonzero += int(per_token.sum())
        exactly_k += int((per_token == sae.k).sum())
        fired |= (latents != 0).any(0)
    n, d_in = acts.shape
    return HeldOutFigures(n_tokens=n, fraction_variance_explained=1 - sq_err / total_var,
                          mse_per_element=sq_err / (n * d_in), mse_per_token=sq_err / n, l0=nonzero / n,
                          share_exactly_k=exactly_k / n, dead_latents=int((~fired).sum()))


# ---- what units find ----------------------------------------------------------------------------
@torch.no_grad()
def latent_values(sae: TopKSae, acts: torch.Tensor, latents: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """(n, len(latents)) values of the chosen latents at every row of ``acts`` (n, d_in)."""
    return torch.cat([sae.encode(acts[b:b + chunk])[:, latents] for b in range(0, len(acts), chunk)])


def describe_units(values: torch.Tensor, names: Sequence[str], data: ActivationSet, seq: int, token_text,
                   n_top: int = 20, context: int = 4) -> list[str]:
    """One line per column of ``values`` (n, u): the share of rows where it is nonzero, the most
    common tokens among its ``n_top`` largest values, and its largest value with the tokens before it
    in its window."""
    rows_per_window = seq - 1
    lines = []
    for column, name in zip(values.T, names):
        top = torch.topk(column, n_top).indices.numpy()  # (n_top,)
        ids, counts = np.unique(data.token_ids[top], return_counts=True)
        common = ", ".join(f"{token_text(int(i))!r}x{c}" for c, i in sorted(zip(counts, ids), reverse=True)[:4])
        best = int(top[0])
        first = max(best - context, best - best % rows_per_window)
        before = "".join(token_text(int(i)) for i in data.token_ids[first:best])
        lines.append(f"{name:>12}  active {float((column != 0).float().mean()):6.1%}  top {n_top}: {common}  "
                     f"best: {before!r} [{token_text(int(data.token_ids[best]))!r}]")
    return lines


# ---- saving -------------------------------------------------------------------------------------
def storage_dtype(sae: TopKSae, max_float32_mb: float) -> torch.dtype:
    n_values = sum(w.numel() for w in sae.tensors().values())
    return torch.float32 if n_values * 4 <= max_float32_mb * 1e6 else torch.float16


def save_saelens(sae: TopKSae, out: Path, dtype: torch.dtype, model_name: str, hook_name: str,
                 metadata: dict) -> None:
    """``out/cfg.json`` and ``out/sae_weights.safetensors`` in SAELens's format (atomic writes)."""
    out.mkdir(parents=True, exist_ok=True)
    weights = {name: w.to(dtype).contiguous() for name, w in sae.tensors().items()}
    write_bytes_atomic(out / WEIGHTS_FILE, save(weights))
    d_sae, d_in = sae.W_dec.shape
    cfg = {"architecture": "topk", "d_in": d_in, "d_sae": d_sae, "k": sae.k, "hook_name": hook_name,
           "model_name": model_name, "apply_b_dec_to_input": True, "normalize_activations": "none",
           "dtype": str(dtype).removeprefix("torch."), "metadata": metadata}
    write_json_atomic(out / CFG_FILE, cfg, indent=2)


# ---- the run ------------------------------------------------------------------------------------
def default_corpora() -> list[str]:
    data = Path(os.environ.get("MAXACT_DATA", REPO.parent / "shared" / "corpora"))
    return [*BOOKS, str(data / SOTU_FILE)]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    d = TrainSettings()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for cfg.json and the weights")
    p.add_argument("--model", default="smollm2-135m", help="a maxact model (preset, folder, .gguf, hub id)")
    p.add_argument("--site", default="L6.resid_pre", help="the site the SAE reads")
    p.add_argument("--corpus", action="append", dest="corpora",
                   help="a corpus (repeatable); default: looking-glass, wonderland, $MAXACT_DATA/sotu.jsonl.gz")
    p.add_argument("--seq", type=int, default=256, help="tokens the model sees per window (BOS included)")
    p.add_argument("--train-tokens", type=int, default=200_000, help="training tokens captured")
    p.add_argument("--eval-tokens", type=int, default=20_000, help="held-out tokens captured")
    p.add_argument("--d-sae", type=int, default=d.d_sae)
    p.add_argument("--k", type=int, default=d.k)
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-tokens", type=int, default=d.batch_tokens)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--max-float32-mb", type=float, default=5.0,
                   help="weights larger than this in float32 are stored as float16")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    t_start, cpu_start = time.perf_counter(), time.process_time()
    torch.manual_seed(args.seed)
    settings = TrainSettings(d_sae=args.d_sae, k=args.k, steps=args.steps, batch_tokens=args.batch_tokens,
                             lr=args.lr, seed=args.seed)
    ref, index = parse_unit_spec(f"{args.site}:*")
    if index is not None:
        raise MaxactError(f"--site {args.site!r} names a unit; give a site such as L6.resid_pre")
    lm = load_model(args.model)
    lm.adapter.check_site(ref)
    corpora = args.corpora or default_corpora()
    sources = [load_source(c, lm.tokenizer) for c in corpora]
    bos_ids = [resolve_bos(None, s.info.n_docs, bos_token_id(lm), args.seq, lm.name) for s in sources]
    train_parts, held_parts = zip(*(split_held_out(s, HELD_OUT_FRACTION) for s in sources))
    rng = np.random.default_rng(args.seed)
    print(f"capturing {ref.name} of {lm.name} (threads: {torch.get_num_threads()})", flush=True)
    t0 = time.perf_counter()
    train = capture_site(lm, ref, train_parts, bos_ids, args.seq, args.train_tokens, rng, "train")
    held = capture_site(lm, ref, held_parts, bos_ids, args.seq, args.eval_tokens, rng, "held out")
    capture_s = time.perf_counter() - t0
    print(f"training: {len(train.acts)} tokens, {settings}", flush=True)
    t0 = time.perf_counter()
    sae = train_topk_sae(train.acts, settings)
    train_s = time.perf_counter() - t0
    dtype = storage_dtype(sae, args.max_float32_mb)
    figures = held_out_figures(stored(sae, dtype), held.acts)
    print(json.dumps(figures._asdict(), indent=1))
    pick = np.random.default_rng(args.seed)
    latents = torch.from_numpy(np.sort(pick.choice(settings.d_sae, SHOWN_UNITS, replace=False)))
    neurons = torch.from_numpy(np.sort(pick.choice(train.acts.shape[1], SHOWN_UNITS, replace=False)))
    print(f"what {SHOWN_UNITS} latents (seeded choice) and {SHOWN_UNITS} neurons of {ref.name} find in the "
          f"training tokens:")
    for line in (describe_units(latent_values(stored(sae, dtype), train.acts, latents),
                                [f"latent {i}" for i in latents.tolist()], train, args.seq, lm.token_text)
                 + describe_units(train.acts[:, neurons], [f"neuron {i}" for i in neurons.tolist()], train,
                                  args.seq, lm.token_text)):
        print(line)
    metadata = {
        "hook_name": ref.tl_hook(), "model_name": lm.name, "maxact_site": ref.name,
        "command": " ".join(["examples/train_sae.py", *(sys.argv[1:] if argv is None else argv)]),
        "corpora": [{"name": s.name, "path": s.info.path, "sha256": s.info.sha256, "n_tokens": len(s),
                     "n_docs": s.info.n_docs, "bos_fed": bos is not None} for s, bos in zip(sources, bos_ids)],
        "held_out": f"the last {HELD_OUT_FRACTION:.0%} of each corpus's tokens",
        "seq": args.seq, "position_0_excluded": True, "train_tokens": len(train.acts),
        "train_windows": train.windows, "held_out_windows": held.windows, "settings": asdict(settings),
        "encoding": "pre = (x - b_dec) @ W_enc + b_enc; k largest of pre kept, ReLU applied to them, rest 0 "
                    "(SAELens TopKSAE); x_hat = acts @ W_dec + b_dec",
        "held_out_figures": figures._asdict(),
        "seconds": {"capture": round(capture_s, 1), "train": round(train_s, 1),
                    "total": round(time.perf_counter() - t_start, 1),
                    "cpu_total": round(time.process_time() - cpu_start, 1)},
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
    }
    save_saelens(sae, args.out, dtype, lm.name, ref.tl_hook(), metadata)
    sizes = {p.name: p.stat().st_size for p in sorted(args.out.iterdir()) if p.name in (CFG_FILE, WEIGHTS_FILE)}
    print(f"saved {args.out} ({dtype}): {sizes}; capture {capture_s:.0f} s, train {train_s:.0f} s, "
          f"total {time.perf_counter() - t_start:.0f} s wall, {time.process_time() - cpu_start:.0f} s CPU")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MaxactError as e:
        sys.exit(f"error: {e}")
