"""The viewer under load and abuse, over real sockets to 127.0.0.1 (docs/VIEWER.md, "Under load").

    python benchmarks/bench_web_load.py ATLAS_DIR [--clients 32] [--cold 20] [--warm 100]
                                                  [--burst 200] [--idle 1500] [--seed 0]

Starts `maxact serve ATLAS_DIR -p 0` in a subprocess (its own process and GIL, its log in a
temporary file) and measures, from this process (asyncio, one thread):

- burst: ``--burst`` connections opened at once, then each sends one GET /api/unit/<unit> (a unit
  not requested before): how many are answered 200 within 60 s;
- latency: ``--clients`` keep-alive clients in a closed loop, GET /api/unit/<unit>, from request to
  the last byte of the body. *cold*: each client asks ``--cold`` units no one asked before (the
  server renders each); *warm*: ``--warm`` requests each for units already asked (answered from the
  cache of rendered JSON). p50/p95/max and requests per second; and, for scale, one client alone
  asking 50 first-time units;
- idle: ``--idle`` connections that never send a byte: the server's thread count while they are
  open, the latency of one request meanwhile, and how many the server closes after its idle
  timeout (and one kept-alive connection after a request);
- abandoned: clients that send a request and reset the connection without reading the answer;
- malformed: one raw request per kind of abuse and the status each gets (all 4xx, never 5xx);
- the count of tracebacks the server wrote to its terminal (0).

Targets: burst fully answered; warm p95 <= 50 ms; idle connections closed, threads bounded; every
malformed request a 4xx; no traceback. Prints a table, then one JSON line. Everything is bounded in
count and time; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

UNIT_P95_MS = 50.0
SERVE_START_S = 120.0
BURST_S = 60.0
SERIAL = 50  # first-time units asked by one client alone


# ---- the server ------------------------------------------------------------------------------
class Server:
    """`maxact serve ATLAS -p 0` in a subprocess; its stderr (request log) goes to a file."""

    def __init__(self, atlas: str, log: Path):
        self.log = log
        self._err = log.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "maxact.cli", "serve", atlas, "-p", "0"],
                                     stdout=subprocess.PIPE, stderr=self._err, text=True)
        deadline = time.monotonic() + SERVE_START_S
        self.port = 0
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise SystemExit(f"the server exited before serving: {log.read_text()[-2000:]}")
            m = re.search(r"serving on http://127\.0\.0\.1:(\d+)/", line)
            if m:
                self.port = int(m.group(1))
                break
        if not self.port:
            raise SystemExit("the server did not print its URL in time")
        self.host = f"127.0.0.1:{self.port}"

    def threads(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1)) / 1024

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._err.close()
        return rc

    def tracebacks(self) -> int:
        return self.log.read_text(errors="replace").count("Traceback")


# ---- HTTP over asyncio streams ---------------------------------------------------------------
async def read_response(reader: asyncio.StreamReader) -> tuple[int, int]:
    """(status, body length) of one response."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I)
    n = int(m.group(1)) if m else 0
    await reader.readexactly(n)
    return status, n


def get_bytes(path: str, host: str, close: bool = False) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n").encode()


async def timed_get(reader, writer, path: str, host: str) -> float:
    t0 = time.perf_counter()
    writer.write(get_bytes(path, host))
    status, _ = await read_response(reader)
    ms = (time.perf_counter() - t0) * 1000
    if status != 200:
        raise SystemExit(f"GET {path} answered {status}")
    return ms


async def burst(port: int, host: str, paths: list[str]) -> dict:
    """Open every connection first, then send every request at once; count the 200s."""
    t0 = time.perf_counter()
    conns = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in paths),
                                 return_exceptions=True)
    connected = [c for c in conns if not isinstance(c, BaseException)]

    async def one(conn, path):
        reader, writer = conn
        writer.write(get_bytes(path, host, close=True))
        try:
            status, _ = await read_response(reader)
        finally:
            writer.close()
        return status

    results = []
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(one(c, p) for c, p in zip(connected, paths)), return_exceptions=True), BURST_S)
    except asyncio.TimeoutError:
        pass
    answered = sum(1 for r in results if r == 200)
    return {"connections": len(paths), "connected": len(connected), "answered_200": answered,
            "seconds": round(time.perf_counter() - t0, 2)}


async def closed_loop(port: int, host: str, per_client: list[list[str]]) -> dict:
    """Each client on its own keep-alive connection requests its paths one after another."""
    async def client(paths):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            return [await timed_get(reader, writer, p, host) for p in paths]
        finally:
            writer.close()

    t0 = time.perf_counter()
    ms = [x for xs in await asyncio.gather(*(client(p) for p in per_client)) for x in xs]
    wall = time.perf_counter() - t0
    a = np.asarray(ms)
    return {"clients": len(per_client), "requests": len(a), "p50_ms": round(float(np.percentile(a, 50)), 2),
            "p95_ms": round(float(np.percentile(a, 95)), 2), "max_ms": round(float(a.max()), 2),
            "per_s": round(len(a) / wall, 1)}


async def idle(server: Server, n: int, probe_path: str) -> dict:
    """n connections that never send; one request meanwhile; who closes them, and when."""
    conns = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", server.port) for _ in range(n)),
                                 return_exceptions=True)
    open_conns = [c for c in conns if not isinstance(c, BaseException)]
    t_open = time.perf_counter()
    await asyncio.sleep(0.5)
    threads = server.threads()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    probe_ms = await timed_get(reader, writer, probe_path, server.host)  # kept alive after the request

    async def until_closed(r, since):
        try:
            data = await asyncio.wait_for(r.read(1), 30.0)
        except (asyncio.TimeoutError, ConnectionError):
            return None
        return time.perf_counter() - since if data == b"" else None

    waits = [until_closed(r, t_open) for r, _ in open_conns]
    after = await asyncio.gather(until_closed(reader, time.perf_counter()), *waits)
    for _, w in open_conns:
        w.close()
    writer.close()
    closed = [t for t in after[1:] if t is not None]
    return {"idle_connections": n, "opened": len(open_conns), "server_threads": threads,
            "request_meanwhile_ms": round(probe_ms, 2), "closed_by_server": len(closed),
            "closed_after_s": [round(min(closed), 2), round(max(closed), 2)] if closed else None,
            "kept_alive_closed_after_s": round(after[0], 2) if after[0] is not None else None}


def abandoned(port: int, host: str, paths: list[str]) -> int:
    """Send a request and reset the connection at once (SO_LINGER 0): the server's writes fail."""
    for p in paths:
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(get_bytes(p, host))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    return len(paths)


# ---- malformed requests ----------------------------------------------------------------------
def raw_status(port: int, data: bytes, wait_s: float = 20.0) -> tuple[str, float]:
    """The status code the server answers to these bytes ("none": closed without an answer)."""
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(wait_s)
        try:
            s.sendall(data)
            head = s.recv(65536)
        except (ConnectionError, TimeoutError) as e:
            return type(e).__name__, round(time.perf_counter() - t0, 2)
    m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    return (m.group(1).decode() if m else "none"), round(time.perf_counter() - t0, 2)


def malformed_cases(host: str, unit: str) -> dict[str, bytes]:
    h = f"Host: {host}\r\n"

    def post(body: bytes, extra: str = "", length: str | None = None) -> bytes:
        length = str(len(body)) if length is None else length
        return (f"POST /api/live HTTP/1.1\r\n{h}Content-Type: application/json\r\nContent-Length: {length}\r\n"
                f"{extra}\r\n").encode() + body

    ok_body = json.dumps({"text": "w", "unit": unit}).encode()
    cases = {
        "content_length_over_body": post(b"{}", length="100"),
        "content_length_negative": post(ok_body, length="-1"),
        "content_length_not_a_number": post(ok_body, length="abc"),
        "content_length_full_width_digits": post(ok_body, length="\uff11\uff10"),
        "content_length_twice": post(ok_body, extra="Content-Length: 3\r\n"),
        "body_over_256kB": post(b"x" * (1 << 20), length=str(200 * 1 << 20)),
        "body_over_256kB_expect_100": post(b"", length=str(200 * 1 << 20), extra="Expect: 100-continue\r\n"),
        "chunked_body": (f"POST /api/live HTTP/1.1\r\n{h}Content-Type: application/json\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n").encode(),
        "json_lone_surrogate": post(b'{"text": "\\ud800", "unit": "' + unit.encode() + b'"}'),
        "json_nested_100k": post(b"[" * 100_000),
        "json_not_utf8": post(b'{"text": "\xff\xfe"}'),
        "json_5000_digit_number": post(b'{"text": ' + b"9" * 5000 + b"}"),
        "json_not_json": post(b"{not json"),
        "wrong_content_type": post(ok_body).replace(b"application/json", b"text/plain"),
        "host_duplicated": f"GET /api/overview HTTP/1.1\r\n{h}{h}\r\n".encode(),
        "host_foreign": b"GET /api/overview HTTP/1.1\r\nHost: evil.example\r\n\r\n",
        "host_missing": b"GET /api/overview HTTP/1.0\r\n\r\n",
        "absolute_form": f"GET http://evil.example/api/overview HTTP/1.1\r\n{h}\r\n".encode(),
        "asterisk_form": f"OPTIONS * HTTP/1.1\r\n{h}\r\n".encode(),
        "request_line_garbage": b"GARBAGE\r\n\r\n",
        "request_line_70kB": f"GET /{'a' * 70_000} HTTP/1.1\r\n{h}\r\n".encode(),
        "header_line_70kB": f"GET / HTTP/1.1\r\n{h}X-Big: {'a' * 70_000}\r\n\r\n".encode(),
        "headers_101": f"GET / HTTP/1.1\r\n{h}".encode() + b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"\r\n",
        "query_int_not_a_number": f"GET /api/site/x?page=%EF%BC%91 HTTP/1.1\r\n{h}\r\n".encode(),
    }
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "BREW"):
        cases[f"method_{method}"] = f"{method} /api/overview HTTP/1.1\r\n{h}Content-Length: 0\r\n\r\n".encode()
    return cases


# ---- main ------------------------------------------------------------------------------------
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("atlas", help="atlas directory")
    p.add_argument("--clients", type=int, default=32, help="concurrent keep-alive clients")
    p.add_argument("--cold", type=int, default=20, help="first-time units per client")
    p.add_argument("--warm", type=int, default=100, help="repeat requests per client")
    p.add_argument("--burst", type=int, default=200, help="connections opened at once")
    p.add_argument("--idle", type=int, default=1500, help="idle connections held open")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.idle + args.burst + 256
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))

    from maxact.store.reader import Atlas

    atlas = Atlas(args.atlas)
    rng = np.random.default_rng(args.seed)
    n_cold = args.clients * args.cold
    rows = rng.choice(atlas.n_units, size=min(args.burst + n_cold + SERIAL + 64, atlas.n_units), replace=False)
    paths = ["/api/unit/" + str(atlas.unit_at(int(r))) for r in rows]
    burst_paths, paths = paths[:args.burst], paths[args.burst:]
    cold_paths, serial_paths, spare = paths[:n_cold], paths[n_cold:n_cold + SERIAL], paths[n_cold + SERIAL:]

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        server = Server(args.atlas, Path(tmp) / "serve.log")
        start_s = time.perf_counter() - t0
        try:
            threads_at_start = server.threads()
            out = {"atlas": str(args.atlas), "n_units": atlas.n_units, "cpus": os.cpu_count(),
                   "load_average": [round(x, 2) for x in os.getloadavg()], "server_start_s": round(start_s, 2),
                   "server_threads_at_start": threads_at_start}
            out["burst"] = asyncio.run(burst(server.port, server.host, burst_paths))
            out["server_threads_after_burst"] = server.threads()
            out["unit_cold_1_client"] = asyncio.run(closed_loop(server.port, server.host, [serial_paths]))
            cold = [cold_paths[i::args.clients] for i in range(args.clients)]
            out["unit_cold"] = asyncio.run(closed_loop(server.port, server.host, cold))
            warm = [list(rng.choice(cold_paths, size=args.warm)) for _ in range(args.clients)]
            out["unit_warm"] = asyncio.run(closed_loop(server.port, server.host, warm))
            out["idle"] = asyncio.run(idle(server, args.idle, cold_paths[0]))
            out["abandoned_requests"] = abandoned(server.port, server.host, spare)
            rss_before = server.rss_mb()
            unit = cold_paths[0].removeprefix("/api/unit/")
            codes = {name: raw_status(server.port, data) for name, data in malformed_cases(server.host, unit).items()}
            out["malformed"] = {k: {"status": c, "seconds": s} for k, (c, s) in codes.items()}
            out["server_rss_mb"] = {"before_malformed": round(rss_before, 1), "after": round(server.rss_mb(), 1)}
            out["server_threads_at_end"] = server.threads()
        finally:
            rc = server.stop()
        out["server_exit"] = rc
        out["server_tracebacks"] = server.tracebacks()

    report(out, args)


def report(out: dict, args) -> None:
    b, c, w, i = out["burst"], out["unit_cold"], out["unit_warm"], out["idle"]
    statuses = [m["status"] for m in out["malformed"].values()]
    all_4xx = all(s.isdigit() and s.startswith("4") for s in statuses)
    print(f"atlas {out['atlas']}: {out['n_units']} units; {out['cpus']} CPUs, load average {out['load_average']}; "
          f"server ready in {out['server_start_s']:.1f} s with {out['server_threads_at_start']} threads")
    print(f"burst of {b['connections']} connections: {b['answered_200']} answered 200 in {b['seconds']} s")
    print(f"{'GET /api/unit/<unit>':<24} {'clients':>7} {'n':>5} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} {'req/s':>7}")
    for name, f in (("cold, one client alone", out["unit_cold_1_client"]), ("cold (first request)", c),
                    ("warm (repeat)", w)):
        print(f"{name:<24} {f['clients']:>7} {f['requests']:>5} {f['p50_ms']:>7.1f} {f['p95_ms']:>7.1f} "
              f"{f['max_ms']:>7.1f} {f['per_s']:>7.0f}")
    print(f"{i['opened']} idle connections: server threads {i['server_threads']}, a request meanwhile "
          f"{i['request_meanwhile_ms']} ms; {i['closed_by_server']} closed by the server after "
          f"{i['closed_after_s']} s; a kept-alive connection closed after {i['kept_alive_closed_after_s']} s")
    for name, m in out["malformed"].items():
        print(f"  {name:<36} {m['status']:>4}  {m['seconds']:>6.2f} s")
    print(f"server RSS {out['server_rss_mb']} MB; {out['abandoned_requests']} abandoned requests; "
          f"{out['server_tracebacks']} tracebacks on the server's terminal; exit status {out['server_exit']}")
    out["targets"] = {"burst_answered": b["answered_200"] == b["connections"],
                      "warm_p95_ms": UNIT_P95_MS, "warm_p95_ok": w["p95_ms"] <= UNIT_P95_MS,
                      "idle_closed": i["closed_by_server"] == i["opened"],
                      "threads_bounded": i["server_threads"] < 100, "malformed_all_4xx": all_4xx,
                      "no_tracebacks": out["server_tracebacks"] == 0}
    out["ok"] = all(v for k, v in out["targets"].items() if k != "warm_p95_ms")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
