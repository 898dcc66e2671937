"""`maxact concept`: rank every unit of the chosen sites by how it separates a category from the
rest (docs/CONCEPTS.md). From an atlas alone when the category is a set of token types it tracks;
otherwise from one streaming pass of the model over a corpus, or from contrast sets.

Nothing at module level imports torch: the atlas-only answer needs numpy and scipy alone.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from maxact.analysis.categories import check_word_token, token_ids_for
from maxact.analysis.concept import (
    AUROC_BINORMAL,
    AnovaTable,
    ConceptTable,
    anova_json,
    atlas_units,
    by_decreasing,
    has_type_moments,
    separation,
    table_columns,
    table_json,
    type_category,
)
from maxact.analysis.floats import json_float
from maxact.analysis.probe import probe_json, probe_text
from maxact.commands.concept_request import Answer, ConceptRequest, SiteProbe, describe_tokens
from maxact.commands.options import with_derived_sites
from maxact.config import CONCEPT, DEFAULT_CORPUS, DEFAULT_MODEL, AtlasConfig
from maxact.errors import MaxactError
from maxact.fsio import write_bytes_atomic
from maxact.store import format as F
from maxact.store.reader import Atlas
from maxact.units import SiteRef, default_atlas_sites


def category_kind(req: ConceptRequest) -> str:
    """token, words, tag, contrast or by: exactly one kind of category."""
    given = [k for k, on in (("--token", req.tokens), ("--words", req.words), ("--tag", req.tags),
                             ("--pos/--neg", req.pos or req.neg), ("--by", req.by)) if on]
    if len(given) != 1:
        what = "none was given" if not given else f"got {', '.join(given)}"
        raise MaxactError(f"give one kind of category: --token TEXT, --words FILE, --tag PATTERN, --pos FILE "
                          f"--neg FILE or --by {{token-length, capitalized}} ({what})")
    if (req.pos is None) != (req.neg is None):
        raise MaxactError("contrast sets need both --pos FILE (the category) and --neg FILE (the rest)")
    if req.by and (req.probe or req.save_direction):
        raise MaxactError("--probe and --save-direction separate two classes; --by has several groups")
    if req.units and not req.by:
        raise MaxactError("--unit chooses the units whose histograms by group --by draws; give --by")
    if req.save_direction and not req.probe:
        raise MaxactError("--save-direction writes the probe's direction: add --probe")
    if req.save_direction and req.save_direction.suffix not in (".npy", ".safetensors"):
        raise MaxactError(f"--save-direction {req.save_direction}: give a .npy or a .safetensors file")
    check_word_token(req.word_token)
    return {"--token": "token", "--words": "words", "--tag": "tag", "--pos/--neg": "contrast", "--by": "by"}[given[0]]


def atlas_config(atlas: Atlas | None) -> AtlasConfig:
    """The AtlasConfig that made the atlas (its windows, corpus and model), or the defaults."""
    if atlas is None:
        return AtlasConfig()
    saved = atlas.config
    known = {f.name for f in fields(AtlasConfig)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in known}
    values["shard"] = None
    return AtlasConfig(**values)


def pass_config(atlas: Atlas | None, req: ConceptRequest) -> AtlasConfig:
    """The windows, sites and model of a concept pass: the atlas's, with what the request overrides."""
    base = atlas_config(atlas)
    changes = {"device": req.device}
    if req.model is not None or atlas is None:
        changes["model"] = req.model or DEFAULT_MODEL
    if req.corpus is not None or atlas is None:
        changes.update(corpus=req.corpus or DEFAULT_CORPUS, strip_gutenberg=False)
    if req.max_tokens is not None:
        changes["max_tokens"] = req.max_tokens
    if req.sites is not None:
        changes["sites"] = req.sites
    elif atlas is None:
        changes["sites"] = default_atlas_sites()
    if req.layers is not None:
        changes["layers"] = req.layers
    if req.derived:  # the pass adds them to the atlas's (or the given) sites
        names = {spec.name for spec in req.derived}
        changes["derived"] = tuple(d for d in base.derived if d.name not in names) + tuple(req.derived)
        changes["sites"] = with_derived_sites(changes.get("sites", base.sites), req.derived)
    return replace(base, **changes)


def atlas_only_reason(atlas: Atlas, req: ConceptRequest, ids: list[int]) -> str | None:
    """Why the category cannot be answered from the atlas alone (None: it can)."""
    tracked = set(np.asarray(atlas[F.TUNING_IDS]).tolist())
    missing = [atlas.token_text(i) for i in ids if i not in tracked]
    if not has_type_moments(atlas):
        return "the atlas keeps no per-type second moments (made before them)"
    if missing:
        return f"{', '.join(repr(t) for t in missing)} is not among the {len(tracked)} token types the atlas tracks"
    if req.skip_pos0:
        return "--skip-pos0: the atlas's per-type moments count every window position"
    if req.probe:
        return "--probe needs the activations of every observation"
    if req.model or req.corpus or req.max_tokens:
        return "--model, --corpus or --max-tokens asks for a pass"
    if req.derived:
        return "--directions or --sae asks for a pass"
    return None


def from_atlas(atlas: Atlas, req: ConceptRequest, ids: list[int]) -> Answer:
    """The table from the atlas's per-type moments (no model): atlas_only_reason must be None."""
    rows, units = atlas_units(atlas, req.sites, req.layers)
    groups = type_category(atlas, ids, rows)
    n_fed = int(np.asarray(atlas[F.TYPE_COUNTS]).sum())
    source = (f"atlas {atlas.path} (per-type moments over every window position of "
              f"{atlas.manifest.corpus.name}, {n_fed} tokens)")
    table = ConceptTable(describe_tokens(req.tokens, ids), source, units, groups, separation(groups), AUROC_BINORMAL)
    return Answer(table, [], [])


def answer(req: ConceptRequest, echo) -> Answer:
    """The table (and probes, histograms) `maxact concept` asks for."""
    kind = category_kind(req)
    atlas = Atlas(req.atlas_dir) if req.atlas_dir is not None else None
    if kind == "token" and atlas is not None:
        ids = token_ids_for(atlas.vocab, list(req.tokens))
        reason = atlas_only_reason(atlas, req, ids)
        if reason is None:
            return from_atlas(atlas, req, ids)
        echo(f"not from the atlas alone: {reason}; running the streaming pass", err=True)
    from maxact.commands.concept_pass_cmd import answer_from_pass

    return answer_from_pass(kind, atlas, pass_config(atlas, req), req, echo)


def run_concept(req: ConceptRequest, echo) -> None:
    write_outputs(req, answer(req, echo), echo)


# ---- output --------------------------------------------------------------------------------------
def _fmt(x, digits: int = 3) -> str:
    x = float(x)
    if not np.isfinite(x):
        return "nan"
    return f"{x:.{digits}g}" if x != 0 and abs(x) < 1e-3 else f"{x:.{digits}f}"


def table_text(table: ConceptTable, top: int) -> str:
    g, s = table.groups, table.stats
    lines = [f"category: {table.category}: {int(g.n_in.max(initial=0))} in, {int(g.n_out.max(initial=0))} out",
             f"from: {table.source}; {len(table.units)} units tested (q: Benjamini-Hochberg over all of them)",
             f"auroc: {table.auroc_method}",
             f"{'unit':<22}{'mean_in':>10}{'mean_out':>10}{'t':>9}{'p':>10}{'q':>10}{'d':>8}{'auroc':>7}"]
    for i in by_decreasing(s.t)[:top].tolist():
        lines.append(f"{table.units[i]:<22}{_fmt(g.mean_in[i]):>10}{_fmt(g.mean_out[i]):>10}{_fmt(s.t[i], 2):>9}"
                     f"{s.p[i]:>10.2e}{s.q[i]:>10.2e}{_fmt(s.d[i], 2):>8}{_fmt(s.auroc[i]):>7}")
    return "\n".join(lines)


def anova_text(table: AnovaTable, top: int) -> str:
    groups = ", ".join(f"{n} ({int(c)})" for n, c in zip(table.group_names, table.count))
    lines = [f"property: {table.prop}: groups {groups}", f"from: {table.source}; {len(table.units)} units tested",
             f"{'unit':<22}{'F':>10}{'p':>10}{'eta2':>8}  means by group"]
    a = table.anova
    for i in by_decreasing(a.f)[:top].tolist():
        means = " ".join(_fmt(m, 2) for m in table.mean[:, i])
        lines.append(f"{table.units[i]:<22}{_fmt(a.f[i], 1):>10}{a.p[i]:>10.2e}{_fmt(a.eta2[i]):>8}  {means}")
    return "\n".join(lines)


def anova_columns(table: AnovaTable) -> dict[str, np.ndarray]:
    """The whole ANOVA table by column, rows sorted by F descending."""
    cols = {"unit": np.asarray(table.units, dtype=object), "F": table.anova.f, "p": table.anova.p,
            "eta2": table.anova.eta2, **{f"mean_{n}": table.mean[i] for i, n in enumerate(table.group_names)}}
    order = by_decreasing(table.anova.f)
    return {k: np.asarray(v)[order] for k, v in cols.items()}


def _write_bytes(path: Path, data: bytes, echo) -> None:
    try:
        write_bytes_atomic(path, data)
    except OSError as e:
        raise MaxactError(f"cannot write {path}: {e.strerror}") from None
    echo(f"wrote {path}", err=True)


def write_table_files(req: ConceptRequest, cols: dict[str, np.ndarray], echo) -> None:
    """--csv and --parquet: the whole table."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    t = pa.table({k: pa.array(v.tolist() if v.dtype == object else v) for k, v in cols.items()})
    for path, write in ((req.csv, pacsv.write_csv), (req.parquet, pq.write_table)):
        if path is not None:
            buf = io.BytesIO()
            write(t, buf)
            _write_bytes(path, buf.getvalue(), echo)


def save_direction(path: Path, probe: SiteProbe) -> bytes:
    """The probe's direction and the difference of class means of one site: a .npy file holds the
    (2, d) float32 rows [probe, mean_diff]; a .safetensors file holds the tensors ``probe`` and
    ``mean_diff`` (d,) and the site's name in its metadata."""
    rows = np.stack([probe.result.direction, probe.result.mean_diff]).astype(np.float32)  # (2, d)
    if path.suffix == ".safetensors":
        from safetensors.numpy import save

        return save({"probe": rows[0].copy(), "mean_diff": rows[1].copy()},
                    metadata={"site": probe.site, "format": "maxact-directions"})
    buf = io.BytesIO()
    np.save(buf, rows, allow_pickle=False)
    return buf.getvalue()


def write_outputs(req: ConceptRequest, ans: Answer, echo) -> None:
    """Print the table (text or --json) and write --csv, --parquet, --plot and --save-direction."""
    table = ans.table
    if isinstance(table, AnovaTable):
        echo(json.dumps(anova_json(table, None, ans.histograms), ensure_ascii=False) if req.as_json
             else anova_text(table, req.top))
        write_table_files(req, anova_columns(table), echo)
    else:
        if req.as_json:
            out = table_json(table)
            if ans.probes:
                out["probes"] = [probe_json(p.site, p.result) for p in ans.probes]
            echo(json.dumps(out, ensure_ascii=False, separators=(",", ":")))
        else:
            echo("\n".join([table_text(table, req.top)] + [probe_text(p.site, p.result) for p in ans.probes]))
        write_table_files(req, table_columns(table), echo)
    if req.plot:
        from maxact.commands.concept_plot import histograms_png, volcano_png

        image = (histograms_png(req.plot, table, ans.histograms) if isinstance(table, AnovaTable)
                 else volcano_png(req.plot, table, CONCEPT.q_threshold))
        _write_bytes(req.plot, image, echo)
    if req.save_direction:
        if len(ans.probes) != 1:
            raise MaxactError(f"--save-direction writes the directions of one site; the probe covered "
                              f"{len(ans.probes)} ({', '.join(p.site for p in ans.probes)}): choose one with "
                              f"--sites and --layers")
        _write_bytes(req.save_direction, save_direction(req.save_direction, ans.probes[0]), echo)


def probe_job(lm, atlas, tokens: tuple[str, ...], site: SiteRef, max_tokens: int, should_stop: Callable[[], bool],
              progress: dict) -> dict:
    """The viewer's probe job (web/app.py, POST /api/concept/probe): `maxact concept ATLAS --token ...
    --probe` for one site of the atlas over the first ``max_tokens`` tokens of its corpus, with the
    viewer's loaded model; ``progress`` gets {"done", "of"} tokens, ``should_stop`` ends the pass
    early (the probe is then fitted on what it fed). Returns {"category", "source", "site", "n_in",
    "n_out", "n_fed", "stopped", "probe": the --json probe, "top_t": the site's units with the
    largest t}."""
    from maxact.commands.concept_pass_cmd import answer_on_model

    req = ConceptRequest(Path(atlas.path), tokens=tokens, sites=(site.site,),
                         layers=None if site.layer is None else (site.layer,), probe=True, max_tokens=max_tokens,
                         device=str(lm.device))
    state = {"stopped": False}

    def on_batch(done: int, of: int) -> bool:
        progress.update(done=done, of=of)
        state["stopped"] = done < of and should_stop()
        return state["stopped"]

    ans = answer_on_model("token", lm, atlas, pass_config(atlas, req), req, on_batch, progress=False)
    (probe,) = ans.probes
    table = ans.table
    order = by_decreasing(table.stats.t)[:CONCEPT.probe_top]
    return {"category": table.category, "source": table.source, "site": probe.site,
            "n_in": int(table.groups.n_in[0]), "n_out": int(table.groups.n_out[0]),
            "n_fed": int(progress.get("done", 0)), "stopped": state["stopped"],
            "probe": probe_json(probe.site, probe.result),
            "top_t": [{"unit": table.units[i], "t": json_float(table.stats.t[i])} for i in order.tolist()]}
