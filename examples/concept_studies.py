"""The course's category studies on the embedded model, with maxact's concept machinery
(docs/CONCEPTS.md, "Worked studies"): negation (the Brown tag ``*`` and the contrast sets
negation_pos.txt / negation_neg.txt beside this script), proper nouns (``np*``), nouns (``nn*``)
against verbs (``vb*``), token length (``--by token-length``) and the context modulation of the
most selective units (their `maxact context` ladders and the atlas's eta squared).

    MAXACT_DATA=../shared/corpora python examples/concept_studies.py \
        [--atlas ~/.cache/maxact/atlas/smollm2-135m-looking-glass] [--max-tokens 10000]

Each Brown study is one concept pass (pipeline/concept_pass.py) over the first --max-tokens tokens
of brown-tagged.jsonl.gz, fed as an atlas pass feeds a corpus of documents, every unit of the
default atlas sites read at once, with a probe
(analysis/probe.py) over all units of each --probe-sites site. The context study needs an atlas of
the embedded model (`make demo` builds one): the ladders run on its top examples.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from maxact.analysis.categories import match_tags, property_labels
from maxact.analysis.concept import TwoGroups, anova, by_decreasing, separation
from maxact.analysis.probe import ProbeSettings, fit_probe
from maxact.commands.concept_pass_cmd import answer_on_model
from maxact.commands.concept_request import ConceptRequest
from maxact.config import CONCEPT, DEFAULT_MODEL, AtlasConfig
from maxact.engine.runner import ordered_refs
from maxact.models.loading import load_model
from maxact.pipeline.concept_inputs import tag_labels, tagged_source
from maxact.pipeline.concept_pass import GroupPass, PassRequest, run_concept_pass
from maxact.pipeline.context import context_curves
from maxact.pipeline.finalize import vocab_texts
from maxact.store import format as F
from maxact.store.reader import Atlas
from maxact.units import SiteRef, parse_unit

HERE = Path(__file__).resolve().parent
SETTINGS = ProbeSettings(CONCEPT.probe_folds, CONCEPT.probe_c, CONCEPT.probe_max_iter, CONCEPT.seed, 5)


def site_refs(text: str) -> tuple[SiteRef, ...]:
    return tuple(parse_unit(f"{name}:0").site_ref for name in text.split(","))


def site_kinds(units: list[str]) -> np.ndarray:
    return np.array([parse_unit(u).site for u in units])


def unit_line(name: str, s, g: TwoGroups, i: int) -> str:
    return (f"  {name:<20} t {s.t[i]:8.2f}  q {s.q[i]:.1e}  d {s.d[i]:6.2f}  auroc {s.auroc[i]:.3f}  "
            f"mean in {g.mean_in[i]:8.3f}  out {g.mean_out[i]:8.3f}")


def print_separation(units: list[str], g: TwoGroups, top: int = 8) -> np.ndarray:
    """The units with q < 0.05 by site kind, the largest |d|, and the top units by t and by -t."""
    s = separation(g)
    kinds = site_kinds(units)
    sig = s.q < 0.05
    by_kind = ", ".join(f"{k} {int((sig & (kinds == k)).sum())}/{int((kinds == k).sum())}" for k in dict.fromkeys(kinds))
    big = np.abs(s.d) > 0.8
    print(f"units with q < 0.05: {int(sig.sum())} of {len(units)} ({by_kind}); |d| > 0.8: {int(big.sum())}")
    order = by_decreasing(s.t)
    print("largest t (category above the rest):")
    for i in order[:top].tolist():
        print(unit_line(units[i], s, g, i))
    print("smallest t (category below the rest):")
    for i in by_decreasing(-s.t)[:3].tolist():
        print(unit_line(units[i], s, g, i))
    return s.t


def print_probes(result: GroupPass, t: np.ndarray) -> None:
    """Each probe site: the probe over all its units, and the same cross-validated logistic
    regression on its single unit of largest |t| (a probe of one unit), on the same observations."""
    offsets = np.cumsum([0] + result.widths)
    for p in result.probes:
        k = result.refs.index(p.site)
        t_site = t[offsets[k] : offsets[k + 1]]
        is_in = p.groups == 0
        r = fit_probe(p.values, is_in, t_site, SETTINGS)
        best = int(np.nanargmax(np.abs(t_site)))
        one = fit_probe(p.values[:, [best]], is_in, t_site[[best]], SETTINGS)
        top = ", ".join(f"{i} ({w:+.2f})" for i, w in r.top_units)
        print(f"probe {p.site.name}: {r.n_in} in / {r.n_out} out; accuracy L2 {r.l2_accuracy:.3f} "
              f"(+-{r.l2_accuracy_std:.3f}), L1 {r.l1_accuracy:.3f} ({r.l1_nonzero} units non-zero), majority "
              f"baseline {r.baseline:.3f}; best single unit {p.site.name}:{best} (|t| {abs(t_site[best]):.1f}) "
              f"{one.l2_accuracy:.3f}; Spearman |w| vs |t| {r.spearman:.3f}\n  largest weights: {top}")


def brown_pass(lm, ts, labels, config: AtlasConfig, probe_sites) -> GroupPass:
    request = PassRequest(labels, False, (), probe_sites, CONCEPT.probe_per_group if probe_sites else 0, CONCEPT.seed)
    t0 = time.perf_counter()
    result = run_concept_pass(lm, ts.source, config, request, progress=False)
    print(f"pass: {result.n_fed} tokens of {ts.source.name} fed ({len(ts.source.doc_starts)} documents), "
          f"{result.n_dropped} observations left out, {time.perf_counter() - t0:.0f} s")
    return result


def two_group_study(title: str, lm, ts, labels, config, probe_sites) -> list[str]:
    print(f"\n== {title} ==")
    counts = labels.group_counts()
    print(f"observations: {int(counts[0])} in, {int(counts[1])} out (one a word: its last token)")
    r = brown_pass(lm, ts, labels, config, probe_sites)
    g = TwoGroups(np.full(r.mean.shape[1], r.count[0]), r.mean[0], r.m2[0], np.full(r.mean.shape[1], r.count[1]),
                  r.mean[1], r.m2[1])
    units = r.unit_names()
    t = print_separation(units, g)
    print_probes(r, t)
    return [units[i] for i in by_decreasing(t).tolist()]


def contrast_study(lm, config: AtlasConfig, probe_sites) -> list[str]:
    """Each text fed alone with a BOS token first, as the Brown windows are."""
    print("\n== negation, contrast sets (examples/negation_pos.txt against negation_neg.txt) ==")
    config = replace(config, bos=True)
    base = dict(atlas_dir=None, pos=HERE / "negation_pos.txt", neg=HERE / "negation_neg.txt", device=config.device)
    every = ConceptRequest(**base)
    ans = answer_on_model("contrast", lm, None, config, every, progress=False)
    table = ans.table
    print(f"{table.category}; auroc exact")
    t = print_separation(table.units, table.groups)
    kinds = sorted({r.site for r in probe_sites})
    layers = sorted({r.layer for r in probe_sites})
    probe = ConceptRequest(**base, sites=tuple(kinds), layers=tuple(layers), probe=True)
    ans = answer_on_model("contrast", lm, None, replace(config, sites=tuple(kinds), layers=tuple(layers)), probe,
                          progress=False)
    for p in ans.probes:
        r = p.result
        print(f"probe {p.site}: {r.n_in} in / {r.n_out} out; accuracy L2 {r.l2_accuracy:.3f} (+-{r.l2_accuracy_std:.3f}), "
              f"L1 {r.l1_accuracy:.3f}, majority baseline {r.baseline:.3f}; Spearman |w| vs |t| {r.spearman:.3f}")
    return [table.units[i] for i in by_decreasing(t).tolist()]


def length_study(lm, ts, config: AtlasConfig) -> None:
    print("\n== token length (--by token-length), every token one observation ==")
    vocab = vocab_texts(lm, max(len(lm.tokenizer), int(ts.source.tokens.max()) + 1))
    labels = property_labels(np.asarray(ts.source.tokens), "token-length", vocab)
    r = brown_pass(lm, ts, labels, config, ())
    a = anova(r.count, r.mean, r.m2)
    units = r.unit_names()
    print("groups: " + ", ".join(f"{n} ({int(c)})" for n, c in zip(labels.group_names, r.count)))
    kinds = site_kinds(units)
    layer = np.array([-1 if parse_unit(u).layer is None else parse_unit(u).layer for u in units])
    for k in dict.fromkeys(kinds):
        sel = kinds == k
        blocks = [b for b in (0, 3, 10, 20, 29) if (sel & (layer == b)).any()]
        by_block = ", ".join(f"L{b} {np.nanmedian(a.eta2[sel & (layer == b)]):.3f}" for b in blocks)
        print(f"{k}: median eta2 over units {np.nanmedian(a.eta2[sel]):.3f}" + (f"; by block {by_block}" if blocks else ""))
    print("largest F:")
    for i in by_decreasing(a.f)[:6].tolist():
        means = " ".join(f"{m:.2f}" for m in r.mean[:, i])
        print(f"  {units[i]:<20} F {a.f[i]:9.1f}  eta2 {a.eta2[i]:.3f}  means by group {means}")


def context_study(lm, atlas: Atlas, studies: dict[str, list[str]], n_units: int, n_examples: int) -> None:
    print(f"\n== context modulation of the most selective units (atlas {atlas.path.name}: "
          f"{atlas.manifest.corpus.name}) ==")
    eta2 = np.asarray(atlas[F.TYPE_STATS]["eta2"]) if F.TYPE_STATS in atlas.manifest.files else None
    for title, ranked in studies.items():
        units = [u for u in ranked if not u.startswith("L0.resid_pre")][:n_units]  # the embedding: no context
        print(f"{title}: the {len(units)} units of largest t (L0.resid_pre, the embedding, left out)")
        for u in units:
            unit = parse_unit(u)
            row = atlas.row(unit)
            site = atlas.manifest.site(unit.site_ref.name)
            c = context_curves(lm, atlas, unit, n_examples)
            k50 = [e.k50 for e in c.examples]
            k90 = [e.k90 for e in c.examples]
            med = lambda ks: "-" if any(k is None for k in ks) else f"{np.median(ks):.0f}"  # noqa: E731
            e = f"eta2 {eta2[row]:.3f} (site median {np.nanmedian(eta2[site.rows]):.3f})" if eta2 is not None else ""
            tokens = " ".join(repr(x.token) for x in c.examples[:4])
            print(f"  {u:<20} {e}; k50 median {med(k50)} (k50 = 0 in {k50.count(0)}/{len(k50)}), k90 median "
                  f"{med(k90)}, full context median {np.median([x.full_k for x in c.examples]):.0f}; top tokens {tokens}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--atlas", type=Path, default=Path("~/.cache/maxact/atlas/smollm2-135m-looking-glass").expanduser())
    p.add_argument("--max-tokens", type=int, default=10000, help="tokens of the Brown corpus per study")
    p.add_argument("--probe-sites", default="L3.mlp_post,L15.mlp_post", help="sites probed (all units of each)")
    p.add_argument("--context-units", type=int, default=3, help="units per category in the context study")
    p.add_argument("--examples", type=int, default=8, help="top examples per unit in the context study")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    lm = load_model(DEFAULT_MODEL)
    brown = Path(os.environ.get("MAXACT_DATA", "../shared/corpora")) / "brown-tagged.jsonl.gz"
    config = AtlasConfig(model=DEFAULT_MODEL, corpus=str(brown), max_tokens=args.max_tokens)
    probe_sites = site_refs(args.probe_sites)
    refs = ordered_refs(lm.adapter, config)
    print(f"model {DEFAULT_MODEL}; {sum(lm.adapter.width(r) for r in refs)} units at {len(refs)} sites "
          f"(the default atlas sites: {', '.join(dict.fromkeys(r.site for r in refs))}); Brown: the first {args.max_tokens} tokens; probes at "
          f"{args.probe_sites}, up to {CONCEPT.probe_per_group} observations of each class, {CONCEPT.probe_folds}-fold")
    ts = tagged_source(brown, lm.tokenizer, args.max_tokens)
    tags = ts.tagged.tags
    ranked = {"negation (*)": two_group_study("negation: Brown tag * (not, n't) against every other word", lm, ts,
                                              tag_labels(ts, ["*"], "last"), config, probe_sites)}
    ranked["negation (contrast sets)"] = contrast_study(lm, config, probe_sites)
    common = set(ranked["negation (*)"][:100]) & set(ranked["negation (contrast sets)"][:100])
    print(f"top-100 units by t shared by the two negation studies: {len(common)}")
    ranked["proper nouns (np*)"] = two_group_study("proper nouns: np* against every other word", lm, ts,
                                                   tag_labels(ts, match_tags(["np*"], tags), "last"), config,
                                                   probe_sites)
    two_group_study("nouns (nn*) against verbs (vb*), other words left out", lm, ts,
                    tag_labels(ts, match_tags(["nn*"], tags), "last", against=match_tags(["vb*"], tags)), config,
                    probe_sites)
    length_study(lm, ts, config)
    if args.atlas.is_dir():
        atlas = Atlas(args.atlas)
        context_study(lm, atlas, {k: ranked[k] for k in ("negation (*)", "proper nouns (np*)")}, args.context_units,
                      args.examples)
    else:
        print(f"\n(no atlas at {args.atlas}: the context study needs one; `make demo` builds it)")
    print(f"\nall studies: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
