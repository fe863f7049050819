"""A real HTTP server on 127.0.0.1 for fetch tests: each path answers with a configurable behaviour.

Used by tests/test_fetch.py and tests/test_ingest.py (and mirrored in bench/bench_ingest.py).
"""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Responder = Callable[[BaseHTTPRequestHandler], None]


class _Listener(ThreadingHTTPServer):
    # The default backlog of 5 drops concurrent connects, costing a 1 s SYN retry each.
    request_queue_size = 128


class FeedServer:
    """Serves `routes[path]`; records every request's path and headers."""

    def __init__(self) -> None:
        self.routes: dict[str, Responder] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.statuses: Counter = Counter()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server.lock:
                    server.requests.append((self.path, dict(self.headers.items())))
                route = server.routes.get(self.path.split("?")[0])
                try:
                    if route is None:
                        self.send_error(404, "no such feed")
                    else:
                        route(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up, as it should

            def send_response(self, code: int, message: str | None = None) -> None:
                with server.lock:
                    server.statuses[code] += 1
                super().send_response(code, message)

            def log_message(self, *args) -> None:
                pass

        self.httpd = _Listener(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def hits(self, path: str) -> int:
        with self.lock:
            return sum(1 for p, _ in self.requests if p == path)

    def headers_of(self, path: str) -> list[dict[str, str]]:
        with self.lock:
            return [h for p, h in self.requests if p == path]

    def start(self) -> FeedServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def static(body: bytes, content_type: str = "application/rss+xml", etag: str | None = None,
           last_modified: str | None = None, gzip_it: bool = False) -> Responder:
    """A feed that honours If-None-Match / If-Modified-Since with a 304."""
    etag = etag or '"' + hashlib.sha1(body).hexdigest()[:16] + '"'
    last_modified = last_modified or email.utils.formatdate(1_700_000_000, usegmt=True)
    payload = gzip.compress(body) if gzip_it else body

    def respond(h: BaseHTTPRequestHandler) -> None:
        inm, ims = h.headers.get("If-None-Match"), h.headers.get("If-Modified-Since")
        if (inm and inm == etag) or (not inm and ims and ims == last_modified):
            h.send_response(304)
            h.send_header("ETag", etag)
            h.end_headers()
            return
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        h.send_header("ETag", etag)
        h.send_header("Last-Modified", last_modified)
        if gzip_it:
            h.send_header("Content-Encoding", "gzip")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)

    return respond


def status(code: int, headers: dict[str, str] | None = None, body: bytes = b"") -> Responder:
    def respond(h: BaseHTTPRequestHandler) -> None:
        h.send_response(code)
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    return respond


def redirect(location: str, code: int = 302) -> Responder:
    return status(code, {"Location": location})


def trickle(interval: float, in_headers: bool = False) -> Responder:
    """One byte every `interval` seconds, forever (in the body, or while still sending headers)."""

    def respond(h: BaseHTTPRequestHandler) -> None:
        h.wfile.write(b"HTTP/1.0 200 OK\r\n")
        if not in_headers:
            h.wfile.write(b"Content-Type: application/rss+xml\r\n\r\n<rss>")
        h.wfile.flush()
        for _ in range(600):
            time.sleep(interval)
            h.wfile.write(b"X-Slow: a\r\n" if in_headers else b" ")
            h.wfile.flush()

    return respond


def gzip_bomb(decoded_size: int) -> Responder:
    """A small gzip body that inflates to `decoded_size` bytes of spaces inside an RSS document."""
    payload = gzip.compress(b"<rss>" + b" " * decoded_size + b"</rss>", compresslevel=9)

    def respond(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/rss+xml")
        h.send_header("Content-Encoding", "gzip")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)

    return respond
