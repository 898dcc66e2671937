"""`maxact sample`: resolve units, run exact sampling (or answer from an atlas), print and write."""

from __future__ import annotations

from maxact.errors import MaxactError
from maxact.report import tally_summary, tally_table
from maxact.store.writer import write_json_atomic


def unit_specs_from(layer, dim, unit_specs, n_layers, width: int | None = None) -> list[str]:
    """Unit specs for --layer/--dim and --unit; width: d_model, for the range in messages."""
    from maxact.units import layer_dim_unit

    specs = list(unit_specs)
    if (layer is None) != (dim is None):
        raise MaxactError("--layer and --dim go together (hidden_states[layer][..., dim]); give both, or use --unit")
    if dim is not None and dim < 0:  # else it would read as the unit id "L2.resid_pre:-1"
        valid = f"0..{width - 1}" if width else "0 and up"
        raise MaxactError(f"--dim {dim} is out of range: valid dimensions are {valid}")
    if layer is not None:
        specs.insert(0, str(layer_dim_unit(layer, dim, n_layers)))
    if not specs:
        raise MaxactError("no unit given: use --layer L --dim D, or --unit L2.resid_pre:345 (repeatable)")
    return specs


def print_result(result, describe, token_text, top, echo) -> None:
    cfg = result.config
    how = "simulated from an atlas" if cfg.source == "atlas" else "forward passes"
    echo(
        f"{cfg.samples} batches of {cfg.batch} x {cfg.seq} tokens from {cfg.corpus} "
        f"({cfg.n_tokens} tokens), model {cfg.model}, seed {cfg.seed}, {how}"
        + (", window position 0 excluded" if cfg.skip_pos0 else "")
    )
    for u in result.units:
        echo("")
        echo(describe(u.unit))
        echo(tally_table(u.tally, token_text, top=top))
        echo(tally_summary(u.tally))


def run_sample_command(*, model, corpus, layer, dim, unit_specs, batch, seq, samples, seed, skip_pos0,
                       strip_gutenberg, atlas_dir, json_path, plot_path, top, device,
                       trust_remote_code, echo) -> None:
    for name, value in (("--batch", batch), ("--seq", seq), ("--samples", samples)):
        if value < 1:
            raise MaxactError(f"{name} must be at least 1, got {value}")
    for name, value in (("--seed", seed), ("--top", top)):
        if value is not None and value < 0:  # numpy refuses negative seeds
            raise MaxactError(f"{name} must be 0 or more, got {value}")
    if atlas_dir is not None:
        from maxact.atlas_sample import sample_from_atlas_dir

        result, describe, token_text = sample_from_atlas_dir(
            atlas_dir, layer=layer, dim=dim, unit_specs=unit_specs, batch=batch, seq=seq,
            samples=samples, seed=seed, skip_pos0=skip_pos0,
        )
    else:
        from maxact import api
        from maxact.corpus import load_corpus
        from maxact.models.loading import load_model
        from maxact.report import site_line

        corpus_obj = load_corpus(corpus, strip_gutenberg=strip_gutenberg)  # fail fast, before the model
        echo(f"loading {model} ...", err=True)
        lm = load_model(model, device=device, trust_remote_code=trust_remote_code)
        specs = unit_specs_from(layer, dim, unit_specs, lm.adapter.n_layers, lm.adapter.d_model)
        result = api.sample(lm, corpus_obj, specs, batch=batch, seq=seq, samples=samples, seed=seed,
                            skip_pos0=skip_pos0)
        token_text = lm.token_text

        def describe(unit):
            return site_line(lm.adapter, unit)

    print_result(result, describe, token_text, top, echo)
    if json_path:
        objs = result.to_json(token_text)
        write_json_atomic(json_path, objs[0] if len(objs) == 1 else objs, indent=None)
        echo(f"\nwrote {json_path}")
    if plot_path:
        from maxact.plot import save_tally_plots  # matplotlib: only when a plot is asked

        n = save_tally_plots(plot_path, [(str(u.unit), u.tally) for u in result.units], token_text)
        more = f" (first {n} of {len(result.units)} units)" if n < len(result.units) else ""
        echo(f"wrote {plot_path}{more}")
