"""`maxact sample`: resolve units, run exact sampling (or answer from an atlas), print and write.

Options arrive checked (commands/options.py): counts in range, output files writable. Nothing at
module level imports torch, so `sample --atlas` answers without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from maxact.errors import MaxactError
from maxact.fsio import write_json_atomic
from maxact.report import tally_summary, tally_table


@dataclass(frozen=True)
class SampleRequest:
    """What `maxact sample` was asked for, as parsed and checked by the CLI."""

    model: str
    corpus: str
    layer: int | None  # with dim: hidden_states[layer][..., dim]
    dim: int | None
    unit_specs: tuple[str, ...]  # unit ids or whole sites
    batch: int
    seq: int
    samples: int
    seed: int | None  # None: a fresh seed, recorded in the result
    skip_pos0: bool
    strip_gutenberg: bool
    text_column: str  # the column holding the text (JSONL, Parquet, CSV, datasets corpora)
    skip_empty: bool  # skip empty documents instead of refusing them
    bos: bool | None  # a BOS token before every window; None: on for several documents (docs/METHOD.md)
    atlas_dir: Path | None  # answer from this atlas instead of forward passes
    json_path: Path | None
    plot_path: Path | None
    top: int  # tally rows printed per unit
    device: str
    trust_remote_code: bool


def print_result(result, describe, token_text, top, echo) -> None:
    cfg = result.config
    how = "simulated from an atlas" if cfg.source == "atlas" else "forward passes"
    echo(
        f"{cfg.samples} batches of {cfg.batch} x {cfg.seq} tokens from {cfg.corpus} "
        f"({cfg.n_tokens} tokens), model {cfg.model}, seed {cfg.seed}, {how}"
        + (", window position 0 excluded" if cfg.skip_pos0 else "")
        + (", a BOS token before each window" if cfg.bos else "")
    )
    if cfg.docs_without_window:
        echo(f"note: {cfg.docs_without_window} of {cfg.n_docs} documents are too short to hold a window; "
             f"none is drawn from them")
    for u in result.units:
        echo("")
        echo(describe(u.unit))
        echo(tally_table(u.tally, token_text, top=top))
        echo(tally_summary(u.tally))


def _from_atlas(req: SampleRequest):
    from maxact.atlas_sample import sample_from_atlas_dir

    return sample_from_atlas_dir(
        req.atlas_dir, layer=req.layer, dim=req.dim, unit_specs=list(req.unit_specs), batch=req.batch,
        seq=req.seq, samples=req.samples, seed=req.seed, skip_pos0=req.skip_pos0,
    )


def _exact(req: SampleRequest, echo):
    from maxact import api
    from maxact.corpus import open_corpus
    from maxact.models.loading import load_model
    from maxact.report import site_line
    from maxact.units import unit_specs

    corpus = open_corpus(req.corpus, strip_gutenberg=req.strip_gutenberg, text_column=req.text_column,
                         skip_empty=req.skip_empty)  # fail fast, before the model
    echo(f"loading {req.model} ...", err=True)
    lm = load_model(req.model, device=req.device, trust_remote_code=req.trust_remote_code)
    specs = unit_specs(req.layer, req.dim, req.unit_specs, lm.adapter.n_layers, lm.adapter.d_model)
    result = api.sample(lm, corpus, specs, batch=req.batch, seq=req.seq, samples=req.samples,
                        seed=req.seed, skip_pos0=req.skip_pos0, bos=req.bos)

    def describe(unit):
        return site_line(lm.adapter, unit)

    return result, describe, lm.token_text


def run_sample(req: SampleRequest, echo) -> None:
    result, describe, token_text = _from_atlas(req) if req.atlas_dir is not None else _exact(req, echo)
    print_result(result, describe, token_text, req.top, echo)
    if req.json_path:
        try:
            write_json_atomic(req.json_path, result.to_json(token_text), indent=None)
        except OSError as e:
            raise MaxactError(f"cannot write --json {req.json_path}: {e.strerror}") from None
        echo(f"\nwrote {req.json_path}")
    if req.plot_path:
        from maxact.plot import save_tally_plots  # matplotlib: only when a plot is asked

        try:
            n = save_tally_plots(req.plot_path, [(str(u.unit), u.tally) for u in result.units], token_text)
        except OSError as e:
            raise MaxactError(f"cannot write --plot {req.plot_path}: {e.strerror}") from None
        more = f" (first {n} of {len(result.units)} units)" if n < len(result.units) else ""
        echo(f"wrote {req.plot_path}{more}")
