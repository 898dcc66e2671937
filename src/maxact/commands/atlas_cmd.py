"""`maxact atlas`, `maxact merge`, `maxact show`, `maxact find`, `maxact export`."""

from __future__ import annotations

import json
from pathlib import Path

from maxact.errors import MaxactError


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise MaxactError(f"--shard {text!r} must look like i/N, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise MaxactError(f"--shard {text!r}: i must be in 0..N-1 and N >= 1")
    return i, n


def parse_layers(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    out = []
    try:
        for part in text.split(","):
            if "-" in part:
                a, b = part.split("-")
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise MaxactError(f"--layers {text!r} must list blocks and ranges, e.g. 0-5,12") from None
    return tuple(out)


def run_atlas_command(*, model, corpus, out, seq, sites, layers, k, max_types, windows_per_batch,
                      max_tokens, strip_gutenberg, shard, resume, overwrite, ref_batch, ref_samples,
                      seed, device, checkpoint_s, trust_remote_code, echo) -> None:
    from maxact import api
    from maxact.corpus import load_corpus
    from maxact.engine.build import build_atlas
    from maxact.engine.runner import DEFAULT_SITES, AtlasConfig
    from maxact.models.loading import load_model

    site_list = tuple(s.strip() for s in sites.split(",")) if sites else DEFAULT_SITES
    if max_tokens is not None and max_tokens < 1:
        raise MaxactError(f"--max-tokens must be at least 1, got {max_tokens}")
    for name, value in (("--k", k), ("--max-types", max_types), ("--windows-per-batch", windows_per_batch),
                        ("--ref-batch", ref_batch), ("--ref-samples", ref_samples)):
        if value < 1:
            raise MaxactError(f"{name} must be at least 1, got {value}")
    config = AtlasConfig(model=model, corpus=corpus, seq=seq, sites=site_list, layers=parse_layers(layers),
                         k=k, max_types=max_types, windows_per_batch=windows_per_batch,
                         max_tokens=max_tokens, strip_gutenberg=strip_gutenberg, shard=parse_shard(shard),
                         ref_batch=ref_batch, ref_samples=ref_samples, seed=seed, device=device)
    corpus_obj = load_corpus(corpus, strip_gutenberg=strip_gutenberg)
    echo(f"loading {model} ...", err=True)
    lm = load_model(model, device=device, trust_remote_code=trust_remote_code)
    lm.adapter.site_refs(config.sites, config.layers)  # validate before any work
    tokens = api.corpus_tokens(lm, corpus_obj)
    timing = build_atlas(lm, corpus_obj, tokens, config, Path(out), resume=resume, overwrite=overwrite,
                         checkpoint_s=checkpoint_s, echo=lambda m: echo(m, err=True))
    what = "shard partial" if config.shard else "atlas"
    echo(f"wrote {what} {out}: {timing['tokens']} tokens in {timing['seconds']} s ({timing['tokens_per_s']} tokens/s)")


def run_merge_command(partials, out, overwrite, echo) -> None:
    from maxact.engine.build import merge_partials

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


def run_export_command(atlas_dir, parquet_dir, echo) -> None:
    from maxact.store.export import export_parquet
    from maxact.store.reader import Atlas

    files = export_parquet(Atlas(atlas_dir), Path(parquet_dir))
    for f in files:
        echo(f"wrote {f}")
