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
from click.core import ParameterSource

from maxact.analysis.categories import PROPERTIES, WORD_TOKENS
from maxact.commands.options import (
    BlockList,
    Count,
    Device,
    DocTail,
    OptionError,
    OutputFile,
    Seconds,
    Shard,
    SiteList,
    SiteName,
    UnitName,
    UnitSpec,
    Whole,
    derived_site_options,
    register_atlas_sites,
    with_derived_sites,
)
from maxact.config import (
    ASCENT,
    CHECKPOINT_EVERY_S,
    CONCEPT,
    CONTEXT_EXAMPLES,
    DEFAULT_CORPUS,
    DEFAULT_DEVICE,
    DEFAULT_MODEL,
    FIND_LIMIT,
    RAY,
    SAMPLE,
    SHOW_TOP,
    VIEWER,
    AtlasConfig,
)
from maxact.errors import MaxactError
from maxact.units import default_atlas_sites

MODEL_HELP = "preset (the default, gemma3-270m, gpt-neo-125m, gpt2, pythia-70m), local folder, .gguf file or hub id"
CORPUS_HELP = ("named corpus (looking-glass, wonderland), a UTF-8 text file (one document), or documents: a folder "
               "or glob of text files, .jsonl, .jsonl.gz, .parquet (file or folder), .csv, a Hugging Face datasets "
               "folder (save_to_disk)")
TEXT_COLUMN_HELP = "column holding the text (JSONL, Parquet, CSV, datasets); a list of strings is joined with spaces"
SKIP_EMPTY_HELP = "skip empty or whitespace-only documents (counted in the manifest) instead of refusing them"
BOS_HELP = ("feed the model's BOS token before every window (seq - 1 corpus tokens follow) [default: on for "
            "several documents when the model has one, off for a single text]")
DOC_TAIL_HELP = "a document's last window shorter than --seq: fed as it is (short) or dropped (drop)"
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
@click.option("--text-column", default=ATLAS.text_column, show_default=True, help=TEXT_COLUMN_HELP)
@click.option("--skip-empty", is_flag=True, help=SKIP_EMPTY_HELP)
@click.option("--bos/--no-bos", default=None, help=BOS_HELP)
@click.option("--atlas", "atlas_dir", type=click.Path(path_type=Path), help="answer from an atlas instead of forward passes")
@click.option("--json", "json_path", type=OutputFile(), help="write the config, starts, winners and tallies as JSON")
@click.option("--plot", "plot_path", type=OutputFile(), help="write a bar chart of winners (PNG)")
@click.option("--top", default=SAMPLE.top, type=Count(0), show_default=True, help="rows of each tally to print")
@click.option("--device", default=DEFAULT_DEVICE, type=Device(), show_default=True, help=DEVICE_HELP)
@click.option("--trust-remote-code", is_flag=True)
@derived_site_options
def sample(model, corpus, layer, dim, unit_specs, batch, seq, samples, seed, skip_pos0, strip_gutenberg,
           text_column, skip_empty, bos, atlas_dir, json_path, plot_path, top, device, trust_remote_code,
           directions, saes):
    """The reference experiment: argmax of each unit over random batches of windows, tallied."""
    from maxact.commands.sample_cmd import SampleRequest, run_sample

    run_sample(SampleRequest(
        model=model, corpus=corpus, layer=layer, dim=dim, unit_specs=tuple(unit_specs), batch=batch,
        seq=seq, samples=samples, seed=seed, skip_pos0=skip_pos0, strip_gutenberg=strip_gutenberg,
        text_column=text_column, skip_empty=skip_empty, bos=bos, atlas_dir=atlas_dir, json_path=json_path, plot_path=plot_path, top=top, device=device,
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
@click.option("--text-column", default=ATLAS.text_column, show_default=True, help=TEXT_COLUMN_HELP)
@click.option("--skip-empty", is_flag=True, help=SKIP_EMPTY_HELP)
@click.option("--doc-tail", default=ATLAS.doc_tail, type=DocTail(), show_default=True, help=DOC_TAIL_HELP)
@click.option("--bos/--no-bos", default=None, help=BOS_HELP)
@click.option("--shard", default=None, type=Shard(), help="i/N: run the i-th of N slices and write a partial for `maxact merge`")
@click.option("--ray", "ray_address", is_flag=False, flag_value=RAY.local, default=None, metavar="[ADDRESS]",
              help="run the shards as Ray tasks: on a new local Ray instance, or on the cluster at ADDRESS "
                   "(auto, HOST:PORT, ray://HOST:PORT); one GPU per task where the cluster has GPUs")
@click.option("--shards", default=None, type=Count(1),
              help="Ray tasks (with --ray) [default: one per GPU of the cluster, else one per CPU]")
@click.option("--resume", is_flag=True, help="continue an interrupted run from its last checkpoint")
@click.option("--overwrite", is_flag=True, help="replace what --out holds")
@click.option("--ref-batch", default=ATLAS.ref_batch, type=Count(1), show_default=True,
              help="batch of the simulated reference statistic")
@click.option("--ref-samples", default=ATLAS.ref_samples, type=Count(1), show_default=True,
              help="batches of the simulated reference statistic")
@click.option("--seed", default=ATLAS.seed, type=Count(0), show_default=True)
@click.option("--context-pass/--no-context-pass", default=ATLAS.context_pass, show_default=True,
              help="measure each unit's top-K candidates again in windows shifted by half a window, and value "
                   "them at the context a reference window gives them (docs/METHOD.md, \"Context\"; "
                   "one more forward over the windows that hold a candidate, at the end)")
@click.option("--checkpoint-every", "checkpoint_s", default=CHECKPOINT_EVERY_S, type=Seconds(), show_default=True,
              help="seconds between checkpoints (0: after every batch)")
@click.option("--device", default=DEFAULT_DEVICE, type=Device(), show_default=True, help=DEVICE_HELP)
@click.option("--trust-remote-code", is_flag=True)
@derived_site_options
def atlas(model, corpus, out, seq, sites, layers, k, max_types, windows_per_batch, max_tokens, strip_gutenberg,
          text_column, skip_empty, doc_tail, bos, shard, resume, overwrite, ref_batch, ref_samples, seed, checkpoint_s, device, trust_remote_code,
          ray_address, shards, context_pass, directions, saes):
    """Every unit of the chosen sites from one streamed pass over the corpus."""
    from maxact.commands.atlas_cmd import ray_cluster, run_atlas

    device_given = click.get_current_context().get_parameter_source("device") is not ParameterSource.DEFAULT
    cluster = ray_cluster(ray_address, shards, device if device_given else None, shard)
    derived = tuple(directions) + tuple(saes)
    sites = with_derived_sites(sites, derived)
    config = AtlasConfig(model=model, corpus=corpus, seq=seq, sites=sites, layers=layers, derived=derived,
                         k=k, max_types=max_types, windows_per_batch=windows_per_batch, max_tokens=max_tokens,
                         strip_gutenberg=strip_gutenberg, text_column=text_column, skip_empty=skip_empty,
                         doc_tail=doc_tail, bos=bos, shard=shard, ref_batch=ref_batch, ref_samples=ref_samples, seed=seed, device=device,
                         context_pass=context_pass)
    run_atlas(config, out, resume=resume, overwrite=overwrite, checkpoint_s=checkpoint_s,
              trust_remote_code=trust_remote_code, cluster=cluster, echo=click.echo)


@main.command()
@click.argument("partials", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True)
def merge(partials, out, overwrite):
    """Combine shard partials (maxact atlas --shard i/N) into one atlas."""
    from maxact.commands.atlas_cmd import run_merge_command

    run_merge_command(partials, out, overwrite, click.echo)


@main.command()
@click.argument("atlas_dir", type=click.Path(path_type=Path), is_eager=True, callback=register_atlas_sites)
@click.argument("unit", type=UnitName())
@click.option("--json", "as_json", is_flag=True, help="print the page as JSON")
@click.option("--top", default=SHOW_TOP, type=Count(0), show_default=True, help="examples and tally rows to print")
def show(atlas_dir, unit, as_json, top):
    """A unit's page: reference tally, top contexts, statistics, tuning, logit effects."""
    from maxact.commands.atlas_cmd import run_show_command

    run_show_command(atlas_dir, unit, as_json, top, click.echo)


@main.command()
@click.option("--unit", "unit", required=True, type=UnitName(), help="the unit to maximize, e.g. L6.mlp_post:100")
@click.option("--method", default=ASCENT.method, type=click.Choice(["gcg", "relax", "gumbel"]), show_default=True,
              help="gcg: gradient-ranked token swaps, evaluated exactly; relax: softmax over the vocabulary + Adam; "
                   "gumbel: relax with Gumbel noise")
@click.option("--length", default=ASCENT.length, type=Count(1), show_default=True, help="input tokens")
@click.option("--seeds", default=ASCENT.seeds, type=Count(1), show_default=True, help="seeds 0..S-1")
@click.option("--steps", default=ASCENT.steps, type=Count(1), show_default=True)
@click.option("--atlas", "atlas_dir", default=None, type=click.Path(path_type=Path),
              help="compare with this atlas's data maximum and top tokens (and use its model)")
@click.option("--model", "-m", default=None, help=MODEL_HELP + " [default: the atlas's, else the embedded model]")
@click.option("--corpus", default=DEFAULT_CORPUS, show_default=True, help=CORPUS_HELP + " (data side without --atlas)")
@click.option("--data-samples", default=ASCENT.data_samples, type=Count(1), show_default=True,
              help="batches of the exact sample giving the data side without --atlas")
@click.option("--json", "json_path", default=None, type=OutputFile(), help="write the result as JSON to this file")
@click.option("--device", default=DEFAULT_DEVICE, type=Device(), show_default=True, help=DEVICE_HELP)
def ascend(unit, method, length, seeds, steps, atlas_dir, model, corpus, data_samples, json_path, device):
    """Gradient-ascent activation maximization of one unit, beside what real text gives."""
    from maxact.commands.ascend_cmd import AscendRequest, run_ascend

    run_ascend(AscendRequest(unit, model, method, length, seeds, steps, atlas_dir, corpus, data_samples,
                             json_path, device), click.echo, _load)


@main.command()
@click.argument("atlas_dir", type=click.Path(path_type=Path), is_eager=True, callback=register_atlas_sites)
@click.argument("unit", type=UnitName())
@click.option("--examples", default=CONTEXT_EXAMPLES, type=Count(1), show_default=True, help="top examples to measure")
@click.option("--model", "-m", default=None, help="model to run [default: the atlas's own]")
@click.option("--device", default=DEFAULT_DEVICE, type=Device(), show_default=True, help=DEVICE_HELP)
@click.option("--json", "as_json", is_flag=True)
def context(atlas_dir, unit, examples, model, device, as_json):
    """How much context a unit's top examples need: their activation with 0, 1, 2, 4, ... previous tokens."""
    from maxact.commands.context_cmd import run_context_command

    run_context_command(atlas_dir, unit, model, device, examples, as_json, click.echo, _load)


@main.command()
@click.argument("atlas_dir", type=click.Path(path_type=Path), is_eager=True, callback=register_atlas_sites)
@click.option("--token", required=True, help="token text with its leading space, e.g. ' before'")
@click.option("--site", default=None, type=SiteName(), help="only units of this site")
@click.option("--limit", default=FIND_LIMIT, type=Count(1), show_default=True, help="units to list")
@click.option("--json", "as_json", is_flag=True)
def find(atlas_dir, token, site, limit, as_json):
    """Units that prefer a token, ranked by selectivity rather than raw frequency."""
    from maxact.commands.atlas_cmd import run_find_command

    run_find_command(atlas_dir, token, site, limit, as_json, click.echo)


@main.command()
@click.argument("atlas_dir", required=False, type=click.Path(path_type=Path), is_eager=True, callback=register_atlas_sites)
@click.option("--token", "tokens", multiple=True, help="a token text of the category, leading space included (repeatable)")
@click.option("--words", type=click.Path(path_type=Path), help="file of words or phrases, one a line, matched in the text")
@click.option("--word-token", default=CONCEPT.word_token, show_default=True, type=click.Choice(WORD_TOKENS),
              help="the observation of a multi-token word or span")
@click.option("--tag", "tags", multiple=True, help="part-of-speech tag pattern on a tagged corpus, e.g. 'np*', '*' (repeatable)")
@click.option("--pos", type=click.Path(path_type=Path), help="contrast set of the category: one text a line, target [[marked]] or last")
@click.option("--neg", type=click.Path(path_type=Path), help="contrast set of the rest (with --pos)")
@click.option("--by", type=click.Choice(PROPERTIES), help="groups by a property: ANOVA F and eta squared")
@click.option("--sites", default=None, type=SiteList(), help="comma-separated site kinds [default: the atlas's]")
@click.option("--layers", default=None, type=BlockList(), help="blocks, e.g. 0-5,12 [default: the atlas's]")
@click.option("--unit", "units", multiple=True, type=UnitName(), help="with --by: a unit whose histograms by group are kept (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="print the whole table as JSON")
@click.option("--csv", "csv_path", type=OutputFile(), help="write the whole table as CSV")
@click.option("--parquet", "parquet_path", type=OutputFile(), help="write the whole table as Parquet")
@click.option("--plot", "plot_path", type=OutputFile(), help="a volcano plot (PNG), or with --by the histograms")
@click.option("--skip-pos0", is_flag=True, help="leave out tokens at window position 0 (runs the pass)")
@click.option("--model", "-m", default=None, help=f"model of the streaming pass [default: the atlas's, else {DEFAULT_MODEL}]")
@click.option("--corpus", "-c", default=None, help=f"corpus of the streaming pass [default: the atlas's, else {DEFAULT_CORPUS}]")
@click.option("--max-tokens", type=Count(1), default=None, help="only the first N tokens of the corpus")
@click.option("--probe", is_flag=True, help="L2 and L1 logistic-regression probes over each chosen site")
@click.option("--save-direction", type=OutputFile(), help="the probe's weights and the class-mean difference (.npy or .safetensors)")
@click.option("--top", default=CONCEPT.top, type=Count(0), show_default=True, help="units printed")
@click.option("--device", default=DEFAULT_DEVICE, type=Device(), show_default=True, help=DEVICE_HELP)
@click.option("--trust-remote-code", is_flag=True)
@derived_site_options
def concept(atlas_dir, tokens, words, word_token, tags, pos, neg, by, sites, layers, units, as_json, csv_path,
            parquet_path, plot_path, skip_pos0, model, corpus, max_tokens, probe, save_direction, top, device,
            trust_remote_code, directions, saes):
    """Rank every unit by how it separates a category from the rest (t, p, q, d, AUROC)."""
    from maxact.commands.concept_cmd import run_concept
    from maxact.commands.concept_request import ConceptRequest

    run_concept(ConceptRequest(
        atlas_dir=atlas_dir, tokens=tuple(tokens), words=words, word_token=word_token, tags=tuple(tags), pos=pos,
        neg=neg, by=by, sites=sites, layers=layers, units=tuple(units), as_json=as_json, csv=csv_path,
        parquet=parquet_path, plot=plot_path, skip_pos0=skip_pos0, model=model, corpus=corpus,
        max_tokens=max_tokens, probe=probe, save_direction=save_direction, top=top, device=device,
        trust_remote_code=trust_remote_code, derived=tuple(directions) + tuple(saes),
    ), echo=click.echo)


@main.command()
@click.option("--site", required=True, help="the site, e.g. L6.resid_pre (ln_final has no block)")
@click.option("--components", "-n", required=True, type=Count(1), help="principal directions kept, 1..width of the site")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path),
              help="FILE.npy: (N, width) float32 rows for --directions NAME=FILE.npy@SITE; FILE.json is written beside it")
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True, help=MODEL_HELP)
@click.option("--corpus", "-c", default=DEFAULT_CORPUS, show_default=True, help=CORPUS_HELP)
@click.option("--seq", default=ATLAS.seq, type=Count(1), show_default=True, help="tokens per window, as an atlas cuts them")
@click.option("--max-tokens", type=Count(1), default=None, help="only the first N tokens of the corpus")
@click.option("--bos/--no-bos", default=None, help=BOS_HELP)
@click.option("--strip-gutenberg", is_flag=True)
@click.option("--text-column", default=ATLAS.text_column, show_default=True, help=TEXT_COLUMN_HELP)
@click.option("--skip-empty", is_flag=True, help=SKIP_EMPTY_HELP)
@click.option("--overwrite", is_flag=True, help="replace FILE.npy and FILE.json")
@click.option("--json", "as_json", is_flag=True, help="print FILE.json's content instead of a table")
@click.option("--device", default=DEFAULT_DEVICE, type=Device(), show_default=True, help=DEVICE_HELP)
@click.option("--trust-remote-code", is_flag=True)
def pca(site, components, out, model, corpus, seq, max_tokens, bos, strip_gutenberg, text_column, skip_empty,
        overwrite, as_json, device, trust_remote_code):
    """Principal directions of a site's activations over a corpus (one streamed pass), as directions."""
    from maxact.commands.pca_cmd import PcaRequest, run_pca_command

    run_pca_command(PcaRequest(
        site=site, components=components, out=out, model=model, corpus=corpus, seq=seq, max_tokens=max_tokens,
        bos=bos, text_column=text_column, skip_empty=skip_empty, strip_gutenberg=strip_gutenberg,
        overwrite=overwrite, as_json=as_json, device=device, trust_remote_code=trust_remote_code,
    ), echo=click.echo)


@main.command()
@click.argument("atlas_dir", type=click.Path(path_type=Path), is_eager=True, callback=register_atlas_sites)
@click.option("--parquet", "parquet_dir", required=True, type=click.Path(path_type=Path), help="folder for the Parquet files")
@click.option("--overwrite", is_flag=True, help="replace Parquet files the folder already holds")
def export(atlas_dir, parquet_dir, overwrite):
    """Write the atlas as Parquet tables (units, examples, tokens) for DuckDB or pandas."""
    from maxact.commands.atlas_cmd import run_export_command

    run_export_command(atlas_dir, parquet_dir, overwrite, click.echo)


@main.command()
@click.argument("atlas_dir", type=click.Path(path_type=Path), is_eager=True, callback=register_atlas_sites)
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
