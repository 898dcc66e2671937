"""`maxact concept` when the atlas alone cannot answer: load the model, place the category on a
corpus's tokens (or read contrast sets), run one streaming pass and compute every statistic, the
probes and the histograms by group (docs/CONCEPTS.md)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from maxact.analysis.categories import (
    Labels,
    match_tags,
    property_labels,
    read_lines,
    token_ids_for,
    token_labels,
)
from maxact.analysis.concept import (
    AUROC_BINORMAL,
    AUROC_EXACT,
    AnovaTable,
    ConceptTable,
    TwoGroups,
    anova,
    exact_auroc,
    separation,
)
from maxact.analysis.probe import ProbeSettings, fit_probe
from maxact.commands.concept_request import Answer, ConceptRequest, SiteProbe, describe_tokens
from maxact.config import CONCEPT, AtlasConfig
from maxact.errors import MaxactError
from maxact.units import UnitId, parse_unit


def _empty_category(labels: Labels, what: str) -> None:
    counts = labels.group_counts()
    empty = [n for n, c in zip(labels.group_names, counts) if c == 0]
    if len(labels.group_names) == 2 and empty:
        raise MaxactError(f"the category ({what}) has no observation in the corpus" if counts[0] == 0
                          else f"every observation of the corpus is in the category ({what}): nothing to compare with")


def _two_groups(count: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> TwoGroups:
    """Group 0 (in) and 1 (out) of (G,) counts and (G, U) moments."""
    u = mean.shape[1]
    return TwoGroups(np.full(u, count[0], dtype=np.int64), mean[0], m2[0],
                     np.full(u, count[1], dtype=np.int64), mean[1], m2[1])


def _histograms(units: tuple[UnitId, ...], hist: np.ndarray, group_names: tuple[str, ...]) -> list[dict]:
    """hist (H, G, N_BINS) -> one {"unit", "bounds", "counts": {group: [...]}} per unit, over the bins
    from the first to the last that any group fills."""
    from maxact.engine.moments import bin_bounds

    bounds = bin_bounds()
    out = []
    for u, h in zip(units, hist):
        nz = np.nonzero(h.sum(0))[0]
        lo, hi = (int(nz[0]), int(nz[-1]) + 1) if len(nz) else (0, 0)
        out.append({"unit": str(u), "bounds": bounds[lo:hi].tolist(),
                    "counts": {g: h[i, lo:hi].tolist() for i, g in enumerate(group_names)}})
    return out


def _probe_settings() -> ProbeSettings:
    return ProbeSettings(CONCEPT.probe_folds, CONCEPT.probe_c, CONCEPT.probe_max_iter, CONCEPT.seed, CONCEPT.probe_top)


def _check_inputs(kind: str, config: AtlasConfig, req: ConceptRequest):
    """The tagged corpus (for --tag, --token and --by), the --words phrases and the --pos/--neg
    texts, each read and checked (before any model loads)."""
    from maxact.pipeline.concept_inputs import tagged_path

    tagged = tagged_path(config.corpus) if kind not in ("contrast", "words") else None
    if kind == "tag" and tagged is None:
        raise MaxactError(f"--tag needs a part-of-speech tagged corpus, such as --corpus brown-tagged "
                          f"(brown-tagged.jsonl.gz: `words` and `tags`); {config.corpus} has no tags")
    phrases = read_lines(req.words, "--words") if kind == "words" else None
    contrast = (read_lines(req.pos, "--pos"), read_lines(req.neg, "--neg")) if kind == "contrast" else None
    return tagged, phrases, contrast


def answer_from_pass(kind: str, atlas, config: AtlasConfig, req: ConceptRequest, echo) -> Answer:
    """kind: token, words, tag, contrast or by (commands/concept_cmd.category_kind)."""
    from maxact.models.loading import load_model

    _check_inputs(kind, config, req)
    echo(f"loading {config.model} ...", err=True)
    lm = load_model(config.model, device=config.device, trust_remote_code=req.trust_remote_code)
    return answer_on_model(kind, lm, atlas, config, req)


def answer_on_model(kind: str, lm, atlas, config: AtlasConfig, req: ConceptRequest,
                    on_batch: Callable[[int, int], bool] | None = None, progress: bool = True) -> Answer:
    """answer_from_pass with the model already loaded (the viewer's probe job passes its own, and
    on_batch to report progress and stop at its time limit: run_concept_pass)."""
    from maxact.engine.runner import ordered_refs

    tagged, phrases, contrast = _check_inputs(kind, config, req)
    hist_units = tuple(parse_unit(u) for u in req.units)
    refs = ordered_refs(lm.adapter, config)
    if req.probe and len(refs) > CONCEPT.probe_max_sites:
        raise MaxactError(f"--probe fits one probe per site and --sites/--layers choose {len(refs)} sites; choose "
                          f"at most {CONCEPT.probe_max_sites}, e.g. --sites mlp_post --layers 10")
    if req.save_direction and len(refs) != 1:
        raise MaxactError(f"--save-direction writes the directions of one site and --sites/--layers choose "
                          f"{len(refs)}; choose one, e.g. --sites mlp_post --layers 10")
    if kind == "contrast":
        docs = atlas.manifest.documents if atlas is not None else None
        fed_bos = docs.bos if docs is not None and req.model is None else bool(config.bos)  # as the atlas fed
        return _contrast(lm, refs, config, contrast, req, fed_bos)
    source, labels, what = _labels(kind, lm, config, req, tagged, phrases)
    _empty_category(labels, what)
    from maxact.pipeline.concept_pass import PassRequest, run_concept_pass

    request = PassRequest(labels, req.skip_pos0, hist_units, tuple(refs) if req.probe else (),
                          CONCEPT.probe_per_group if req.probe else 0, CONCEPT.seed)
    result = run_concept_pass(lm, source, config, request, progress=progress, on_batch=on_batch)
    stopped = f" of {len(source)}, stopped early" if result.stopped else ""
    src = (f"a pass of {config.model} over {source.name} ({result.n_fed} tokens fed{stopped}, windows of {config.seq} "
           f"tokens, {'window position 0 left out, ' if req.skip_pos0 else ''}{result.n_dropped} observations left out)")
    units = result.unit_names()
    if kind == "by":
        table = AnovaTable(req.by, src, labels.group_names, units, result.count, result.mean,
                           anova(result.count, result.mean, result.m2))
        return Answer(table, [], _histograms(hist_units, result.hist, labels.group_names))
    if (result.count == 0).any():
        raise MaxactError(f"the pass fed no observation {'of the category' if result.count[0] == 0 else 'outside it'} "
                          f"({what}; {result.n_dropped} left out across windows or at window position 0)")
    groups = _two_groups(result.count, result.mean, result.m2)
    table = ConceptTable(what, src, units, groups, separation(groups), AUROC_BINORMAL)
    probes = []
    offsets = np.cumsum([0] + result.widths)
    for p in result.probes:
        k = result.refs.index(p.site)
        t_site = table.stats.t[offsets[k] : offsets[k + 1]]
        probes.append(SiteProbe(p.site.name, fit_probe(p.values, p.groups == 0, t_site, _probe_settings())))
    return Answer(table, probes, [])


def _labels(kind: str, lm, config: AtlasConfig, req: ConceptRequest, tagged: Path | None, phrases):
    """The corpus as a token source, the category's labels on it, and the category in words."""
    from maxact.corpus import load_source
    from maxact.pipeline.concept_inputs import tag_labels, tagged_source, word_source
    from maxact.pipeline.finalize import vocab_texts

    if kind == "words":
        words = word_source(config.corpus, lm.tokenizer, phrases, req.word_token,
                            strip_gutenberg=config.strip_gutenberg, max_tokens=config.max_tokens,
                            text_column=config.text_column, skip_empty=config.skip_empty)
        return words.source, words.labels, (f"{len(phrases)} words or phrases of {req.words} ({words.n_matches} "
                                            f"matches, {req.word_token} token)")
    if tagged is not None:
        ts = tagged_source(tagged, lm.tokenizer, config.max_tokens)
        source = ts.source
    else:
        source = load_source(config.corpus, lm.tokenizer, strip_gutenberg=config.strip_gutenberg,
                             max_tokens=config.max_tokens, text_column=config.text_column,
                             skip_empty=config.skip_empty)
    if kind == "tag":
        tags = match_tags(list(req.tags), ts.tagged.tags)
        return source, tag_labels(ts, tags, req.word_token), (f"words tagged {', '.join(tags)} "
                                                               f"({req.word_token} token of each word)")
    vocab = vocab_texts(lm, max(len(lm.tokenizer), int(source.tokens.max()) + 1))
    if kind == "by":
        return source, property_labels(np.asarray(source.tokens), req.by, vocab), req.by
    ids = token_ids_for(vocab, list(req.tokens))
    return source, token_labels(np.asarray(source.tokens), ids), describe_tokens(req.tokens, ids)


def _contrast(lm, refs, config: AtlasConfig, texts: tuple[list[str], list[str]], req: ConceptRequest,
              fed_bos: bool) -> Answer:
    """Contrast sets: every target value kept, so the AUROC is exact. fed_bos: a BOS token before
    each text, as the atlas's windows had one."""
    from maxact.pipeline.concept_inputs import contrast_values, parse_contrast
    from maxact.windows import bos_token_id

    bos = bos_token_id(lm) if fed_bos else None
    parsed = [[parse_contrast(t, lm.tokenizer, bos, f"{opt} line {i + 1}") for i, t in enumerate(lines)]
              for opt, lines in zip(("--pos", "--neg"), texts)]
    values = contrast_values(lm, parsed[0] + parsed[1], refs, req.word_token).astype(np.float64)  # (n, U)
    x_in, x_out = values[: len(parsed[0])], values[len(parsed[0]) :]
    u = values.shape[1]

    def moments(x):
        mean = x.mean(0)
        return np.full(u, len(x), dtype=np.int64), mean, ((x - mean) ** 2).sum(0)

    groups = TwoGroups(*moments(x_in), *moments(x_out))
    widths = [lm.adapter.width(r) for r in refs]
    units = [str(UnitId(r.site, r.layer, i)) for r, w in zip(refs, widths) for i in range(w)]
    what = f"contrast sets {req.pos} ({len(x_in)} texts) against {req.neg} ({len(x_out)} texts)"
    src = f"{config.model}, each text fed alone, target: the [[marked]] span or the last token ({req.word_token})"
    table = ConceptTable(what, src, units, groups, separation(groups, exact_auroc(x_in, x_out)), AUROC_EXACT)
    probes = []
    if req.probe:
        offsets = np.cumsum([0] + widths)
        is_in = np.arange(len(values)) < len(x_in)
        for k, ref in enumerate(refs):
            cols = slice(offsets[k], offsets[k + 1])
            probes.append(SiteProbe(ref.name,
                                    fit_probe(values[:, cols], is_in, table.stats.t[cols], _probe_settings())))
    return Answer(table, probes, [])

