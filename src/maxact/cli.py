"""The command line: each command parses options and makes one call into the library.

Options are checked where they are parsed (commands/options.py), with their defaults from
maxact.config. User errors (MaxactError, and a bad option value) become one line on stderr and exit
status 2, never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from maxact.commands.options import (
    BlockList,
    Count,
    Device,
    OptionError,
    OutputFile,
    Seconds,
    Shard,
    SiteList,
    SiteName,
    UnitName,
    UnitSpec,
    Whole,
)
from maxact.config import (
    CHECKPOINT_EVERY_S,
    DEFAULT_CORPUS,
    DEFAULT_DEVICE,
    DEFAULT_MODEL,
    FIND_LIMIT,
    SAMPLE,
    SHOW_TOP,
    VIEWER,
    AtlasConfig,
)
from maxact.errors import MaxactError
from maxact.units import default_atlas_sites

MODEL_HELP = "preset (the default, gpt-neo-125m, gpt2, pythia-70m), local folder, .gguf file or hub id"
CORPUS_HELP = "named corpus (looking-glass, wonderland) or a UTF-8 text file"
DEVICE_HELP = "cpu, cuda, cuda:N or mps"
ATLAS = AtlasConfig()  # the atlas options' defaults


class Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (MaxactError, OptionError) as e:
            click.echo(f"error: {e.message if isinstance(e, OptionError) else e}", err=True)
            sys.exit(2)


@click.group(cls=Group)
@click.version_option(package_name="maxact")
def main():
    """maxact: which real text drives each unit of a transformer LM hardest."""


def _load(model: str, device: str, trust_remote_code: bool = False):
    from maxact.models.loading import load_model

    click.echo(f"loading {model} ...", err=True)
    return load_model(model, device=device, trust_remote_code=trust_remote_code)


@main.command()
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True, help=MODEL_HELP)
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@click.option("--trust-remote-code", is_flag=True, help="allow model code from the hub (off by default)")
def units(model, as_json, trust_remote_code):
    """List the sites of MODEL: blocks, width, HF module path and TransformerLens hook."""
    from maxact.inventory import site_inventory

    lm = _load(model, DEFAULT_DEVICE, trust_remote_code)
    rows = site_inventory(lm.adapter)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in rows], indent=2))
        return
    click.echo(f"{lm.adapter.family} model: {lm.adapter.n_layers} blocks, d_model {lm.adapter.d_model}, "
               f"d_mlp {lm.adapter.d_mlp}, {lm.adapter.n_heads} heads x {lm.adapter.d_head}")
    click.echo(f"{'site':<11} {'blocks':<8} {'width':>6}  {'HF module (reads)':<42} TransformerLens hook")
    for r in rows:
        click.echo(f"{r.site:<11} {r.blocks:<8} {r.width:>6}  {r.hf_module + ' (' + r.reads + ')':<42} {r.tl_hook}")
    click.echo("unit ids: L{block}.{site}:{index}, e.g. L2.resid_pre:345; ln_final:{index}; L2.resid_pre:* = whole site")


@main.command()
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True, help=MODEL_HELP)
@click.option("--corpus", "-c", default=DEFAULT_CORPUS, show_default=True, help=CORPUS_HELP)
@click.option("--layer", type=Whole(), help="hidden_states index, as in the original experiment (with --dim)")
@click.option("--dim", type=Whole(), help="dimension of hidden_states[layer] (with --layer)")
@click.option("--unit", "-u", "unit_specs", multiple=True, type=UnitSpec(),
              help="unit id such as L2.resid_pre:345, or a whole site L2.resid_pre:*; repeatable")
@click.option("--batch", default=SAMPLE.batch, type=Count(1), show_default=True, help="windows per batch")
@click.option("--seq", default=SAMPLE.seq, type=Count(1), show_default=True, help="tokens per window")
@click.option("--samples", default=SAMPLE.samples, type=Count(1), show_default=True, help="number of batches")
@click.option("--seed", type=Count(0), default=None, help="random seed (default: fresh, recorded in --json)")
@click.option("--skip-pos0", is_flag=True, help="exclude window position 0 from the argmax")
@click.option("--strip-gutenberg", is_flag=True, help="drop the Project Gutenberg header/footer first")
@click.option("--atlas", "atlas_dir", type=click.Path(path_type=Path), help="answer from an atlas instead of forward passes")
@click.option("--json", "json_path", type=OutputFile(), help="write the config, starts, winners and tallies as JSON")
@click.option("--plot", "plot_path", type=OutputFile(), help="write a bar chart of winners (PNG)")
@click.option("--top", default=SAMPLE.top, type=Count(0), show_default=True, help="rows of each tally to print")
@click.option("--device", default=DEFAULT_DEVICE, type=Device(), show_default=True, help=DEVICE_HELP)
@click.option("--trust-remote-code", is_flag=True)
def sample(model, corpus, layer, dim, unit_specs, batch, seq, samples, seed, skip_pos0, strip_gutenberg,
           atlas_dir, json_path, plot_path, top, device, trust_remote_code):
    """The reference experiment: argmax of each unit over random batches of windows, tallied."""
    from maxact.commands.sample_cmd import SampleRequest, run_sample

    run_sample(SampleRequest(
        model=model, corpus=corpus, layer=layer, dim=dim, unit_specs=tuple(unit_specs), batch=batch,
        seq=seq, samples=samples, seed=seed, skip_pos0=skip_pos0, strip_gutenberg=strip_gutenberg,
        atlas_dir=atlas_dir, json_path=json_path, plot_path=plot_path, top=top, device=device,
        trust_remote_code=trust_remote_code,
    ), echo=click.echo)


@main.command()
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True, help=MODEL_HELP)
@click.option("--corpus", "-c", default=DEFAULT_CORPUS, show_default=True, help=CORPUS_HELP)
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="atlas directory to write")
@click.option("--seq", default=ATLAS.seq, type=Count(1), show_default=True, help="tokens per window")
@click.option("--sites", default=None, type=SiteList(),
              help=f"comma-separated sites [default: {','.join(default_atlas_sites())}]")
@click.option("--layers", default=None, type=BlockList(), help="blocks to keep, e.g. 0-5,12 [default: all]")
@click.option("--k", "k", default=ATLAS.k, type=Count(1), show_default=True, help="top-K and bottom-K examples kept per unit")
@click.option("--max-types", default=ATLAS.max_types, type=Count(1), show_default=True, help="token types tracked for tuning")
@click.option("--windows-per-batch", default=ATLAS.windows_per_batch, type=Count(1), show_default=True,
              help="windows per forward pass")
@click.option("--max-tokens", type=Count(1), default=None, help="only the first N tokens of the corpus")
@click.option("--strip-gutenberg", is_flag=True)
@click.option("--shard", default=None, type=Shard(), help="i/N: run the i-th of N slices and write a partial for `maxact merge`")
@click.option("--resume", is_flag=True, help="continue an interrupted run from its last checkpoint")
@click.option("--overwrite", is_flag=True, help="replace what --out holds")
@click.option("--ref-batch", default=ATLAS.ref_batch, type=Count(1), show_default=True,
              help="batch of the simulated reference statistic")
@click.option("--ref-samples", default=ATLAS.ref_samples, type=Count(1), show_default=True,
              help="batches of the simulated reference statistic")
@click.option("--seed", default=ATLAS.seed, type=Count(0), show_default=True)
@click.option("--checkpoint-every", "checkpoint_s", default=CHECKPOINT_EVERY_S, type=Seconds(), show_default=True,
              help="seconds between checkpoints (0: after every batch)")
@click.option("--device", default=DEFAULT_DEVICE, type=Device(), show_default=True, help=DEVICE_HELP)
@click.option("--trust-remote-code", is_flag=True)
def atlas(model, corpus, out, seq, sites, layers, k, max_types, windows_per_batch, max_tokens, strip_gutenberg,
          shard, resume, overwrite, ref_batch, ref_samples, seed, checkpoint_s, device, trust_remote_code):
    """Every unit of the chosen sites from one streamed pass over the corpus."""
    from maxact.commands.atlas_cmd import run_atlas

    config = AtlasConfig(model=model, corpus=corpus, seq=seq, sites=sites or default_atlas_sites(), layers=layers,
                         k=k, max_types=max_types, windows_per_batch=windows_per_batch, max_tokens=max_tokens,
                         strip_gutenberg=strip_gutenberg, shard=shard, ref_batch=ref_batch, ref_samples=ref_samples,
                         seed=seed, device=device)
    run_atlas(config, out, resume=resume, overwrite=overwrite, checkpoint_s=checkpoint_s,
              trust_remote_code=trust_remote_code, echo=click.echo)


@main.command()
@click.argument("partials", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True)
def merge(partials, out, overwrite):
    """Combine shard partials (maxact atlas --shard i/N) into one atlas."""
    from maxact.commands.atlas_cmd import run_merge_command

    run_merge_command(partials, out, overwrite, click.echo)


@main.command()
@click.argument("atlas_dir", type=click.Path(path_type=Path))
@click.argument("unit", type=UnitName())
@click.option("--json", "as_json", is_flag=True, help="print the page as JSON")
@click.option("--top", default=SHOW_TOP, type=Count(0), show_default=True, help="examples and tally rows to print")
def show(atlas_dir, unit, as_json, top):
    """A unit's page: reference tally, top contexts, statistics, tuning, logit effects."""
    from maxact.commands.atlas_cmd import run_show_command

    run_show_command(atlas_dir, unit, as_json, top, click.echo)


@main.command()
@click.argument("atlas_dir", type=click.Path(path_type=Path))
@click.option("--token", required=True, help="token text with its leading space, e.g. ' before'")
@click.option("--site", default=None, type=SiteName(), help="only units of this site")
@click.option("--limit", default=FIND_LIMIT, type=Count(1), show_default=True, help="units to list")
@click.option("--json", "as_json", is_flag=True)
def find(atlas_dir, token, site, limit, as_json):
    """Units that prefer a token, ranked by selectivity rather than raw frequency."""
    from maxact.commands.atlas_cmd import run_find_command

    run_find_command(atlas_dir, token, site, limit, as_json, click.echo)


@main.command()
@click.argument("atlas_dir", type=click.Path(path_type=Path))
@click.option("--parquet", "parquet_dir", required=True, type=click.Path(path_type=Path), help="folder for the Parquet files")
@click.option("--overwrite", is_flag=True, help="replace Parquet files the folder already holds")
def export(atlas_dir, parquet_dir, overwrite):
    """Write the atlas as Parquet tables (units, examples, tokens) for DuckDB or pandas."""
    from maxact.commands.atlas_cmd import run_export_command

    run_export_command(atlas_dir, parquet_dir, overwrite, click.echo)


@main.command()
@click.argument("atlas_dir", type=click.Path(path_type=Path))
@click.option("--host", default=VIEWER.host, show_default=True,
              help="address to bind (the default is this machine only; any other needs --allow-host)")
@click.option("--port", "-p", default=VIEWER.port, type=click.IntRange(0, 65535), show_default=True,
              help="port; 0 picks a free one")
@click.option("--model", "-m", default=None, help="model for live text [default: the atlas's own]")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
              help="a Host name clients beyond this machine use (repeatable; required with a --host "
                   "other than loopback); every other Host is refused")
def serve(atlas_dir, host, port, model, allow_hosts):
    """Browse an atlas in a local web viewer (offline; prints the URL; Ctrl-C stops)."""
    from maxact.web.server import serve as serve_viewer

    serve_viewer(atlas_dir, host, port, model, allow_hosts)


if __name__ == "__main__":  # pragma: no cover
    main()
