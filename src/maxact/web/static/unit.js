// Unit page: reference tally, shaded top and bottom contexts, histogram, tuning, logit effects.
import {h, api, clear, num, pct, int, tok, unitLink, section, shadedTokens, legend, unitScale,
  findLink} from "./dom.js";
import {tallyChart, histogram, smallBar} from "./charts.js";
import {optimisePanel, contextPanel} from "./jobs.js";

const TALLY_ROWS = 15;

export async function renderUnit(app) {
  const unit = decodeURIComponent(location.pathname.slice("/unit/".length));
  const p = await api("/api/unit/" + encodeURIComponent(unit));
  const scale = unitScale(p);
  clear(app);
  app.appendChild(header(p));
  const ref = p.reference;
  if (ref.pos0_share > 0.5) {
    const x = ref.excluding_pos0;
    app.appendChild(h("div", {class: "warning", role: "note"},
      h("strong", {}, `${pct(ref.pos0_share)} of this unit's wins sit at window position 0. `),
      "That is an attention-sink artefact of the first token of every window, not a preference for a token. ",
      "With position 0 excluded, the top token is ", tok(x.top_token_text), ` with ${pct(x.top_share)} of wins.`));
  }
  if (p.derived) app.appendChild(section(p.derived.kind === "sae" ? "SAE latent" : "Direction", derivedBlock(p.derived)));
  app.appendChild(h("div", {class: "grid2"},
    section("Reference statistic", tallyBlock(p)),
    section("Activations", statsBlock(p, scale))));
  app.appendChild(section(`Top activations`, examplesHead(p, "top", scale), examples(p.top, scale)));
  app.appendChild(section(`Bottom activations`, examplesHead(p, "bottom", scale), examples(p.bottom, scale)));
  if (p.bands) app.appendChild(section("Across activation levels", bandsBlock(p.bands, scale)));
  app.appendChild(h("div", {class: "grid3"},
    section("Highest mean activation by token", tuningTable(p.tuning.highest, p.tuning)),
    section("Lowest mean activation by token", tuningTable(p.tuning.lowest, p.tuning)),
    section("Direct logit effects", logitBlock(p.logit_effects))));
  app.appendChild(h("div", {class: "grid2"},
    section("At window position 0", pos0Block(p, scale)),
    section("Neighbours", neighboursBlock(p))));
  app.appendChild(section("Context needed", contextPanel(p.unit)));
  app.appendChild(section("Optimise", optimisePanel(p.unit)));
}

function header(p) {
  const i = p.info;
  const site = i.layer === null ? i.site : `L${i.layer}.${i.site}`;
  const head = i.head !== undefined ? ` · head ${i.head}, dim ${i.head_dim}` : "";
  const n = p.neighbours;
  return h("section", {class: "card unit-head"},
    h("div", {class: "unit-title"},
      h("h1", {}, p.unit),
      h("div", {class: "pager"},
        n.prev ? h("a", {href: "/unit/" + n.prev, class: "button", title: n.prev}, "← prev") : null,
        n.next ? h("a", {href: "/unit/" + n.next, class: "button", title: n.next}, "next →") : null,
        h("a", {href: "/site/" + encodeURIComponent(site), class: "button"}, "site"),
        h("a", {href: "/live?" + new URLSearchParams({unit: p.unit}), class: "button"}, "live text"),
        h("a", {href: "/api/unit/" + p.unit, class: "button subtle"}, "JSON"))),
    h("p", {class: "meta"},
      `HF ${i.hf_module} (${i.reads}) · TransformerLens ${i.tl_hook}${head}`));
}

function tallyBlock(p) {
  const ref = p.reference, g = ref.geometry, x = ref.excluding_pos0;
  const rows = p.tally.slice(0, TALLY_ROWS);
  return [
    h("p", {class: "hint"}, `Which token wins the argmax of a batch of ${g.batch} random windows of ${g.seq} ` +
      `tokens: exact expected share from the top-K, and a seeded simulation of ${int(g.samples)} batches.`),
    rows.length ? tallyChart(rows, g.samples) : h("p", {}, "No winners."),
    p.tally.length > TALLY_ROWS ? h("p", {class: "hint"}, `… ${p.tally.length - TALLY_ROWS} more tokens`) : null,
    h("ul", {class: "facts-list"},
      h("li", {}, `distinct winners: ${ref.distinct}`),
      h("li", {class: ref.pos0_share > 0.5 ? "bad" : ""}, `wins at window position 0: ${pct(ref.pos0_share)}`),
      h("li", {}, "position 0 excluded: ", tok(x.top_token_text), ` wins ${pct(x.top_share)}`),
      h("li", {}, `P(no top-K position in a batch) = ${num(ref.miss_prob, 2)}`),
      h("li", {}, g.contexts === 2 ? "each candidate valued at the context a window gives it (two measured contexts, --context-pass)"
                                   : "each candidate valued at its one measured context (its atlas window)")),
  ];
}

function statsBlock(p, scale) {
  const st = p.stats;
  const cells = [["count", int(st.count)], ["mean", num(st.mean)], ["std", num(st.std)],
    ["skew", num(st.skew, 3)], ["kurtosis", num(st.kurtosis, 3)], ["> 0", pct(st.frac_pos)],
    ["min", num(st.min)], ["max", num(st.max)],
    ["eta² (token identity)", num(st.eta2, 3)],
    ["colour scale", "±" + num(scale)]];
  return [
    h("dl", {class: "stat-grid"}, cells.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v)))),
    histogram(st.hist, scale),
  ];
}

function examplesHead(p, part, scale) {
  const list = p[part];
  const shown = list.filter((e) => e.context).length;
  return h("div", {class: "examples-head"},
    h("span", {class: "hint"}, `${list.length} kept, away from window position 0; ${shown} with context. ` +
      "Each token is shaded by this unit's activation on it; the outlined token is the example's own. " +
      "Hover a token for its value."),
    legend(scale));
}

function examples(list, scale) {
  const withCtx = list.filter((e) => e.context);
  const rest = list.filter((e) => !e.context);
  const rows = withCtx.map((e, i) => h("div", {class: "example", dataset: {value: String(e.value)}},
    h("span", {class: "rank"}, String(i + 1)),
    h("span", {class: "value", title: `activation ${e.value} at corpus position ${e.position} (window position ${e.window_pos})`},
      num(e.value, 4)),
    shadedTokens(e.context.tokens, e.context.values, scale, e.context.focus)));
  const more = rest.length ? h("details", {class: "more"},
    h("summary", {}, `${rest.length} more (token and value only)`),
    h("div", {class: "chips"}, rest.map((e) => h("span", {class: "chip", title: `position ${e.position}`},
      tok(e.token), " ", num(e.value, 4))))) : null;
  return [h("div", {class: "examples"}, rows), more];
}

function bandsBlock(b, scale) {
  const s = b.sampling;
  const range = (l) => l.low === null ? "≤ 0" : l.high === null ? `≥ ${num(l.low, 3)}` : `${num(l.low, 3)} – ${num(l.high, 3)}`;
  const row = (e) => h("div", {class: "example", dataset: {value: String(e.value)}},
    h("span", {class: "value", title: `activation ${e.value} at corpus position ${e.position} (window position ${e.window_pos})`},
      num(e.value, 4)),
    shadedTokens(e.context.tokens, e.context.tokens.map((_, i) => i === e.context.focus ? e.value : null),
      scale, e.context.focus));
  return [
    h("p", {class: "hint"}, `Typical behaviour beside the extremes. Subsampled: a fixed 1-in-${int(s.one_in)} ` +
      `sample of corpus positions (by a seeded hash), and within each activation band up to ${int(s.per_band)} of ` +
      "its sampled tokens, drawn uniformly. Only the outlined token's value is shown; a band with no row had no sampled token."),
    h("div", {class: "bands"}, b.levels.map((l) => h("div", {class: "band"},
      h("h3", {}, range(l)), h("div", {class: "examples"}, l.examples.map(row))))),
    b.random.length ? h("div", {class: "band"}, h("h3", {}, "random sample (any level)"),
      h("div", {class: "examples"}, b.random.map(row))) : null,
  ];
}

function tuningTable(rows, tu) {
  const zs = rows.map((r) => Math.abs(r.z ?? 0));
  const zmax = Math.max(1e-9, ...zs);
  return [
    h("table", {class: "data compact"},
      h("thead", {}, h("tr", {}, h("th", {}, "token"), h("th", {class: "num"}, "n"),
        h("th", {class: "num"}, "mean"), h("th", {class: "num"}, "z"), h("th", {}, ""))),
      h("tbody", {}, rows.map((r) => h("tr", {},
        h("td", {}, findLink(r.token)), h("td", {class: "num"}, int(r.count)),
        h("td", {class: "num"}, num(r.mean, 3)), h("td", {class: "num"}, num(r.z, 3)),
        h("td", {}, smallBar(Math.abs(r.z ?? 0), zmax, {width: 60, color: (r.z ?? 0) < 0 ? "#3b7fb8" : "#e0703a"})))))),
    h("p", {class: "hint"}, `Mean activation per token type, over the ${int(tu.tracked_types)} most frequent types ` +
      `seen at least ${tu.min_count} times; z in units of the unit's standard deviation.`),
  ];
}

function logitBlock(le) {
  if (!le) return h("p", {class: "hint"}, "No direct logit effects are stored for this site.");
  const max = Math.max(1e-9, ...le.promoted.map((r) => Math.abs(r.value)), ...le.suppressed.map((r) => Math.abs(r.value)));
  const list = (rows, color) => h("table", {class: "data compact logit"}, h("tbody", {}, rows.slice(0, 8).map((r) =>
    h("tr", {}, h("td", {}, tok(r.token)), h("td", {class: "num"}, num(r.value, 3)),
      h("td", {}, smallBar(Math.abs(r.value), max, {width: 80, color}))))));
  return [
    h("h3", {}, "promotes"), list(le.promoted, "#e0703a"),
    h("h3", {class: "spaced"}, "suppresses"), list(le.suppressed, "#3b7fb8"),
    h("p", {class: "hint"}, "Logits this unit's output direction adds through the unembedding (final norm folded in)."),
  ];
}

function pos0Block(p, scale) {
  const rows = p.top_pos0.slice(0, 5);
  if (!rows.length) return h("p", {class: "hint"}, "No examples at window position 0.");
  return [
    h("p", {class: "hint"}, "The first token of each window, kept apart: many models write huge values there."),
    h("table", {class: "data compact"}, h("tbody", {}, rows.map((e) => h("tr", {},
      h("td", {class: "num"}, num(e.value, 4)), h("td", {}, tok(e.token)),
      h("td", {class: "hint"}, `position ${int(e.position)}`),
      h("td", {}, e.value > scale ? h("span", {class: "badge"}, `${num(e.value / scale, 3)}× the scale`) : null))))),
  ];
}

function neighboursBlock(p) {
  const n = p.neighbours;
  return [
    h("p", {}, n.prev ? unitLink(n.prev) : "—", "  ·  ", n.next ? unitLink(n.next) : "—"),
    n.same_index.length ? h("p", {class: "hint"}, "The same index at other sites (same site kind, or same block):") : null,
    h("div", {class: "chips"}, n.same_index.map((u) => h("span", {class: "chip"}, unitLink(u)))),
  ];
}

function derivedBlock(d) {
  const what = d.kind === "sae"
    ? `Latent of a ${d.architecture} sparse autoencoder${d.k ? ` (k = ${d.k})` : ""}, one of ${int(d.width)}`
    : `Dot product with one of ${int(d.width)} directions`;
  const max = Math.max(1e-9, ...d.nearest_neurons.map((n) => Math.abs(n.cosine)));
  return [
    h("p", {}, `${what}, read at `, h("strong", {}, d.base), ". "),
    h("p", {class: "hint"}, `Weights: ${d.path} (sha256 ${d.sha256.slice(0, 12)}…)`),
    h("p", {}, "Density (share of tokens where it is above 0): ", h("strong", {}, pct(d.density))),
    h("h3", {}, "Nearest neurons (cosine with its decoder row)"),
    h("table", {class: "data compact"}, h("tbody", {}, d.nearest_neurons.map((n) => h("tr", {},
      h("td", {}, n.in_atlas ? unitLink(n.unit) : n.unit), h("td", {class: "num"}, num(n.cosine, 3)),
      h("td", {}, smallBar(Math.abs(n.cosine), max, {width: 80, color: n.cosine < 0 ? "#3b7fb8" : "#e0703a"})))))),
    h("p", {class: "hint"}, "On the residual stream: the MLP neurons whose output directions lie closest; " +
      "elsewhere: the site's own coordinates. Ranked by |cosine|, sign kept (docs/DIRECTIONS.md)."),
  ];
}
