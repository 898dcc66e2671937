"""The reference experiment, exactly (docs/METHOD.md in this repository): random windows, batch argmax, a tally.

For each of ``samples`` batches: draw ``batch`` starts uniformly with replacement from
``[0, n_tokens - seq)`` (with several documents: among the starts whose window fits inside one
document, windows.StartSpace), take ``X = tokens[start[:, None] + arange(seq)]``, run the model (no
mask), and for every requested unit take the argmax of its (batch, seq) activations, flattened
row-major (first maximum wins ties, as torch and numpy do). With a BOS token (docs/METHOD.md,
"Documents") each window is [BOS] + seq - 1 corpus tokens and the BOS position is never a winner;
rows, columns and starts index corpus tokens. Every requested unit is answered from the same
forward passes; the forward stops after the deepest requested block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from maxact.config import SAMPLE
from maxact.errors import MaxactError, choices_text
from maxact.tally import Tally, tally_winners
from maxact.units import SiteRef, UnitId
from maxact.windows import StartSpace, bos_token_id, require_starts, resolve_bos, resolve_seed

if TYPE_CHECKING:  # torch and the model stack load only for exact sampling: `sample --atlas` and
    # the atlas pages use the result types here and must answer in well under a second
    import torch

    from maxact.corpus import TokenSource
    from maxact.models.loading import LoadedModel


@dataclass(frozen=True)
class SampleConfig:
    """How a sample was made; saved beside every result."""

    model: str
    corpus: str
    batch: int = SAMPLE.batch
    seq: int = SAMPLE.seq
    samples: int = SAMPLE.samples
    seed: int | None = None  # None: a fresh seed is drawn and recorded in the result
    skip_pos0: bool = False  # exclude window position 0 from the argmax
    n_tokens: int = 0
    strip_gutenberg: bool = False
    source: str = "exact"  # "exact": forward passes; "atlas": simulated from an atlas
    bos: bool | None = None  # a BOS token before each window; None: on for several documents (recorded resolved)
    n_docs: int = 1  # documents in the corpus
    docs_without_window: int = 0  # documents too short to hold a window (never drawn)


@dataclass
class UnitSample:
    """One unit's winners over all batches: arrays of shape (samples,)."""

    unit: UnitId
    rows: np.ndarray  # (samples,) int64, row of the batch
    cols: np.ndarray  # (samples,) int64, position in the window
    token_ids: np.ndarray  # (samples,) int64
    values: np.ndarray  # (samples,) float32; NaN where no top position was covered (atlas only)
    # (samples,) position in the window where the winning activation was computed: = cols for
    # exact sampling; for atlas sampling, the position in the atlas pass's window
    window_pos: np.ndarray | None = None
    tally: Tally = field(init=False)

    def __post_init__(self):
        wp = self.cols if self.window_pos is None else self.window_pos
        self.tally = tally_winners(self.token_ids, wp, self.values)


@dataclass
class SampleResult:
    config: SampleConfig
    starts: np.ndarray  # (samples, batch) int64, shared by all units
    units: list[UnitSample]

    def unit(self, unit: UnitId | str) -> UnitSample:
        for u in self.units:
            if str(u.unit) == str(unit):
                return u
        raise MaxactError(f"unit {str(unit)!r} is not in this result; its units: "
                          f"{choices_text([str(u.unit) for u in self.units])}")

    def to_json(self, token_text) -> dict:
        """The documented ``--json`` object, one shape whatever the number of units:
        ``{"config", "starts": (samples, batch), "units": [{"unit", "winners": (samples,), "tally",
        "distinct", "pos0_wins"}]}``; a winner is ``{"row", "col", "token_id", "value"}``, or null
        where no top position of the atlas was covered (``sample --atlas`` only)."""
        return {
            "config": asdict(self.config),
            "starts": self.starts.tolist(),
            "units": [
                {
                    "unit": str(u.unit),
                    "winners": [_winner_json(u, b) for b in range(len(self.starts))],
                    "tally": u.tally.to_records(token_text),
                    "distinct": u.tally.distinct,
                    "pos0_wins": u.tally.pos0_wins,
                }
                for u in self.units
            ],
        }


def _winner_json(u: UnitSample, b: int) -> dict | None:
    if np.isnan(u.values[b]):
        return None
    return {"row": int(u.rows[b]), "col": int(u.cols[b]), "token_id": int(u.token_ids[b]),
            "value": float(u.values[b])}


def sample_exact(
    lm: LoadedModel,
    source: TokenSource,
    units: Sequence[UnitId],
    config: SampleConfig,
    progress: bool = True,
) -> SampleResult:
    """Run the reference procedure for ``units`` (validated beforehand) from shared forward passes."""
    import torch
    from tqdm.auto import tqdm

    from maxact.capture import stream

    tokens = source.tokens  # (n_tokens,) int32
    bos_id = resolve_bos(config.bos, len(source.doc_starts), bos_token_id(lm), config.seq, config.model)
    first = 0 if bos_id is None else 1  # model position of a window's first corpus token
    space = StartSpace.of(source.doc_starts, len(tokens), config.seq - first)
    require_starts(space, config.seq, config.corpus)
    seed = resolve_seed(config.seed)
    config = replace(config, seed=seed, n_tokens=int(len(tokens)), bos=bos_id is not None, n_docs=space.n_docs,
                     docs_without_window=space.docs_without_window)
    rng = np.random.default_rng(seed)
    refs = sorted({u.site_ref for u in units}, key=str)
    index_of = {ref: torch.tensor([u.index for u in units if u.site_ref == ref]) for ref in refs}
    order = {ref: [u for u in units if u.site_ref == ref] for ref in refs}
    n, B, T = config.samples, config.batch, space.length  # T: corpus tokens per window
    starts = np.empty((n, B), dtype=np.int64)
    flat_win = {ref: np.empty((n, len(order[ref])), dtype=np.int64) for ref in refs}
    win_val = {ref: np.empty((n, len(order[ref])), dtype=np.float32) for ref in refs}
    offsets = np.arange(T)
    col0 = 1 if config.skip_pos0 else 0

    for b in tqdm(range(n), desc="batches", unit="batch", disable=not progress):
        starts[b] = space.draw(rng, B)
        windows = tokens[starts[b][:, None] + offsets]  # (B, T) int32: only this batch is copied
        X = torch.from_numpy(windows.astype(np.int64))  # (B, T) int64
        if bos_id is not None:
            X = torch.cat([torch.full((B, 1), bos_id), X], 1)  # (B, 1 + T)
        X = X.to(lm.device)

        def take(ref: SiteRef, acts: torch.Tensor, b=b) -> None:  # acts: (B, first + T, width)
            a = acts[:, first + col0 :, index_of[ref].to(acts.device)].float()  # (B, T', U)
            flat = a.reshape(-1, a.shape[-1])  # (B*T', U), row-major
            best = flat.argmax(dim=0)  # (U,) first maximum
            r, c = best // a.shape[1], best % a.shape[1] + col0
            flat_win[ref][b] = (r * T + c).cpu().numpy()
            win_val[ref][b] = flat.gather(0, best[None]).squeeze(0).cpu().numpy()

        stream(lm.adapter, X, refs, take)

    results = []
    for ref in refs:
        for j, unit in enumerate(order[ref]):
            fw = flat_win[ref][:, j]
            rows, cols = fw // T, fw % T
            tok = tokens[starts[np.arange(n), rows] + cols].astype(np.int64)
            results.append(UnitSample(unit, rows, cols, tok, win_val[ref][:, j]))
    by_name = {str(u.unit): u for u in results}
    return SampleResult(config, starts, [by_name[str(u)] for u in units])
