"""The sign-up form on the organisation's own pages: a script served by digest, posting cross-origin.

URLs: GET /embed.js (the script) · GET /api/v1/signup/token · OPTIONS and POST /api/v1/signup.
Only the origins in `web.embed_origins` may use them: those get CORS headers, on these endpoints
only; any other origin, or none, gets 403 and no CORS header, so a browser shows the page nothing.
A sign-up needs a form token fetched first from /api/v1/signup/token by that origin (signed, bound
to the origin, valid TOKEN_MINUTES): the allowlist plus the token keep other sites from posting in a
visitor's name. Everything else is the subscribe page's: the same use cases (double opt-in, the
answer that reveals nothing about the address), the same rate limits per client, the same words in
en, fr and de. Every other page keeps `frame-ancestors 'none'`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ..config import LANGUAGES, Settings
from ..pipeline.signup import SignupForm, check_signup, register_signup
from ..signing import derived_keys
from .public import ERROR_TEXTS, TransportFactory
from .security import RateLimiter, client_ip
from .texts import negotiate_language, texts

SCRIPT = (Path(__file__).resolve().parent / "static" / "embed.js").read_text(encoding="utf-8")
TOKEN_MINUTES = 60
MAX_BODY = 16 * 1024


class Embed:
    def __init__(self, settings: Settings, engine: Engine, transport_factory: TransportFactory | None) -> None:
        self.settings, self.engine, self.transport_factory = settings, engine, transport_factory
        self.origins = frozenset(settings.web.embed_origins)
        self.keys = derived_keys(settings, "embed")
        web = settings.web
        self.limit = RateLimiter(web.subscribe_rate_per_minute, web.subscribe_burst)

    # --- the origin and its token ----------------------------------------------------------------

    def allowed(self, request: Request) -> str | None:
        origin = request.headers.get("origin", "")
        return origin if origin in self.origins else None

    def token(self, origin: str, issued: int | None = None) -> str:
        issued = int(time.time()) if issued is None else issued
        return f"{issued}.{self._mac(self.keys[0], origin, issued)}"

    def token_ok(self, origin: str, token: object) -> bool:
        if not isinstance(token, str) or token.count(".") != 1:
            return False
        issued, mac = token.split(".")
        if not issued.isdigit() or not 0 <= time.time() - int(issued) <= TOKEN_MINUTES * 60:
            return False
        return any(hmac.compare_digest(mac, self._mac(key, origin, int(issued))) for key in self.keys)

    @staticmethod
    def _mac(key: bytes, origin: str, issued: int) -> str:
        return hmac.new(key, f"digest-embed:{len(origin)}:{origin}:{issued}".encode(), hashlib.sha256).hexdigest()

    # --- answers ---------------------------------------------------------------------------------------

    @staticmethod
    def cors(origin: str) -> dict[str, str]:
        return {"access-control-allow-origin": origin, "vary": "Origin", "access-control-max-age": "600",
                "access-control-allow-methods": "GET, POST", "access-control-allow-headers": "Content-Type"}

    @staticmethod
    def refused() -> JSONResponse:
        # No CORS headers: the calling page learns nothing, not even this message.
        return JSONResponse({"error": {"status": 403, "message": "this origin may not embed the sign-up form "
                                                                 "(web.embed_origins)"}},
                            status_code=403, headers={"vary": "Origin"})

    async def script(self, request: Request) -> Response:
        return Response(SCRIPT, media_type="text/javascript; charset=utf-8",
                        headers={"cache-control": "public, max-age=3600", "cross-origin-resource-policy": "cross-origin"})

    async def token_endpoint(self, request: Request) -> Response:
        origin = self.allowed(request)
        if origin is None:
            return self.refused()
        return JSONResponse({"token": self.token(origin)}, headers={**self.cors(origin), "cache-control": "no-store"})

    async def preflight(self, request: Request) -> Response:
        origin = self.allowed(request)
        if origin is None:
            return self.refused()
        return Response(status_code=204, headers=self.cors(origin))

    async def signup(self, request: Request) -> Response:
        """POST /api/v1/signup: the subscribe page's sign-up, answered in JSON in the visitor's language."""
        origin = self.allowed(request)
        if origin is None:
            return self.refused()
        headers = self.cors(origin)
        lang = negotiate_language(request.headers.get("accept-language", ""), self.settings.site.language)
        t = texts(lang)
        if wait := self.limit.retry_after(client_ip(request)):
            return JSONResponse({"error": {"status": 429, "message": t["rate_body"]}}, status_code=429,
                                headers={**headers, "retry-after": str(wait)})
        body = await _json_body(request)
        if body is None:
            return JSONResponse({"error": {"status": 400, "message": "send the form as a JSON object"}},
                                status_code=400, headers=headers)
        if not self.token_ok(origin, body.get("token")):
            return JSONResponse({"error": {"status": 403, "message": t["csrf_body"]}}, status_code=403,
                                headers=headers)
        language = body.get("language") if body.get("language") in LANGUAGES else lang
        series = body.get("series") if isinstance(body.get("series"), list) else []
        form = SignupForm(email=str(body.get("email", ""))[:320], name=str(body.get("name", ""))[:200],
                          language=language, series=tuple(str(s) for s in series[:50]),
                          want_events=body.get("want_events", True) is not False,
                          want_media=body.get("want_media", True) is not False)
        outcome = await run_in_threadpool(check_signup, self.settings, self.engine, form, client_ip(request))
        words = texts(outcome.language or language)
        if not outcome.accepted:
            fields = list(outcome.invalid_fields)
            return JSONResponse({"error": {"status": 400, "message": words[ERROR_TEXTS[fields[0]]], "fields": fields}},
                                status_code=400, headers=headers)
        response = JSONResponse({"message": words["check_body"].format(hours=self.settings.web.confirm_hours)},
                                status_code=202, headers=headers)
        response.background = BackgroundTask(register_signup, self.settings, self.engine, outcome.checked,
                                             datetime.now(UTC), self.transport_factory)
        return response


async def _json_body(request: Request) -> dict[str, Any] | None:
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            return None
    try:
        parsed = json.loads(bytes(raw) or b"null")
    except (ValueError, UnicodeDecodeError):
        return None
    return parsed if isinstance(parsed, dict) else None


def routes(settings: Settings, engine: Engine, transport_factory: TransportFactory | None = None) -> list[BaseRoute]:
    """The embed routes; they go before the API's, whose catch-all would answer their paths."""
    embed = Embed(settings, engine, transport_factory)
    return [
        Route("/embed.js", embed.script, methods=["GET"]),
        Route("/api/v1/signup/token", embed.token_endpoint, methods=["GET"]),
        Route("/api/v1/signup", embed.preflight, methods=["OPTIONS"]),
        Route("/api/v1/signup", embed.signup, methods=["POST"]),
    ]
