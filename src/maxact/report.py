"""Plain-text rendering of results for the terminal (one place, shared by every command)."""

from __future__ import annotations

import json

from maxact.store.manifest import Manifest
from maxact.tally import Tally


def show_token(text: str) -> str:
    """A token with its leading space and control characters visible: `" before"`, `"\\n"`."""
    return json.dumps(text, ensure_ascii=False)


def site_line(adapter, unit) -> str:
    """`L2.resid_pre:345  HF model.layers.2 (input) | TL blocks.2.hook_resid_pre`."""
    hook = adapter.site_hook(unit.site_ref)
    extra = adapter.describe_index(unit.site_ref, unit.index)
    extra = f" ({extra})" if extra else ""
    return (
        f"{unit}{extra}  HF {hook.module_path} ({hook.reads})  |  TL {unit.site_ref.tl_hook()}"
    )


def tally_table(tally: Tally, token_text, top: int = 20, extra_columns=None) -> str:
    """count / share / token / id table; extra_columns: {name: fn(token_id) -> str}."""
    extra_columns = extra_columns or {}
    head = f"{'count':>7}  {'share':>6}  " + "".join(f"{k:>10}  " for k in extra_columns) + "token"
    lines = [head]
    for tid, count in list(zip(tally.token_ids, tally.counts))[:top]:
        share = count / max(tally.n_batches, 1)
        extras = "".join(f"{fn(int(tid)):>10}  " for fn in extra_columns.values())
        lines.append(f"{count:>7}  {share:>6.1%}  {extras}{show_token(token_text(int(tid)))} (id {tid})")
    if tally.distinct > top:
        rest = int(tally.counts[top:].sum())
        lines.append(f"{rest:>7}  {rest / tally.n_batches:>6.1%}  ... {tally.distinct - top} more tokens")
    return "\n".join(lines)


def tally_summary(tally: Tally) -> str:
    won = tally.n_batches - tally.n_missed
    s = (
        f"distinct winners: {tally.distinct}; wins at window position 0: {tally.pos0_wins} "
        f"({tally.pos0_wins / max(won, 1):.1%})"
    )
    if tally.n_missed:
        s += f"; batches with no top-K position covered: {tally.n_missed}"
    if won and tally.pos0_wins / won > 0.5:
        s += "\nwarning: most wins sit at window position 0 (an attention-sink artefact); try --skip-pos0"
    return s


def _ctx_line(item: dict, width: int = 90) -> str:
    """The example's context with the max token marked [[like this]]."""
    c = item.get("context")
    if not c:
        return show_token(item["token"])
    parts = []
    for j, t in enumerate(c["tokens"]):
        t = t.replace("\n", "⏎")
        parts.append(f"[[{t}]]" if j == c["focus"] else t)
    text = "".join(parts)
    mark = text.index("[[")
    if len(text) > width:  # keep the mark in view
        lo = max(0, min(mark - width * 2 // 3, len(text) - width))
        text = ("…" if lo else "") + text[lo : lo + width] + ("…" if lo + width < len(text) else "")
    return text


def _derived_lines(derived: dict | None) -> list[str]:
    """A derived unit's definition, density and nearest neurons (docs/DIRECTIONS.md)."""
    if derived is None:
        return []
    what = (f"{derived['architecture']} SAE latent" + (f" (k={derived['k']})" if derived["k"] else "")
            if derived["kind"] == "sae" else "direction")
    near = ", ".join(f"{n['unit']} ({n['cosine']:+.2f})" for n in derived["nearest_neurons"])
    return [f"{what} on {derived['base']}, one of {derived['width']}: {derived['path']} (sha256 {derived['sha256'][:12]})",
            f"density (share of tokens > 0): {derived['density']:.4f}",
            f"nearest neurons (cosine with its decoder row): {near}"]


def unit_page_text(page: dict, manifest: Manifest, top: int = 10) -> str:
    info, st, ref = page["info"], page["stats"], page["reference"]
    g = ref["geometry"]
    head = f" (head {info['head']}, dim {info['head_dim']})" if "head" in info else ""
    lines = [
        f"{page['unit']}{head}  HF {info['hf_module']} ({info['reads']})  |  TL {info['tl_hook']}",
        f"model {manifest.model.name}, corpus {manifest.corpus.name} ({manifest.corpus.n_tokens} tokens)",
        *_derived_lines(page.get("derived")),
        "",
        f"reference statistic ({g['samples']} batches of {g['batch']} x {g['seq']}, seed {g['seed']}, from the atlas, "
        f"{'two measured contexts' if g.get('contexts', 1) == 2 else 'one measured context'} per candidate):",
        f"{'count':>7}  {'share':>6}  {'expected':>8}  {'wins/occ':>8}  token",
    ]
    for r in page["tally"][:top]:
        wpo = "" if r["wins_per_occurrence"] is None else f"{r['wins_per_occurrence']:.2f}"
        lines.append(f"{r['count']:>7}  {r['share']:>6.1%}  {r['expected_share']:>8.1%}  {wpo:>8}  "
                     f"{show_token(r['token'])} (id {r['token_id']}, {r['occurrences']} in corpus)")
    lines.append(f"wins at window position 0: {ref['pos0_share']:.1%}; P(no top-K position in a batch) = {ref['miss_prob']:.2g}")
    x = ref["excluding_pos0"]
    lines.append(f"excluding position 0: top token {show_token(x['top_token_text'])} wins {x['top_share']:.1%}")
    if ref["pos0_share"] > 0.5:
        lines.append("warning: most wins sit at window position 0 (an attention-sink artefact)")
    lines += ["", "top activations (away from window position 0; [[max token]]):"]
    for e in page["top"][:top]:
        lines.append(f"{e['value']:>10.3f}  @{e['position']:<7} {_ctx_line(e)}")
    lines += ["", "bottom activations:"]
    for e in page["bottom"][: max(3, top // 2)]:
        lines.append(f"{e['value']:>10.3f}  @{e['position']:<7} {_ctx_line(e)}")
    if page["top_pos0"]:
        e = page["top_pos0"][0]
        lines.append(f"\nat window position 0: max {e['value']:.3f} ({show_token(e['token'])})")
    lines += ["", (f"stats: n={st['count']} mean={st['mean']:.4g} std={st['std']:.4g} skew={st['skew']:.3g} "
                   f"kurtosis={st['kurtosis']:.3g} frac>0={st['frac_pos']:.3f} min={st['min']:.4g} max={st['max']:.4g}")]
    tu = page["tuning"]
    lines.append(f"highest mean activation by token (seen >= {tu['min_count']} times):")
    lines.append("  " + ", ".join(f"{show_token(r['token'])} {r['mean']:.3g} (z {r['z']:.1f}, n {r['count']})"
                                  for r in tu["highest"][:8] if r["z"] is not None))
    le = page["logit_effects"]
    if le:
        lines.append("logit effects: promotes " + ", ".join(show_token(r["token"]) for r in le["promoted"][:8]))
        lines.append("               suppresses " + ", ".join(show_token(r["token"]) for r in le["suppressed"][:8]))
    return "\n".join(lines)


def find_text(found: dict) -> str:
    lines = [f"units that prefer {show_token(found['token'])} (id {found['token_id']}, {found['occurrences']} in corpus), "
             f"by selectivity z = (mean on token - unit mean) / unit std:",
             f"{'unit':<22} {'z':>7} {'mean@tok':>9} {'win share':>9} {'wins/occ':>8}  top token"]
    for u in found["units"]:
        lines.append(f"{u['unit']:<22} {u['z']:>7.2f} {u['mean_on_token']:>9.3g} {u['win_share']:>9.1%} "
                     f"{u['wins_per_occurrence']:>8.2f}  {show_token(u['top_token'])} {u['top_share']:.0%}")
    return "\n".join(lines)
