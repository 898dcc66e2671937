// Live text: the model runs in the server on the user's text; one unit's activation per token.
import {h, api, clear, num, tok, unitLink, section, shadedTokens, legend, errorBox, queryParam} from "./dom.js";
import {tokenBars} from "./charts.js";

const DEFAULT_TEXT = "Alice looked at the Queen before she spoke, and the Queen ran faster and faster.";

export async function renderLive(app) {
  const textParam = queryParam("text");
  let unit = queryParam("unit");
  if (!unit) {
    const o = await api("/api/overview");
    unit = o.top_units.length ? o.top_units[0].unit : "L2.resid_pre:345";
  }
  const text = h("textarea", {name: "text", rows: 4, spellcheck: "false", "aria-label": "text to run"});
  text.value = textParam ?? DEFAULT_TEXT;
  const unitInput = h("input", {name: "unit", type: "text", value: unit, "aria-label": "unit id",
    spellcheck: "false", autocomplete: "off"});
  const status = h("span", {class: "status", role: "status"});
  const out = h("div", {class: "live-out"});
  const button = h("button", {type: "submit"}, "Run");
  const form = h("form", {class: "live-form"},
    text,
    h("div", {class: "live-controls"},
      h("label", {}, "unit ", unitInput), button, status,
      h("span", {class: "hint"}, "at most 512 tokens; the first run loads the model (a few seconds)")));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    run();
  });
  clear(app);
  app.appendChild(section("Live text", form));
  app.appendChild(out);

  async function run() {
    const body = {text: text.value, unit: unitInput.value.trim()};
    history.replaceState(null, "", "/live?" + new URLSearchParams(body));
    button.disabled = true;
    status.textContent = "running the model…";
    clear(out);
    try {
      const r = await api("/api/live", body);
      status.textContent = "";
      out.appendChild(result(r));
    } catch (e) {
      status.textContent = "";
      out.appendChild(section("Could not run", errorBox(e.message)));
    } finally {
      button.disabled = false;
    }
  }
  if (textParam !== null) run();
}

function result(r) {
  let best = 0;
  r.values.forEach((v, i) => { if (v > r.values[best]) best = i; });
  let worst = 0;
  r.values.forEach((v, i) => { if (v < r.values[worst]) worst = i; });
  const scaleNote = r.in_atlas ? "colour scale: the unit's largest |activation| in the atlas (away from window position 0)"
    : "colour scale: the largest |activation| in this text (the atlas does not hold this unit)";
  return section(["Activation of ", unitLink(r.unit), ` on ${r.tokens.length} tokens`],
    h("div", {class: "examples-head"}, h("span", {class: "hint"}, scaleNote), legend(r.scale)),
    h("div", {class: "live-text"}, shadedTokens(r.tokens, r.values, r.scale, best, "ctx live")),
    tokenBars(r.tokens, r.values, r.scale),
    h("p", {class: "meta"}, "max ", num(r.values[best], 4), " at ", tok(r.tokens[best]), ` (token ${best})`,
      " · min ", num(r.values[worst], 4), " at ", tok(r.tokens[worst]), ` (token ${worst})`,
      ` · model ${r.model}`),
    h("details", {class: "more"}, h("summary", {}, "every token's value"),
      h("div", {class: "values-grid"}, r.tokens.map((t, i) => h("div", {},
        h("span", {}, h("span", {class: "muted"}, `${i} `), tok(t)), h("span", {class: "v"}, num(r.values[i], 4)))))));
}
