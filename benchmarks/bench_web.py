"""Viewer latency over real HTTP: unit pages and token searches, served in-process.

    python benchmarks/bench_web.py ATLAS_DIR [--units 200] [--tokens 20] [--seed 0]

Starts `maxact serve`'s server on a free port of 127.0.0.1 (in a thread of this process, after its
start-up warm-up), then times, on one keep-alive connection, GET /api/unit/<unit> for random units
and GET /api/find?token=<token> for random tracked tokens, from request to the last byte of the
body. Targets: unit JSON p95 <= 50 ms, token search <= 300 ms. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
from urllib.parse import quote, urlsplit

import numpy as np

UNIT_P95_MS = 50.0
FIND_MAX_MS = 300.0


def timed_get(conn: http.client.HTTPConnection, path: str) -> float:
    t0 = time.perf_counter()
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    ms = (time.perf_counter() - t0) * 1000
    if resp.status != 200:
        raise SystemExit(f"GET {path} answered {resp.status}: {body[:200]!r}")
    return ms


def figures(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"n": len(a), "p50_ms": round(float(np.percentile(a, 50)), 2),
            "p95_ms": round(float(np.percentile(a, 95)), 2), "max_ms": round(float(a.max()), 2)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("atlas", help="atlas directory")
    p.add_argument("--units", type=int, default=200, help="random unit pages to request")
    p.add_argument("--tokens", type=int, default=20, help="random tracked tokens to search")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from maxact.store import format as F
    from maxact.web.server import make_server

    t0 = time.perf_counter()
    server, url = make_server(args.atlas, "127.0.0.1", 0)
    start_s = time.perf_counter() - t0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    atlas = server.viewer.atlas
    rng = np.random.default_rng(args.seed)
    rows = rng.choice(atlas.n_units, size=min(args.units, atlas.n_units), replace=False)
    units = [str(atlas.unit_at(int(r))) for r in rows]
    tracked = np.asarray(atlas[F.TUNING_IDS])
    counts = np.asarray(atlas[F.TUNING_COUNTS])[:-1]
    eligible = tracked[counts >= atlas.manifest.min_tuning_count]
    tokens = [atlas.token_text(int(t)) for t in rng.choice(eligible, size=min(args.tokens, len(eligible)), replace=False)]

    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    try:
        unit_ms = [timed_get(conn, "/api/unit/" + quote(x, safe=":")) for x in units]
        find_ms = [timed_get(conn, "/api/find?token=" + quote(t, safe="")) for t in tokens]
    finally:
        conn.close()
        server.shutdown()
        server.server_close()

    uf, ff = figures(unit_ms), figures(find_ms)
    m = atlas.manifest
    print(f"atlas {args.atlas}: {m.n_units} units, {m.corpus.n_tokens} tokens; server ready in {start_s:.2f} s")
    print(f"{'request':<28} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}  target")
    print(f"{'GET /api/unit/<unit>':<28} {uf['n']:>4} {uf['p50_ms']:>8.1f} {uf['p95_ms']:>8.1f} {uf['max_ms']:>8.1f}"
          f"  p95 <= {UNIT_P95_MS:.0f}")
    print(f"{'GET /api/find?token=<tok>':<28} {ff['n']:>4} {ff['p50_ms']:>8.1f} {ff['p95_ms']:>8.1f} {ff['max_ms']:>8.1f}"
          f"  max <= {FIND_MAX_MS:.0f}")
    ok = uf["p95_ms"] <= UNIT_P95_MS and ff["max_ms"] <= FIND_MAX_MS
    print(json.dumps({"atlas": str(args.atlas), "n_units": m.n_units, "n_tokens": m.corpus.n_tokens,
                      "start_s": round(start_s, 2), "unit": uf, "find": ff,
                      "targets": {"unit_p95_ms": UNIT_P95_MS, "find_max_ms": FIND_MAX_MS}, "ok": ok}))


if __name__ == "__main__":
    main()
