// Concepts: every unit against a category of tracked token types, from the atlas alone
// (`maxact concept ATLAS --token ...`; JSON twin /api/concept). A form, a volcano plot of every
// unit tested, the units ranked by Welch's t linking to their pages; and a probe over all units of
// one site, fitted by a job in the server (POST /api/concept/probe, polled at /api/job/<id>).
import {h, api, clear, num, int, unitLink, section, queryParam} from "./dom.js";
import {runJob, panelForm, numberInput} from "./jobs.js";

const EXAMPLE = [" not", " never"];

export async function renderConcept(app) {
  const tokens = new URLSearchParams(location.search).getAll("token").filter((t) => t !== "");
  const site = queryParam("site") || "";
  const top = Number(queryParam("top") || 50);
  const o = await api("/api/overview");
  clear(app);
  app.appendChild(h("section", {class: "card"},
    h("h1", {}, "Concepts across every unit"),
    h("p", {class: "meta"}, "How well each unit separates a category of tokens from every other token: Welch's t, ",
      "its p, Benjamini-Hochberg q over all units tested, Cohen's d and AUROC, from the atlas's per-type ",
      "moments (the tokens must be among the types it tracks). The probe below runs the model over the ",
      "atlas's corpus; word lists, part-of-speech tags and contrast sets: `maxact concept` on the command line."),
    form(tokens.length ? tokens : EXAMPLE, site, top, o.kinds)));
  if (!tokens.length) return;
  const params = new URLSearchParams({top: String(top)});
  for (const t of tokens) params.append("token", t);
  if (site) params.set("site", site);
  const c = await api("/api/concept?" + params);
  app.appendChild(section(c.category,
    h("p", {class: "meta"}, `${int(c.n_in)} tokens in the category, ${int(c.n_out)} others · ${int(c.n_units)} ` +
      `units tested · ${c.volcano.q_below.reduce((a, b) => a + b, 0)} with q < ${c.volcano.q_threshold}`),
    volcano(c.volcano),
    h("p", {class: "hint"}, "Each dot is a unit: Cohen's d (category minus rest) across, −log10 p up; red: ",
      `q < ${c.volcano.q_threshold}. Hover a dot for the unit, click it for its page.`),
    h("p", {class: "hint"}, "AUROC: ", c.auroc_method),
    h("a", {href: "/api/concept?" + params, class: "button subtle"}, "JSON")));
  const rows = c.units.map((u, i) => h("tr", {},
    h("td", {class: "num muted"}, String(i + 1)),
    h("td", {}, unitLink(u.unit)),
    h("td", {class: "num"}, num(u.mean_in, 3)), h("td", {class: "num"}, num(u.mean_out, 3)),
    h("td", {class: "num"}, num(u.t, 4)), h("td", {class: "num"}, num(u.p, 3)), h("td", {class: "num"}, num(u.q, 3)),
    h("td", {class: "num"}, num(u.d, 3)), h("td", {class: "num"}, num(u.auroc, 3))));
  app.appendChild(section(`The ${c.units.length} units with the largest t`,
    h("table", {class: "data"},
      h("thead", {}, h("tr", {}, ["#", "unit", "mean in", "mean out", "t", "p", "q", "d", "AUROC"].map((k, i) =>
        h("th", {class: i === 1 ? "" : "num"}, k)))),
      h("tbody", {}, rows))));
  const sites = o.cells.filter((cell) => !site || cell.kind === site).map((cell) => cell.site);
  const first = c.units.length ? c.units[0].unit.split(":")[0] : sites[0];
  app.appendChild(section("Probe: all units of one site at once",
    probePanel(tokens, sites, first, c.probe_max_tokens)));
}

function probePanel(tokens, sites, site, maxTokens) {
  const out = h("div", {class: "job-out"});
  const select = h("select", {name: "probe_site", "aria-label": "site"},
    sites.map((s) => h("option", {value: s, selected: s === site}, s)));
  const fields = [h("label", {}, "site ", select), numberInput("tokens", Math.min(4096, maxTokens), 1, maxTokens)];
  const form = panelForm(fields, "Fit probe", async (status, cancel) => {
    clear(out);
    const n = parseInt(form.querySelector("[name=tokens]").value, 10);
    await runJob("/api/concept/probe", {token: tokens, site: select.value, tokens: n}, status,
      (r) => out.appendChild(probeResult(r)), cancel, "tokens");
  });
  return [h("p", {class: "hint"}, "L2- and L1-regularised logistic regression over every unit of the site, on the ",
    `first tokens of the atlas's corpus (at most ${int(maxTokens)}): 5-fold cross-validated accuracy against `,
    "the majority baseline, the units with the largest weights, and the Spearman rank agreement between |weight| ",
    "and |t| (`maxact concept --probe`). Runs in the server, bounded to two minutes."), form, out];
}

function probeResult(r) {
  const p = r.probe;
  const row = (name, value, note) => h("tr", {}, h("th", {}, name), h("td", {class: "num"}, value), h("td", {}, note));
  const links = (list, value) => list.map((u, i) => [i ? ", " : "", unitLink(u.unit), ` (${value(u)})`]);
  return h("div", {},
    h("p", {}, `${r.category}: ${int(p.n_in)} observations in the category and ${int(p.n_out)} others drawn from `,
      `${int(r.n_fed)} tokens fed` + (r.stopped ? " (stopped early at the time limit: fewer tokens than asked)" : "")),
    h("table", {class: "data compact probe"}, h("tbody", {},
      row("L2 accuracy", num(p.l2.accuracy, 3), `± ${num(p.l2.accuracy_std, 2)} over ${p.folds} folds`),
      row("L1 accuracy", num(p.l1.accuracy, 3), `± ${num(p.l1.accuracy_std, 2)}, ${int(p.l1.nonzero)} units non-zero`),
      row("majority baseline", num(p.baseline, 3), "always answering the larger class"),
      row("Spearman |w| vs |t|", num(p.spearman_abs_weight_abs_t, 3), "rank agreement of probe weights and t-tests"))),
    h("p", {}, "Largest standardised L2 weights: ", links(p.top_units, (u) => num(u.weight, 3))),
    h("p", {}, "Largest t at this site (same pass): ", links(r.top_t, (u) => num(u.t, 3))),
    h("p", {class: "hint"}, r.source));
}

function form(tokens, site, top, kinds) {
  const list = h("div", {class: "token-inputs"}, tokens.map((t) => tokenInput(t)));
  return h("form", {class: "controls", action: "/concept", method: "get"},
    h("label", {}, "tokens (leading space included) "), list,
    h("button", {type: "button", class: "subtle", onclick: () => list.appendChild(tokenInput(""))}, "+ token"),
    h("label", {}, " site ",
      h("select", {name: "site"}, h("option", {value: ""}, "all"),
        kinds.map((k) => h("option", {value: k, selected: k === site}, k)))),
    h("label", {}, " show ",
      h("select", {name: "top"}, [20, 50, 100, 200].map((n) =>
        h("option", {value: String(n), selected: n === top}, String(n))))),
    h("button", {type: "submit"}, "Rank units"));
}

function tokenInput(value) {
  return h("input", {name: "token", type: "text", value, size: 10, spellcheck: "false", "aria-label": "token text"});
}

function volcano(v) {
  const W = 720, H = 360, pad = 44;
  const canvas = h("canvas", {width: W, height: H, class: "chart volcano", role: "img",
    "aria-label": `volcano plot of ${v.d.length} units`});
  const dmin = Math.min(0, ...v.d), dmax = Math.max(0, ...v.d), lmax = Math.max(1, ...v.logp);
  const x = (d) => pad + (d - dmin) / Math.max(dmax - dmin, 1e-9) * (W - 2 * pad);
  const y = (l) => H - pad - l / lmax * (H - 2 * pad);
  const g = canvas.getContext("2d");
  g.fillStyle = "#6b7280";
  g.font = "11px sans-serif";
  g.fillText("Cohen's d", W / 2 - 24, H - 8);
  g.fillText(`−log10 p (max ${num(lmax, 3)})`, 4, 14);
  g.strokeStyle = "#d1d5db";
  g.beginPath(); g.moveTo(x(0), pad / 2); g.lineTo(x(0), H - pad); g.moveTo(pad, H - pad); g.lineTo(W - pad, H - pad); g.stroke();
  g.fillText(num(dmin, 3), pad - 10, H - pad + 14);
  g.fillText(num(dmax, 3), W - pad - 20, H - pad + 14);
  for (const red of [0, 1]) {
    g.fillStyle = red ? "rgba(192,57,43,0.75)" : "rgba(154,164,177,0.45)";
    for (let i = 0; i < v.d.length; i++) {
      if (v.q_below[i] === red) g.fillRect(x(v.d[i]) - 1, y(v.logp[i]) - 1, 2.5, 2.5);
    }
  }
  const nearest = (ev) => {
    const r = canvas.getBoundingClientRect();
    const px = (ev.clientX - r.left) * W / r.width, py = (ev.clientY - r.top) * H / r.height;
    let best = -1, bd = 64;
    for (let i = 0; i < v.d.length; i++) {
      const dd = (x(v.d[i]) - px) ** 2 + (y(v.logp[i]) - py) ** 2;
      if (dd < bd) { bd = dd; best = i; }
    }
    return best;
  };
  canvas.addEventListener("mousemove", (ev) => {
    const i = nearest(ev);
    canvas.title = i < 0 ? "" : `${v.units[i]}: d ${num(v.d[i], 3)}, −log10 p ${num(v.logp[i], 3)}`;
    canvas.style.cursor = i < 0 ? "default" : "pointer";
  });
  canvas.addEventListener("click", (ev) => {
    const i = nearest(ev);
    if (i >= 0) location.href = "/unit/" + encodeURIComponent(v.units[i]).replace("%3A", ":");
  });
  return canvas;
}
