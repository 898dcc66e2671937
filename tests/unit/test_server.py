"""The viewer's server under load and abuse: bursts, idle and stalled connections, malformed and
oversized requests, the Host check, binding beyond loopback, clients that vanish.

Raw sockets to 127.0.0.1 only, bounded in count and time. The atlas is the tiny one of
tests/e2e/viewer_atlas.py; the servers run in threads of this process (short timeouts), except
the load test and the CLI test, which start `maxact serve` in a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner
from e2e.viewer_atlas import build_viewer_atlas

from maxact.cli import main
from maxact.config import VIEWER, ViewerDefaults
from maxact.errors import MaxactError
from maxact.web.server import make_server

UNIT = "L1.resid_pre:3"
SHORT = ViewerDefaults(idle_timeout_s=0.5, request_timeout_s=0.5, drain_s=0.5)


@pytest.fixture(scope="module")
def atlas_dir(tmp_path_factory):
    return build_viewer_atlas(tmp_path_factory.mktemp("viewer-load"))[0]


def start(atlas_dir, limits=SHORT, **kw):
    server, url = make_server(atlas_dir, port=0, limits=limits, **kw)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def server(atlas_dir):
    s = start(atlas_dir)
    yield s
    s.shutdown()
    s.server_close()


def host(server) -> str:
    return f"127.0.0.1:{server.server_address[1]}"


def get(path: str, host_header: str, close: bool = True) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\n" + ("Connection: close\r\n" if close else "")
            + "\r\n").encode()


def post(host_header: str, body: bytes, length: str | None = None, extra: str = "") -> bytes:
    length = str(len(body)) if length is None else length
    return (f"POST /api/live HTTP/1.1\r\nHost: {host_header}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n{extra}\r\n").encode() + body


def read_all(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def exchange(server, data: bytes, wait_s: float = 10.0) -> tuple[int, dict, bytes, float]:
    """Send raw bytes, read until the server closes: (status, headers, body, seconds)."""
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", server.server_address[1])) as s:
        s.settimeout(wait_s)
        s.sendall(data)
        raw = read_all(s)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split()[1]), headers, body, time.perf_counter() - t0


# ---- connections ---------------------------------------------------------------------------
def test_a_burst_of_200_connections_is_fully_answered(server):
    """The listen backlog was 5: 132 of 200 simultaneous connections went unanswered."""
    port, h = server.server_address[1], host(server)
    socks = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(200)]
    try:
        for i, s in enumerate(socks):
            s.sendall(get(f"/api/unit/L{i % 2}.mlp_post:{i % 64}", h))
        answers = [read_all(s) for s in socks]
    finally:
        for s in socks:
            s.close()
    assert sum(a.startswith(b"HTTP/1.1 200 ") for a in answers) == 200
    assert server.request_queue_size >= 200


def test_idle_connections_hold_no_thread_and_are_closed(server):
    """1,500 idle connections made 1,504 threads, and none was ever closed."""
    port = server.server_address[1]
    before = threading.active_count()
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(300)]
    try:
        time.sleep(0.2)
        assert threading.active_count() - before <= SHORT.workers
        status, _, _, seconds = exchange(server, get("/api/overview", host(server)))
        assert status == 200 and seconds < 5  # the idle ones do not block the others
        t0 = time.perf_counter()
        assert all(read_all(s) == b"" for s in socks)  # closed by the server, not by our 10 s timeout
        assert time.perf_counter() - t0 < 5
    finally:
        for s in socks:
            s.close()


def test_a_kept_alive_connection_is_closed_after_the_idle_timeout(server):
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10) as s:
        s.sendall(get("/api/overview", host(server), close=False))
        t0 = time.perf_counter()
        reply = read_all(s)
        waited = time.perf_counter() - t0
    assert reply.startswith(b"HTTP/1.1 200 ") and SHORT.idle_timeout_s * 0.8 < waited < 5


def test_pipelined_requests_are_all_answered(server):
    h = host(server)
    data = get("/api/overview", h, close=False) + get(f"/api/unit/{UNIT}", h, close=False) + get("/", h)
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10) as s:
        s.sendall(data)
        raw = read_all(s)
    assert raw.count(b"HTTP/1.1 200 OK") == 3


def test_a_body_shorter_than_its_content_length_times_out(server):
    """It hung forever."""
    status, headers, body, seconds = exchange(server, post(host(server), b"{}", length="100"))
    assert status == 408 and seconds < 5 and headers["connection"] == "close"
    assert "did not arrive" in json.loads(body)["error"]


def test_a_stalled_request_line_is_closed(server):
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10) as s:
        s.sendall(b"GET /api/over")
        t0 = time.perf_counter()
        assert read_all(s) == b"" and time.perf_counter() - t0 < 5


def test_clients_that_vanish_leave_no_traceback(server, capfd):
    """115 BrokenPipe tracebacks reached the terminal."""
    port, h = server.server_address[1], host(server)
    for i in range(60):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(get("/api/overview" if i % 2 else f"/api/unit/L0.mlp_post:{i}", h, close=False))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # reset
        s.close()
    time.sleep(0.5)
    assert exchange(server, get("/api/overview", h))[0] == 200
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipe" not in err and "ConnectionReset" not in err


def test_repeat_requests_are_answered_from_the_cache(server, monkeypatch):
    calls = []
    render = server.viewer.unit
    monkeypatch.setattr(server.viewer, "unit", lambda u: calls.append(u) or render(u))
    server.json_cache.clear()
    first = exchange(server, get(f"/api/unit/{UNIT}", host(server)))
    second = exchange(server, get(f"/api/unit/{UNIT}", host(server)))
    assert calls == [UNIT] and first[0] == second[0] == 200 and first[2] == second[2]
    assert exchange(server, get("/api/unit/L9.mlp_post:1", host(server)))[0] == 404  # errors are not kept
    assert exchange(server, get("/api/unit/L9.mlp_post:1", host(server)))[0] == 404


# ---- malformed requests: 4xx, never 5xx --------------------------------------------------------
@pytest.mark.parametrize("length", ["-1", "abc", "\uff11\uff10", "+5", "5_0", "0x10", "1e3", ""])
def test_content_length_that_is_not_a_whole_number_is_400(server, length):
    """-1 bypassed the body limit: the server read 200 MB."""
    status, _, body, _ = exchange(server, post(host(server), b'{"text": "w1"}', length=length))
    assert status == 400 and "Content-Length" in json.loads(body)["error"]


def test_two_content_lengths_are_400(server):
    status, _, _, _ = exchange(server, post(host(server), b"{}", extra="Content-Length: 5\r\n"))
    assert status == 400


@pytest.mark.parametrize("declared,sent", [(200 * 2**20, 64 * 1024), (10**30, 0), (VIEWER.max_body + 1, 0)])
def test_a_body_over_the_limit_is_413_at_once(server, declared, sent):
    status, headers, body, seconds = exchange(server, post(host(server), b"x" * sent, length=str(declared)))
    assert status == 413 and seconds < 5 and headers["connection"] == "close"
    assert str(VIEWER.max_body) in json.loads(body)["error"]


def test_a_body_over_the_limit_is_refused_before_100_continue(server):
    data = post(host(server), b"", length=str(200 * 2**20), extra="Expect: 100-continue\r\n")
    status, _, _, seconds = exchange(server, data)
    assert status == 413 and seconds < 5


def test_chunked_bodies_are_refused(server):
    data = (f"POST /api/live HTTP/1.1\r\nHost: {host(server)}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n").encode()
    assert exchange(server, data)[0] == 411


@pytest.mark.parametrize("body,words", [
    (b'{"text": "\\ud800", "unit": "L1.resid_pre:3"}', "lone surrogate"),
    (b'{"text": "w1", "unit": "L1.resid_pre:3\\udfff"}', "lone surrogate"),
    (b"[" * 100_000, "nested too deeply"),
    (b'{"text": "w1", "n": ' + b"9" * 5000 + b"}", "not valid JSON"),
    (b'{"text": "\xff\xfe"}', "not valid JSON"),
])
def test_bad_json_is_400_never_500(server, body, words):
    """A lone surrogate and 100k nested brackets answered 500."""
    status, _, reply, _ = exchange(server, post(host(server), body))
    assert status == 400 and words in json.loads(reply)["error"]


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "BREW"])
def test_unknown_methods_are_405_with_allow(server, method):
    """They answered 501; docs/VIEWER.md promises 405."""
    data = f"{method} /api/overview HTTP/1.1\r\nHost: {host(server)}\r\nContent-Length: 0\r\n\r\n".encode()
    status, headers, body, _ = exchange(server, data)
    assert status == 405 and headers["allow"] == "GET, HEAD"
    assert headers["content-security-policy"].startswith("default-src 'self'") and b"Traceback" not in body
    data = f"{method} /api/live HTTP/1.1\r\nHost: {host(server)}\r\n\r\n".encode()
    assert exchange(server, data)[1]["allow"] == "POST"


def test_known_methods_on_the_wrong_path_are_405_with_allow(server):
    status, headers, _, _ = exchange(server, get("/api/live", host(server)))
    assert status == 405 and headers["allow"] == "POST"
    status, headers, _, _ = exchange(server, post(host(server), b"{}").replace(b"/api/live", b"/api/overview"))
    assert status == 405 and headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize("data", [
    b"GARBAGE\r\n\r\n", b"GET /\r\n\r\n", b"GET / HTTP/1.1 extra\r\n\r\n",
    b"GET /%s HTTP/1.1\r\n\r\n" % (b"a" * 70_000),
    b"GET / HTTP/1.1\r\nX-Big: %s\r\n\r\n" % (b"a" * 70_000),
    b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"\r\n",
])
def test_malformed_request_lines_and_headers_are_4xx(server, data):
    status = exchange(server, data)[0]
    assert 400 <= status < 500


@pytest.mark.parametrize("path", ["/api/find?token=w1&limit=%EF%BC%91", "/api/site/L0.mlp_post?page=+1",
                                  "/api/site/L0.mlp_post?per_page=" + "9" * 5000])
def test_query_numbers_are_ascii_whole_numbers(server, path):
    assert exchange(server, get(path, host(server)))[0] == 400


# ---- the Host check ------------------------------------------------------------------------------
def test_a_duplicated_host_header_is_refused(server):
    """The second Host header was never looked at."""
    h = host(server)
    status, _, body, _ = exchange(server, f"GET /api/overview HTTP/1.1\r\nHost: {h}\r\nHost: evil.example\r\n\r\n".encode())
    assert status == 400 and "Host" in json.loads(body)["error"]
    assert exchange(server, f"GET /api/overview HTTP/1.1\r\nHost: {h}\r\nHost: {h}\r\n\r\n".encode())[0] == 400


@pytest.mark.parametrize("target", ["http://evil.example/api/overview", "http://{h}/api/overview", "*",
                                    "evil.example:80"])
def test_an_absolute_form_request_line_is_refused(server, target):
    """GET http://evil/ HTTP/1.1 passed the Host check."""
    h = host(server)
    status = exchange(server, f"GET {target.format(h=h)} HTTP/1.1\r\nHost: {h}\r\n\r\n".encode())[0]
    assert status == 400


def test_a_missing_host_is_refused(server):
    assert exchange(server, b"GET /api/overview HTTP/1.0\r\n\r\n")[0] == 400


def test_beyond_loopback_needs_an_allow_list(atlas_dir):
    """--host 0.0.0.0 turned the Host check off without a word."""
    with pytest.raises(MaxactError, match="--allow-host"):
        make_server(atlas_dir, host="0.0.0.0", port=0)
    for bad in ("http://viewer.lan", "viewer.lan:80", "viewer.lan/x", "", "a b"):
        with pytest.raises(MaxactError, match="--allow-host"):
            make_server(atlas_dir, host="0.0.0.0", port=0, allow_hosts=(bad,))
    server = start(atlas_dir, host="0.0.0.0", allow_hosts=("Viewer.LAN", "10.0.0.7"))
    try:
        port = server.server_address[1]
        assert not server.loopback
        for ok in (f"viewer.lan:{port}", f"VIEWER.lan:{port}", f"10.0.0.7:{port}", f"127.0.0.1:{port}"):
            assert exchange(server, get("/api/overview", ok))[0] == 200, ok
        for refused in ("evil.example", f"evil.example:{port}", f"viewer.lan:{port + 1}", "viewer.lan"):
            assert exchange(server, get("/api/overview", refused))[0] == 400, refused
    finally:
        server.shutdown()
        server.server_close()


def test_cli_beyond_loopback_without_allow_host_is_one_error_line(atlas_dir):
    result = CliRunner().invoke(main, ["serve", str(atlas_dir), "--host", "0.0.0.0", "-p", "0"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "--allow-host" in lines[0]
    assert CliRunner().invoke(main, ["serve", str(atlas_dir), "-p", "70000"]).exit_code == 2


def _interruptible() -> None:
    """In the child before exec: SIGINT back to its default, so Ctrl-C (SIGINT) stops `maxact serve`
    even when the tests themselves run as a background job of a non-interactive shell, which starts
    them (and every child) with SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_cli_beyond_loopback_warns_and_keeps_the_host_check(atlas_dir):
    proc = subprocess.Popen([sys.executable, "-m", "maxact.cli", "serve", str(atlas_dir), "--host", "0.0.0.0",
                             "--allow-host", "viewer.lan", "-p", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_interruptible)
    try:
        port = _served_port(proc)
        time.sleep(0.2)
        fake = type("S", (), {"server_address": ("127.0.0.1", port)})
        assert exchange(fake, get("/api/overview", f"viewer.lan:{port}"))[0] == 200
        assert exchange(fake, get("/api/overview", f"evil.example:{port}"))[0] == 400
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert "warning:" in err and "0.0.0.0" in err and "viewer.lan" in err and "Traceback" not in err


def _served_port(proc) -> int:
    for line in proc.stdout:
        m = re.search(r"serving on http://[^:]+:(\d+)/", line)
        if m:
            return int(m.group(1))
    raise AssertionError(f"the server did not start: {proc.stderr.read()}")


# ---- load, served from another process -----------------------------------------------------------
def test_32_concurrent_keep_alive_clients_are_all_answered(atlas_dir, tmp_path):
    """32 concurrent keep-alive clients, each 48 requests: every one answered 200, none stalled
    (the latency figures are the benchmark's, benchmarks/bench_web_load.py, not a timed test)."""
    log = tmp_path / "serve.log"  # one line per request: a pipe nobody reads would fill and stall it
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "maxact.cli", "serve", str(atlas_dir), "-p", "0"],
                                stdout=subprocess.PIPE, stderr=err, text=True, preexec_fn=_interruptible)
    try:
        port = _served_port(proc)
        units = [f"L{b}.{s}:{i}" for b in (0, 1) for s in ("resid_pre", "mlp_post") for i in range(0, 64, 4)]
        asyncio.run(_closed_loop(port, [units]))  # each unit once: rendered and kept
        ms = np.asarray(asyncio.run(_closed_loop(port, [units[c % 4::4] * 3 for c in range(32)])))
        assert len(ms) == 32 * 48
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    assert "Traceback" not in log.read_text()


async def _closed_loop(port: int, per_client: list[list[str]]) -> list[float]:
    """Each client on one keep-alive connection: latencies in ms, in the order they finished."""
    done: list[float] = []

    async def client(units):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for u in units:
            t0 = time.perf_counter()
            writer.write(get(f"/api/unit/{u}", f"127.0.0.1:{port}", close=False))
            head = await reader.readuntil(b"\r\n\r\n")
            n = int(re.search(rb"Content-Length: (\d+)", head).group(1))
            await reader.readexactly(n)
            assert head.startswith(b"HTTP/1.1 200 ")
            done.append((time.perf_counter() - t0) * 1000)
        writer.close()

    await asyncio.wait_for(asyncio.gather(*(client(u) for u in per_client)), 120)
    return done

