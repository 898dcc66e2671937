// DOM helpers. Corpus and user text only ever becomes a text node (never parsed as HTML), and
// styles are set through the CSSOM (the Content-Security-Policy forbids style attributes).

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "style") Object.assign(el.style, v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** h("a", {href: "/"}, "text", child...): an HTML element; strings become text nodes. */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** s("rect", {x: 0}): an SVG element. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** GET (or POST with a JSON body) an API route; throws an Error carrying the server's message. */
export async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  };
  const r = await fetch(path, opts);
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (!r.ok) {
    const err = new Error((data && data.error) || `${r.status} ${r.statusText}`);
    err.status = r.status;
    throw err;
  }
  return data;
}

// ---- numbers ------------------------------------------------------------------------------
export function num(x, digits = 4) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  if (x === 0) return "0";
  const a = Math.abs(x);
  if (a >= 1e5 || a < 1e-3) return x.toExponential(2);
  return Number(x.toPrecision(digits)).toString();
}

export function pct(x, digits = 1) {
  if (x === null || x === undefined) return "–";
  if (x > 0 && x < 0.001) return "<0.1%";
  return (100 * x).toFixed(digits) + "%";
}

export function int(x) {
  return x === null || x === undefined ? "–" : Number(x).toLocaleString("en-US");
}

// ---- tokens ---------------------------------------------------------------------------------
/** A token with its whitespace visible: " before" -> "␣before", "\n" -> "⏎". */
export function visible(t) {
  return String(t)
    .replace(/ /g, "␣")
    .replace(/\n/g, "⏎")
    .replace(/\r/g, "␍")
    .replace(/\t/g, "⇥")
    .replace(/[\u0000-\u001f\u007f]/g, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
}

/** How a token reads inside running text: spaces stay spaces, line breaks show as ⏎. */
export function inline(t) {
  return String(t).replace(/\r?\n/g, "⏎").replace(/\t/g, "⇥");
}

/** A token chip (monospace, visible spaces; the exact string in the tooltip). */
export function tok(t, attrs = {}) {
  return h("span", {class: "tok", title: JSON.stringify(String(t)), ...attrs}, visible(t));
}

export function unitLink(u) {
  return h("a", {href: "/unit/" + encodeURIComponent(u).replace(/%3A/g, ":"), class: "unit"}, u);
}

export function findLink(token, label) {
  return h("a", {href: "/find?" + new URLSearchParams({token})}, label ?? tok(token));
}

// ---- colour ---------------------------------------------------------------------------------
// Diverging: blue for negative, white at 0, orange to red for positive (ColorBrewer RdBu ends).
const POS = [[255, 255, 255], [253, 219, 199], [244, 165, 130], [214, 96, 77], [178, 24, 43]];
const NEG = [[255, 255, 255], [209, 229, 240], [146, 197, 222], [67, 147, 195], [33, 102, 172]];

function ramp(stops, t) {
  const x = Math.max(0, Math.min(1, t)) * (stops.length - 1);
  const i = Math.min(Math.floor(x), stops.length - 2);
  const f = x - i;
  return stops[i].map((c, j) => Math.round(c + (stops[i + 1][j] - c) * f));
}

/** Background colour of value v when |v| = scale is full colour. */
export function shade(v, scale) {
  if (v === null || v === undefined || !scale) return "rgb(255, 255, 255)";
  const t = Math.abs(v) / scale;
  const [r, g, b] = ramp(v >= 0 ? POS : NEG, t);
  return `rgb(${r}, ${g}, ${b})`;
}

/** Text colour readable on shade(v, scale). */
export function ink(v, scale) {
  return scale && Math.abs(v) / scale > 0.72 ? "#fff" : "#111827";
}

/** The scale a unit page shades with: its largest |activation| away from window position 0. */
export function unitScale(page) {
  const vals = [];
  if (page.top.length) vals.push(Math.abs(page.top[0].value));
  if (page.bottom.length) vals.push(Math.abs(page.bottom[0].value));
  const m = Math.max(0, ...vals.filter(Number.isFinite));
  if (m > 0) return m;
  return Math.max(Math.abs(page.stats.min || 0), Math.abs(page.stats.max || 0)) || 1;
}

/** A run of tokens, each shaded by its value; `focus` (an index) is outlined as the max token. */
export function shadedTokens(tokens, values, scale, focus = -1, cls = "ctx") {
  const spans = tokens.map((t, i) => {
    const v = values[i];
    const span = h("span", {
      class: i === focus ? "t focus" : "t",
      title: `${num(v, 5)} · ${JSON.stringify(String(t))}`,
      dataset: {value: String(v)},
    }, inline(t));
    span.style.backgroundColor = shade(v, scale);
    span.style.color = ink(v, scale);
    return span;
  });
  return h("span", {class: cls}, spans);
}

/** A legend for the diverging scale: -scale .. 0 .. +scale. */
export function legend(scale) {
  const n = 11;
  const cells = [];
  for (let i = 0; i < n; i++) {
    const v = -scale + (2 * scale * i) / (n - 1);
    const c = h("span", {class: "legend-cell", title: num(v)});
    c.style.backgroundColor = shade(v, scale);
    cells.push(c);
  }
  return h("span", {class: "legend"}, h("span", {class: "legend-label"}, num(-scale, 3)), cells,
    h("span", {class: "legend-label"}, "+" + num(scale, 3)));
}

export function section(title, ...children) {
  return h("section", {class: "card"}, h("h2", {}, title), children);
}

export function errorBox(message) {
  return h("div", {class: "error-box", role: "alert"}, message);
}

export function queryParam(name) {
  return new URLSearchParams(location.search).get(name);
}
