"""The viewer in a real browser: headless Chromium (Debian's `chromium`) driven by Playwright.

The server runs in a thread of the test process on a free port, over a tiny atlas whose corpus
carries ``<script>alert(1)</script>`` as a token (tests/e2e/viewer_atlas.py). Every request that
leaves 127.0.0.1 is aborted and recorded; any dialog, page error or console error fails the test.
"""

from __future__ import annotations

import json
import os
import re
from urllib.parse import quote

import pytest
from e2e.viewer_atlas import INJECTIONS, build_viewer_atlas, start_server

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCRIPT = INJECTIONS[0]
WIDTH, HEIGHT = 1366, 768  # a laptop


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package (make browser)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    atlas_dir, model_dir = build_viewer_atlas(tmp_path_factory.mktemp("viewer-e2e"))
    server, url = start_server(atlas_dir, model_dir)
    yield url
    server.shutdown()
    server.server_close()


class Watch:
    """What a page did that it must not: dialogs, page errors, console errors, foreign requests."""

    def __init__(self):
        self.dialogs, self.errors, self.foreign = [], [], []

    def check(self, console=True):
        assert not self.dialogs, f"a dialog fired: {self.dialogs}"
        assert not self.foreign, f"requests left the machine: {self.foreign}"
        if console:
            assert not self.errors, f"errors in the page: {self.errors}"


@pytest.fixture
def page(browser, site):
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
    watch = Watch()

    def route(r):
        if r.request.url.startswith(site):
            r.continue_()
        else:
            watch.foreign.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    pg = context.new_page()
    pg.on("dialog", lambda d: (watch.dialogs.append(d.message), d.dismiss()))
    pg.on("pageerror", lambda e: watch.errors.append(str(e)))
    pg.on("console", lambda m: watch.errors.append(m.text) if m.type == "error" else None)
    pg.watch = watch
    pg.site = site
    yield pg
    context.close()


def ready(pg, timeout=30_000):
    pg.wait_for_selector("body[data-ready='1']", timeout=timeout)


def fits_width(pg):
    assert pg.evaluate("document.documentElement.scrollWidth") <= WIDTH


def api(pg, path):
    return json.loads(pg.request.get(pg.site + path).text())


def first_number(title: str) -> float:
    return float(re.match(r"\s*(-?[0-9.]+(?:e[-+]?\d+)?)", title).group(1))


# ---- pages -----------------------------------------------------------------------------------
def test_home_loads_with_the_heat_map(page):
    page.goto(page.site + "/")
    ready(page)
    overview = api(page, "/api/overview")
    assert page.locator("svg.heatmap a.cell").count() == len(overview["cells"])
    assert page.locator("svg.heatmap a.cell rect").count() == len(overview["cells"])
    assert page.locator("table.data tbody tr").count() == len(overview["top_units"])
    page.locator("button.toggle[data-metric='share']").click()
    assert page.locator("button.toggle.active").get_attribute("data-metric") == "share"
    fits_width(page)
    page.locator("svg.heatmap a.cell").first.click()
    page.wait_for_url(re.compile(r"/site/"))
    ready(page)
    assert page.locator("table.data tbody tr").count() > 0
    page.watch.check()


def test_search_for_a_unit_opens_its_page(page):
    page.goto(page.site + "/")
    ready(page)
    page.fill("header form.search input[name=q]", "L1.resid_pre:3")
    page.press("header form.search input[name=q]", "Enter")
    page.wait_for_url(re.compile(r"/unit/L1\.resid_pre:3$"))
    ready(page)
    data = api(page, "/api/unit/L1.resid_pre:3")
    assert page.locator("h1").first.text_content() == "L1.resid_pre:3"

    # the reference tally as SVG bars, one per token shown, labelled with visible spaces
    bars = page.locator("svg.tally-chart rect.bar")
    assert bars.count() == min(15, len(data["tally"])) > 0
    rows = page.locator("svg.tally-chart g.tally-row")
    assert rows.first.get_attribute("data-token") == data["tally"][0]["token"]

    # shaded contexts: one span per stored context token, titles carrying the stored values
    examples = [e for e in data["top"] if "context" in e]
    shown = page.locator(".card").filter(has_text="Top activations").locator(".example")
    assert shown.count() == len(examples)
    for k, e in enumerate(examples):
        spans = shown.nth(k).locator(".ctx .t")
        assert spans.count() == len(e["context"]["tokens"])
        values = spans.evaluate_all("els => els.map(el => [el.title, el.dataset.value, el.textContent])")
        for (title, dv, text), v, t in zip(values, e["context"]["values"], e["context"]["tokens"]):
            assert float(dv) == pytest.approx(v, rel=1e-6, abs=1e-9)
            assert first_number(title) == pytest.approx(v, rel=1e-3, abs=1e-6)
            assert text == t.replace("\n", "⏎")
        focus = shown.nth(k).locator(".ctx .t.focus")
        assert focus.count() == 1 and focus.text_content() == e["token"].replace("\n", "⏎")
    # the focus token of the top example is shaded (not white), and hovering it keeps its title
    top = shown.first.locator(".t.focus")
    assert top.evaluate("el => getComputedStyle(el).backgroundColor") != "rgb(255, 255, 255)"
    top.hover()
    assert first_number(top.get_attribute("title")) == pytest.approx(examples[0]["value"], rel=1e-3)

    assert page.locator("svg.histogram rect.hbar").count() == len(data["stats"]["hist"]["counts"])
    fits_width(page)
    page.watch.check()


def test_search_for_a_token_lists_units(page):
    page.goto(page.site + "/")
    ready(page)
    page.fill("form.big-search input[name=q]", "w1")
    page.press("form.big-search input[name=q]", "Enter")
    page.wait_for_url(re.compile(r"/find\?token=w1"))
    ready(page)
    found = api(page, "/api/find?token=w1&limit=50")
    rows = page.locator("table.data tbody tr")
    assert rows.count() == len(found["units"]) > 0
    assert rows.first.locator("a.unit").text_content() == found["units"][0]["unit"]
    assert rows.first.locator("svg.sparkbar").count() == 2
    fits_width(page)
    page.watch.check()


def test_free_text_opens_live_text_with_activations(page):
    page.goto(page.site + "/")
    ready(page)
    page.fill("header form.search input[name=q]", "w3 w4 w5")
    page.press("header form.search input[name=q]", "Enter")
    page.wait_for_url(re.compile(r"/live\?"))
    ready(page)
    assert page.locator("textarea[name=text]").input_value() == "w3 w4 w5"
    page.wait_for_selector(".live-text .t", timeout=60_000)
    assert page.locator(".live-text .t").count() == 3
    page.watch.check()


def test_live_text_returns_activations(page):
    page.goto(page.site + "/live")
    ready(page)
    page.fill("textarea[name=text]", "w1 w2 w3 w4 w5 w6")
    page.fill("input[name=unit]", "L1.resid_pre:3")
    with page.expect_response(lambda r: r.url.endswith("/api/live")) as resp:
        page.click(".live-form button[type=submit]")
    live = resp.value.json()
    page.wait_for_selector(".live-text .t")
    spans = page.locator(".live-text .t")
    assert spans.count() == len(live["values"]) == 6
    titles = spans.evaluate_all("els => els.map(el => el.title)")
    for title, v in zip(titles, live["values"]):
        assert first_number(title) == pytest.approx(v, rel=1e-3, abs=1e-6)
    assert "unit=L1.resid_pre%3A3" in page.url  # the URL is shareable
    fits_width(page)
    page.watch.check()


def test_live_text_past_the_limit_says_so(page):
    page.goto(page.site + "/live?unit=L1.resid_pre:3")
    ready(page)
    page.fill("textarea[name=text]", " ".join(["w1"] * 600))
    page.click(".live-form button[type=submit]")
    box = page.wait_for_selector(".error-box")
    assert "600 tokens" in box.text_content() and "512" in box.text_content()
    page.watch.check(console=False)  # the 413 itself is logged as a failed resource


def test_markup_in_the_corpus_and_the_input_stays_inert(page):
    found = api(page, "/api/find?token=" + quote(SCRIPT))
    # a unit whose shaded contexts hold the markup token
    unit = next(u["unit"] for u in found["units"]
                if any(SCRIPT in e["context"]["tokens"] for e in api(page, "/api/unit/" + u["unit"])["top"]
                       if "context" in e))
    for path in ["/find?token=" + quote(SCRIPT), "/unit/" + unit]:
        page.goto(page.site + path)
        ready(page)
        assert page.get_by_text(SCRIPT, exact=True).count() >= 1  # shown as characters
        assert page.evaluate("document.scripts.length") == 1  # only our module
        assert page.evaluate("document.querySelectorAll('main img, main iframe, main script').length") == 0
    assert page.locator(".ctx .t", has_text=SCRIPT).count() >= 1
    text = f"w1 {SCRIPT} w2 {INJECTIONS[1]} w3"
    page.goto(page.site + "/live?" + "unit=L0.mlp_post:1&text=" + quote(text))
    ready(page)
    page.wait_for_selector(".live-text .t")
    spans = page.locator(".live-text .t").evaluate_all("els => els.map(el => el.textContent)")
    assert spans == ["w1", SCRIPT, "w2", INJECTIONS[1], "w3"]
    assert page.evaluate("document.querySelectorAll('main img, main script').length") == 0
    page.watch.check()


def test_a_bad_unit_is_a_page_that_says_why(page):
    resp = page.goto(page.site + "/unit/L9.resid_pre:1")
    assert resp.status == 404
    assert "not in this atlas" in page.locator(".error-message").text_content()
    assert "Traceback" not in page.content()
    page.watch.check(console=False)


def test_optimise_and_context_panels_run_jobs(page):
    page.goto(page.site + "/unit/L1.resid_pre:3")
    ready(page)
    form = page.locator("form.job-form").nth(1)  # context first, then optimise
    form.locator("input[name=steps]").fill("4")
    form.locator("input[name=seeds]").fill("2")
    form.locator("button[type=submit]").click()
    page.wait_for_selector("text=done in", timeout=60_000)
    rows = page.locator(".job-out").nth(1).locator("tbody tr")
    assert rows.count() == 2
    exact = [float(v) for v in rows.evaluate_all("rs => rs.map(r => r.children[1].textContent)")]
    jobs = api(page, "/api/job/ascend-1")  # the first job of this server
    assert jobs["state"] == "done"
    for shown, run in zip(exact, jobs["result"]["runs"]):
        assert shown == pytest.approx(run["hard_value"], rel=1e-3, abs=1e-4)
    ctx = page.locator("form.job-form").nth(0)
    ctx.locator("input[name=examples]").fill("3")
    ctx.locator("button[type=submit]").click()
    ctx_rows = page.locator(".job-out").nth(0).locator("tbody tr")
    ctx_rows.nth(2).wait_for(timeout=60_000)
    assert ctx_rows.count() == 3
    first = api(page, "/api/job/context-2")["result"]["examples"][0]
    assert ctx_rows.nth(0).locator("td").nth(1).text_content().strip() == str(first["k50"] if first["k50"] is not None else "–")
    fits_width(page)
    page.watch.check()


# ---- derived sites (docs/DIRECTIONS.md) ----------------------------------------------------------
@pytest.fixture(scope="module")
def derived_site(tmp_path_factory):
    atlas_dir, model_dir = build_viewer_atlas(tmp_path_factory.mktemp("viewer-derived"), directions=4)
    server, url = start_server(atlas_dir, model_dir)
    yield url
    server.shutdown()
    server.server_close()


def test_a_direction_unit_page_and_the_home_page(browser, derived_site):
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
    pg = context.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        pg.goto(derived_site + "/unit/dirs:2")
        ready(pg)
        page_json = json.loads(pg.request.get(derived_site + "/api/unit/dirs:2").text())
        near = page_json["derived"]["nearest_neurons"]
        section = pg.locator("section", has=pg.locator("h2", has_text="Direction"))
        assert section.count() == 1
        text = section.text_content()
        assert "Dot product with one of 4 directions" in text and "L1.resid_pre" in text
        assert f"{page_json['derived']['density'] * 100:.1f}%" in text
        rows = section.locator("table tbody tr")
        assert rows.count() == len(near) == 8
        first = rows.first.locator("a")  # a link where the neuron's site is in the atlas
        assert rows.first.text_content().startswith(near[0]["unit"])
        assert first.count() == (1 if near[0]["in_atlas"] else 0)
        fits_width(pg)
        pg.goto(derived_site + "/")
        ready(pg)
        overview = json.loads(pg.request.get(derived_site + "/api/overview").text())
        assert "dirs" in [c["site"] for c in overview["cells"]]
        assert pg.locator("svg.heatmap a.cell").count() == len(overview["cells"])
        assert not errors, errors
    finally:
        context.close()
