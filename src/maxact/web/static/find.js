// Token search: the units that prefer a token, ranked by selectivity (z of the token's mean).
import {h, api, clear, num, pct, int, tok, unitLink, section, queryParam} from "./dom.js";
import {smallBar} from "./charts.js";

export async function renderFind(app) {
  const token = queryParam("token") ?? "";
  const limit = Number(queryParam("limit") || 50);
  const site = queryParam("site") || "";
  const params = new URLSearchParams({token, limit: String(limit)});
  if (site) params.set("site", site);
  const [f, o] = await Promise.all([api("/api/find?" + params), api("/api/overview")]);
  clear(app);
  const zmax = Math.max(1e-9, ...f.units.map((u) => u.z));
  const smax = Math.max(1e-9, ...f.units.map((u) => u.win_share));
  app.appendChild(h("section", {class: "card"},
    h("h1", {}, "Units that prefer ", tok(f.token, {class: "tok big"})),
    h("p", {class: "meta"}, `token id ${f.token_id} · ${int(f.occurrences)} occurrences in the corpus · ` +
      `ranked by selectivity z = (mean activation on the token − unit mean) / unit std`),
    controls(token, limit, site, o.kinds, "/api/find?" + params)));
  const rows = f.units.map((u, i) => h("tr", {},
    h("td", {class: "num muted"}, String(i + 1)),
    h("td", {}, unitLink(u.unit)),
    h("td", {class: "num"}, num(u.z, 3)),
    h("td", {}, smallBar(u.z, zmax, {title: `z ${num(u.z, 4)}`})),
    h("td", {class: "num"}, num(u.mean_on_token, 3)),
    h("td", {class: "num muted"}, `${num(u.unit_mean, 3)} ± ${num(u.unit_std, 3)}`),
    h("td", {class: "num"}, pct(u.win_share)),
    h("td", {}, smallBar(u.win_share, smax, {color: "#b2182b", title: `win share ${pct(u.win_share, 2)}`})),
    h("td", {class: "num"}, num(u.wins_per_occurrence, 3)),
    h("td", {}, tok(u.top_token), " ", h("span", {class: "muted"}, pct(u.top_share, 0)))));
  app.appendChild(section(`${f.units.length} units`,
    h("table", {class: "data"},
      h("thead", {}, h("tr", {},
        h("th", {class: "num"}, "#"), h("th", {}, "unit"), h("th", {class: "num"}, "z"), h("th", {}, ""),
        h("th", {class: "num"}, "mean on token"), h("th", {class: "num"}, "unit mean ± std"),
        h("th", {class: "num"}, "win share"), h("th", {}, ""), h("th", {class: "num"}, "wins / occ"),
        h("th", {}, "unit's top token"))),
      h("tbody", {}, rows)),
    h("p", {class: "hint"}, "win share: how often this token wins the unit's reference statistic; wins / occ: ",
      "expected wins per occurrence of the token (the frequency control).")));
}

function controls(token, limit, site, kinds, jsonUrl) {
  const form = h("form", {class: "controls", action: "/find", method: "get"},
    h("input", {type: "hidden", name: "token", value: token}),
    h("label", {}, "show ",
      h("select", {name: "limit"}, [20, 50, 100, 200].map((n) =>
        h("option", {value: String(n), selected: n === limit}, String(n))))),
    h("label", {}, " site ",
      h("select", {name: "site"}, h("option", {value: ""}, "all"),
        kinds.map((k) => h("option", {value: k, selected: k === site}, k)))),
    h("button", {type: "submit"}, "Update"),
    h("a", {href: jsonUrl, class: "button subtle"}, "JSON"));
  return form;
}
