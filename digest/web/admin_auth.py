"""Admin sign-in: password check, the signed session cookie, CSRF tokens and the login rate limit.

The session is a signed, timestamped cookie (itsdangerous, secrets from `web.secret_env`) holding the
name the admin gave, a CSRF token and a fingerprint of the password hash, so changing the password
ends every session. The cookie is HttpOnly, SameSite=Lax and Secure unless the site is reached on
127.0.0.1/localhost. Every state change is a POST whose form carries the session's CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass

from itsdangerous import BadData, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from ..config import Settings
from ..tokens import signing_secrets
from .passwords import PasswordHashError, configured_hash, verify_password

SESSION_COOKIE = "digest_admin"
LOGIN_COOKIE = "digest_admin_login"
SESSION_HOURS = 12
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


@dataclass(frozen=True)
class AdminSession:
    name: str
    csrf: str


class AdminAuth:
    """Signs and reads admin sessions for one app."""

    def __init__(self, settings: Settings):
        self.settings = settings
        secrets_ = list(signing_secrets(settings))
        self._serializer = URLSafeTimedSerializer(secrets_, salt="digest-admin-session")
        self._login_serializer = URLSafeTimedSerializer(secrets_, salt="digest-admin-login")

    # --- the password --------------------------------------------------------------------------
    def password_hash(self) -> str:
        return configured_hash(self.settings.web.admin_password_hash)

    def check_password(self, password: str) -> bool:
        """True if the password matches; False when none is configured; PasswordHashError if malformed."""
        encoded = self.password_hash()
        return bool(encoded) and verify_password(password, encoded)

    def _fingerprint(self) -> str:
        return hashlib.sha256(self.password_hash().encode()).hexdigest()[:16]

    # --- the session ---------------------------------------------------------------------------
    def session(self, request: Request) -> AdminSession | None:
        """The signed-in session, or None (no cookie, bad signature, expired, password changed)."""
        raw = request.cookies.get(SESSION_COOKIE)
        if not raw or not self.password_hash():
            return None
        try:
            data = self._serializer.loads(raw, max_age=SESSION_HOURS * 3600)
        except BadData:
            return None
        if not isinstance(data, dict) or not hmac.compare_digest(str(data.get("p", "")), self._fingerprint()):
            return None
        return AdminSession(name=str(data.get("n", "admin"))[:100], csrf=str(data.get("c", "")))

    def start_session(self, request: Request, response: Response, name: str) -> None:
        value = self._serializer.dumps({"n": name, "c": secrets.token_urlsafe(32), "p": self._fingerprint()})
        response.set_cookie(SESSION_COOKIE, value, max_age=SESSION_HOURS * 3600, path="/admin",
                            httponly=True, samesite="lax", secure=cookie_secure(request))
        response.delete_cookie(LOGIN_COOKIE, path="/admin")

    def end_session(self, response: Response) -> None:
        response.delete_cookie(SESSION_COOKIE, path="/admin")

    # --- CSRF ----------------------------------------------------------------------------------
    @staticmethod
    def csrf_ok(session: AdminSession, submitted: object) -> bool:
        return isinstance(submitted, str) and bool(session.csrf) and hmac.compare_digest(submitted, session.csrf)

    def login_token(self, request: Request, response: Response) -> str:
        """A double-submit token for the login form (there is no session yet to bind it to)."""
        nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(16)
        response.set_cookie(LOGIN_COOKIE, nonce, max_age=3600, path="/admin", httponly=True, samesite="strict",
                            secure=cookie_secure(request))
        return self._login_serializer.dumps(nonce)

    def login_token_ok(self, request: Request, submitted: object) -> bool:
        nonce = request.cookies.get(LOGIN_COOKIE)
        if not nonce or not isinstance(submitted, str):
            return False
        try:
            return hmac.compare_digest(str(self._login_serializer.loads(submitted, max_age=3600)), nonce)
        except BadData:
            return False


def cookie_secure(request: Request) -> bool:
    """Secure cookies everywhere except a site served on loopback (local testing over plain http)."""
    return request.url.scheme == "https" or (request.url.hostname or "") not in _LOOPBACK


def same_origin(request: Request) -> bool:
    """False when the browser says the form came from another site (Origin header)."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin != "null"
    return origin.rstrip("/") == f"{request.url.scheme}://{request.url.netloc}"


class LoginLimiter:
    """At most `attempts` failed logins per client per `window` seconds, and a global cap ten times that."""

    def __init__(self, attempts: int = 5, window: float = 300.0):
        self.attempts, self.window = attempts, window
        self._failures: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()
        self._lock = threading.Lock()

    def allowed(self, client: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._expire(now)
            return len(self._failures.get(client, ())) < self.attempts and len(self._all) < self.attempts * 10

    def failed(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._failures.setdefault(client, deque()).append(now)
            self._all.append(now)

    def _expire(self, now: float) -> None:
        cutoff = now - self.window
        while self._all and self._all[0] < cutoff:
            self._all.popleft()
        for client in list(self._failures):
            times = self._failures[client]
            while times and times[0] < cutoff:
                times.popleft()
            if not times:
                del self._failures[client]


__all__ = ["AdminAuth", "AdminSession", "LoginLimiter", "PasswordHashError", "cookie_secure", "same_origin"]
