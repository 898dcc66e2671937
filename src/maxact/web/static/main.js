// Entry point: draw the page named by <body data-page> from its JSON twin.
import {h, clear, errorBox} from "./dom.js";
import {renderHome} from "./home.js";
import {renderUnit} from "./unit.js";
import {renderFind} from "./find.js";
import {renderSite} from "./site.js";
import {renderLive} from "./live.js";
import {renderConcept} from "./concept.js";

const PAGES = {home: renderHome, unit: renderUnit, find: renderFind, site: renderSite, live: renderLive,
  concept: renderConcept};

async function start() {
  const app = document.getElementById("app");
  const render = PAGES[document.body.dataset.page];
  if (!app || !render) return;
  try {
    await render(app);
  } catch (e) {
    clear(app).appendChild(h("section", {class: "card"}, errorBox(e.message || String(e))));
  }
  document.body.dataset.ready = "1";
}

start();
