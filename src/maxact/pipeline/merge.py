"""`maxact merge` as a library call: fold shard partials into one atlas, exactly what one run over
their windows gives. The fold holds one running result and one partial at a time (bounded memory);
then the model and the token source the partials name are loaded once, to finalize. merge_pair folds
two partials of adjacent windows into one partial (a step of the tree reduction of `maxact atlas --ray`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from maxact.config import DEFAULT_DEVICE, AtlasConfig
from maxact.corpus import TokenSource
from maxact.engine.plan import WindowPlan
from maxact.engine.runner import ordered_refs, tokens_sha256
from maxact.engine.site import SiteAccumulator
from maxact.engine.statistic import StatisticSettings
from maxact.errors import MaxactError
from maxact.pipeline.finalize import finalize
from maxact.pipeline.outdir import check_out, cleaned_on_error
from maxact.pipeline.partial import Partial, RunTiming, load_partial, save_partial
from maxact.store.writer import write_atlas

ModelLoader = Callable[[str, str], object]  # (model name or path, device) -> LoadedModel
SourceLoader = Callable[[object, str, bool], TokenSource]  # (LoadedModel, corpus, strip_gutenberg)


def _load_model(name: str, device: str):
    from maxact.models.loading import load_model

    return load_model(name, device=device)


def _load_source(lm, config: AtlasConfig) -> TokenSource:
    """The source the config names, read as the atlas command read it (text column, empty documents)."""
    from maxact.corpus import load_source

    return load_source(config.corpus, lm.tokenizer, strip_gutenberg=config.strip_gutenberg,
                       max_tokens=config.max_tokens, text_column=config.text_column, skip_empty=config.skip_empty)


def _accumulators(p: Partial) -> list[SiteAccumulator]:
    settings = StatisticSettings(**p.state["settings"])
    return [SiteAccumulator.from_state(state, settings) for state in p.state["sites"].values()]


class _Fold:
    """The running merge: per-site accumulators of the partials folded so far, and their windows."""

    def __init__(self, first: Partial):
        self.first = first
        self.ranges: list[tuple[tuple[int, int], str]] = [(first.window_range, str(first.folder))]
        self.accs = _accumulators(first)
        self.seconds, self.tokens = first.timing.seconds, first.timing.tokens
        self.merged_from = first.merged_from

    def add(self, p: Partial) -> None:
        if p.state["config"] != self.first.state["config"] or p.tokens_sha256 != self.first.tokens_sha256:
            raise MaxactError(f"{p.folder} was made with another model, corpus or options than "
                              f"{self.first.folder}; cannot merge")
        if p.config.context_pass != self.first.config.context_pass:
            raise MaxactError(f"{p.folder} was made with context_pass {p.config.context_pass} and {self.first.folder} "
                              f"with {self.first.config.context_pass}; rerun the shards with the same --context-pass")
        for seen in self.ranges:
            (r1, d1), (r2, d2) = sorted([seen, (p.window_range, str(p.folder))])
            if r2[0] < r1[1]:
                raise MaxactError(f"partials {d1} (windows {r1[0]}..{r1[1] - 1}) and {d2} (windows "
                                  f"{r2[0]}..{r2[1] - 1}) overlap; refusing to count windows twice")
        self.ranges.append((p.window_range, str(p.folder)))
        for acc, other in zip(self.accs, _accumulators(p)):
            acc.merge(other)
        self.seconds += p.timing.seconds
        self.tokens += p.timing.tokens
        self.merged_from += p.merged_from


def merge_pair(first: Path, second: Path, out: Path) -> None:
    """Fold two partials of adjacent window ranges into one partial in ``out``: one step of the tree
    reduction of `maxact atlas --ray` (two partials in memory at a time). The result merges like a
    shard's partial, with `maxact merge` or another merge_pair."""
    fold = _Fold(load_partial(first))
    fold.add(load_partial(second))
    (lo, mid), (mid2, hi) = sorted(r for r, _ in fold.ranges)
    if mid != mid2:
        raise MaxactError(f"partials {first} and {second} cover windows {lo}..{mid - 1} and {mid2}..{hi - 1}, "
                          f"which do not meet; merge them into an atlas with maxact merge instead")
    state = {k: v for k, v in fold.first.state.items() if k != "cursor"}  # a partial has no batch cursor
    state.update(shard=None, window_range=(lo, hi), merged_from=fold.merged_from,
                 sites={name: acc.state() for name, acc in zip(fold.first.state["sites"], fold.accs)})
    Path(out).mkdir(parents=True, exist_ok=True)
    save_partial(Path(out), state, replace(fold.first.config, shard=None), fold.first.corpus,
                 RunTiming.measured(fold.seconds, fold.tokens))


def merge_partials(partial_dirs: list[Path], out: Path, *, overwrite=False, echo=print,
                   load_model: ModelLoader | None = None, load_source: SourceLoader | None = None) -> None:
    """Fold shard partials into one atlas, exactly what one run over their windows gives.

    load_model(name, device) and load_source(lm, corpus, strip_gutenberg) rebuild what finalize
    needs from the names in the partials' config (defaults: maxact.models.loading.load_model and
    maxact.corpus.load_source with the config's text column, skip_empty and max_tokens); the tokens
    must hash to what the partials were made from."""
    out = Path(out)
    if not partial_dirs:
        raise MaxactError("give the shard output folders to merge, e.g. maxact merge out/s0 out/s1 --out atlas")
    check_out(out, overwrite=overwrite, merging=True)
    fold = _Fold(load_partial(partial_dirs[0]))
    for d in partial_dirs[1:]:
        fold.add(load_partial(d))  # the partial is dropped once folded in
    first = fold.first
    config = first.config
    lm = (load_model or _load_model)(config.model, DEFAULT_DEVICE)
    loaded = load_source(lm, config.corpus, config.strip_gutenberg) if load_source else _load_source(lm, config)
    source = loaded.head(config.max_tokens)
    if tokens_sha256(source) != first.tokens_sha256:
        raise MaxactError(f"the corpus {config.corpus!r} now gives other tokens than when the partials were made "
                          f"(it changed since); rerun the shards")
    refs = ordered_refs(lm.adapter, config)
    if [r.name for r in refs] != list(first.state["sites"]):
        raise MaxactError(f"the model {config.model!r} now has other sites than when the partials were made; "
                          f"rerun the shards")
    n_windows = len(WindowPlan.for_atlas(lm, source, config).starts)
    ranges = sorted(r for r, _ in fold.ranges)
    covered = sum(hi - lo for lo, hi in ranges)
    if covered < n_windows:
        echo(f"note: the partials cover {covered} of {n_windows} windows; the atlas covers only those")
    with cleaned_on_error(out):
        atlas = finalize(lm, source, first.corpus, config, refs, fold.accs, windows=[list(r) for r in ranges],
                         timing={"seconds": round(fold.seconds, 2), "tokens": int(fold.tokens)},
                         merged_from=fold.merged_from)
        write_atlas(out, atlas.arrays, atlas.manifest, config, atlas.vocab)
