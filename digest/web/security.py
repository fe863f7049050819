"""What every page of the web app shares for safety: headers, CSRF protection, rate limits.

- `SecurityHeadersMiddleware`: a strict CSP (no inline script or style), no framing, no referrer
  (links carry tokens), nosniff; a route may set its own value for any of these headers first.
- `PathGuardMiddleware`: 404 for a path with a NUL byte, before any route (or the file system) sees it.
- `CsrfMiddleware` + `csrf_token(request, action)` + `csrf_ok(request, form)`: signed double-submit
  cookie, bound to the form. The cookie holds a random value; a form carries HMAC(secret, value,
  the path it posts to), so a token works only with this browser's cookie and only for that form
  (a token lifted from /subscribe does not confirm, unsubscribe or save preferences). A cross-site
  page can neither read the cookie nor compute the field. Not used for the RFC 8058 one-click POST.
- `RateLimiter`: an in-memory token bucket per client IP (one process; behind several processes
  each keeps its own buckets).
- `read_form(request)`: the posted form, 413 past MAX_FORM_BYTES (counted as the body streams in):
  every POST handler reads its form with it, the public pages and the admin (sign-in included).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSRF_COOKIE = "digest_csrf"
CSRF_FIELD = "csrf_token"
MAX_FORM_BYTES = 64 * 1024
FORM_TOO_LARGE = f"The form is too large: at most {MAX_FORM_BYTES // 1024} KiB can be sent."

DEFAULT_HEADERS = {
    # 'self' only: no inline script or style anywhere, so injected markup cannot run.
    "content-security-policy": ("default-src 'self'; img-src 'self' data: https:; object-src 'none'; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "permissions-policy": "interest-cohort=()",
}


class SecurityHeadersMiddleware:
    """Adds DEFAULT_HEADERS (or `headers`) to every HTTP response that does not set them itself.

    digest.web.app puts it outside Starlette's error handling, so a 500 carries them too.
    """

    def __init__(self, app: ASGIApp, headers: dict[str, str] | None = None) -> None:
        self.app = app
        self.headers = [(k.encode(), v.encode()) for k, v in (headers or DEFAULT_HEADERS).items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.headers if k not in present]
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class PathGuardMiddleware:
    """404 for any path holding a NUL byte: no route has one, and the file system would raise on it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "\x00" in scope.get("path", ""):
            await PlainTextResponse("Not Found", status_code=404)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class CsrfMiddleware:
    """Gives every visitor a random CSRF cookie and keeps its value in request.state for the form tokens."""

    def __init__(self, app: ASGIApp, keys: Sequence[bytes], secure: bool) -> None:
        self.app = app
        self.keys = list(keys)
        self.secure = secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/c/"):  # a counted link sets no cookie (digest.clicks)
            await self.app(scope, receive, send)
            return
        cookie = Request(scope).cookies.get(CSRF_COOKIE, "")
        fresh = not (16 <= len(cookie) <= 100)
        value = secrets.token_urlsafe(24) if fresh else cookie
        state = scope.setdefault("state", {})
        # A fresh cookie means the browser sent none: no submitted token can be right.
        state["csrf"] = _CsrfState(value=value, keys=tuple(self.keys), fresh=fresh)

        async def send_with_cookie(message: Message) -> None:
            if fresh and message["type"] == "http.response.start":
                attrs = "Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if self.secure else "")
                header = (b"set-cookie", f"{CSRF_COOKIE}={value}; {attrs}".encode())
                message = {**message, "headers": list(message.get("headers", [])) + [header]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


@dataclass(frozen=True)
class _CsrfState:
    value: str  # the cookie's random value (new when the browser sent none)
    keys: tuple[bytes, ...]  # the newest first: tokens made under a retired key still verify
    fresh: bool


def _csrf_mac(key: bytes, value: str, action: str) -> str:
    # The length prefix keeps (value, action) pairs apart however either is written.
    message = f"digest-csrf:{len(value)}:{value}:{action}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def csrf_token(request: Request, action: str) -> str:
    """The hidden-field value (name it CSRF_FIELD) for a form on this page that posts to the path `action`."""
    state: _CsrfState = request.state.csrf
    return _csrf_mac(state.keys[0], state.value, action)


def csrf_ok(request: Request, submitted: object) -> bool:
    """True if the submitted token was made for this browser's CSRF cookie and for this request's path."""
    state: _CsrfState = request.state.csrf
    if state.fresh or not isinstance(submitted, str) or not submitted:
        return False
    action = request.url.path
    return any(hmac.compare_digest(submitted, _csrf_mac(key, state.value, action)) for key in state.keys)


async def read_form(request: Request, max_fields: int = 1000) -> FormData:
    """The posted form (urlencoded or multipart, no files); 413 when larger than MAX_FORM_BYTES.

    The body is counted as it streams in, so a chunked body (no Content-Length) is capped too, and
    reading stops at the limit.
    """
    length = request.headers.get("content-length", "")
    if length and (not length.isdigit() or int(length) > MAX_FORM_BYTES):
        raise HTTPException(413, FORM_TOO_LARGE)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(413, FORM_TOO_LARGE)

    async def replay() -> dict:
        return {"type": "http.request", "body": bytes(body), "more_body": False}

    return await Request(request.scope, replay).form(max_files=0, max_fields=max_fields)


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Token bucket per key: `burst` requests at once, refilled at `per_minute`; thread-safe."""

    MAX_KEYS = 50_000  # beyond this, full buckets are forgotten so memory stays bounded

    def __init__(self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = max(1, burst)
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def retry_after(self, key: str) -> int:
        """Take one token for `key`: 0 if allowed, else the whole seconds to wait."""
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self.MAX_KEYS:
                    self._forget_full(now)
                bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return 0
            return max(1, math.ceil((1 - bucket.tokens) / self.rate)) if self.rate > 0 else 3600

    def _forget_full(self, now: float) -> None:
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.at) * self.rate >= self.burst]
        for key in full or list(self._buckets)[: self.MAX_KEYS // 10]:
            del self._buckets[key]


def client_ip(request: Request) -> str:
    """The client's IP as the server saw it (uvicorn applies trusted X-Forwarded-For itself)."""
    return request.client.host if request.client else "unknown"


_TOKEN_PATH = re.compile(r"^(/(?:confirm|preferences|unsubscribe|admin/password)/)[^/?#\s]+")


class RedactTokensFilter(logging.Filter):
    """Blanks link tokens in uvicorn's access log: whoever reads the log must not get working links."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_TOKEN_PATH.sub(r"\1[token]", a) if isinstance(a, str) else a for a in record.args)
        return True
