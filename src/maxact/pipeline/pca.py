"""`maxact pca` (docs/PCA.md): the principal directions of one site's activations over a corpus.

One forward pass with the atlas's windows, batches and BOS (engine/plan.py; the BOS position is fed
but never counted), every token's activation at the site folded into a streaming covariance
(engine/covariance.py, float64, memory flat in corpus length); then the top eigenvectors of the
covariance, each signed so that its largest-magnitude coordinate is positive. The rows are written
as an (N, d) float32 .npy that ``--directions NAME=FILE.npy@SITE`` reads (unit NAME:i = dot(x,
row i), a raw dot product: the mean is recorded, not subtracted), with a JSON description beside it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from maxact.capture import stream
from maxact.config import AtlasConfig
from maxact.corpus import CorpusInfo, TokenSource
from maxact.engine.covariance import CovarianceAccumulator, CovarianceState
from maxact.engine.plan import WindowPlan
from maxact.errors import MaxactError
from maxact.fsio import atomic_file, write_json_atomic
from maxact.units import SiteRef

CENTRED_NOTE = ("unit NAME:i of --directions NAME=FILE@SITE is dot(x, component i), the raw activation "
                "projected: not centred (dot(x - mean, component i) = that minus dot(mean, component i))")


@dataclass(frozen=True)
class Components:
    """The top principal directions of a covariance, largest variance first."""

    directions: np.ndarray  # (N, d) float64 unit rows, the largest-|x| coordinate of each positive
    explained_variance: np.ndarray  # (N,) float64 eigenvalues of the covariance (ddof 1)
    explained_variance_ratio: np.ndarray  # (N,) float64 eigenvalue / total variance
    total_variance: float  # trace of the covariance


@dataclass(frozen=True)
class PcaResult:
    """A pass's principal components of one site and how they were made."""

    site: SiteRef
    model: str
    corpus: CorpusInfo
    seq: int  # tokens the model saw per full window, BOS included
    bos: bool  # a BOS token was fed before every window (its position not counted)
    n_tokens: int  # activations counted (corpus tokens fed)
    mean: np.ndarray  # (d,) float64 mean activation
    components: Components
    seconds: float

    def to_json(self, npy_name: str) -> dict:
        c = self.components
        return {
            "site": self.site.name, "file": npy_name, "model": self.model, "corpus": asdict(self.corpus),
            "seq": self.seq, "bos": self.bos, "tokens_counted": self.n_tokens,
            "components": int(c.directions.shape[0]), "dim": int(c.directions.shape[1]),
            "explained_variance": c.explained_variance.tolist(),
            "explained_variance_ratio": c.explained_variance_ratio.tolist(),
            "total_variance": c.total_variance, "mean": self.mean.tolist(), "centred": False,
            "note": CENTRED_NOTE, "seconds": round(self.seconds, 3),
        }


def covariance_pass(lm, source: TokenSource, config: AtlasConfig, ref: SiteRef,
                    progress: bool = True) -> tuple[CovarianceAccumulator, WindowPlan]:
    """One pass over ``source`` with the windows, batches and BOS an atlas of ``config`` would use,
    every corpus token's activation at ``ref`` folded into one covariance."""
    plan = WindowPlan.for_atlas(lm, source, config)
    bos_id = plan.windowing.bos_id
    first = 0 if bos_id is None else 1  # the BOS position is fed, never counted
    acc = CovarianceAccumulator(lm.adapter.width(ref), lm.device)

    def consume(_: SiteRef, acts: torch.Tensor) -> None:  # (W, first + T, d)
        acc.add(acts[:, first:].reshape(-1, acts.shape[2]).float())  # (W * T, d) float32

    bar = tqdm(total=plan.n_tokens(), unit="tok", unit_scale=True, desc="pca", disable=not progress)
    for windows in plan.batches:
        T = int(plan.length[windows[0]])
        pos = plan.starts[windows][:, None] + np.arange(T)  # (W, T) int64 corpus positions
        ids = torch.from_numpy(source.tokens[pos].astype(np.int64))  # (W, T)
        if bos_id is not None:
            ids = torch.cat([torch.full((len(windows), 1), bos_id), ids], 1)  # (W, 1 + T)
        with torch.inference_mode():
            stream(lm.adapter, ids.to(lm.device), [ref], consume)
        bar.update(len(windows) * T)
    bar.close()
    return acc, plan


def principal_components(state: CovarianceState, n_components: int) -> Components:
    """The top ``n_components`` eigenvectors of the covariance (ddof 1) of ``state``."""
    d = state.mean.shape[0]
    if not 1 <= n_components <= d:
        raise ValueError(f"n_components must be in 1..{d}, got {n_components}")
    if state.count < 2:
        raise ValueError(f"a covariance needs at least 2 rows, got {state.count}")
    cov = state.comoment.cpu().numpy() / (state.count - 1)  # (d, d) float64
    values, vectors = np.linalg.eigh(cov)  # ascending; vectors (d, d), column j the j-th eigenvector
    order = np.argsort(values)[::-1][:n_components]
    directions = vectors[:, order].T.copy()  # (N, d)
    biggest = np.abs(directions).argmax(axis=1)  # (N,)
    directions *= np.sign(directions[np.arange(n_components), biggest])[:, None]
    variance = np.maximum(values[order], 0.0)  # rounding can leave a null direction slightly negative
    total = float(np.trace(cov))
    ratio = variance / total if total > 0 else np.zeros_like(variance)
    return Components(directions, variance, ratio, total)


def run_pca(lm, source: TokenSource, config: AtlasConfig, ref: SiteRef, n_components: int,
            progress: bool = True) -> PcaResult:
    """The pass, then the components: what `maxact pca` computes."""
    t0 = time.perf_counter()
    acc, plan = covariance_pass(lm, source, config, ref, progress)
    if acc.count < 2:
        raise MaxactError(f"the pass counted {acc.count} token(s) of {ref.name}; principal components need at "
                          f"least 2: raise --max-tokens or use a longer corpus")
    state = acc.state()
    components = principal_components(state, n_components)
    return PcaResult(ref, config.model, source.info, config.seq, plan.windowing.bos_id is not None, acc.count,
                     state.mean.cpu().numpy(), components, time.perf_counter() - t0)


def description_path(npy: Path) -> Path:
    """FILE.json beside FILE.npy."""
    return Path(npy).with_suffix(".json")


def write_pca(result: PcaResult, npy: Path) -> Path:
    """``npy``: (N, d) float32 rows, the components; FILE.json beside it. Each written atomically;
    returns the JSON's path."""
    npy = Path(npy)
    with atomic_file(npy) as f:
        np.save(f, result.components.directions.astype(np.float32))  # (N, d) float32
    described = description_path(npy)
    write_json_atomic(described, result.to_json(npy.name))
    return described
