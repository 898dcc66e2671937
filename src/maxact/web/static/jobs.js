// Model panels of the unit page: "Optimise" (gradient ascent, POST /api/ascend) and "Context"
// (activation with 0, 1, 2, 4, ... tokens of context, POST /api/context). Each starts a job in the
// server, polls GET /api/job/<id>, and can be cancelled (POST /api/job/<id>/cancel).
import {h, api, clear, num, tok, errorBox} from "./dom.js";

const POLL_MS = 400;

export async function runJob(path, body, status, onDone, cancelButton, counted = "steps") {
  const started = await api(path, body);
  let cancelled = false;
  cancelButton.disabled = false;
  cancelButton.onclick = async () => {
    cancelled = true;
    cancelButton.disabled = true;
    await api(`/api/job/${started.job}/cancel`, {});
  };
  for (;;) {
    const job = await api(started.url);
    const p = job.progress || {};
    status.textContent = job.state === "running" && p.of ? `running: ${p.done} of ${p.of} ${counted}` :
      job.state === "queued" ? "waiting for the model…" : job.state === "running" ? "running…" : "";
    if (!["queued", "running"].includes(job.state)) {
      cancelButton.disabled = true;
      if (job.state === "failed") throw new Error(job.error);
      if (job.state === "cancelled" && !job.result) { status.textContent = "cancelled"; return; }
      status.textContent = job.state === "cancelled" || cancelled ? "cancelled: what it found so far" :
        `done in ${num(job.seconds, 3)} s`;
      onDone(job.result);
      return;
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

export function panelForm(fields, label, onSubmit) {
  const status = h("span", {class: "status", role: "status"});
  const go = h("button", {type: "submit"}, label);
  const cancel = h("button", {type: "button", disabled: ""}, "Cancel");
  const form = h("form", {class: "live-controls job-form"}, fields, go, cancel, status);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    go.disabled = true;
    try { await onSubmit(status, cancel); } catch (e) { status.textContent = ""; form.after(errorBox(e.message)); }
    go.disabled = false;
  });
  return form;
}

export function numberInput(name, value, min, max) {
  return h("label", {}, `${name} `, h("input", {type: "number", name, value: String(value), min: String(min),
    max: String(max), class: "narrow"}));
}

export function optimisePanel(unit) {
  const out = h("div", {class: "job-out"});
  const method = h("select", {name: "method", "aria-label": "method"},
    h("option", {value: "gcg"}, "gcg (token swaps)"), h("option", {value: "relax"}, "relax (softmax + Adam)"),
    h("option", {value: "gumbel"}, "relax + Gumbel noise"));
  const fields = [h("label", {}, "method ", method), numberInput("length", 8, 1, 32), numberInput("steps", 100, 1, 500),
    numberInput("seeds", 3, 1, 5)];
  const form = panelForm(fields, "Optimise", async (status, cancel) => {
    clear(out);
    const v = (n) => parseInt(form.querySelector(`[name=${n}]`).value, 10);
    await runJob("/api/ascend", {unit, method: method.value, length: v("length"), steps: v("steps"), seeds: v("seeds")},
      status, (r) => out.appendChild(ascendResult(r)), cancel);
  });
  return [h("p", {class: "hint"}, "Gradient ascent on the input: what optimisation finds for this unit, beside " +
    "the real text. The value shown for each seed is the exact activation of the decoded tokens (a plain " +
    "forward pass), not the relaxed objective. Runs in the server, bounded to two minutes."), form, out];
}

function ascendResult(r) {
  const rows = r.runs.map((run) => h("tr", {},
    h("td", {class: "num"}, String(run.seed)),
    h("td", {class: "num"}, num(run.hard_value)),
    h("td", {class: "num"}, r.data_max ? num(run.hard_value / r.data_max, 3) + "×" : "–"),
    h("td", {class: "num"}, num(run.soft_value)),
    h("td", {}, run.tokens.map((t) => tok(t)))));
  const a = r.agreement;
  return h("div", {},
    r.data_max !== null ? h("p", {}, `Data maximum ${num(r.data_max)}; its top tokens: `,
      r.data_top_tokens.map((t) => tok(t.token))) : null,
    h("table", {class: "data compact"}, h("thead", {}, h("tr", {}, h("th", {}, "seed"), h("th", {}, "exact value"),
      h("th", {}, "of data max"), h("th", {}, "soft"), h("th", {}, "optimised input"))), h("tbody", {}, rows)),
    h("p", {class: "hint"}, `Seeds agree with a mean pairwise Jaccard of ${num(a.mean_jaccard, 2)}; ` +
      `${a.data_tokens_found} of ${a.data_tokens} data top tokens appear in some optimised input` +
      (r.stopped ? ". Stopped early: fewer steps or seeds than asked." : ".")));
}

export function contextPanel(unit) {
  const out = h("div", {class: "job-out"});
  const form = panelForm([numberInput("examples", 10, 1, 20)], "Measure", async (status, cancel) => {
    clear(out);
    const examples = parseInt(form.querySelector("[name=examples]").value, 10);
    await runJob("/api/context", {unit, examples}, status, (r) => out.appendChild(contextResult(r)), cancel);
  });
  return [h("p", {class: "hint"}, "The activation at each top example when the model sees only the k tokens " +
    "before it (k = 0, 1, 2, 4, … up to the context the atlas gave it). k50 and k90: the shortest k reaching " +
    "half and 90% of the full value. A unit whose k50 is 0 reads the token alone."), form, out];
}

function contextResult(r) {
  const ks = [...new Set(r.examples.flatMap((e) => e.prefix.map((p) => p.k)))].sort((a, b) => a - b);
  const head = h("tr", {}, h("th", {}, "token"), h("th", {}, "k50"), h("th", {}, "k90"),
    ks.map((k) => h("th", {class: "num"}, `k=${k}`)));
  const rows = r.examples.map((e) => {
    const at = new Map(e.prefix.map((p) => [p.k, p.value]));
    return h("tr", {}, h("td", {}, tok(e.token)), h("td", {class: "num"}, e.k50 ?? "–"),
      h("td", {class: "num"}, e.k90 ?? "–"),
      ks.map((k) => h("td", {class: "num", title: k === e.full_k ? "full context" : ""},
        at.has(k) ? num(at.get(k), 3) : "")));
  });
  return h("table", {class: "data compact"}, h("thead", {}, head), h("tbody", {}, rows));
}
