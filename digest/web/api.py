"""The HTTP JSON API under /api/v1: issues, subscribers, feed status, delivery reports and click counts.

Every request but the OpenAPI document carries `Authorization: Bearer dgst_…` (a token made in the
admin or with `digest users token`); it acts as its account, with the account's role of the moment
(pipeline.accounts decides who may do what, pipeline.tokens which token is live). Answers are JSON;
errors are `{"error": {"status": 404, "message": "…"}}` with the matching status. Lists take
`?page=` and `?per_page=` (at most MAX_PER_PAGE) and say `total` and `next`. Request bodies are JSON
objects of at most MAX_BODY bytes. The OpenAPI document is `GET /api/v1/openapi.json`
(digest.web.openapi); a test checks real answers against it. docs/api.md has curl examples.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ..compose import EditorialError
from ..config import Settings
from ..models import Account, IssueStatus
from ..pipeline import clicks, issues, reports, sending, signup, status
from ..pipeline import subscribers as staff
from ..pipeline.accounts import NotAllowed, require
from ..pipeline.tokens import token_account
from ..store.issues import IssueError, IssueNotFound, StaleVersion
from ..subscriber_fields import InvalidSubscriber
from .openapi import openapi_document
from .security import RateLimiter, client_ip

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
PER_PAGE, MAX_PER_PAGE = 50, 200
PREFIX = "/api/v1"


class ApiError(Exception):
    """An answer other than success: its status and a message for the caller."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Call:
    """One authenticated request: who makes it and its parsed JSON body (None for none)."""

    request: Request
    account: Account
    body: dict[str, Any] | None


Endpoint = Callable[["Api", Call], Awaitable[Response]]


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message}}, status_code=status, headers=headers)


class Api:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings, self.engine = settings, engine
        # Wrong tokens are counted per client: guessing is slow, honest clients never notice.
        self.bad_tokens = RateLimiter(per_minute=10, burst=20)

    def endpoint(self, handler: Endpoint, action: str) -> Callable[[Request], Awaitable[Response]]:
        """Authenticate, check the role for `action`, read the body, run `handler`; errors as JSON."""

        async def run(request: Request) -> Response:
            try:
                account = await self._account(request)
                require(account, action)
                body = await _body(request)
                return await handler(self, Call(request, account, body))
            except ApiError as exc:
                headers = {"www-authenticate": 'Bearer realm="digest"'} if exc.status == 401 else None
                return error(exc.status, exc.message, headers)
            except NotAllowed as exc:
                return error(403, str(exc))
            except Exception:  # a JSON answer even for a fault; the log has the traceback
                log.exception("API %s %s failed", request.method, request.url.path)
                return error(500, "something went wrong on the server; the log says what")

        run.__name__ = handler.__name__
        return run

    async def _account(self, request: Request) -> Account:
        scheme, _, secret = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise ApiError(401, "send an API token: Authorization: Bearer dgst_… (`digest users token EMAIL`)")
        account = await run_in_threadpool(token_account, self.engine, secret.strip())
        if account is None:
            if self.bad_tokens.retry_after(client_ip(request)):
                raise ApiError(429, "too many requests with unknown tokens: wait a minute")
            raise ApiError(401, "this token is not valid: it was revoked, its account disabled, or it never existed")
        return account


async def _body(request: Request) -> dict[str, Any] | None:
    if request.method in ("GET", "DELETE"):
        return None
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise ApiError(413, f"the body is larger than {MAX_BODY} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise ApiError(413, f"the body is larger than {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "send the body as JSON (Content-Type: application/json)")
    try:
        parsed = json.loads(bytes(raw))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ApiError(400, "the body must be a JSON object")
    return parsed


def _field(body: dict[str, Any] | None, name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    value = (body or {}).get(name, default)
    if value is not default and not isinstance(value, kind):
        wanted = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise ApiError(400, f"'{name}' must be a {wanted.replace('str', 'string').replace('bool', 'boolean')}")
    return value


def _strings(body: dict[str, Any] | None, name: str) -> list[str] | None:
    value = _field(body, name, list)
    if value is not None and not all(isinstance(v, str) for v in value):
        raise ApiError(400, f"'{name}' must be a list of strings")
    return value


def _page(request: Request) -> tuple[int, int]:
    try:
        page = int(request.query_params.get("page", "1"))
        per_page = int(request.query_params.get("per_page", str(PER_PAGE)))
    except ValueError:
        raise ApiError(400, "page and per_page are whole numbers") from None
    if page < 1 or not 1 <= per_page <= MAX_PER_PAGE:
        raise ApiError(400, f"page starts at 1; per_page is 1 to {MAX_PER_PAGE}")
    return page, per_page


def _listing(request: Request, items: list[Any], page: int, per_page: int) -> dict[str, Any]:
    total = len(items)
    shown = items[(page - 1) * per_page: page * per_page]
    more = page * per_page < total
    following = str(request.url.include_query_params(page=page + 1, per_page=per_page)) if more else None
    return {"items": shown, "page": page, "per_page": per_page, "total": total, "next": following}


def _number(call: Call) -> int:
    return call.request.path_params["number"]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# --- issues ---------------------------------------------------------------------------------------

def _summary(s: Any) -> dict[str, Any]:
    return {"number": s.number, "status": s.status.value, "subject": s.subject, "version": s.version,
            "items": s.items, "window": {"start": s.window.start.isoformat(), "end": s.window.end.isoformat()},
            "created_at": _iso(s.created_at), "approved_at": _iso(s.approved_at), "approved_by": s.approved_by,
            "sent_at": _iso(s.sent_at)}


async def list_issues(api: Api, call: Call) -> Response:
    page, per_page = _page(call.request)
    found = await run_in_threadpool(issues.list_issues, api.engine)
    return JSONResponse(_listing(call.request, [_summary(s) for s in found], page, per_page))


async def get_issue(api: Api, call: Call) -> Response:
    manifest = await _guarded(issues.issue_manifest, api.settings, api.engine, _number(call))
    return JSONResponse(manifest)


async def build_issue(api: Api, call: Call) -> Response:
    built = await _guarded(issues.build_issue, api.settings, api.engine, datetime.now(UTC), actor=call.account)
    if built is None:
        raise ApiError(409, "nothing new to put in an issue since the last one")
    manifest = await run_in_threadpool(issues.issue_manifest, api.settings, api.engine, built)
    return JSONResponse(manifest, status_code=201)


EDITABLE = {"subject": str, "intro": str, "lead": str, "texts": dict}
CHOICES = ("pin", "unpin", "drop", "undrop")


async def edit_issue(api: Api, call: Call) -> Response:
    body = call.body or {}
    unknown = sorted(set(body) - set(EDITABLE) - set(CHOICES))
    if unknown:
        raise ApiError(400, f"unknown field(s) {', '.join(unknown)}: use subject, intro, lead, texts, pin, unpin, "
                            "drop, undrop")
    changes: dict[str, Any] = {k: _field(body, k, kind) for k, kind in EDITABLE.items() if k in body}
    changes.update({k: _strings(body, k) for k in CHOICES if k in body})
    if not changes:
        raise ApiError(400, "nothing to change: send subject, intro, lead, texts, pin, unpin, drop or undrop")
    await _guarded(issues.edit_issue, api.settings, api.engine, _number(call), datetime.now(UTC), call.account,
                   **changes)
    return await get_issue(api, call)


async def approve_issue(api: Api, call: Call) -> Response:
    version = _field(call.body, "version", str)
    if not version:
        raise ApiError(400, "send the version you approve: {\"version\": \"…\"} (the manifest's version)")
    approval = await _guarded(issues.approve_issue, api.settings, api.engine, _number(call), call.account,
                              version, datetime.now(UTC))
    return JSONResponse({"number": approval.issue.number, "status": approval.issue.status.value,
                         "version": approval.issue.version, "send": approval.outlook.when.value})


async def send_issue(api: Api, call: Call) -> Response:
    number = _number(call)
    await _guarded(sending.check_sendable, api.engine, number)
    response = JSONResponse({"number": number, "status": IssueStatus.SENDING.value,
                             "report": f"{PREFIX}/issues/{number}/report"}, status_code=202)
    response.background = BackgroundTask(sending.send_now_noted, api.settings, api.engine, number, call.account)
    return response


async def issue_report(api: Api, call: Call) -> Response:
    number = _number(call)
    found = await run_in_threadpool(reports.issue_report, api.engine, number)
    if found is None:
        raise ApiError(404, f"there is no issue {number}")
    d = found.delivery
    return JSONResponse({"number": number, "status": found.summary.status.value, "sent": d.sent, "failed": d.failed,
                         "bounced": d.bounced, "skipped": d.skipped, "waiting": d.waiting,
                         "possibly_delivered": d.possibly_delivered, "unsubscribes": d.unsubscribes,
                         "complaints": d.complaints, "ledger": d.deliveries})


def _read_link(link: Any, with_issues: bool = True) -> dict[str, Any]:
    row = {"title": link.title, "url": link.url, "item_key": link.item_key, "section": link.section,
           "clicks": link.clicks, "languages": link.by_language}
    return {**row, "issues": link.issues} if with_issues else row


async def issue_clicks(api: Api, call: Call) -> Response:
    number = _number(call)
    found = await run_in_threadpool(clicks.issue_reading, api.settings, api.engine, number)
    if found is None:
        raise ApiError(404, f"there is no issue {number}")
    return JSONResponse({"number": number, "status": found.status, "counting": found.counting, "clicks": found.clicks,
                         "links": [_read_link(link, with_issues=False) for link in found.links]})


async def reading(api: Api, call: Call) -> Response:
    found = await run_in_threadpool(clicks.reading_overview, api.settings, api.engine, datetime.now(UTC))
    return JSONResponse({
        "counting": found.counting, "this_week": [_read_link(link) for link in found.this_week],
        "series": [{"id": s.series_id, "name": s.name, "clicks": s.clicks, "links": [_read_link(link) for link in s.links]}
                   for s in found.by_series],
        "issues": [{"number": i.number, "subject": i.subject, "sent_at": _iso(i.sent_at), "clicks": i.clicks}
                   for i in found.issues]})


async def feeds(api: Api, call: Call) -> Response:
    page, per_page = _page(call.request)
    found = await run_in_threadpool(status.collect_status, api.settings, api.engine, datetime.now(UTC))
    rows = [{"name": f.name, "url": f.url, "status": f.last_status, "message": f.last_message,
             "last_success_at": _iso(f.last_success_at), "consecutive_failures": f.consecutive_failures}
            for f in found.feeds]
    return JSONResponse(_listing(call.request, rows, page, per_page))


async def _guarded(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a use case in the thread pool; its refusals become API errors with the right status."""
    try:
        return await run_in_threadpool(func, *args, **kwargs)
    except (IssueNotFound, LookupError) as exc:
        raise ApiError(404, str(exc)) from None
    except StaleVersion as exc:
        raise ApiError(409, f"{exc}: get the issue again and approve the version you reviewed") from None
    except IssueError as exc:
        raise ApiError(409, str(exc)) from None
    except (EditorialError, InvalidSubscriber, ValueError) as exc:
        raise ApiError(400, str(exc)) from None


# --- subscribers ----------------------------------------------------------------------------------

async def create_subscriber(api: Api, call: Call) -> Response:
    """The same double opt-in as the subscribe page: stored pending, a confirmation email sent."""
    body = call.body or {}
    form = signup.SignupForm(
        email=_field(body, "email", str, ""), name=_field(body, "name", str, ""),
        language=_field(body, "language", str, ""), series=tuple(_strings(body, "series") or ()),
        want_events=_field(body, "want_events", bool, True), want_media=_field(body, "want_media", bool, True))
    outcome = await run_in_threadpool(signup.check_signup, api.settings, api.engine, form, client_ip(call.request))
    if not outcome.accepted:
        raise ApiError(400, f"check {', '.join(outcome.invalid_fields)}")
    response = JSONResponse({"email": outcome.checked.email, "status": "confirmation sent",
                             "message": "a confirmation email is on its way (unless the address is confirmed, "
                                        "opted out, or was sent one recently)"}, status_code=202)
    response.background = BackgroundTask(signup.register_signup, api.settings, api.engine, outcome.checked,
                                         datetime.now(UTC))
    return response


def _subscriber(record: dict[str, Any]) -> dict[str, Any]:
    row = record["subscriber"]
    return {"email": row["email"], "name": row["name"], "language": row["language"], "series": row["series"],
            "want_events": row["want_events"], "want_media": row["want_media"], "status": row["status"],
            "consent_at": row["consent_at"], "consent_method": row["consent_method"],
            "events": [{"event": e["event"], "at": e["at"], "detail": e["detail"],
                        "issue": e["issue_number"]} for e in record["events"]]}


async def get_subscriber(api: Api, call: Call) -> Response:
    email = call.request.path_params["email"]
    found = await _guarded(staff.show_subscriber, api.settings, api.engine, email)
    if found.record is None:
        raise ApiError(404, f"there is no subscriber {found.email}")
    return JSONResponse(_subscriber(found.record))


async def update_subscriber(api: Api, call: Call) -> Response:
    body = call.body or {}
    unknown = sorted(set(body) - {"language", "series", "want_events", "want_media"})
    if unknown:
        raise ApiError(400, f"unknown field(s) {', '.join(unknown)}: use language, series, want_events, want_media")
    email = call.request.path_params["email"]
    changed = await _guarded(staff.change_choices, api.settings, api.engine, email,
                             language=_field(body, "language", str), series=_strings(body, "series"),
                             want_events=_field(body, "want_events", bool), want_media=_field(body, "want_media", bool))
    if changed is None:
        raise ApiError(404, f"there is no confirmed or pending subscriber {email}")
    return await get_subscriber(api, call)


async def unsubscribe(api: Api, call: Call) -> Response:
    email = call.request.path_params["email"]
    removal = await _guarded(staff.remove_subscriber, api.settings, api.engine, email, datetime.now(UTC))
    if not removal.found:
        raise ApiError(404, f"there is no subscriber {removal.email}")
    return JSONResponse({"email": removal.email, "status": removal.status.value if removal.status else None})


async def erase(api: Api, call: Call) -> Response:
    email = call.request.path_params["email"]
    erased = await _guarded(staff.erase_subscriber, api.settings, api.engine, email, datetime.now(UTC), call.account)
    return JSONResponse({"email": erased.email, "erased": True, "existed": erased.existed})


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_document(), headers={"cache-control": "public, max-age=300"})


def routes(settings: Settings, engine: Engine) -> list[BaseRoute]:
    """The /api/v1 routes; any other path under it answers a JSON 404 (or 405 naming the methods)."""
    api = Api(settings, engine)
    e = api.endpoint
    found = [
        Route(f"{PREFIX}/openapi.json", openapi),
        Route(f"{PREFIX}/issues", e(list_issues, "read_reports"), methods=["GET"]),
        Route(f"{PREFIX}/issues", e(build_issue, "build"), methods=["POST"]),
        Route(f"{PREFIX}/issues/{{number:int}}", e(get_issue, "preview"), methods=["GET"]),
        Route(f"{PREFIX}/issues/{{number:int}}", e(edit_issue, "edit"), methods=["PATCH"]),
        Route(f"{PREFIX}/issues/{{number:int}}/approve", e(approve_issue, "approve"), methods=["POST"]),
        Route(f"{PREFIX}/issues/{{number:int}}/send", e(send_issue, "send"), methods=["POST"]),
        Route(f"{PREFIX}/issues/{{number:int}}/report", e(issue_report, "read_reports"), methods=["GET"]),
        Route(f"{PREFIX}/issues/{{number:int}}/clicks", e(issue_clicks, "read_reports"), methods=["GET"]),
        Route(f"{PREFIX}/reading", e(reading, "read_reports"), methods=["GET"]),
        Route(f"{PREFIX}/feeds", e(feeds, "read_reports"), methods=["GET"]),
        Route(f"{PREFIX}/subscribers", e(create_subscriber, "edit"), methods=["POST"]),
        Route(f"{PREFIX}/subscribers/{{email}}", e(get_subscriber, "read_reports"), methods=["GET"]),
        Route(f"{PREFIX}/subscribers/{{email}}", e(update_subscriber, "edit"), methods=["PATCH"]),
        Route(f"{PREFIX}/subscribers/{{email}}", e(erase, "erase"), methods=["DELETE"]),
        Route(f"{PREFIX}/subscribers/{{email}}/unsubscribe", e(unsubscribe, "edit"), methods=["POST"]),
    ]

    async def nothing_here(request: Request) -> Response:
        allowed = sorted({m for r in found if isinstance(r, Route) and r.path_regex.match(request.url.path)
                          for m in (r.methods or ())} - {"HEAD"})
        if allowed:
            return error(405, f"{request.method} is not allowed here: use {', '.join(allowed)}",
                         {"allow": ", ".join(allowed)})
        return error(404, f"there is no {request.url.path}; GET {PREFIX}/openapi.json lists what there is")

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return [*found, Route(PREFIX, nothing_here, methods=methods),
            Route(f"{PREFIX}/{{rest:path}}", nothing_here, methods=methods)]
