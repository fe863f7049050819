"""Admin sign-in: password check, the signed session cookie, CSRF tokens and the login limits.

The session is a signed, timestamped cookie (itsdangerous, secrets from `web.secret_env`) holding the
staff account's id and when it was signed, a session id and a CSRF token; a disabled account, a new
role or a new password ends every session of the account (pipeline.accounts). Until the store holds
an account, the shared admin password signs in instead: that cookie holds the name typed at sign-in
and a fingerprint of the password hash, so changing the password ends every session. Signing out
revokes the session id in the store, so a copy of the cookie stops working too. The cookie is HttpOnly, SameSite=Lax and Secure unless the browser talks
plain http to a loopback name (127.0.0.1, ::1, localhost, *.localhost). Every state change is a POST
whose form carries the session's CSRF token and, if the browser names one, an Origin that is the
request's own or that of `web.base_url` (behind a reverse proxy the two differ).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from itsdangerous import BadData, URLSafeTimedSerializer
from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import Response

from ..addresses import is_loopback_host
from ..config import Settings
from ..models import Account, Role
from ..pipeline.accounts import (
    PasswordHashError,
    accounts_in_use,
    admin_password_hash,
    revoke_session,
    session_account,
    session_revoked,
    sign_in,
)
from ..signing import signing_secrets

SESSION_COOKIE = "digest_admin"
LOGIN_COOKIE = "digest_admin_login"
SESSION_HOURS = 12
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class AdminSession:
    name: str
    csrf: str
    id: str = ""
    # Who is signed in; with the shared password, an admin without an account row (id None).
    account: Account = Account(email="", role=Role.ADMIN)

    def sign(self, *parts: str) -> str:
        """An HMAC of `parts` under this session's CSRF secret: a value a page hands out and this session alone
        can bring back unchanged (a passed test fetch, an import's dry run, words after a redirect)."""
        return hmac.new(self.csrf.encode(), "\x1f".join(parts).encode("utf-8", "replace"), hashlib.sha256).hexdigest()


class AdminAuth:
    """Signs, reads and revokes admin sessions for one app."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings, self.engine = settings, engine
        self.base_url = settings.web.base_url
        secrets_ = list(signing_secrets(settings))
        self._serializer = URLSafeTimedSerializer(secrets_, salt="digest-admin-session")
        self._login_serializer = URLSafeTimedSerializer(secrets_, salt="digest-admin-login")

    # --- the password --------------------------------------------------------------------------
    def password_hash(self) -> str:
        """The admin password's hash in force ('' when none is set: nobody signs in)."""
        return admin_password_hash(self.settings)

    def accounts_in_use(self) -> bool:
        """Whether staff sign in with accounts (else with the shared password); reads the store."""
        return accounts_in_use(self.engine)

    def check_credentials(self, email: str, password: str) -> Account | None:
        """The account these open (the shared password's admin while no account exists), or None.

        PasswordHashError for a malformed shared hash. Costs one scrypt: run it in the thread pool.
        """
        return sign_in(self.settings, self.engine, email, password)

    def _fingerprint(self) -> str:
        return hashlib.sha256(self.password_hash().encode()).hexdigest()[:16]

    # --- the session ---------------------------------------------------------------------------
    def session(self, request: Request) -> AdminSession | None:
        """The signed-in session, or None (no cookie, bad signature, expired, signed out, password changed).

        Reads the store (signed-out sessions): async code calls it through the thread pool.
        """
        raw = request.cookies.get(SESSION_COOKIE)
        if not raw:
            return None
        try:
            data = self._serializer.loads(raw, max_age=SESSION_HOURS * 3600)
        except BadData:
            return None
        if not isinstance(data, dict):
            return None
        session_id = str(data.get("s", ""))
        if not session_id or session_revoked(self.engine, session_id):
            return None
        account = self._account(data)
        if account is None:
            return None
        name = (account.name or account.email) if account.id is not None else account.name
        return AdminSession(name=name, csrf=str(data.get("c", "")), id=session_id, account=account)

    def _account(self, data: dict) -> Account | None:
        account_id, signed_at = data.get("a"), data.get("t")
        if type(account_id) is int and isinstance(signed_at, int | float) and math.isfinite(signed_at):
            return session_account(self.engine, account_id, datetime.fromtimestamp(signed_at, UTC))
        # The shared password's session: only while no account exists, and only for the hash it was made with.
        if account_id is not None or not self.password_hash() or self.accounts_in_use():
            return None
        if not hmac.compare_digest(str(data.get("p", "")), self._fingerprint()):
            return None
        return Account(email="", role=Role.ADMIN, name=str(data.get("n", "admin"))[:100])

    def start_session(self, request: Request, response: Response, account: Account) -> None:
        data = {"s": secrets.token_urlsafe(24), "c": secrets.token_urlsafe(32)}
        if account.id is not None:
            data.update(a=account.id, t=time.time())
        else:
            data.update(n=account.name, p=self._fingerprint())
        value = self._serializer.dumps(data)
        response.set_cookie(SESSION_COOKIE, value, max_age=SESSION_HOURS * 3600, path="/admin",
                            httponly=True, samesite="lax", secure=cookie_secure(request))
        response.delete_cookie(LOGIN_COOKIE, path="/admin")

    def end_session(self, session: AdminSession, response: Response) -> None:
        """Sign out: the session id is revoked in the store (every copy of the cookie) and the cookie deleted."""
        # The cookie was signed at most SESSION_HOURS ago, so it expires by then at the latest.
        revoke_session(self.engine, session.id, datetime.now(UTC) + timedelta(hours=SESSION_HOURS))
        response.delete_cookie(SESSION_COOKIE, path="/admin")

    # --- CSRF ----------------------------------------------------------------------------------
    @staticmethod
    def csrf_ok(session: AdminSession, submitted: object) -> bool:
        return isinstance(submitted, str) and bool(session.csrf) and hmac.compare_digest(submitted, session.csrf)

    def same_origin(self, request: Request) -> bool:
        return same_origin(request, self.base_url)

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

    def cookies_dropped(self, request: Request) -> bool:
        """True when the browser is on plain http to a name that is not loopback: it drops our Secure cookies."""
        scheme, host = _browser_origin(request)
        if scheme != "http" or is_loopback_host(host):
            return False
        # A TLS proxy that passes Host but not X-Forwarded-Proto: the browser is on base_url's https.
        base = urlsplit(self.base_url)
        return not (base.scheme == "https" and (base.hostname or "") == host)


def cookie_secure(request: Request) -> bool:
    """Secure cookies everywhere except where the browser talks plain http to loopback (local use).

    The browser's side is its Origin header when it sends one (a login POST behind a TLS proxy
    that forwards neither Host nor the scheme says https there), else the request's own URL.
    """
    scheme, host = _browser_origin(request)
    return scheme != "http" or not is_loopback_host(host)


def _browser_origin(request: Request) -> tuple[str, str]:
    """(scheme, host) the browser used, as far as the request says."""
    origin = request.headers.get("origin", "")
    parts = urlsplit(origin if origin and origin != "null" else str(request.url))
    scheme = "https" if request.url.scheme == "https" else parts.scheme.lower()
    return scheme, (parts.hostname or "").lower()


def origin_of(url: str) -> str:
    """`scheme://host[:port]` as browsers write an Origin header (lower case, no default port); '' if unusable."""
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        return ""
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if not scheme or not host:
        return ""
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + (f":{port}" if port and port != _DEFAULT_PORTS.get(scheme) else "")


def same_origin(request: Request, base_url: str = "") -> bool:
    """False when the browser says the form came from another site (Origin header).

    Its own origin is the request's (scheme and Host as the server saw them) or, behind a reverse
    proxy that rewrites Host or terminates TLS, the origin of `base_url`.
    """
    origin = request.headers.get("origin")
    if not origin:
        return True  # no Origin (older browsers, scripts): the CSRF token alone decides
    if origin == "null":
        return False
    allowed = {origin_of(str(request.url)), origin_of(base_url)} - {""}
    return origin_of(origin) in allowed


@dataclass(frozen=True)
class LoginAttempt:
    """A password check reserved by LoginLimiter.start: finish it with LoginLimiter.finish, whatever happens."""

    client: str
    at: float


@dataclass(frozen=True)
class LoginRefused:
    """Why LoginLimiter.start refused: too many attempts from the client, or every hashing slot busy."""

    busy: bool  # True: other checks are running (try again in a moment); False: the client's limit
    retry_after: int  # seconds


class LoginLimiter:
    """At most `attempts` password checks per client per `window` seconds, and `slots` running at once.

    An attempt is counted when it is reserved, before its scrypt hash starts, so parallel requests
    cannot all pass the check while the first ones still hash; a failed check stays counted for
    the window, a successful one is given back. Beyond `slots` checks in progress (each scrypt costs
    about 32 MiB and a CPU), a request is refused at once instead of queueing in the thread pool
    that every other page needs. Per client only: a global failure cap would let anyone lock every
    admin out by failing on purpose.
    """

    def __init__(self, attempts: int = 5, window: float = 300.0, slots: int = 2,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.attempts, self.window, self.slots, self.clock = attempts, window, max(1, slots), clock
        self._attempts: dict[str, deque[float]] = {}
        self._running = 0
        self._lock = threading.Lock()

    def start(self, client: str) -> LoginAttempt | LoginRefused:
        """Reserve a password check for `client`, or say why not (nothing is counted then)."""
        now = self.clock()
        with self._lock:
            self._expire(now)
            times = self._attempts.get(client, ())
            if len(times) >= self.attempts:
                return LoginRefused(busy=False, retry_after=max(1, math.ceil(times[0] + self.window - now)))
            if self._running >= self.slots:
                return LoginRefused(busy=True, retry_after=1)
            self._running += 1
            self._attempts.setdefault(client, deque()).append(now)
            return LoginAttempt(client, now)

    def check(self, attempt: LoginAttempt, verify: Callable[[], bool]) -> bool:
        """Run `verify` (the scrypt check) for a reserved attempt and finish it; blocking: call it in a thread.

        The slot is freed here, when hashing really ends, even if the request awaiting it was cancelled.
        """
        ok = False
        try:
            ok = verify()
            return ok
        finally:
            self.finish(attempt, ok)

    def finish(self, attempt: LoginAttempt, ok: bool) -> None:
        """The check is over: free its slot; a right password gives its attempt back."""
        with self._lock:
            self._running -= 1
            times = self._attempts.get(attempt.client)
            if ok and times is not None:
                try:
                    times.remove(attempt.at)
                except ValueError:  # already expired
                    pass
                if not times:
                    del self._attempts[attempt.client]

    def running(self) -> int:
        """Password checks in progress."""
        with self._lock:
            return self._running

    def _expire(self, now: float) -> None:
        cutoff = now - self.window
        for client in list(self._attempts):
            times = self._attempts[client]
            while times and times[0] < cutoff:
                times.popleft()
            if not times:
                del self._attempts[client]


__all__ = ["AdminAuth", "AdminSession", "LoginAttempt", "LoginLimiter", "LoginRefused", "PasswordHashError",
           "cookie_secure", "origin_of", "same_origin"]
