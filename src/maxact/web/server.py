"""`maxact serve DIR`: the viewer over HTTP, standard library only (``ThreadingHTTPServer``).

Every page is a small HTML shell from ``templates/`` whose script (``static/``) fetches the page's
JSON twin and draws it with DOM text nodes and inline SVG; nothing comes from the network. All
responses carry a strict Content-Security-Policy; static files are served by exact name only; an
error is a plain message (an HTML page or ``{"error": ...}``), never a traceback.
"""

from __future__ import annotations

import html
import ipaddress
import json
import math
import socket
import sys
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from string import Template
from urllib.parse import parse_qs, unquote, urlsplit

from maxact.errors import MaxactError
from maxact.web.app import HTTPError, Viewer

SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; "
                                "img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}
MAX_BODY = 256 * 1024  # bytes of a POST body
PAGES = {"home": "Overview", "unit": "Unit", "find": "Token search", "site": "Site", "live": "Live text"}


def _package_files(folder: str) -> dict[str, bytes]:
    """Every plain file of web/<folder>, by name: the only names the server will ever serve."""
    root = resources.files("maxact.web") / folder
    return {f.name: f.read_bytes() for f in root.iterdir() if f.is_file() and not f.name.startswith(".")}


def _finite(obj):
    """A copy with NaN and infinities replaced by None (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def json_bytes(obj) -> bytes:
    try:
        text = json.dumps(obj, ensure_ascii=False, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(obj), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


class Response:
    def __init__(self, status: int, body: bytes, content_type: str, headers: dict | None = None):
        self.status, self.body, self.content_type = status, body, content_type
        self.headers = headers or {}


class ViewerHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, viewer: Viewer, quiet: bool = True):
        self.viewer = viewer
        self.quiet = quiet
        self.static = _package_files("static")
        templates = _package_files("templates")
        self.page_template = Template(templates["page.html"].decode("utf-8"))
        self.error_template = Template(templates["error.html"].decode("utf-8"))
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        host = address[0]
        try:
            self.loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            self.loopback = host == "localhost"

    def allowed_hosts(self) -> set[str]:
        port = self.server_address[1]
        return {f"{h}:{port}" for h in ("127.0.0.1", "localhost", "[::1]")}


class Handler(BaseHTTPRequestHandler):
    server: ViewerHTTPServer
    server_version = "maxact-viewer"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms stall

    # ---- plumbing ---------------------------------------------------------------------------
    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        if not self.server.quiet:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def send_error(self, code, message=None, explain=None):
        """The stdlib's own refusals (bad request line, 414, unsupported method) in our format."""
        self.close_connection = True
        path = getattr(self, "path", "") or ""
        try:
            text = message or HTTPStatus(code).phrase
        except ValueError:
            text = message or "error"
        self._send(self._error(code, text, path.startswith("/api/")), head=getattr(self, "command", "") == "HEAD")

    def do_GET(self):
        self._handle("GET")

    def do_HEAD(self):
        self._handle("HEAD")

    def do_POST(self):
        self.close_connection = True  # an unread or refused body must not be taken for a request
        self._handle("POST")

    def _handle(self, method: str) -> None:
        split = urlsplit(self.path)
        api = split.path.startswith("/api/")
        try:
            if self.server.loopback and self.headers.get("Host") not in self.server.allowed_hosts():
                # a page elsewhere that rebinds its DNS name to 127.0.0.1 must not read the atlas
                raise HTTPError(400, "unexpected Host header: open the viewer at the URL `maxact serve` printed")
            resp = self._route(method, split.path, parse_qs(split.query, keep_blank_values=True))
        except HTTPError as e:
            resp = self._error(e.status, e.message, api)
        except MaxactError as e:  # a problem with the atlas itself (e.g. a file gone since start)
            resp = self._error(500, str(e), api)
        except Exception as e:  # noqa: BLE001 - the user gets a message, the terminal the traceback
            traceback.print_exc(file=sys.stderr)
            resp = self._error(500, f"internal error ({type(e).__name__}); the server's terminal has the details", api)
        self._send(resp, head=method == "HEAD")

    def _send(self, resp: Response, head: bool = False) -> None:
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        for k, v in {**SECURITY_HEADERS, **resp.headers}.items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(resp.body)

    def _error(self, status: int, message: str, api: bool) -> Response:
        if api:
            return Response(status, json_bytes({"error": message}), "application/json; charset=utf-8",
                            {"Cache-Control": "no-store"})
        try:
            title = f"{status} {HTTPStatus(status).phrase}"
        except ValueError:
            title = str(status)
        body = self.server.error_template.substitute(
            title=html.escape(title), message=html.escape(message), status=status)
        return Response(status, body.encode("utf-8"), CONTENT_TYPES[".html"], {"Cache-Control": "no-store"})

    # ---- routes -----------------------------------------------------------------------------
    def _route(self, method: str, path: str, query: dict) -> Response:
        v = self.server.viewer
        if method == "POST":
            if path == "/api/live":
                return self._json(v.live(*self._live_body()))
            raise HTTPError(405, f"{path} does not take POST; only /api/live does")
        if path == "/":
            return self._page("home", "Overview")
        if path.startswith("/static/"):
            return self._static(unquote(path[len("/static/"):]))
        if path == "/search":
            target = v.search(_arg(query, "q"))
            return Response(303, b"", "text/plain; charset=utf-8", {"Location": target["url"]})
        if path.startswith("/unit/"):
            unit = v.check_unit(unquote(path[len("/unit/"):]))
            return self._page("unit", str(unit))
        if path == "/find":
            token = _arg(query, "token")
            v.check_token(token)
            return self._page("find", f"Units that prefer {token!r}")
        if path.startswith("/site/"):
            name = unquote(path[len("/site/"):])
            v.site_exists(name)
            return self._page("site", name)
        if path == "/live":
            return self._page("live", "Live text")
        if path == "/api/overview":
            return self._json(v.overview())
        if path.startswith("/api/unit/"):
            return self._json(v.unit(unquote(path[len("/api/unit/"):])))
        if path == "/api/find":
            site = _arg(query, "site") or None
            return self._json(v.find(_arg(query, "token"), _int(query, "limit", 20), site))
        if path.startswith("/api/site/"):
            return self._json(v.site(unquote(path[len("/api/site/"):]), _int(query, "page", 1),
                                     _int(query, "per_page", 50)))
        if path == "/api/search":
            return self._json(v.search(_arg(query, "q")))
        if path == "/api/live":
            raise HTTPError(405, "POST JSON {\"text\": ..., \"unit\": ...} to /api/live")
        raise HTTPError(404, f"there is no page {path!r} here; start from the overview at /")

    def _live_body(self) -> tuple:
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise HTTPError(415, "send the live request as JSON (Content-Type: application/json)")
        try:
            n = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise HTTPError(411, "the request needs a Content-Length") from None
        if n > MAX_BODY:
            if n <= 16 * MAX_BODY:  # drain it, so the client reads the answer, not a reset
                self.rfile.read(n)
            raise HTTPError(413, f"the request is {n} bytes; live text takes at most 512 tokens: shorten the text")
        try:
            body = json.loads(self.rfile.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise HTTPError(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise HTTPError(400, "send a JSON object {\"text\": ..., \"unit\": ...}")
        return body.get("text"), body.get("unit")

    def _json(self, obj) -> Response:
        return Response(200, json_bytes(obj), "application/json; charset=utf-8", {"Cache-Control": "no-store"})

    def _page(self, page: str, title: str) -> Response:
        m = self.server.viewer.atlas.manifest
        body = self.server.page_template.substitute(
            title=html.escape(f"{title} · maxact"), page=page,
            atlas=html.escape(f"{m['model']['name']} · {m['corpus']['name']}"))
        return Response(200, body.encode("utf-8"), CONTENT_TYPES[".html"], {"Cache-Control": "no-store"})

    def _static(self, name: str) -> Response:
        data = self.server.static.get(name)  # exact names only: no path is ever joined
        ext = name[name.rfind("."):] if "." in name else ""
        if data is None or ext not in CONTENT_TYPES:
            raise HTTPError(404, "no such file")
        return Response(200, data, CONTENT_TYPES[ext], {"Cache-Control": "no-cache"})


def _arg(query: dict, name: str) -> str:
    return query.get(name, [""])[0]


def _int(query: dict, name: str, default: int) -> int:
    raw = _arg(query, name)
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise HTTPError(400, f"{name} must be a whole number, got {raw!r}") from None


def make_server(atlas_dir, host: str = "127.0.0.1", port: int = 0, model=None,
                quiet: bool = True, warm: bool = True) -> tuple[ViewerHTTPServer, str]:
    """Open the atlas (MaxactError if missing or corrupt) and bind; returns (server, url).

    ``model``: the model live text runs (a name for `load_model`, or a loaded model); default the
    atlas's own. ``port=0`` picks a free port. Call ``server.serve_forever()`` to serve."""
    viewer = Viewer(atlas_dir, model)
    if warm:
        viewer.warm()
    try:
        server = ViewerHTTPServer((host, port), viewer, quiet=quiet)
    except OSError as e:
        raise MaxactError(f"cannot listen on {host}:{port} ({e.strerror or e}); try another --port, or -p 0") from None
    bound_port = server.server_address[1]
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else f"[{host}]" if ":" in host else host
    return server, f"http://{shown}:{bound_port}/"


def serve(atlas_dir, host: str = "127.0.0.1", port: int = 8765, model: str | None = None) -> None:
    """`maxact serve`: print the URL, serve until Ctrl-C."""
    server, url = make_server(atlas_dir, host, port, model, quiet=False)
    m = server.viewer.atlas.manifest
    print(f"maxact viewer: {m['n_units']} units of {m['model']['name']} over {m['corpus']['name']}", flush=True)
    print(f"serving on {url}  (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nstopped", flush=True)
    finally:
        server.server_close()
