// Inline SVG charts: horizontal bar chart, histogram, heat map, small bars. Labels are SVG text
// nodes (textContent), never markup.
import {h, s, num, pct, visible, shade} from "./dom.js";

const ORANGE = "#e0703a";
const BLUE = "#3b7fb8";

/** A small horizontal bar: value / max of the width, with the exact figure as a tooltip. */
export function smallBar(value, max, {width = 90, height = 10, color = ORANGE, title = null} = {}) {
  const w = max > 0 ? Math.max(0, Math.min(1, value / max)) * width : 0;
  return s("svg", {class: "sparkbar", width, height, viewBox: `0 0 ${width} ${height}`, role: "img"},
    s("title", {}, title ?? num(value)),
    s("rect", {x: 0, y: 0, width, height, rx: 2, class: "sparkbar-bg"}),
    s("rect", {x: 0, y: 0, width: w.toFixed(1), height, rx: 2, fill: color, class: "sparkbar-fg"}));
}

/** The reference tally: one bar per token (exact expected win share), figures beside it. */
export function tallyChart(rows, samples) {
  const W = 640, rowH = 24, top = 22, labelW = 150, barW = 250, gap = 10;
  const max = Math.max(1e-9, ...rows.map((r) => r.expected_share));
  const svg = s("svg", {
    class: "chart tally-chart", viewBox: `0 0 ${W} ${top + rows.length * rowH + 4}`,
    width: "100%", role: "img", "aria-label": "reference tally: win share by token",
  });
  svg.appendChild(s("text", {x: labelW - 8, y: 14, class: "axis-label", "text-anchor": "end"}, "token"));
  svg.appendChild(s("text", {x: labelW, y: 14, class: "axis-label"}, "expected win share"));
  svg.appendChild(s("text", {x: labelW + barW + gap, y: 14, class: "axis-label"},
    `wins in ${samples} · wins per occurrence`));
  rows.forEach((r, i) => {
    const y = top + i * rowH;
    const w = (r.expected_share / max) * barW;
    const inside = w > 46;
    const wpo = r.wins_per_occurrence === null ? "–" : num(r.wins_per_occurrence, 3);
    const tip = `${JSON.stringify(r.token)} (id ${r.token_id}): expected share ${pct(r.expected_share, 2)}, ` +
      `${r.count} of ${samples} simulated batches, ${r.occurrences} occurrences, ${wpo} wins per occurrence`;
    svg.appendChild(s("g", {class: "tally-row", dataset: {token: r.token, share: String(r.expected_share)}},
      s("title", {}, tip),
      s("text", {x: labelW - 8, y: y + 16, class: "tok-label", "text-anchor": "end"}, clip(visible(r.token), 18)),
      s("rect", {x: labelW, y: y + 4, width: barW, height: rowH - 8, class: "bar-bg"}),
      s("rect", {x: labelW, y: y + 4, width: Math.max(1, w).toFixed(1), height: rowH - 8, class: "bar", fill: ORANGE}),
      s("text", {x: inside ? labelW + w - 4 : labelW + w + 4, y: y + 16,
        class: inside ? "bar-value inside" : "bar-value", "text-anchor": inside ? "end" : "start"},
        pct(r.expected_share)),
      s("text", {x: labelW + barW + gap, y: y + 16, class: "bar-note"}, `${r.count} · ${wpo}`)));
  });
  return svg;
}

function clip(t, n) {
  return t.length > n ? t.slice(0, n - 1) + "…" : t;
}

/** Histogram over the atlas's sign-magnitude bins: equal-width bars, log-scaled heights. */
export function histogram(hist, scale) {
  const counts = hist.counts, bounds = hist.bounds;
  const W = 640, H = 170, left = 8, right = 8, top = 10, bottom = 36;
  const n = counts.length;
  const svg = s("svg", {class: "chart histogram", viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img",
    "aria-label": "histogram of activations"});
  if (!n) return svg;
  const bw = (W - left - right) / n;
  const maxLog = Math.log10(1 + Math.max(...counts));
  counts.forEach((c, i) => {
    const [lo, hi] = bounds[i];
    const hgt = maxLog > 0 ? (Math.log10(1 + c) / maxLog) * (H - top - bottom) : 0;
    const mid = Number.isFinite(lo) && Number.isFinite(hi) ? (lo + hi) / 2 : (Number.isFinite(lo) ? lo : hi);
    const fill = mid < 0 ? BLUE : mid > 0 ? ORANGE : "#9ca3af";
    svg.appendChild(s("rect", {x: (left + i * bw + 0.5).toFixed(1), y: (H - bottom - hgt).toFixed(1),
      width: Math.max(0.5, bw - 1).toFixed(1), height: hgt.toFixed(1), fill, class: "hbar"},
      s("title", {}, `[${num(lo)}, ${num(hi)}): ${c.toLocaleString("en-US")} tokens` +
        (hist.stride > 1 ? ` of a 1-in-${hist.stride} sample` : ""))));
  });
  svg.appendChild(s("line", {x1: left, x2: W - right, y1: H - bottom, y2: H - bottom, class: "axis"}));
  for (const k of pickTicks(n + 1, 6)) {  // bin edges 0..n
    const x = left + k * bw;
    const b = k < n ? bounds[k][0] : bounds[n - 1][1];
    const anchor = k === 0 ? "start" : k === n ? "end" : "middle";
    svg.appendChild(s("line", {x1: x, x2: x, y1: H - bottom, y2: H - bottom + 4, class: "axis"}));
    svg.appendChild(s("text", {x, y: H - bottom + 16, class: "tick", "text-anchor": anchor},
      Number.isFinite(b) ? num(b, 2) : b < 0 ? "−∞" : "∞"));
  }
  svg.appendChild(s("text", {x: W - right, y: H - 4, class: "axis-label", "text-anchor": "end"},
    `activation (bins widen away from 0) · height: log count${hist.stride > 1 ? `, 1 in ${hist.stride} tokens` : ""}`));
  return svg;
}

function pickTicks(n, k) {
  const out = [];
  for (let j = 0; j < k; j++) out.push(Math.round((j * (n - 1)) / (k - 1)));
  return [...new Set(out)];
}

/** Heat map of sites: one row per site kind, one column per block (+ a column for layer-less
 *  sites such as ln_final); each cell links to its site listing. */
export function heatmap(overview, metric) {
  const kinds = overview.kinds;
  const layers = overview.layers;
  const hasFinal = overview.cells.some((c) => c.layer === null);
  const cols = layers.map(String).concat(hasFinal ? ["final"] : []);
  const labelW = 84, cell = 30, gapY = 4, top = 22;
  const W = labelW + cols.length * cell + 4;
  const H = top + kinds.length * (cell + gapY) + 4;
  const values = overview.cells.map((c) => metric.value(c) ?? 0);
  const max = Math.max(metric.min ?? 1e-9, ...values);
  const svg = s("svg", {class: "chart heatmap", viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img",
    "aria-label": "selectivity by site and layer"});
  cols.forEach((c, j) => {
    if (cols.length > 20 && j % 2 && c !== "final") return;
    svg.appendChild(s("text", {x: labelW + j * cell + cell / 2, y: 14, class: "tick", "text-anchor": "middle"}, c));
  });
  kinds.forEach((k, i) => {
    svg.appendChild(s("text", {x: labelW - 8, y: top + i * (cell + gapY) + cell / 2 + 4, class: "row-label",
      "text-anchor": "end"}, k));
  });
  overview.cells.forEach((c) => {
    const i = kinds.indexOf(c.kind);
    const j = c.layer === null ? cols.length - 1 : layers.indexOf(c.layer);
    const v = metric.value(c);
    const x = labelW + j * cell, y = top + i * (cell + gapY);
    const best = c.best ? `\nbest: ${c.best.unit}, ${JSON.stringify(c.best.top_token)} wins ${pct(c.best.top_share)}` : "";
    const tip = `${c.site}: ${metric.label} ${metric.format(v)}\n${c.n_selective} selective of ${c.n_units} units; ` +
      `mean top-token share ${pct(c.mean_top_share)} (position 0 excluded)${best}\nclick: the site's units, most selective first`;
    const a = s("a", {href: "/site/" + encodeURIComponent(c.site), class: "cell", dataset: {site: c.site}},
      s("title", {}, tip),
      s("rect", {x: x + 1, y, width: cell - 2, height: cell, rx: 3, fill: v === null ? "#f3f4f6" : shade(v, max),
        class: "cell-rect"}));
    if (v !== null && metric.text) {
      const t = metric.text(v);
      a.appendChild(s("text", {x: x + cell / 2, y: y + cell / 2 + 4, "text-anchor": "middle",
        class: v / max > 0.72 ? "cell-text light" : "cell-text"}, t));
    }
    svg.appendChild(a);
  });
  return svg;
}

/** A legend strip for a sequential 0..max scale. */
export function rampLegend(max, format) {
  const cells = [];
  for (let i = 0; i <= 10; i++) {
    const c = h("span", {class: "legend-cell"});
    c.style.backgroundColor = shade((max * i) / 10, max);
    cells.push(c);
  }
  return h("span", {class: "legend"}, h("span", {class: "legend-label"}, format(0)), cells,
    h("span", {class: "legend-label"}, format(max)));
}

/** One bar per token of a text: up (orange) for positive, down (blue) for negative, at the same
 *  scale as the shading; the tooltip names the token and its value. */
export function tokenBars(tokens, values, scale) {
  const W = 1100, H = 110, mid = H / 2, pad = 4;
  const n = values.length;
  const bw = Math.min(36, (W - 2 * pad) / Math.max(n, 1));
  const svg = s("svg", {class: "chart token-bars", viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img",
    "aria-label": "activation per token"});
  svg.appendChild(s("line", {x1: pad, x2: W - pad, y1: mid, y2: mid, class: "axis"}));
  values.forEach((v, i) => {
    const hgt = Math.min(1, Math.abs(v) / scale) * (mid - 4);
    svg.appendChild(s("rect", {x: (pad + i * bw + 0.15 * bw).toFixed(2), y: (v >= 0 ? mid - hgt : mid).toFixed(2),
      width: Math.max(0.5, 0.7 * bw).toFixed(2), height: Math.max(0.5, hgt).toFixed(2),
      fill: v >= 0 ? ORANGE : BLUE, class: "tbar"},
      s("title", {}, `${i}: ${JSON.stringify(String(tokens[i]))} ${num(v, 5)}`)));
  });
  return svg;
}
