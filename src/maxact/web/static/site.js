// Site listing: the units of one site, most selective first, a page at a time.
import {h, api, clear, num, pct, int, tok, unitLink, section, queryParam} from "./dom.js";
import {smallBar} from "./charts.js";

export async function renderSite(app) {
  const name = decodeURIComponent(location.pathname.slice("/site/".length));
  const page = Number(queryParam("page") || 1);
  const d = await api(`/api/site/${encodeURIComponent(name)}?page=${page}&per_page=50`);
  clear(app);
  const i = d.info;
  const link = (p, label) => h("a", {href: `/site/${encodeURIComponent(name)}?page=${p}`, class: "button"}, label);
  const pager = h("div", {class: "pager"},
    d.page > 1 ? link(d.page - 1, "← prev") : null,
    h("span", {class: "muted"}, `page ${d.page} of ${d.pages}`),
    d.page < d.pages ? link(d.page + 1, "next →") : null);
  app.appendChild(h("section", {class: "card"},
    h("div", {class: "unit-title"}, h("h1", {}, d.site), pager),
    h("p", {class: "meta"}, `${int(d.total)} units · ${int(d.n_selective)} selective · HF ${i.hf_module} ` +
      `(${i.reads}) · TransformerLens ${i.tl_hook}`)));
  const rows = d.units.map((u, k) => h("tr", {class: u.selective ? "" : "dim"},
    h("td", {class: "num muted"}, String((d.page - 1) * d.per_page + k + 1)),
    h("td", {}, unitLink(u.unit)),
    h("td", {}, tok(u.top_token)),
    h("td", {class: "num"}, pct(u.top_share)), h("td", {}, smallBar(u.top_share, 1)),
    h("td", {class: "num"}, num(u.top_token_z, 3)),
    h("td", {class: u.pos0_share > 0.5 ? "num bad" : "num"}, pct(u.pos0_share)),
    h("td", {}, tok(u.best_token), " ", h("span", {class: "muted"}, `z ${num(u.best_z, 3)}`)),
    h("td", {class: "num"}, num(u.score, 3))));
  app.appendChild(section("Units by selectivity",
    h("table", {class: "data"},
      h("thead", {}, h("tr", {}, h("th", {class: "num"}, "#"), h("th", {}, "unit"), h("th", {}, "top token"),
        h("th", {class: "num"}, "win share"), h("th", {}, ""), h("th", {class: "num"}, "z"),
        h("th", {class: "num"}, "at pos 0"), h("th", {}, "highest-z token"), h("th", {class: "num"}, "score"))),
      h("tbody", {}, rows)),
    h("div", {class: "pager"}, pager.cloneNode(true))));
}
