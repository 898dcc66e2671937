"""`maxact sample --atlas DIR`: the reference procedure answered from an atlas's top-K in well
under a second, with the same result type (and so the same printout and --json) as exact sampling."""

from __future__ import annotations

import numpy as np

from maxact.analysis.pages import simulate_unit
from maxact.errors import MaxactError
from maxact.sampling import SampleConfig, SampleResult, UnitSample
from maxact.store.reader import Atlas
from maxact.units import parse_unit_spec
from maxact.units import unit_specs as unit_specs_of
from maxact.windows import require_starts, resolve_seed


def sample_from_atlas(atlas: Atlas, unit_specs: list[str], batch: int, seq: int, samples: int,
                      seed: int | None, skip_pos0: bool) -> SampleResult:
    atlas_seq = atlas.manifest.seq
    if seq != atlas_seq:
        raise MaxactError(
            f"--seq {seq} differs from the atlas's window length {atlas_seq}: the atlas computed each "
            f"activation with up to {atlas_seq - 1} tokens of context; use --seq {atlas_seq}, or build an atlas with --seq {seq}"
        )
    space = atlas.start_space(seq)
    require_starts(space, seq, f"corpus {atlas.manifest.corpus.name!r}")
    seed = resolve_seed(seed)
    units = []
    for spec in unit_specs:
        ref, index = parse_unit_spec(spec)
        if index is None:
            site = atlas.manifest.site(ref.name)
            if site is None:
                atlas.row(ref.unit(0))  # raises the listing error
            units.extend(ref.unit(i) for i in range(site.width))
        else:
            units.append(ref.unit(index))
    starts = None
    results = []
    for unit in units:
        row = atlas.row(unit)
        sim = simulate_unit(atlas, row, batch, seq, samples, seed, skip_pos0)
        starts = sim.starts
        results.append(UnitSample(unit, sim.rows.astype(np.int64), sim.cols.astype(np.int64), sim.token_ids,
                                  sim.values, sim.window_pos))
    m = atlas.manifest
    config = SampleConfig(model=m.model.name, corpus=m.corpus.name, batch=batch, seq=seq,
                          samples=samples, seed=seed, skip_pos0=skip_pos0, n_tokens=len(atlas.tokens),
                          strip_gutenberg=m.corpus.stripped, source="atlas",
                          bos=atlas.windowing.bos_id is not None, n_docs=space.n_docs,
                          docs_without_window=space.docs_without_window)
    return SampleResult(config, starts, results)


def sample_from_atlas_dir(atlas_dir, *, layer, dim, unit_specs, batch, seq, samples, seed, skip_pos0):
    atlas = Atlas(atlas_dir)
    specs = unit_specs_of(layer, dim, unit_specs, atlas.manifest.model.n_layers)
    result = sample_from_atlas(atlas, specs, batch, seq, samples, seed, skip_pos0)

    def describe(unit):
        s = atlas.site_of(unit)
        return f"{unit}  HF {s.hf_module} ({s.reads})  |  TL {s.tl_hook}  [from atlas {atlas.path}]"

    return result, describe, atlas.token_text
