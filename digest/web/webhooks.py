"""POST /webhooks/ses, /webhooks/postmark, /webhooks/mailgun: email providers' bounces and complaints.

Each endpoint authenticates the request the provider's documented way, parses its JSON
(digest.webhook_payloads) and calls digest.pipeline.bounces.record_events; the rules live there.

- /webhooks/ses: Amazon SNS messages (not raw delivery) carrying SES notifications. The SNS
  signature is checked (digest.sns: version 1 SHA1 or 2 SHA256, certificate from
  sns.<region>.amazonaws.com over https, cached) and TopicArn must be one of
  `delivery.webhooks.ses_topic_arns` (403 otherwise: anyone can sign with SNS for their own topic).
  A SubscriptionConfirmation is never confirmed by digest: it is logged and put in the run log
  with its SubscribeURL for staff to open.
- /webhooks/postmark: HTTP basic auth (user `postmark_username`, password from the variable
  `postmark_password_env`), compared in constant time.
- /webhooks/mailgun: the HMAC-SHA256 signature of timestamp + token with the signing key; a
  timestamp more than MAILGUN_MAX_AGE away from now, or a token already used, is refused.

Answers are JSON: 200 with what was done; 401 unsigned or wrongly signed (nothing changes); 400
malformed JSON or payload; 413 a body over MAX_BODY_BYTES; 404 for a provider not configured; 503
when the SNS certificate cannot be fetched (SNS retries). No CSRF token: these are server-to-server
calls, authenticated instead.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..bounces import MalformedReport, ReportEvent
from ..config import ConfigError, Settings
from ..pipeline.bounces import note_subscription_request, record_events, use_webhook_token
from ..sns import CertificateLoader, CertificateUnavailable, SnsRejected, SnsVerifier
from ..webhook_payloads import (
    mailgun_events,
    mailgun_signature,
    mailgun_signature_ok,
    postmark_events,
    ses_events,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024  # SNS messages are 256 KiB at most; provider payloads far less
MAILGUN_MAX_AGE = timedelta(minutes=5)


class Refused(Exception):
    """A request answered with `status` and a JSON error message; nothing was changed."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers or {}


def _secret(settings_key: str, env_name: str) -> str:
    value = os.environ.get(env_name, "")
    if not value.strip():
        raise ConfigError(f"'delivery.webhooks.{settings_key}' names the variable {env_name}, which is empty: set it "
                          "to the secret, or leave the provider's webhook unconfigured")
    return value.strip()


class Webhooks:
    """The three endpoints, with their secrets read once when the app is made."""

    def __init__(self, settings: Settings, engine: Engine, verifier: SnsVerifier,
                 clock: Callable[[], datetime]) -> None:
        hooks = settings.delivery.webhooks
        self.settings, self.engine, self.verifier, self.clock = settings, engine, verifier, clock
        self.topics = frozenset(hooks.ses_topic_arns)
        self.postmark_login: tuple[bytes, bytes] | None = None
        if hooks.postmark_username:
            password = _secret("postmark_password_env", hooks.postmark_password_env)
            self.postmark_login = (hooks.postmark_username.encode(), password.encode())
        self.mailgun_key = (_secret("mailgun_signing_key_env", hooks.mailgun_signing_key_env).encode()
                            if hooks.mailgun_signing_key_env else None)

    async def ses(self, request: Request) -> JSONResponse:
        return await self._answer(request, bool(self.topics), self._ses)

    async def postmark(self, request: Request) -> JSONResponse:
        return await self._answer(request, self.postmark_login is not None, self._postmark)

    async def mailgun(self, request: Request) -> JSONResponse:
        return await self._answer(request, self.mailgun_key is not None, self._mailgun)

    async def _answer(self, request: Request, configured: bool, handle: Callable[..., Any]) -> JSONResponse:
        if not configured:
            return JSONResponse({"error": "this webhook is not configured (see delivery.webhooks)"}, 404)
        try:
            return JSONResponse(await handle(request))
        except Refused as refused:
            log.info("webhook %s refused (%s): %s", request.url.path, refused.status, refused)
            return JSONResponse({"error": str(refused)}, refused.status, headers=refused.headers)

    # --- the providers ---------------------------------------------------------------------------

    async def _ses(self, request: Request) -> dict:
        message = _object(await _json(request))
        try:
            await run_in_threadpool(self.verifier.verify, message)
        except SnsRejected as exc:
            raise Refused(401, f"not a message signed by Amazon SNS: {exc}") from None
        except CertificateUnavailable as exc:
            raise Refused(503, str(exc)) from None
        topic = message.get("TopicArn")
        if topic not in self.topics:
            raise Refused(403, "this SNS topic is not one of delivery.webhooks.ses_topic_arns")
        kind = message.get("Type")
        if kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
            if kind == "SubscriptionConfirmation":
                await run_in_threadpool(note_subscription_request, self.engine, topic, str(message.get("SubscribeURL")))
            return {"ok": True, "note": f"{kind} received; digest does not visit SubscribeURL itself: "
                                        "open it from the log or `digest status` to confirm"}
        try:
            notification = json.loads(message["Message"])
        except (ValueError, RecursionError):
            raise Refused(400, "the SNS Message is not the JSON of an SES notification") from None
        message_id = str(message.get("MessageId", ""))
        return await self._record(_parsed(ses_events, notification, message_id), f"ses {message_id[:80]}")

    async def _postmark(self, request: Request) -> dict:
        user, password = _basic_auth(request.headers.get("authorization", ""))
        expected_user, expected_password = self.postmark_login or (b"", b"")
        user_ok = hmac.compare_digest(user, expected_user)
        if not (hmac.compare_digest(password, expected_password) and user_ok):
            raise Refused(401, "wrong or missing basic-auth credentials", {"WWW-Authenticate": 'Basic realm="digest"'})
        events = _parsed(postmark_events, await _json(request))
        return await self._record(events, f"postmark {events[0].key[:12] if events else ''}".strip())

    async def _mailgun(self, request: Request) -> dict:
        payload = await _json(request)
        try:
            timestamp, token, signature = mailgun_signature(payload)
        except MalformedReport as exc:
            raise Refused(401, f"not signed: {exc}") from None
        if not mailgun_signature_ok(self.mailgun_key or b"", timestamp, token, signature):
            raise Refused(401, "the signature does not match (check delivery.webhooks.mailgun_signing_key_env)")
        now = self.clock()
        try:
            age = abs(now.timestamp() - int(timestamp))
        except ValueError:
            raise Refused(401, "the signature's timestamp is not a number") from None
        if age > MAILGUN_MAX_AGE.total_seconds():
            raise Refused(401, f"the signature's timestamp is {int(age)} s away from now: stale or replayed")
        events = _parsed(mailgun_events, payload)
        token_key = hashlib.sha256(f"mailgun\x1f{token}".encode()).hexdigest()
        if not await run_in_threadpool(use_webhook_token, self.engine, "mailgun", token_key, MAILGUN_MAX_AGE, now):
            raise Refused(401, "this signature's token was used before: a replayed request")
        return await self._record(events, f"mailgun {token[:20]}")

    async def _record(self, events: tuple[ReportEvent, ...], position: str) -> dict:
        summary = await run_in_threadpool(record_events, self.settings, self.engine, events, position, self.clock())
        result = summary.as_dict()
        result.pop("malformed")
        return {"ok": True, **result}


def _object(value: Any) -> dict:
    if not isinstance(value, dict):
        raise Refused(400, "the body must be a JSON object")
    return value


def _parsed(parse: Callable[..., tuple[ReportEvent, ...]], *args: Any) -> tuple[ReportEvent, ...]:
    try:
        return parse(*args)
    except MalformedReport as exc:
        raise Refused(400, f"malformed payload: {exc}") from None


async def _json(request: Request) -> Any:
    """The body as JSON: 413 past MAX_BODY_BYTES (counted as it streams in), 400 when it is not JSON."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise Refused(413, f"the body is larger than {MAX_BODY_BYTES // 1024} KiB")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise Refused(413, f"the body is larger than {MAX_BODY_BYTES // 1024} KiB")
    try:
        return json.loads(bytes(body))
    except (ValueError, RecursionError) as exc:
        raise Refused(400, f"the body is not JSON: {str(exc)[:120]}") from None


def _basic_auth(header: str) -> tuple[bytes, bytes]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return b"", b""
    try:
        user, _, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        return b"", b""
    return user, password


def routes(settings: Settings, engine: Engine, certificate_loader: CertificateLoader | None = None,
           clock: Callable[[], datetime] | None = None) -> list[Route]:
    """The webhook routes; raises ConfigError when a configured provider's secret variable is empty.

    `certificate_loader` fetches SNS signing certificates (default: download them); `clock` is
    the time Mailgun timestamps are checked against.
    """
    now = clock or (lambda: datetime.now(UTC))
    hooks = Webhooks(settings, engine, SnsVerifier(certificate_loader, now), now)
    return [
        Route("/webhooks/ses", hooks.ses, methods=["POST"]),
        Route("/webhooks/postmark", hooks.postmark, methods=["POST"]),
        Route("/webhooks/mailgun", hooks.mailgun, methods=["POST"]),
    ]
