// Home: the run (model, corpus, config), the site-by-layer heat map and the most selective units.
import {h, api, clear, num, pct, int, tok, unitLink, section} from "./dom.js";
import {heatmap, rampLegend, smallBar} from "./charts.js";

const METRICS = {
  selective: {
    label: "selective units",
    value: (c) => c.frac_selective,
    format: (v) => pct(v),
    text: null,
    min: 0.01,
    help: (o) => `Share of a site's units that are selective: the reference winner is one token (win share > ` +
      `${pct(o.criteria.selective_share, 0)}) whose mean activation stands out (z > ${o.criteria.selective_z}), ` +
      `with under ${pct(o.criteria.pos0_limit, 0)} of wins at window position 0. Hover a cell for figures; ` +
      `click it for the site's units, most selective first.`,
  },
  share: {
    label: "mean top-token win share",
    value: (c) => c.mean_top_share,
    format: (v) => pct(v),
    text: null,
    min: 0.01,
    help: () => "Mean win share of each unit's top token in the reference statistic, over the units whose " +
      "wins are mostly away from window position 0. High: units that pick one token; low: scattered winners.",
  },
  eta2: {
    label: "token identity (eta²)",
    value: (c) => c.mean_eta2 ?? null,
    format: (v) => num(v, 3),
    text: null,
    min: 0.01,
    help: () => "Mean over a site's units of eta squared: the share of a unit's activation variance that the " +
      "token's identity explains (the tracked token types, the rest as one group; every window position). " +
      "Near 1: token detectors; near 0: units that depend on context. Grey: an atlas made before per-type moments.",
  },
};

export async function renderHome(app) {
  const o = await api("/api/overview");
  clear(app);
  const m = o.model, c = o.corpus, r = o.reference;
  app.appendChild(h("section", {class: "card hero"},
    h("h1", {}, m.name, h("span", {class: "muted"}, ` · ${c.name}`)),
    h("dl", {class: "facts"},
      fact("model", `${m.family}, ${m.n_layers} blocks, d_model ${m.d_model}, d_mlp ${m.d_mlp}, ` +
        `${m.n_heads} heads × ${m.d_head}`),
      fact("corpus", `${c.name}: ${int(c.n_tokens)} tokens${c.stripped ? " (Gutenberg header stripped)" : ""}`),
      fact("units", `${int(o.n_units)} in ${o.cells.length} sites: ${o.kinds.join(", ")}`),
      fact("pass", `non-overlapping windows of ${o.seq} tokens; top-${o.k} and bottom-${o.k} kept per unit`),
      fact("reference", `${int(r.samples)} simulated batches of ${r.batch} × ${r.seq}, seed ${r.seed}`),
      o.created ? fact("built", `${o.created}${o.timing ? ` in ${num(o.timing.seconds, 3)} s` : ""}`) : null),
    h("form", {class: "big-search", action: "/search", method: "get", role: "search"},
      h("input", {name: "q", type: "search", placeholder: "a unit id such as L2.resid_pre:345, a token such as before, or any text",
        "aria-label": "search the atlas", autocomplete: "off", spellcheck: "false"}),
      h("button", {type: "submit"}, "Search")),
    h("p", {class: "hint"}, "A unit id opens its page, a token lists the units that prefer it, ",
      "any other text opens the live view with the model running on it.")));

  const mapBox = h("div", {class: "heatmap-box"});
  const helpBox = h("p", {class: "hint"});
  const legendBox = h("div", {class: "legend-row"});
  const buttons = Object.entries(METRICS).map(([key, metric]) =>
    h("button", {type: "button", class: "toggle", dataset: {metric: key}, onclick: () => draw(key)}, metric.label));
  function draw(key) {
    const metric = METRICS[key];
    clear(mapBox).appendChild(heatmap(o, metric));
    helpBox.textContent = metric.help(o);
    const vals = o.cells.map((c) => metric.value(c) ?? 0);
    clear(legendBox).appendChild(rampLegend(Math.max(metric.min, ...vals), metric.format));
    for (const b of buttons) b.classList.toggle("active", b.dataset.metric === key);
  }
  app.appendChild(section("Where the selective units are",
    h("div", {class: "toggles"}, buttons), mapBox, legendBox, helpBox));
  draw("selective");

  const rows = o.top_units.map((u) => h("tr", {},
    h("td", {}, unitLink(u.unit)),
    h("td", {}, tok(u.top_token)),
    h("td", {class: "num"}, pct(u.top_share)), h("td", {}, smallBar(u.top_share, 1)),
    h("td", {class: "num"}, num(u.top_token_z, 3)),
    h("td", {class: "num"}, pct(u.pos0_share)),
    h("td", {class: "num"}, num(u.score, 3))));
  app.appendChild(section("Most selective units",
    h("table", {class: "data"},
      h("thead", {}, h("tr", {}, h("th", {}, "unit"), h("th", {}, "top token"),
        h("th", {class: "num"}, "win share"), h("th", {}, ""), h("th", {class: "num"}, "z"),
        h("th", {class: "num"}, "at pos 0"), h("th", {class: "num"}, "score"))),
      h("tbody", {}, rows)),
    h("p", {class: "hint"}, "score = win share × (1 − share at window position 0) × min(z, 10), where z is how far the ",
      "top token's mean activation stands above the unit's mean, in the unit's standard deviations.")));
}

function fact(k, v) {
  return [h("dt", {}, k), h("dd", {}, v)];
}
