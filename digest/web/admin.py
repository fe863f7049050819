"""The admin web app under /admin: sign in, preview, edit, approve and send issues; health and reports.

Every page needs a signed-in session (else the login page, with status 401, and nothing of a draft);
every state change is a POST carrying the session's CSRF token (else 403 and nothing changes).
Every form, the sign-in one included, is read with the 64 KiB cap of digest.web.security.read_form.
Approval carries the version the page showed: approving a draft that changed since is refused.
Blocking work (every store query, the session check included, rendering, SMTP, building) runs in
the thread pool, never on the event loop.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader
from sqlalchemy import Engine
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from .. import pipeline
from ..config import Settings
from ..models import IssueStatus
from ..pipeline.status import collect_status
from ..store.runs import recent_runs, set_send_time
from .admin_auth import AdminAuth, AdminSession, LoginLimiter, PasswordHashError
from .admin_preview import (
    PREVIEW_CSP,
    EditionCache,
    PreviewChoice,
    PreviewError,
    issue_page_context,
    preview_document,
)
from .admin_reports import delivery_report, subscribers_overview
from .security import client_ip, read_form

TEMPLATES = Path(__file__).resolve().parent / "templates"
CSS = (TEMPLATES / "admin" / "admin.css").read_text(encoding="utf-8")
# Messages after a redirect are chosen by key, so a crafted URL cannot put words on the page.
DONE = {
    "approved": "Approved. It goes out at the send time shown.",
    "approved-due": "Approved. Its send time has passed, so it goes out now (the scheduler checks every minute).",
    "saved": "Saved. The preview shows the new version.",
    "items": "Item choices applied.",
    "rebuilt": "Draft rebuilt from the stored items.",
    "scheduled": "Send time saved.",
    "unscheduled": "The regular send time applies again.",
    "sending": "Sending started. The delivery report shows progress.",
    "unchanged": "Nothing changed.",
}
DROPPED_COOKIES = ("Signing in needs a Secure cookie, which browsers only keep over https: sign in over https, "
                   "or on 127.0.0.1 / localhost. (Behind a reverse proxy, see the admin docs: web.base_url "
                   "and the headers the proxy passes on.)")


@dataclass(frozen=True)
class Admin:
    """What every admin handler needs; built once per app."""

    settings: Settings
    engine: Engine
    auth: AdminAuth
    limiter: LoginLimiter
    env: Environment
    editions: EditionCache


Handler = Callable[[Admin, Request, AdminSession], Awaitable[Response]]


def routes(settings: Settings, engine: Engine) -> list[BaseRoute]:
    """The /admin routes of the web app."""
    admin = Admin(settings, engine, AdminAuth(settings, engine), LoginLimiter(), _environment(settings), EditionCache())
    get = functools.partial(_guarded, admin, post=False)
    post = functools.partial(_guarded, admin, post=True)
    return [
        Route("/admin/static/admin.css", _css),
        Route("/admin/login", functools.partial(login_page, admin), methods=["GET"]),
        Route("/admin/login", functools.partial(login, admin), methods=["POST"]),
        Route("/admin/logout", post(logout), methods=["POST"]),
        Route("/admin", get(home)),
        Route("/admin/", get(home)),
        Route("/admin/issues", get(issues_page)),
        Route("/admin/issues/{number:int}", get(issue_page)),
        Route("/admin/issues/{number:int}/preview", get(preview)),
        Route("/admin/issues/{number:int}/report", get(report_page)),
        Route("/admin/issues/{number:int}/approve", post(approve), methods=["POST"]),
        Route("/admin/issues/{number:int}/editorial", post(edit_editorial), methods=["POST"]),
        Route("/admin/issues/{number:int}/items", post(edit_items), methods=["POST"]),
        Route("/admin/issues/{number:int}/rebuild", post(rebuild), methods=["POST"]),
        Route("/admin/issues/{number:int}/test", post(send_test), methods=["POST"]),
        Route("/admin/issues/{number:int}/send", post(send_now), methods=["POST"]),
        Route("/admin/issues/{number:int}/schedule", post(schedule), methods=["POST"]),
        Route("/admin/feeds", get(feeds_page)),
        Route("/admin/runs", get(runs_page)),
        Route("/admin/subscribers", get(subscribers_page)),
        Route("/admin/archive", get(archive_page)),
    ]


# --- plumbing -------------------------------------------------------------------------------------

def _environment(settings: Settings) -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True)
    tz = settings.site.tz

    def local(value: datetime | None, fmt: str = "%d %b %Y, %H:%M") -> str:
        return "—" if value is None else value.astimezone(tz).strftime(fmt)

    env.filters["local"] = local
    return env


def page(admin: Admin, request: Request, name: str, context: dict, session: AdminSession | None,
         status_code: int = 200, notices: list[tuple[str, str]] | None = None) -> HTMLResponse:
    """An admin page: never cached, never framed."""
    done = DONE.get(request.query_params.get("done", ""))
    shown = [("ok", done)] if done else []
    html = admin.env.get_template(name).render(
        site_name=admin.settings.site.name, session=session, notices=shown + (notices or []), **context)
    # same-origin (not the site-wide no-referrer) so the browser sends a real Origin with our POSTs.
    return HTMLResponse(html, status_code=status_code,
                        headers={"cache-control": "no-store", "referrer-policy": "same-origin"})


def message(admin: Admin, request: Request, session: AdminSession | None, status_code: int, heading: str,
            text: str, back: str = "") -> HTMLResponse:
    return page(admin, request, "admin/message.html", {"heading": heading, "text": text, "back": back},
                session, status_code)


def _guarded(admin: Admin, handler: Handler, post: bool) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler: the login page without a session; for POSTs, 403 without the CSRF token."""

    async def endpoint(request: Request) -> Response:
        session = await run_in_threadpool(admin.auth.session, request)  # a store read: off the event loop
        if session is None:
            return _login_response(admin, request, status_code=401, next_path=_next_path(request, post))
        if post:
            form = await read_form(request)
            if not admin.auth.same_origin(request) or not admin.auth.csrf_ok(session, form.get("csrf_token")):
                return message(admin, request, session, 403, "Form expired",
                               "This form's security token is missing or wrong, so nothing was changed. "
                               "Reload the page and try again.", back=_next_path(request, post))
            request.state.form = form
        return await handler(admin, request, session)

    endpoint.__name__ = handler.__name__
    return endpoint


def _next_path(request: Request, post: bool) -> str:
    path = request.url.path
    if post:
        path = path.rsplit("/", 1)[0] if path.count("/") > 3 else "/admin/issues"
    return path if path.startswith("/admin") else "/admin/issues"


def _redirect(path: str, done: str = "", **query: str) -> RedirectResponse:
    params = {**query, **({"done": done} if done else {})}
    return RedirectResponse(path + ("?" + urlencode(params) if params else ""), status_code=303)


async def _css(request: Request) -> Response:
    return Response(CSS, media_type="text/css", headers={"cache-control": "public, max-age=3600"})


# --- signing in -----------------------------------------------------------------------------------

def _login_response(admin: Admin, request: Request, status_code: int = 200, next_path: str = "/admin/issues",
                    error: str = "", name: str = "") -> HTMLResponse:
    response = HTMLResponse("")
    token = admin.auth.login_token(request, response)
    if not error and admin.auth.cookies_dropped(request):
        error = DROPPED_COOKIES
    rendered = page(admin, request, "admin/login.html",
                    {"configured": bool(admin.auth.password_hash()), "login_token": token,
                     "next": next_path, "name": name},
                    None, status_code, notices=[("error", error)] if error else None)
    for key, value in response.raw_headers:
        if key == b"set-cookie":
            rendered.raw_headers.append((key, value))
    return rendered


async def login_page(admin: Admin, request: Request) -> Response:
    if await run_in_threadpool(admin.auth.session, request):
        return _redirect("/admin/issues")
    return _login_response(admin, request, next_path=_safe_next(request.query_params.get("next", "")))


async def login(admin: Admin, request: Request) -> Response:
    """Check the password (rate-limited per client) and start a session."""
    form = await read_form(request)
    next_path = _safe_next(str(form.get("next", "")))
    name = " ".join(str(form.get("name", "")).split())[:100]
    client = client_ip(request)
    if not name:
        return _login_response(admin, request, 400, next_path, "Enter your name: it is recorded with approvals.")
    if not admin.limiter.allowed(client):
        return _login_response(admin, request, 429, next_path,
                               "Too many failed sign-ins. Wait a few minutes, then try again.", name)
    if not admin.auth.same_origin(request) or not admin.auth.login_token_ok(request, form.get("login_token")):
        expired = DROPPED_COOKIES if admin.auth.cookies_dropped(request) else "The sign-in form expired: please try again."
        return _login_response(admin, request, 403, next_path, expired, name)
    try:
        ok = await run_in_threadpool(admin.auth.check_password, str(form.get("password", "")))
    except PasswordHashError as exc:
        return _login_response(admin, request, 500, next_path, str(exc), name)
    if not ok:
        admin.limiter.failed(client)
        return _login_response(admin, request, 401, next_path, "Wrong password.", name)
    response = _redirect(next_path)
    admin.auth.start_session(request, response, name)
    return response


def _safe_next(path: str) -> str:
    """Only local admin paths: never a redirect to another site."""
    if path.startswith("/admin") and "//" not in path and "\\" not in path and "\n" not in path and "\r" not in path:
        return path
    return "/admin/issues"


async def logout(admin: Admin, request: Request, session: AdminSession) -> Response:
    """Sign out everywhere this session's cookie went: it is revoked in the store, then deleted."""
    response = _redirect("/admin/login")
    await run_in_threadpool(admin.auth.end_session, session, response)
    return response


# --- issues ---------------------------------------------------------------------------------------

async def home(admin: Admin, request: Request, session: AdminSession) -> Response:
    return _redirect("/admin/issues")


async def issues_page(admin: Admin, request: Request, session: AdminSession) -> Response:
    from ..store.issues import list_issues

    issues = await run_in_threadpool(list_issues, admin.engine)
    return page(admin, request, "admin/issues.html", {"issues": issues, "active": "issues"}, session)


async def _issue_or_404(admin: Admin, request: Request, session: AdminSession, number: int):  # noqa: ANN202
    issue, summary = await run_in_threadpool(_issue_and_summary, admin.engine, number)
    if issue is None or summary is None:
        return None, None, message(admin, request, session, 404, "No such issue",
                                   f"There is no issue {number}.", back="/admin/issues")
    return issue, summary, None


def _issue_and_summary(engine: Engine, number: int):  # noqa: ANN202
    from ..store.issues import get_issue, get_summary

    return get_issue(engine, number), get_summary(engine, number)


async def _get_issue(admin: Admin, number: int):  # noqa: ANN202
    from ..store.issues import get_issue

    return await run_in_threadpool(get_issue, admin.engine, number)


async def issue_page(admin: Admin, request: Request, session: AdminSession, notices=None,  # noqa: ANN001
                     status_code: int = 200) -> Response:
    number = request.path_params["number"]
    issue, summary, missing = await _issue_or_404(admin, request, session, number)
    if missing:
        return missing
    choice = PreviewChoice.from_query(dict(request.query_params), admin.settings)
    context = await run_in_threadpool(issue_page_context, admin.settings, admin.engine, issue, summary, choice,
                                      admin.editions)
    context["test_address"] = request.query_params.get("to", "")[:320]
    return page(admin, request, "admin/issue.html", {**context, "active": "issues"}, session, status_code, notices)


async def preview(admin: Admin, request: Request, session: AdminSession) -> Response:
    """The edition itself, for the sandboxed iframe: its own strict CSP, no scripts, framed by us only."""
    issue = await _get_issue(admin, request.path_params["number"])
    headers = {"content-security-policy": PREVIEW_CSP, "x-frame-options": "SAMEORIGIN", "cache-control": "no-store"}
    if issue is None:
        return PlainTextResponse("There is no such issue.", status_code=404, headers=headers)
    choice = PreviewChoice.from_query(dict(request.query_params), admin.settings)
    try:
        document, _ = await run_in_threadpool(preview_document, admin.settings, admin.engine, issue, choice,
                                              admin.editions)
    except PreviewError as exc:
        return PlainTextResponse(str(exc), status_code=404, headers=headers)
    if choice.format == "text":
        return PlainTextResponse(document, headers=headers)
    return HTMLResponse(document, headers=headers)


async def approve(admin: Admin, request: Request, session: AdminSession) -> Response:
    """Approve exactly the version the page showed."""
    from ..store.issues import IssueError, StaleVersion
    from ..timing import SendWhen

    number = request.path_params["number"]
    version = str(request.state.form.get("version", ""))
    try:
        outlook = await run_in_threadpool(approve_and_look_ahead, admin.settings, admin.engine, number,
                                          session.name, version)
    except StaleVersion:
        return await issue_page(admin, request, session, status_code=409, notices=[(
            "error", "Not approved: this draft changed since the page you approved from was shown. "
                     "Check the preview below (the current version), then approve again.")])
    except IssueError as exc:
        return await issue_page(admin, request, session, status_code=409, notices=[("error", str(exc))])
    return _redirect(f"/admin/issues/{number}", "approved-due" if outlook.when == SendWhen.AT_ONCE else "approved")


def approve_and_look_ahead(settings: Settings, engine: Engine, number: int, by: str, version: str):  # noqa: ANN201
    """Approve exactly `version`; returns what the send job now does with it (digest.timing.send_outlook)."""
    from ..store.issues import approve_issue
    from ..store.runs import issue_timing
    from ..timing import send_outlook

    approve_issue(engine, number, by=by, version=version)
    return send_outlook(settings, issue_timing(engine, number), datetime.now(UTC))


async def edit_editorial(admin: Admin, request: Request, session: AdminSession) -> Response:
    form = request.state.form
    return await _edit(admin, request, session, "saved",
                       intro=str(form.get("intro", "")), subject=str(form.get("subject", "")))


async def edit_items(admin: Admin, request: Request, session: AdminSession) -> Response:
    """Apply the pin/drop checkboxes as the new set of choices."""
    issue = await _get_issue(admin, request.path_params["number"])
    if issue is None:
        return message(admin, request, session, 404, "No such issue", "There is no such issue.", "/admin/issues")
    form = request.state.form
    pins, drops = set(map(str, form.getlist("pin"))), set(map(str, form.getlist("drop")))
    current_pins, current_drops = set(issue.editorial.pinned), set(issue.editorial.dropped)
    return await _edit(admin, request, session, "items",
                       drop=sorted(drops - current_drops), undrop=sorted(current_drops - drops),
                       pin=sorted(pins - current_pins - drops), unpin=sorted(current_pins - (pins - drops)))


async def _edit(admin: Admin, request: Request, session: AdminSession, done: str, **changes) -> Response:  # noqa: ANN003
    from ..compose import EditorialError
    from ..store.issues import IssueError

    number = request.path_params["number"]
    try:
        changed = await run_in_threadpool(save_editorial, admin.settings, admin.engine, number, changes)
    except (EditorialError, IssueError, LookupError) as exc:
        return await issue_page(admin, request, session, status_code=400, notices=[("error", str(exc))])
    return _redirect(f"/admin/issues/{number}", done if changed else "unchanged")


def save_editorial(settings: Settings, engine: Engine, number: int, changes: dict) -> bool:
    """Apply editorial changes through the compose stage; True if the issue changed."""
    from ..store.issues import require_issue

    before = require_issue(engine, number)
    after = pipeline.edit_issue(settings, engine, number, datetime.now(UTC), **changes)
    return after.version != before.version or after.editorial != before.editorial


async def rebuild(admin: Admin, request: Request, session: AdminSession) -> Response:
    """Compose the draft's window again from the stored items."""
    from ..store.issues import IssueError

    number = request.path_params["number"]
    issue = await _get_issue(admin, number)
    if issue is None or issue.status not in (IssueStatus.DRAFT, IssueStatus.APPROVED):
        return message(admin, request, session, 409, "Cannot rebuild", "Only a draft or approved issue can be "
                       "rebuilt; a sent issue never changes.", f"/admin/issues/{number}")
    try:
        await run_in_threadpool(pipeline.build_issue, admin.settings, admin.engine, datetime.now(UTC),
                                since=issue.window.start, until=issue.window.end, allow_empty=True)
    except IssueError as exc:
        return await issue_page(admin, request, session, status_code=409, notices=[("error", str(exc))])
    return _redirect(f"/admin/issues/{number}", "rebuilt")


async def send_test(admin: Admin, request: Request, session: AdminSession) -> Response:
    """Send this issue (the full edition or a subscriber's) to one address; subscribers get nothing."""
    from ..deliver.editions import EditionError
    from ..deliver.message import HeaderError, check_address
    from ..deliver.transports import TransportError

    number = request.path_params["number"]
    form = request.state.form
    like = str(form.get("subscriber", "")).strip() or None
    try:
        address = check_address(str(form.get("address", "")).strip())
        results = await run_in_threadpool(pipeline.send_test, admin.settings, admin.engine, number, [address],
                                          subscriber_email=like)
    except (HeaderError, LookupError, ValueError) as exc:
        return await issue_page(admin, request, session, status_code=400, notices=[("error", str(exc))])
    except (EditionError, TransportError) as exc:
        # The settings or templates cannot make or send this edition: say so on the page, not as a 500.
        return await issue_page(admin, request, session, status_code=502,
                                notices=[("error", f"The test could not be sent: {exc}")])
    failed = [r for r in results if not r.ok]
    notice = ("error", f"The test to {address} failed: {failed[0].error}") if failed else \
        ("ok", f"Test sent to {address}.")
    return await issue_page(admin, request, session, status_code=502 if failed else 200, notices=[notice])


async def send_now(admin: Admin, request: Request, session: AdminSession) -> Response:
    """Start sending an approved issue to every subscriber, in the background; the ledger makes it once."""
    number = request.path_params["number"]
    issue = await _get_issue(admin, number)
    if issue is None or issue.status not in (IssueStatus.APPROVED, IssueStatus.SENDING):
        return message(admin, request, session, 409, "Not sent", "Only an approved issue can be sent: "
                       "approve it first.", f"/admin/issues/{number}")
    response = _redirect(f"/admin/issues/{number}/report", "sending")
    response.background = BackgroundTask(_send_in_background, admin.settings, admin.engine, number, session.name)
    return response


def _send_in_background(settings: Settings, engine: Engine, number: int, by: str) -> None:
    from ..pipeline.sending import send_now as scheduled_send

    try:
        scheduled_send(settings, engine, number, datetime.now(UTC), reason=f"send now by {by}")
    except Exception:  # noqa: BLE001 - already in the run log, which the report page shows
        pass


async def schedule(admin: Admin, request: Request, session: AdminSession) -> Response:
    """Give the issue its own send time (site timezone), or go back to the regular send_cron."""
    number = request.path_params["number"]
    form = request.state.form
    if form.get("clear"):
        await run_in_threadpool(set_send_time, admin.engine, number, None)
        return _redirect(f"/admin/issues/{number}", "unscheduled")
    try:
        local = datetime.strptime(str(form.get("send_at", "")), "%Y-%m-%dT%H:%M")
    except ValueError:
        return await issue_page(admin, request, session, status_code=400,
                                notices=[("error", "Give the send time as a date and time.")])
    send_at = local.replace(tzinfo=admin.settings.site.tz).astimezone(UTC)
    if send_at < datetime.now(UTC) - timedelta(minutes=1):
        return await issue_page(admin, request, session, status_code=400,
                                notices=[("error", "That time has passed: pick a time in the future or use Send now.")])
    if not await run_in_threadpool(set_send_time, admin.engine, number, send_at):
        return await issue_page(admin, request, session, status_code=409,
                                notices=[("error", "Only a draft or approved issue can be scheduled.")])
    return _redirect(f"/admin/issues/{number}", "scheduled")


async def report_page(admin: Admin, request: Request, session: AdminSession) -> Response:
    number = request.path_params["number"]
    issue, summary, missing = await _issue_or_404(admin, request, session, number)
    if missing:
        return missing
    report = await run_in_threadpool(delivery_report, admin.engine, number)
    runs = [r for r in await run_in_threadpool(recent_runs, admin.engine, limit=200) if r.issue_number == number][:20]
    return page(admin, request, "admin/report.html",
                {"issue": issue, "summary": summary, "report": report, "runs": runs, "active": "issues"}, session)


# --- health and people ----------------------------------------------------------------------------

async def feeds_page(admin: Admin, request: Request, session: AdminSession) -> Response:
    status = await run_in_threadpool(collect_status, admin.settings, admin.engine, datetime.now(UTC), runs=0)
    return page(admin, request, "admin/feeds.html", {"feeds": status.feeds, "active": "feeds",
                                                      "now": status.now}, session)


async def runs_page(admin: Admin, request: Request, session: AdminSession) -> Response:
    status = await run_in_threadpool(collect_status, admin.settings, admin.engine, datetime.now(UTC), runs=50)
    return page(admin, request, "admin/runs.html", {"status": status, "active": "runs"}, session)


async def subscribers_page(admin: Admin, request: Request, session: AdminSession) -> Response:
    overview = await run_in_threadpool(subscribers_overview, admin.settings, admin.engine, datetime.now(UTC))
    return page(admin, request, "admin/subscribers.html", {"overview": overview, "active": "subscribers"}, session)


async def archive_page(admin: Admin, request: Request, session: AdminSession) -> Response:
    from ..store.issues import list_issues

    sent = await run_in_threadpool(list_issues, admin.engine, (IssueStatus.SENT,))
    return page(admin, request, "admin/archive.html", {"issues": sent, "active": "archive"}, session)
