"""`maxact serve DIR`: the viewer over HTTP, standard library only.

Every page is a small HTML shell from ``templates/`` whose script (``static/``) fetches the page's
JSON twin and draws it with DOM text nodes and inline SVG; nothing comes from the network. All
responses carry a strict Content-Security-Policy; static files are served by exact name only; an
error is a plain message (an HTML page or ``{"error": ...}``), never a traceback.

Under load (docs/VIEWER.md, "Under load"): the kernel queues ``backlog`` connections; a connection
holds one of at most ``workers`` threads only while a request is read and answered, and waits idle
in one selector thread, closed after ``idle_timeout_s`` (``web/connections.py``); every read of a
request times out; JSON answers are kept (``web/cache.py``); every malformed request gets a 4xx.
"""

from __future__ import annotations

import contextlib
import errno
import html
import ipaddress
import json
import math
import re
import socket
import sys
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from importlib import resources
from string import Template
from urllib.parse import parse_qs, unquote

from maxact.config import VIEWER, ViewerDefaults
from maxact.errors import MaxactError
from maxact.web.app import HTTPError, Viewer
from maxact.web.cache import ResponseCache
from maxact.web.connections import ConnectionPool

SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; "
                                "img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}
JSON_TYPE = "application/json; charset=utf-8"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_HOST_NAME = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?")
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: int() would also take "+5", " 5", "5_0" and "５"


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


def host_name(value: str) -> str:
    """An ``--allow-host`` value as a Host header carries it (lower case, IPv6 in brackets);
    MaxactError for anything else (a scheme, a port, a path)."""
    text = value.strip().lower()
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        if _HOST_NAME.fullmatch(text):
            return text
        raise MaxactError(f"--allow-host {value!r} is not a host name or IP address; give the name alone "
                          f"(no scheme, port or path), e.g. --allow-host {socket.gethostname().lower()}") from None
    return f"[{ip.compressed}]" if ip.version == 6 else ip.compressed


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the viewer on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Response:
    def __init__(self, status: int, body: bytes, content_type: str, headers: dict | None = None):
        self.status, self.body, self.content_type = status, body, content_type
        self.headers = headers or {}


class ViewerHTTPServer(HTTPServer):
    """Accepts on the main thread; ``connections`` serves and watches what it accepted."""

    allow_reuse_address = True

    def __init__(self, address, viewer: Viewer, quiet: bool = True, allow_hosts: tuple[str, ...] = (),
                 limits: ViewerDefaults = VIEWER):
        self.viewer = viewer
        self.quiet = quiet
        self.limits = limits
        self.request_queue_size = limits.backlog  # listen(2)'s backlog, read by server_activate
        self.static = _package_files("static")
        templates = _package_files("templates")
        self.page_template = Template(templates["page.html"].decode("utf-8"))
        self.error_template = Template(templates["error.html"].decode("utf-8"))
        m = viewer.atlas.manifest  # the header every page and error page shares
        self.header = Template(templates["header.html"].decode("utf-8")).substitute(
            atlas=html.escape(f"{m.model.name} · {m.corpus.name}"))
        self.json_cache = ResponseCache(limits.cache_bytes)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.loopback = is_loopback(address[0])
        port = self.server_address[1]
        names = LOOPBACK_NAMES + tuple(host_name(h) for h in allow_hosts)
        # what a browser sends: "name:port", and the bare name when the port is HTTP's default
        self.allowed_hosts = frozenset([f"{n}:{port}" for n in names] + (list(names) if port == 80 else []))
        self.connections = ConnectionPool(limits.workers, limits.idle_timeout_s)

    def process_request(self, request, client_address):
        self.connections.add(Handler(request, client_address, self))

    def get_request(self):
        try:
            return super().get_request()
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE):  # out of file descriptors: free idle ones, do not spin
                self.connections.shed_idle(16)
                time.sleep(0.05)
            raise

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], OSError):
            return  # the client went away (or reset) while its connection was being set up
        super().handle_error(request, client_address)

    def server_close(self):
        super().server_close()
        self.connections.close()


POST_PATHS = ("/api/live", "/api/ascend", "/api/context", "/api/concept/probe", "/api/job/<id>/cancel")


def _allow(path: str) -> str:
    """The Allow header of a 405: the methods ``path`` takes."""
    posts = path in POST_PATHS[:-1] or (path.startswith("/api/job/") and path.endswith("/cancel"))
    return "POST" if posts else "GET, HEAD"


class Handler(BaseHTTPRequestHandler):
    server: ViewerHTTPServer
    server_version = "maxact-viewer"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms stall

    def __init__(self, request, client_address, server: ViewerHTTPServer):
        # not the base's __init__, which would serve the connection to its end on one thread: the
        # pool calls serve_ready each time bytes arrive, and watches the connection in between
        self.request, self.client_address, self.server = request, client_address, server
        self.timeout = server.limits.request_timeout_s  # every read and write of the socket
        self.unread_body = 0  # bytes of a refused body still on their way
        self.setup()

    # ---- the connection, for the pool ----------------------------------------------------------
    def fileno(self) -> int:
        return self.connection.fileno()

    def serve_ready(self) -> bool:
        """Answer the request that has arrived (and any pipelined after it); True: keep it open."""
        while True:
            self.close_connection = True
            self.handle_one_request()
            if self.close_connection:
                return False
            if not self._input_buffered():
                return True

    def _input_buffered(self) -> bool:
        """Whether the next request already sits in the read buffer, where the selector cannot see it."""
        self.connection.settimeout(0.0)
        try:
            return bool(self.rfile.peek(1))
        finally:
            self.connection.settimeout(self.timeout)

    def close(self) -> None:
        self.finish()
        with contextlib.suppress(OSError):  # the client may have gone already
            self.connection.shutdown(socket.SHUT_WR)
        self.connection.close()

    # ---- plumbing ---------------------------------------------------------------------------
    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        if not self.server.quiet:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def send_error(self, code, message=None, explain=None):
        """The stdlib's own refusals (bad request line, 414, 431, a method without do_<METHOD>)
        in our format."""
        self.close_connection = True
        path = getattr(self, "path", "") or ""
        headers = {}
        if code == HTTPStatus.NOT_IMPLEMENTED:  # the stdlib's answer to an unknown method
            code, headers["Allow"] = HTTPStatus.METHOD_NOT_ALLOWED, _allow(path)
            message = f"method {self.command!r} is not allowed here; this path takes {headers['Allow']}"
        try:
            text = message or HTTPStatus(code).phrase
        except ValueError:
            text = message or "error"
        resp = self._error(code, text, path.startswith("/api/"))
        resp.headers.update(headers)
        self._send(resp, head=getattr(self, "command", "") == "HEAD")

    def handle_expect_100(self):
        """A body we would refuse is refused before the client sends it."""
        if self.command == "POST":
            try:
                self._body_length()
            except HTTPError as e:
                self.close_connection = True
                self.unread_body = 0  # the client waits for our word before sending it
                self._send(self._error(e.status, e.message, self.path.startswith("/api/")))
                return False
        return super().handle_expect_100()

    def do_GET(self):
        self._handle("GET")

    def do_HEAD(self):
        self._handle("HEAD")

    def do_POST(self):
        self.close_connection = True  # an unread or refused body must not be taken for a request
        self._handle("POST")

    def _handle(self, method: str) -> None:
        target = self.path.split("#", 1)[0]
        path, _, query = target.partition("?")
        api = path.startswith("/api/")
        if method != "POST" and ("Content-Length" in self.headers or "Transfer-Encoding" in self.headers):
            self.close_connection = True  # a body we do not read must not be taken for the next request
        try:
            self._check_target_and_host()
            resp = self._route(method, path, target, parse_qs(query, keep_blank_values=True))
        except HTTPError as e:
            resp = self._error(e.status, e.message, api)
            if e.status == HTTPStatus.METHOD_NOT_ALLOWED:
                resp.headers["Allow"] = _allow(path)
        except TimeoutError:
            self.close_connection = True
            resp = self._error(408, f"the request body did not arrive within {self.timeout:g} s", api)
        except ConnectionError:
            raise  # the client is gone: nothing to answer, no traceback (the pool closes it)
        except MaxactError as e:  # a problem with the atlas itself (e.g. a file gone since start)
            resp = self._error(500, str(e), api)
        except Exception as e:  # noqa: BLE001 - the user gets a message, the terminal the traceback
            traceback.print_exc(file=sys.stderr)
            resp = self._error(500, f"internal error ({type(e).__name__}); the server's terminal has the details", api)
        self._send(resp, head=method == "HEAD")
        if self.unread_body:
            self._discard_unread_body()

    def _check_target_and_host(self) -> None:
        close_after = self.close_connection
        self.close_connection = True  # a refused request ends the connection
        if not self.path.startswith("/"):  # absolute form (GET http://evil/) or asterisk form
            raise HTTPError(400, "send the path alone in the request line (GET /api/overview), not a full URL")
        hosts = self.headers.get_all("Host") or []
        if len(hosts) != 1:
            raise HTTPError(400, f"the request carries {len(hosts)} Host headers; send exactly one")
        if hosts[0].strip().lower() not in self.server.allowed_hosts:
            # a page elsewhere that rebinds its DNS name to this machine must not read the atlas
            raise HTTPError(400, "unexpected Host header: open the viewer at the URL `maxact serve` printed")
        self.close_connection = close_after

    def _send(self, resp: Response, head: bool = False) -> None:
        if self.request_version == "HTTP/0.9":  # a request line of one or two words: answer with a status line anyway
            self.request_version = "HTTP/1.0"
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        for k, v in {**SECURITY_HEADERS, **resp.headers}.items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(resp.body)

    def _discard_unread_body(self) -> None:
        """After refusing a body: half-close, then read and drop what the client still sends (at
        most ``drain_bytes``, for at most ``drain_s``, never kept), so that a client still sending
        reads our answer rather than a connection reset."""
        limits = self.server.limits
        left, self.unread_body = min(self.unread_body, limits.drain_bytes), 0
        deadline = time.monotonic() + limits.drain_s
        with contextlib.suppress(OSError):  # a timeout or a reset: the client is done
            self.connection.shutdown(socket.SHUT_WR)
            while left > 0 and (remaining := deadline - time.monotonic()) > 0:
                self.connection.settimeout(remaining)
                chunk = self.rfile.read1(min(left, 65536))
                if not chunk:
                    break
                left -= len(chunk)

    def _error(self, status: int, message: str, api: bool) -> Response:
        if api:
            return Response(status, json_bytes({"error": message}), JSON_TYPE, {"Cache-Control": "no-store"})
        try:
            title = f"{status} {HTTPStatus(status).phrase}"
        except ValueError:
            title = str(status)
        body = self.server.error_template.substitute(
            title=html.escape(title), message=html.escape(message), status=status, header=self.server.header)
        return Response(status, body.encode("utf-8"), CONTENT_TYPES[".html"], {"Cache-Control": "no-store"})

    # ---- routes -----------------------------------------------------------------------------
    def _route(self, method: str, path: str, target: str, query: dict) -> Response:
        v = self.server.viewer
        if method == "POST":
            if path == "/api/live":
                return self._json(v.live(*self._live_body()))
            if path == "/api/ascend":
                return self._json(v.start_ascend(self._json_object_body()), status=202)
            if path == "/api/context":
                return self._json(v.start_context(self._json_object_body()), status=202)
            if path == "/api/concept/probe":
                return self._json(v.start_concept_probe(self._json_object_body()), status=202)
            if path.startswith("/api/job/") and path.endswith("/cancel"):
                return self._json(v.cancel_job(unquote(path[len("/api/job/"):-len("/cancel")])))
            raise HTTPError(405, f"{path} does not take POST; only {', '.join(POST_PATHS)} do")
        if path == "/":
            return self._page("home", "Overview")
        if path.startswith("/static/"):
            return self._static(unquote(path[len("/static/"):]))
        if path == "/search":
            target_url = v.search(_arg(query, "q"))["url"]
            return Response(303, b"", "text/plain; charset=utf-8", {"Location": target_url})
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
        if path == "/concept":
            return self._page("concept", "Concepts")
        if path == "/api/overview":
            return self._cached(target, v.overview)
        if path.startswith("/api/unit/"):
            return self._cached(target, lambda: v.unit(unquote(path[len("/api/unit/"):])))
        if path == "/api/find":
            token, limit, site = _arg(query, "token"), _int(query, "limit", 20), _arg(query, "site") or None
            return self._cached(target, lambda: v.find(token, limit, site))
        if path.startswith("/api/site/"):
            name, page, per_page = unquote(path[len("/api/site/"):]), _int(query, "page", 1), _int(query, "per_page", 50)
            return self._cached(target, lambda: v.site(name, page, per_page))
        if path == "/api/concept":
            tokens, site, top = query.get("token", []), _arg(query, "site") or None, _int(query, "top", 50)
            return self._cached(target, lambda: v.concept(tokens, site, top))
        if path == "/api/search":
            return self._json(v.search(_arg(query, "q")))
        if path == "/api/live":
            raise HTTPError(405, "POST JSON {\"text\": ..., \"unit\": ...} to /api/live")
        if path.startswith("/api/job/"):
            return self._json(v.job(unquote(path[len("/api/job/"):])))
        if path in ("/api/ascend", "/api/context"):
            raise HTTPError(405, f"POST a JSON object {{\"unit\": ...}} to {path}")
        if path == "/api/concept/probe":
            raise HTTPError(405, "POST a JSON object {\"token\": [...], \"site\": ..., \"tokens\": N} to /api/concept/probe")
        raise HTTPError(404, f"there is no page {path!r} here; start from the overview at /")

    def _body_length(self) -> int:
        """The declared body length of a POST: 411 or 400 when missing or not one whole number,
        413 (nothing read) when over ``max_body``."""
        if "Transfer-Encoding" in self.headers:
            raise HTTPError(411, "send the body with a Content-Length (no Transfer-Encoding)")
        values = {v.strip() for v in self.headers.get_all("Content-Length") or []}
        if not values:
            raise HTTPError(411, "the request needs a Content-Length")
        raw = values.pop()
        if values or not _DIGITS.fullmatch(raw):
            raise HTTPError(400, f"Content-Length must be one whole number of bytes, got {raw[:40]!r}")
        n = int(raw) if len(raw) <= 18 else 10**18
        limit = self.server.limits.max_body
        if n > limit:
            self.unread_body = n
            raise HTTPError(413, f"the request is {n} bytes, over the limit of {limit}; live text takes "
                                 f"at most 512 tokens: shorten the text")
        return n

    def _live_body(self) -> tuple:
        body = self._json_object_body()
        text, unit = body.get("text"), body.get("unit")
        for name, value in (("text", text), ("unit", unit)):
            if isinstance(value, str) and not _is_unicode(value):
                raise HTTPError(400, f"the {name} holds a lone surrogate (an escape such as \\ud800 that "
                                     f"is half of a character): send valid Unicode")
        return text, unit

    def _json_object_body(self) -> dict:
        """The POST body as a JSON object (415, 400, 411, 413 otherwise)."""
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise HTTPError(415, "send the request as JSON (Content-Type: application/json)")
        n = self._body_length()
        data = self.rfile.read(n)  # TimeoutError when the client sends less than it declared
        if len(data) < n:
            raise HTTPError(400, f"the body ended after {len(data)} of the {n} bytes declared")
        try:
            body = json.loads(data.decode("utf-8"))
        except ValueError:  # not UTF-8, not JSON, or a number of more digits than Python converts
            raise HTTPError(400, "the request body is not valid JSON") from None
        except RecursionError:
            raise HTTPError(400, "the request body is not valid JSON: it is nested too deeply") from None
        if not isinstance(body, dict):
            raise HTTPError(400, "send a JSON object such as {\"text\": ..., \"unit\": ...}")
        return body

    def _json(self, obj, status: int = 200) -> Response:
        return Response(status, json_bytes(obj), JSON_TYPE, {"Cache-Control": "no-store"})

    def _cached(self, target: str, render) -> Response:
        """The JSON answer of a GET, rendered once per request target (the atlas does not change)."""
        cache = self.server.json_cache
        body = cache.get(target)
        if body is None:
            body = json_bytes(render())
            cache.put(target, body)
        return Response(200, body, JSON_TYPE, {"Cache-Control": "no-store"})

    def _page(self, page: str, title: str) -> Response:
        body = self.server.page_template.substitute(
            title=html.escape(f"{title} · maxact"), page=page, header=self.server.header)
        return Response(200, body.encode("utf-8"), CONTENT_TYPES[".html"], {"Cache-Control": "no-store"})

    def _static(self, name: str) -> Response:
        data = self.server.static.get(name)  # exact names only: no path is ever joined
        ext = name[name.rfind("."):] if "." in name else ""
        if data is None or ext not in CONTENT_TYPES:
            raise HTTPError(404, "no such file")
        return Response(200, data, CONTENT_TYPES[ext], {"Cache-Control": "no-cache"})


def _is_unicode(text: str) -> bool:
    """False for a string holding a lone surrogate (JSON's "\\ud800"), which no UTF-8 can carry."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _arg(query: dict, name: str) -> str:
    return query.get(name, [""])[0]


def _int(query: dict, name: str, default: int) -> int:
    raw = _arg(query, name)
    if raw == "":
        return default
    if not re.fullmatch(r"-?[0-9]{1,18}", raw):
        raise HTTPError(400, f"{name} must be a whole number, got {raw[:40]!r}")
    return int(raw)


def make_server(atlas_dir, host: str = VIEWER.host, port: int = 0, model=None, quiet: bool = True,
                warm: bool = True, allow_hosts: tuple[str, ...] = (),
                limits: ViewerDefaults = VIEWER) -> tuple[ViewerHTTPServer, str]:
    """Open the atlas (MaxactError if missing or corrupt) and bind; returns (server, url).

    ``model``: the model live text runs (a name for `load_model`, or a loaded model); default the
    atlas's own. ``port=0`` picks a free port. ``allow_hosts``: Host names accepted besides this
    machine's own (required when ``host`` is not a loopback address). Call
    ``server.serve_forever()`` to serve, ``server.shutdown()`` and ``server.server_close()`` to stop."""
    names = tuple(host_name(h) for h in allow_hosts)
    if not is_loopback(host) and not names:
        raise MaxactError(
            f"--host {host or '0.0.0.0'} listens beyond this machine: name the Host names its clients "
            f"will use with --allow-host NAME (repeatable), e.g. --allow-host {socket.gethostname().lower()}; "
            f"any other Host is refused")
    viewer = Viewer(atlas_dir, model)
    if warm:
        viewer.warm()
    try:
        server = ViewerHTTPServer((host, port), viewer, quiet=quiet, allow_hosts=names, limits=limits)
    except OSError as e:
        raise MaxactError(f"cannot listen on {host}:{port} ({e.strerror or e}); try another --port, or -p 0") from None
    bound_port = server.server_address[1]
    try:
        unspecified = ipaddress.ip_address(host or "0.0.0.0").is_unspecified
    except ValueError:
        unspecified = False
    shown = ("[::1]" if ":" in host else "127.0.0.1") if unspecified else f"[{host}]" if ":" in host else host
    return server, f"http://{shown}:{bound_port}/"


def serve(atlas_dir, host: str = VIEWER.host, port: int = VIEWER.port, model: str | None = None,
          allow_hosts: tuple[str, ...] = ()) -> None:
    """`maxact serve`: print the URL, serve until Ctrl-C."""
    server, url = make_server(atlas_dir, host, port, model, quiet=False, allow_hosts=allow_hosts)
    m = server.viewer.atlas.manifest
    print(f"maxact viewer: {m.n_units} units of {m.model.name} over {m.corpus.name}", flush=True)
    if not server.loopback:
        bound_port = server.server_address[1]
        print(f"warning: listening on {host or '0.0.0.0'}, beyond this machine: anyone who can reach port "
              f"{bound_port} can read this atlas and run its model; only Host "
              f"{', '.join(sorted(host_name(h) for h in allow_hosts))} (and this machine's own names) "
              f"is answered", file=sys.stderr, flush=True)
    print(f"serving on {url}  (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nstopped", flush=True)
    finally:
        server.server_close()
