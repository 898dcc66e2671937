"""`maxact atlas`, `maxact merge`, `maxact show`, `maxact find`, `maxact export`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from maxact.config import CHECKPOINT_EVERY_S, DEFAULT_DEVICE, AtlasConfig
from maxact.errors import MaxactError

if TYPE_CHECKING:
    from maxact.pipeline.cluster import RayCluster


def ray_cluster(address: str | None, shards: int | None, device: str | None,
                shard: tuple[int, int] | None) -> RayCluster | None:
    """`--ray [ADDRESS] --shards N` as a RayCluster, None without --ray; ``device``: --device when
    given on the command line, else None (the cluster decides). Refuses --shards without --ray and
    --ray with --shard."""
    if address is None:
        if shards is not None:
            raise MaxactError(f"--shards {shards} needs --ray (it is the number of Ray tasks); to run one slice "
                              f"in this process, use --shard i/N")
        return None
    from maxact.pipeline.cluster import RayCluster, refuse_shard

    refuse_shard(shard)
    return RayCluster(address, shards, device)


def run_atlas(config: AtlasConfig, out: Path, *, resume: bool = False, overwrite: bool = False,
              checkpoint_s: float = CHECKPOINT_EVERY_S, trust_remote_code: bool = False,
              cluster: RayCluster | None = None, echo=print) -> None:
    """Build the atlas (or the shard partial) that ``config`` describes into ``out``: what
    `maxact atlas` and `make demo` run. ``cluster``: run it as shards on Ray (the model is loaded
    here on the CPU, to plan and finalize). echo(message, err=False) reports."""
    options = dict(resume=resume, overwrite=overwrite, checkpoint_s=checkpoint_s, trust_remote_code=trust_remote_code,
                   cluster=cluster, echo=echo)
    if cluster is None:
        _run_atlas(config, out, **options)
        return
    from maxact.pipeline.cluster import ray_connection

    with ray_connection(cluster.address):  # joined (or started) first: a bad address fails before any work
        _run_atlas(config, out, **options)


def _run_atlas(config: AtlasConfig, out: Path, *, resume: bool, overwrite: bool, checkpoint_s: float,
               trust_remote_code: bool, cluster: RayCluster | None, echo) -> None:
    from maxact.corpus import open_corpus, tokenize_corpus
    from maxact.models.loading import load_model
    from maxact.pipeline import build_atlas, check_out

    check_out(Path(out), resume=resume, overwrite=overwrite)  # refuse a bad --out before any work
    corpus = open_corpus(config.corpus, strip_gutenberg=config.strip_gutenberg, text_column=config.text_column,
                         skip_empty=config.skip_empty)  # fail fast, before the model
    echo(f"loading {config.model} ...", err=True)
    lm = load_model(config.model, device=DEFAULT_DEVICE if cluster else config.device,
                    trust_remote_code=trust_remote_code)
    lm.adapter.site_refs(config.sites, config.layers)  # validate before any work
    source = tokenize_corpus(corpus, lm.tokenizer, config.max_tokens)
    if cluster is None:
        timing = build_atlas(lm, source, config, Path(out), resume=resume, overwrite=overwrite,
                             checkpoint_s=checkpoint_s, echo=lambda m: echo(m, err=True))
    else:
        from maxact.pipeline.cluster import build_atlas_on_ray

        timing = build_atlas_on_ray(lm, source, config, Path(out), cluster, overwrite=overwrite,
                                    checkpoint_s=checkpoint_s, trust_remote_code=trust_remote_code,
                                    echo=lambda m: echo(m, err=True))
    what = "shard partial" if config.shard else "atlas"
    echo(f"wrote {what} {out}: {timing.tokens} tokens in {timing.seconds} s ({timing.tokens_per_s} tokens/s)")


def run_merge_command(partials, out, overwrite, echo) -> None:
    from maxact.pipeline import merge_partials

    if not partials:
        raise MaxactError("give the shard output folders to merge, e.g. maxact merge out/s0 out/s1 --out atlas")
    merge_partials([Path(p) for p in partials], Path(out), overwrite=overwrite, echo=lambda m: echo(m, err=True))
    echo(f"wrote atlas {out} from {len(partials)} partials")


def run_show_command(atlas_dir, unit, as_json, top, echo) -> None:
    from maxact.analysis.pages import unit_page
    from maxact.report import unit_page_text
    from maxact.store.reader import Atlas

    atlas = Atlas(atlas_dir)
    page = unit_page(atlas, unit)
    if as_json:
        echo(json.dumps(page, ensure_ascii=False))
    else:
        echo(unit_page_text(page, atlas.manifest, top))


def run_find_command(atlas_dir, token, site, limit, as_json, echo) -> None:
    from maxact.analysis.pages import find_units
    from maxact.report import find_text
    from maxact.store.reader import Atlas

    atlas = Atlas(atlas_dir)
    found = find_units(atlas, token, limit=limit, site=site)
    echo(json.dumps(found, ensure_ascii=False) if as_json else find_text(found))


def run_export_command(atlas_dir, parquet_dir, overwrite, echo) -> None:
    from maxact.store.export import export_parquet
    from maxact.store.reader import Atlas

    files = export_parquet(Atlas(atlas_dir), Path(parquet_dir), overwrite=overwrite)
    for f in files:
        echo(f"wrote {f}")
