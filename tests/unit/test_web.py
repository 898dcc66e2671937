"""The viewer's HTTP layer without a browser: routes and statuses, JSON twins, headers, escaping,
path traversal, errors without tracebacks, live text and its limit.

The atlas is tiny (tests/e2e/viewer_atlas.py): a random Llama over a corpus that carries
``<script>alert(1)</script>`` as one token.
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import quote, urlsplit

import numpy as np
import pytest
from atlas_helpers import one_text, simulate_by_coverage
from click.testing import CliRunner
from e2e.viewer_atlas import INJECTIONS, build_viewer_atlas, start_server

from maxact.analysis.overview import overview, site_units
from maxact.analysis.pages import find_units, unit_page
from maxact.analysis.refstat import simulate
from maxact.cli import main
from maxact.errors import MaxactError
from maxact.store.reader import Atlas
from maxact.web.server import json_bytes, make_server

CSP = "default-src 'self'; script-src 'self'; style-src 'self'"
SCRIPT = INJECTIONS[0]


@pytest.fixture(scope="session")
def web_atlas(tmp_path_factory):
    return build_viewer_atlas(tmp_path_factory.mktemp("viewer"))


@pytest.fixture(scope="session")
def served(web_atlas):
    atlas_dir, model_dir = web_atlas
    server, url = start_server(atlas_dir, model_dir)
    yield server, url
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def atlas(web_atlas):
    return Atlas(web_atlas[0])


def request(url, method, path, body=None, headers=None):
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


@pytest.fixture
def get(served):
    return lambda path, **kw: request(served[1], "GET", path, **kw)


@pytest.fixture
def post_live(served):
    def post(obj, content_type="application/json"):
        body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        return request(served[1], "POST", "/api/live", body, {"Content-Type": content_type})
    return post


# ---- routes --------------------------------------------------------------------------------
@pytest.mark.parametrize("path,ctype", [
    ("/", "text/html"), ("/unit/L1.resid_pre:3", "text/html"), ("/unit/ln_final:0", "text/html"),
    ("/find?token=w1", "text/html"), ("/site/L0.mlp_post", "text/html"), ("/live", "text/html"),
    ("/live?text=w1%20w2&unit=L0.mlp_post:1", "text/html"),
    ("/static/style.css", "text/css"), ("/static/main.js", "text/javascript"), ("/static/unit.js", "text/javascript"),
    ("/static/favicon.svg", "image/svg+xml"),
    ("/api/overview", "application/json"), ("/api/unit/L1.resid_pre:3", "application/json"),
    ("/api/find?token=w1", "application/json"), ("/api/site/L0.mlp_post", "application/json"),
    ("/api/search?q=w1", "application/json"),
])
def test_routes_answer_200(get, path, ctype):
    status, headers, body = get(path)
    assert status == 200, body[:300]
    assert headers["content-type"].startswith(ctype)
    assert int(headers["content-length"]) == len(body)


def test_html_pages_are_shells_with_local_scripts_only(get):
    _, _, body = get("/unit/L1.resid_pre:3")
    text = body.decode()
    assert 'data-page="unit"' in text
    assert '<script type="module" src="/static/main.js">' in text
    assert "http://" not in text and "https://" not in text  # nothing from the network


def test_every_static_file_is_local(served):
    for name, data in served[0].static.items():
        text = data.decode("utf-8", errors="replace")
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", ""), name
        assert "https://" not in text, name
        assert "innerHTML" not in text and "outerHTML" not in text and "insertAdjacentHTML" not in text, name
        assert "document.write" not in text and "eval(" not in text, name


def test_head_has_no_body(served):
    status, headers, body = request(served[1], "HEAD", "/api/overview")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0


# ---- JSON twins ------------------------------------------------------------------------------
def _roundtrip(obj):
    return json.loads(json.dumps(obj, ensure_ascii=False))


@pytest.mark.parametrize("unit", ["L1.resid_pre:3", "L0.mlp_post:17", "ln_final:63"])
def test_unit_json_is_unit_page(get, atlas, unit):
    status, _, body = get("/api/unit/" + unit)
    assert status == 200
    assert json.loads(body) == _roundtrip(unit_page(atlas, unit))


def test_unit_json_accepts_encoded_colon(get, atlas):
    status, _, body = get("/api/unit/L1.resid_pre%3A3")
    assert status == 200 and json.loads(body)["unit"] == "L1.resid_pre:3"


def test_find_json_is_find_units(get, atlas):
    status, _, body = get("/api/find?token=w1")
    assert status == 200
    assert json.loads(body) == _roundtrip(find_units(atlas, "w1"))
    status, _, body = get("/api/find?token=w2&limit=5&site=mlp_post")
    assert json.loads(body) == _roundtrip(find_units(atlas, "w2", limit=5, site="mlp_post"))
    assert all(".mlp_post:" in u["unit"] for u in json.loads(body)["units"])


@pytest.mark.parametrize("kw, words", [
    ({"site": "bogus"}, "site 'bogus' is not in this atlas; its site kinds are resid_pre, "),
    ({"site": "L0.mlp_post"}, "site 'L0.mlp_post' is not in this atlas; its site kinds are "),
    ({"limit": 0}, "limit must be 1 or more, got 0"),
    ({"limit": -5}, "limit must be 1 or more, got -5"),
])
def test_find_units_refuses_a_site_the_atlas_lacks_and_a_limit_below_one(atlas, kw, words):
    with pytest.raises(MaxactError) as e:
        find_units(atlas, "w1", **kw)
    assert words in str(e.value) and "\n" not in str(e.value)
    if "site" in kw:
        assert "mlp_post" in str(e.value)  # every kind the atlas holds is listed


def test_find_json_with_a_site_the_atlas_lacks_is_400(get):
    status, _, body = get("/api/find?token=w1&site=bogus")
    assert status == 400 and "its site kinds are" in json.loads(body)["error"]


def test_find_the_injection_token(get, atlas):
    status, _, body = get("/api/find?token=" + quote(SCRIPT))
    assert status == 200
    found = json.loads(body)
    assert found["token"] == SCRIPT and found == _roundtrip(find_units(atlas, SCRIPT))


def test_overview(get, atlas):
    o = json.loads(get("/api/overview")[2])
    assert o == _roundtrip(overview(atlas))
    assert len(o["cells"]) == len(atlas.sites)
    assert sum(c["n_units"] for c in o["cells"]) == atlas.n_units
    for c in o["cells"]:
        assert 0 <= c["n_selective"] <= c["n_clean"] <= c["n_units"]
        if c["best"]:
            assert c["best"]["unit"].startswith(c["site"] + ":")
    scores = [u["score"] for u in o["top_units"]]
    assert scores == sorted(scores, reverse=True)


def test_overview_and_listings_carry_the_manifest_objects_as_written(atlas):
    """The typed manifest gives back manifest.json's own objects, keys in the same order."""
    raw = json.loads((atlas.path / "manifest.json").read_text())
    o = overview(atlas)
    for key in ("model", "corpus", "reference", "seq", "k", "created", "timing"):
        assert json.dumps(o[key]) == json.dumps(raw[key]), key
    for site in raw["sites"]:
        assert json.dumps(site_units(atlas, site["name"], 1, 1)["info"]) == json.dumps(site)
    page = unit_page(atlas, "ln_final:0")
    assert json.dumps(page["reference"]["geometry"]) == json.dumps(raw["reference"])


def test_site_listing_is_sorted_and_paginated(get, atlas):
    d = json.loads(get("/api/site/L1.mlp_post?page=2&per_page=10")[2])
    assert d == _roundtrip(site_units(atlas, "L1.mlp_post", 2, 10))
    assert d["page"] == 2 and d["per_page"] == 10 and len(d["units"]) == 10
    assert d["pages"] == -(-d["total"] // 10)
    every = site_units(atlas, "L1.mlp_post", 1, 1000)["units"]
    assert [round(u["score"], 3) for u in every] == sorted((round(u["score"], 3) for u in every), reverse=True)
    assert len({u["unit"] for u in every}) == d["total"]
    assert get("/api/site/L1.mlp_post?per_page=0")[0] == 400
    assert get("/api/site/L1.mlp_post?page=x")[0] == 400
    assert get("/api/site/L9.mlp_post")[0] == 404


def test_search_resolves_units_tokens_sites_and_text(get):
    def search(q):
        return json.loads(get("/api/search?q=" + quote(q))[2])
    assert search("L1.resid_pre:3") == {"kind": "unit", "query": "L1.resid_pre:3", "unit": "L1.resid_pre:3",
                                        "url": "/unit/L1.resid_pre:3"}
    assert search("w5")["kind"] == "token" and search("w5")["url"] == "/find?token=w5"
    assert search(SCRIPT)["token"] == SCRIPT
    assert search("L0.mlp_post")["url"] == "/site/L0.mlp_post"
    text = search("hello there, world")
    assert text["kind"] == "text" and text["url"].startswith("/live?text=hello%20there%2C%20world&unit=")
    status, headers, _ = get("/search?q=L1.resid_pre%3A3")
    assert status == 303 and headers["location"] == "/unit/L1.resid_pre:3"
    assert get("/api/search?q=")[0] == 400


@pytest.mark.parametrize("query", ["L2.my-sae2:5", "sae_32k:0", "L0.Resid2:1"])
def test_search_reads_user_named_sites_as_units(served, query):
    """Unit ids name sites with letters, digits, '-' and '_' (a site the atlas lacks then says so)."""
    assert served[0].viewer.search(query)["kind"] == "unit"


# ---- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("path,status,words", [
    ("/unit/L9.resid_pre:1", 404, "not in this atlas"),
    ("/unit/L1.resid_pre:9999", 404, "out of range"),
    ("/unit/bogus", 404, "is not a unit id"),
    ("/unit/L1.nosuch:1", 404, "unknown site"),
    ("/find?token=nosuchword", 404, "not in the vocabulary"),
    ("/find?token=", 400, "give a token"),
    ("/site/L7.resid_pre", 404, "not in this atlas"),
    ("/nosuchpage", 404, "no page"),
])
def test_bad_requests_get_a_plain_page(get, path, status, words):
    code, headers, body = get(path)
    text = body.decode()
    assert code == status
    assert headers["content-type"].startswith("text/html")
    assert words in text and "Traceback" not in text
    assert 'class="error-message"' in text


@pytest.mark.parametrize("path,status,words", [
    ("/api/unit/L9.resid_pre:1", 404, "not in this atlas"),
    ("/api/unit/nonsense", 404, "is not a unit id"),
    ("/api/find?token=nosuchword", 404, "not in the vocabulary"),
    ("/api/find?token=w1&limit=lots", 400, "whole number"),
    ("/api/find?token=w1&limit=0", 400, "limit"),
    ("/api/nothing", 404, "no page"),
    ("/api/live", 405, "POST"),
])
def test_bad_api_requests_get_json_errors(get, path, status, words):
    code, headers, body = get(path)
    assert code == status and headers["content-type"].startswith("application/json")
    err = json.loads(body)
    assert list(err) == ["error"] and words in err["error"]


def test_untracked_token_says_why(get, atlas):
    counts = atlas.token_counts
    tracked = set(np.asarray(atlas["tuning_token_ids.npy"]).tolist())
    rare = next(i for i in range(len(atlas.vocab)) if i not in tracked and atlas.vocab[i].startswith("w"))
    code, _, body = get("/api/find?token=" + quote(atlas.vocab[rare]))
    assert code == 404 and f"occurs {int(counts[rare])} times" in json.loads(body)["error"]


def test_an_internal_error_is_a_message_not_a_traceback(get, served, monkeypatch):
    def boom(unit_text):
        raise RuntimeError("secret internals /etc/passwd")

    monkeypatch.setattr(served[0].viewer, "unit", boom)
    served[0].json_cache.clear()  # rendered answers are kept: this one must be rendered again
    code, _, body = get("/api/unit/L1.resid_pre:3")
    assert code == 500
    msg = json.loads(body)["error"]
    assert "RuntimeError" in msg and "secret" not in msg and "Traceback" not in msg


def test_a_file_gone_bad_after_start_is_a_500_with_the_reason(get, served, monkeypatch):
    def corrupt(unit_text):
        raise MaxactError("/x/top_values.npy is corrupt or truncated; rebuild the atlas")

    monkeypatch.setattr(served[0].viewer, "unit", corrupt)
    served[0].json_cache.clear()
    code, _, body = get("/api/unit/L1.resid_pre:3")
    assert code == 500 and "rebuild the atlas" in json.loads(body)["error"]


@pytest.mark.parametrize("seq,batch,samples,seed", [(32, 4, 200, 0), (16, 8, 100, 3), (100, 2, 50, 1)])
def test_fast_simulation_is_the_reference_simulation(atlas, seq, batch, samples, seed):
    """refstat.simulate (what unit pages use) draws exactly what brute-force coverage draws."""
    n = len(atlas.tokens)
    for name in ("ref_positions.npy", "top_positions.npy"):
        for row in range(0, atlas.n_units, 5):
            pos = np.asarray(atlas[name][row])
            for want, got in zip(simulate_by_coverage(pos, n, seq, batch, samples, seed),
                                 simulate(pos, one_text(n, seq), batch, samples, seed)):
                assert got.dtype == want.dtype and np.array_equal(got, want)
    pos = np.array([n - 1, 3, -1, -1])  # the last token no window covers; empty slots
    for want, got in zip(simulate_by_coverage(pos, n, 32, 4, 30, 0), simulate(pos, one_text(n, 32), 4, 30, 0)):
        assert np.array_equal(got, want)


def test_json_has_no_nan():
    assert json.loads(json_bytes({"a": float("nan"), "b": [float("inf"), 1.5]})) == {"a": None, "b": [None, 1.5]}


# ---- security --------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/", "/api/overview", "/static/style.css", "/unit/bogus", "/api/unit/bogus",
                                  "/static/nothing.js"])
def test_security_headers(get, path):
    _, headers, _ = get(path)
    assert headers["content-security-policy"].startswith(CSP)
    assert headers["x-content-type-options"] == "nosniff"
    assert not any(k.startswith("access-control-") for k in headers)


@pytest.mark.parametrize("path", [
    "/static/../../etc/passwd", "/static/..%2F..%2Fetc%2Fpasswd", "/static/%2e%2e/%2e%2e/etc/passwd",
    "/static/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/static/%252e%252e%252fetc%252fpasswd", "/static//etc/passwd",
    "/static/..%5c..%5cetc%5cpasswd", "/static/%2fetc%2fpasswd", "/static/", "/static/.", "/static/..",
    "/static/style.css/../../../etc/passwd", "/static/style.css%00.js", "/../../etc/passwd", "/etc/passwd",
    "/manifest.json", "/tokens.npy", "/static/manifest.json", "/static/../../manifest.json",
    "/static/..%2f..%2f..%2fweb%2fapp.py", "/static/../app.py", "/static/page.html",
])
def test_no_path_escapes_the_static_files(get, path):
    status, _, body = get(path)
    assert status == 404, path
    assert b"root:" not in body and b"maxact-atlas" not in body and b"import " not in body


def test_markup_from_the_corpus_is_escaped_in_html(get):
    status, _, body = get("/find?token=" + quote(SCRIPT))
    text = body.decode()
    assert status == 200
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    status, _, body = get("/unit/" + quote(SCRIPT))
    assert status == 404 and b"<script>alert" not in body and b"&lt;script&gt;" in body
    status, _, body = get("/nope/" + quote("<img src=x onerror=alert(1)>"))
    assert status == 404 and b"<img" not in body


def test_json_carries_markup_as_plain_strings(get):
    def strings(x):
        if isinstance(x, str):
            yield x
        elif isinstance(x, dict):
            for v in x.values():
                yield from strings(v)
        elif isinstance(x, list):
            for v in x:
                yield from strings(v)

    found = json.loads(get("/api/find?token=" + quote(SCRIPT))[2])
    pages = (json.loads(get("/api/unit/" + u["unit"])[2]) for u in found["units"])
    # the exact characters, for the page to show as text
    assert any(SCRIPT in set(strings(page)) for page in pages)


def test_foreign_host_header_is_refused(get):
    status, _, body = get("/api/overview", headers={"Host": "evil.example:80"})
    assert status == 400 and "Host" in json.loads(body)["error"]
    assert get("/api/overview", headers={"Host": "localhost:1"})[0] == 400


# ---- live text -------------------------------------------------------------------------------
def test_live_matches_the_atlas(post_live, atlas):
    """The activation at an atlas example's position, recomputed on the text of its window up to
    that token, equals the stored value: same tokenization, same site, no BOS."""
    page = unit_page(atlas, "L1.resid_pre:3")
    ex = page["top"][0]
    start = ex["position"] - ex["window_pos"]
    ids = np.asarray(atlas.tokens[start : ex["position"] + 1])
    text = " ".join(atlas.token_text(int(i)) for i in ids)
    status, _, body = post_live({"text": text, "unit": "L1.resid_pre:3"})
    assert status == 200, body
    r = json.loads(body)
    assert r["unit"] == "L1.resid_pre:3" and r["in_atlas"] is True
    assert r["token_ids"] == ids.tolist()
    assert r["tokens"] == [atlas.token_text(int(i)) for i in ids]
    assert len(r["values"]) == len(ids)
    assert r["values"][-1] == pytest.approx(ex["value"], rel=1e-4, abs=1e-5)
    assert r["scale"] == pytest.approx(max(abs(page["top"][0]["value"]), abs(page["bottom"][0]["value"])))


def test_live_takes_units_outside_the_atlas(post_live):
    status, _, body = post_live({"text": "w1 w2 w3", "unit": "L1.attn_q:5"})
    assert status == 200, body
    r = json.loads(body)
    assert r["in_atlas"] is False and len(r["values"]) == 3 and r["scale"] > 0


@pytest.mark.parametrize("obj,status,words", [
    ({"text": " ".join(["w1"] * 513), "unit": "L1.resid_pre:3"}, 413, "513 tokens"),
    ({"text": "w1 " * 20000, "unit": "L1.resid_pre:3"}, 413, "at most 512"),
    ({"text": "", "unit": "L1.resid_pre:3"}, 400, "give some text"),
    ({"text": "w1", "unit": "L1.resid_pre"}, 400, "not a unit id"),
    ({"text": "w1", "unit": "L7.resid_pre:0"}, 400, "out of range"),
    ({"text": "w1", "unit": "L1.resid_pre:100000"}, 400, "out of range"),
    ({"text": "w1"}, 400, "unit id"),
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
])
def test_live_refusals(post_live, obj, status, words):
    code, _, body = post_live(obj)
    assert code == status, body
    assert words in json.loads(body)["error"]


def test_live_accepts_exactly_512_tokens(post_live):
    code, _, body = post_live({"text": " ".join(["w2"] * 512), "unit": "L0.mlp_post:1"})
    assert code == 200 and len(json.loads(body)["values"]) == 512


def test_live_needs_json_content_type(post_live):
    code, _, body = post_live({"text": "w1", "unit": "L1.resid_pre:3"}, content_type="text/plain")
    assert code == 415 and "application/json" in json.loads(body)["error"]


def test_live_refuses_a_huge_body_unread(served):
    status, _, body = request(served[1], "POST", "/api/live", b"x" * (300 * 1024),
                              {"Content-Type": "application/json"})
    assert status == 413


@pytest.mark.parametrize("method", ["PUT", "DELETE", "OPTIONS"])
def test_other_methods_get_our_headers(served, method):
    status, headers, body = request(served[1], method, "/api/overview")
    assert status == 405 and headers["content-security-policy"].startswith(CSP)  # 501 before issue 8
    assert headers["allow"] == "GET, HEAD"
    assert "access-control-allow-origin" not in headers and b"Traceback" not in body


def test_post_elsewhere_is_405(served):
    status, _, _ = request(served[1], "POST", "/api/unit/L1.resid_pre:3", b"{}", {"Content-Type": "application/json"})
    assert status == 405


# ---- start-up ----------------------------------------------------------------------------------
def test_missing_and_corrupt_atlases_fail_at_start(tmp_path, web_atlas):
    with pytest.raises(MaxactError, match="does not exist"):
        make_server(tmp_path / "nope")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(MaxactError, match="corrupt"):
        make_server(bad)


def test_make_server_binds_loopback_on_a_free_port(web_atlas):
    server, url = make_server(web_atlas[0], port=0)
    try:
        assert server.server_address[0] == "127.0.0.1"
        assert url == f"http://127.0.0.1:{server.server_address[1]}/" and server.server_address[1] > 0
    finally:
        server.server_close()


def test_cli_serve_missing_atlas_is_one_error_line(tmp_path):
    result = CliRunner().invoke(main, ["serve", str(tmp_path / "nope"), "-p", "0"])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "does not exist" in lines[0] and "Traceback" not in result.output


def test_cli_serve_help_says_loopback():
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0 and "127.0.0.1" in result.output and "-p" in result.output
