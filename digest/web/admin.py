"""The admin web app under /admin: sign in, preview, edit, approve and send issues; health and reports.

Every page needs a signed-in session (else the login page, with status 401, and nothing of a draft);
every state change is a POST carrying the session's CSRF token (else 403 and nothing changes).
Every form, the sign-in one included, is read with the 64 KiB cap of digest.web.security.read_form.
Approval carries the version the page showed: approving a draft that changed since is refused.
Each handler reads its form, calls one use case of digest.pipeline and shows the result; the rules
(who may approve what, which state allows a send, when a send time is valid) live there. Blocking
work (every store query, the session check included, rendering, SMTP, building) runs in the thread
pool, never on the event loop. Handlers are named after the page they show (`*_page`) or the form
they take (`post_*`), so none shares a name with the use case it calls.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..addresses import address_problem
from ..archive_urls import archive_path
from ..compose import EditorialError
from ..config import Settings
from ..deliver.editions import EditionError
from ..deliver.message import HeaderError, check_address
from ..deliver.transport import TransportError
from ..models import Account
from ..pipeline import accounts, issues, reports, sending
from ..pipeline.editions import EditionCache, NoEdition
from ..pipeline.status import collect_status
from ..store.issues import IssueError, StaleVersion
from ..timetable import SendWhen
from .admin_auth import AdminAuth, AdminSession, LoginLimiter, LoginRefused, PasswordHashError
from .admin_preview import PREVIEW_CSP, PreviewChoice, editorial_changes, issue_page_context, preview_document
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
    "sending": "Sending started.",
    "test-sent": "Test sent to {to}.",
    "unchanged": "Nothing changed.",
    "invited": "Invitation sent: the link in it works once, for 72 hours.",
    "role-changed": "Role changed. That person's open sessions ended: they sign in again.",
    "disabled": "Account disabled. Its open sessions ended.",
    "enabled": "Account enabled: it signs in with its password again.",
    "removed": "Account removed.",
    "reset": "A link to choose a new password is on its way to that account.",
    "password-set": "Your password is saved: sign in with it.",
    "token-revoked": "Token revoked: it stopped working at once.",
    "adopted": "Your account is made: sign in with its email address and the same password.",
    "reset-asked": "If that address has an account, a link to choose a new password is on its way.",
}
# The store's status words as staff read them (`{{ status|plain }}`); others lose their underscores.
PLAIN_WORDS = {
    "queued": "waiting to be sent", "sending": "being sent", "failed_temporary": "will be tried again",
    "failed_permanent": "failed for good", "skipped": "skipped: nothing in it for this reader",
    "possibly_delivered": "possibly delivered (the server's reply was lost)",
    "not_modified": "unchanged since the last fetch", "ok": "fine", "warning": "needs attention", "error": "failed",
}
DROPPED_COOKIES = ("Signing in needs a Secure cookie, which browsers only keep over https: sign in over https, "
                   "or on 127.0.0.1 / localhost. (Behind a reverse proxy, see the admin docs: web.base_url "
                   "and the headers the proxy passes on.)")
BUSY = "Other sign-ins are being checked right now. Try again in a moment."
Notices = list[tuple[str, str]]


@dataclass(frozen=True)
class Admin:
    """What every admin handler needs; built once per app."""

    settings: Settings
    engine: Engine
    auth: AdminAuth
    limiter: LoginLimiter
    env: Environment
    editions: EditionCache  # compiled previews, kept for the app's life (see digest.pipeline.editions)


Handler = Callable[[Admin, Request, AdminSession], Awaitable[Response]]


def routes(settings: Settings, engine: Engine) -> list[BaseRoute]:
    """The /admin routes of the web app."""
    from .admin_accounts import routes as account_routes  # here: these modules import this one
    from .admin_audit import routes as audit_routes
    from .admin_feeds import routes as feed_routes
    from .admin_reading import routes as reading_routes
    from .admin_send import routes as send_routes
    from .admin_series import routes as series_routes
    from .admin_settings import routes as settings_routes
    from .admin_subscribers import routes as subscriber_routes
    limiter = LoginLimiter(slots=settings.web.login_hash_slots)
    admin = Admin(settings, engine, AdminAuth(settings, engine), limiter, _environment(settings), EditionCache())
    get = functools.partial(_guarded, admin, post=False)
    post = functools.partial(_guarded, admin, post=True)
    return [
        Route("/admin/static/admin.css", _css),
        Route("/admin/login", functools.partial(login_page, admin), methods=["GET"]),
        Route("/admin/login", functools.partial(post_login, admin), methods=["POST"]),
        Route("/admin/logout", post(post_logout), methods=["POST"]),
        Route("/admin", get(home_page)),
        Route("/admin/", get(home_page)),
        Route("/admin/issues", get(issues_page)),
        Route("/admin/issues/{number:int}", get(issue_page)),
        Route("/admin/issues/{number:int}/preview", get(preview_page)),
        Route("/admin/issues/{number:int}/report", get(report_page)),
        Route("/admin/issues/{number:int}/approve", post(post_approve, action="approve"), methods=["POST"]),
        Route("/admin/issues/{number:int}/editorial", post(post_editorial, action="edit"), methods=["POST"]),
        Route("/admin/issues/{number:int}/items", post(post_items, action="edit"), methods=["POST"]),
        Route("/admin/issues/{number:int}/rebuild", post(post_rebuild, action="build"), methods=["POST"]),
        Route("/admin/issues/{number:int}/test", post(post_test_send, action="test_send"), methods=["POST"]),
        *send_routes(admin, get, post),
        *feed_routes(admin, get, post),
        Route("/admin/runs", get(runs_page)),
        *subscriber_routes(admin, get, post),
        *series_routes(admin, get, post),
        *settings_routes(admin, get, post),
        *reading_routes(admin, get, post),
        Route("/admin/archive", get(archive_page)),
        *account_routes(admin, get, post),
        *audit_routes(admin, get, post),
    ]


# --- plumbing -------------------------------------------------------------------------------------

def _environment(settings: Settings) -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True)
    tz = settings.site.tz

    def local(value: datetime | None, fmt: str = "%d %b %Y, %H:%M") -> str:
        return "—" if value is None else value.astimezone(tz).strftime(fmt)

    env.filters["local"] = local
    env.filters["plain"] = lambda word: PLAIN_WORDS.get(str(word), str(word).replace("_", " "))
    env.globals["archive_path"] = archive_path
    return env


def page(admin: Admin, request: Request, name: str, context: dict[str, Any], session: AdminSession | None,
         status_code: int = 200, notices: Notices | None = None) -> HTMLResponse:
    """An admin page: never cached, never framed."""
    done = DONE.get(request.query_params.get("done", ""))
    if done and "{to}" in done:  # an address from the URL is shown only if it is one
        to = request.query_params.get("to", "")
        done = done.format(to=to) if to and address_problem(to) is None else None
    shown = [("ok", done)] if done else []
    html = admin.env.get_template(name).render(
        site_name=admin.settings.site.name, session=session, notices=shown + (notices or []), **context)
    # same-origin (not the site-wide no-referrer) so the browser sends a real Origin with our POSTs.
    return HTMLResponse(html, status_code=status_code,
                        headers={"cache-control": "no-store", "referrer-policy": "same-origin"})


def message(admin: Admin, request: Request, session: AdminSession | None, status_code: int, heading: str,
            text: str, back: str = "") -> HTMLResponse:
    """A page with one message (a refusal, a missing issue) and a link back."""
    return page(admin, request, "admin/message.html", {"heading": heading, "text": text, "back": back},
                session, status_code)


def _guarded(admin: Admin, handler: Handler, post: bool, action: str = "preview") -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler: the login page without a session; 403 when the account's role may not do
    `action` (pipeline.accounts.ROLE_NEEDED) or, for POSTs, without the CSRF token."""

    async def endpoint(request: Request) -> Response:
        session = await run_in_threadpool(admin.auth.session, request)  # a store read: off the event loop
        if session is None:
            return await _login_response(admin, request, status_code=401, next_path=_next_path(request, post))
        if refused := not_allowed(admin, request, session, action):
            return refused
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


def not_allowed(admin: Admin, request: Request, session: AdminSession, action: str) -> Response | None:
    """The 403 page saying who may do `action`, or None when this session's account may."""
    if reason := accounts.why_not(session.account, action):
        return message(admin, request, session, 403, "Not allowed", reason, back=_next_path(request, True))
    return None


def _next_path(request: Request, post: bool) -> str:
    path = request.url.path
    if post:
        path = path.rsplit("/", 1)[0] if path.count("/") > 3 else "/admin/issues"
    return path if path.startswith("/admin") else "/admin/issues"


def redirect_to(path: str, done: str = "", **query: str) -> RedirectResponse:
    """303 to `path`, with the key of the page's message after a redirect (`done`) and `query`."""
    params = {**query, **({"done": done} if done else {})}
    return RedirectResponse(path + ("?" + urlencode(params) if params else ""), status_code=303)


def signed_redirect(session: AdminSession, path: str, **params: str) -> RedirectResponse:
    """303 to `path` with `params` signed by the session: words a page shows after a redirect (an
    import's skipped lines) that a crafted URL cannot put there."""
    ordered = sorted(params.items())
    query = urlencode([*ordered, ("sig", session.sign(*(f"{k}={v}" for k, v in ordered)))])
    return RedirectResponse(f"{path}?{query}", status_code=303)


def signed_params(request: Request, session: AdminSession) -> dict[str, str]:
    """The query's values when signed_redirect made them for this session, else nothing."""
    params = {k: v for k, v in request.query_params.multi_items() if k != "sig"}
    sig = request.query_params.get("sig", "")
    expected = session.sign(*(f"{k}={v}" for k, v in sorted(params.items())))
    return params if sig and hmac.compare_digest(sig, expected) else {}


async def _css(request: Request) -> Response:
    return Response(CSS, media_type="text/css", headers={"cache-control": "public, max-age=3600"})


# --- signing in -----------------------------------------------------------------------------------

async def _login_response(admin: Admin, request: Request, status_code: int = 200, next_path: str = "/admin/issues",
                    error: str = "", name: str = "") -> HTMLResponse:
    response = HTMLResponse("")
    token = admin.auth.login_token(request, response)
    if not error and admin.auth.cookies_dropped(request):
        error = DROPPED_COOKIES
    with_accounts = await run_in_threadpool(admin.auth.accounts_in_use)  # a store read: off the event loop
    rendered = page(admin, request, "admin/login.html",
                    {"configured": with_accounts or bool(admin.auth.password_hash()), "accounts": with_accounts,
                     "login_token": token, "next": next_path, "name": name},
                    None, status_code, notices=[("error", error)] if error else None)
    for key, value in response.raw_headers:
        if key == b"set-cookie":
            rendered.raw_headers.append((key, value))
    return rendered


async def login_page(admin: Admin, request: Request) -> Response:
    if await run_in_threadpool(admin.auth.session, request):
        return redirect_to("/admin/issues")
    return await _login_response(admin, request, next_path=_safe_next(request.query_params.get("next", "")))


async def post_login(admin: Admin, request: Request) -> Response:
    """Check the password and start a session; 429 past the client's attempts or while every hashing slot is busy."""
    form = await read_form(request)
    next_path = _safe_next(str(form.get("next", "")))
    # With accounts the form asks for the email address; with the shared password, for a name.
    name = " ".join(str(form.get("email", form.get("name", ""))).split())[:320]
    client = client_ip(request)
    with_accounts = await run_in_threadpool(admin.auth.accounts_in_use)
    if not name:
        return await _login_response(admin, request, 400, next_path, "Enter your email address." if with_accounts
                               else "Enter your name: it is recorded with approvals.")
    if not admin.auth.same_origin(request) or not admin.auth.login_token_ok(request, form.get("login_token")):
        expired = DROPPED_COOKIES if admin.auth.cookies_dropped(request) else "The sign-in form expired: please try again."
        return await _login_response(admin, request, 403, next_path, expired, name)
    attempt = admin.limiter.start(client)  # counted now, before hashing: parallel requests cannot all pass
    if isinstance(attempt, LoginRefused):
        text = BUSY if attempt.busy else "Too many failed sign-ins. Wait a few minutes, then try again."
        response = await _login_response(admin, request, 429, next_path, text, name)
        response.headers["retry-after"] = str(attempt.retry_after)
        return response
    password = str(form.get("password", ""))
    signed_in: list[Account] = []

    def check() -> bool:
        account = admin.auth.check_credentials(name, password)
        signed_in.extend([account] if account else [])
        return account is not None

    try:
        ok = await run_in_threadpool(admin.limiter.check, attempt, check)
    except PasswordHashError as exc:
        return await _login_response(admin, request, 500, next_path, str(exc), name)
    if not ok:
        return await _login_response(admin, request, 401, next_path,
                               "Wrong email address or password." if with_accounts else "Wrong password.", name)
    response = redirect_to(next_path)
    admin.auth.start_session(request, response, signed_in[0])
    return response


def _safe_next(path: str) -> str:
    """Only local admin paths: never a redirect to another site."""
    if path.startswith("/admin") and "//" not in path and "\\" not in path and "\n" not in path and "\r" not in path:
        return path
    return "/admin/issues"


async def post_logout(admin: Admin, request: Request, session: AdminSession) -> Response:
    """Sign out everywhere this session's cookie went: it is revoked in the store, then deleted."""
    response = redirect_to("/admin/login")
    await run_in_threadpool(admin.auth.end_session, session, response)
    return response


# --- issues ---------------------------------------------------------------------------------------

async def home_page(admin: Admin, request: Request, session: AdminSession) -> Response:
    return redirect_to("/admin/issues")


async def issues_page(admin: Admin, request: Request, session: AdminSession) -> Response:
    found = await run_in_threadpool(issues.list_issues, admin.engine)
    return page(admin, request, "admin/issues.html", {"issues": found, "active": "issues"}, session)


def no_such_issue(admin: Admin, request: Request, session: AdminSession, number: int) -> HTMLResponse:
    return message(admin, request, session, 404, "No such issue", f"There is no issue {number}.", back="/admin/issues")


async def issue_page(admin: Admin, request: Request, session: AdminSession, notices: Notices | None = None,
                     status_code: int = 200) -> Response:
    """The issue page (also the answer to a refused form, with its error notice and status)."""
    number = request.path_params["number"]
    review = await run_in_threadpool(reports.issue_review, admin.settings, admin.engine, number, datetime.now(UTC))
    if review is None:
        return no_such_issue(admin, request, session, number)
    choice = PreviewChoice.from_query(dict(request.query_params), admin.settings)
    context = await run_in_threadpool(issue_page_context, admin.settings, admin.engine, review, choice,
                                      admin.editions)
    context["test_address"] = request.query_params.get("to", "")[:320]
    # Buttons this account's role does not allow are shown disabled, with the reason beside them.
    context["refused"] = {action: accounts.why_not(session.account, action) for action in ("schedule", "send")}
    context["refused"]["approve"] = await run_in_threadpool(issues.approval_refusal, admin.settings, admin.engine,
                                                            number, session.account)
    return page(admin, request, "admin/issue.html", {**context, "active": "issues"}, session, status_code, notices)


async def preview_page(admin: Admin, request: Request, session: AdminSession) -> Response:
    """The edition itself, for the sandboxed iframe: its own strict CSP, no scripts, framed by us only."""
    issue = await run_in_threadpool(issues.find_issue, admin.engine, request.path_params["number"])
    headers = {"content-security-policy": PREVIEW_CSP, "x-frame-options": "SAMEORIGIN", "cache-control": "no-store"}
    if issue is None:
        return PlainTextResponse("There is no such issue.", status_code=404, headers=headers)
    choice = PreviewChoice.from_query(dict(request.query_params), admin.settings)
    try:
        document = await run_in_threadpool(preview_document, admin.settings, admin.engine, issue, choice,
                                           admin.editions)
    except NoEdition as exc:
        return PlainTextResponse(str(exc), status_code=404, headers=headers)
    if choice.format == "text":
        return PlainTextResponse(document, headers=headers)
    return HTMLResponse(document, headers=headers)


async def post_approve(admin: Admin, request: Request, session: AdminSession) -> Response:
    """Approve exactly the version the page showed."""
    number = request.path_params["number"]
    version = str(request.state.form.get("version", ""))
    try:
        approval = await run_in_threadpool(issues.approve_issue, admin.settings, admin.engine, number,
                                           session.account, version, datetime.now(UTC))
    except StaleVersion:
        return await issue_page(admin, request, session, status_code=409, notices=[(
            "error", "Not approved: this draft changed since the page you approved from was shown. "
                     "Check the preview below (the current version), then approve again.")])
    except IssueError as exc:
        return await issue_page(admin, request, session, status_code=409, notices=[("error", str(exc))])
    except accounts.NotAllowed as exc:  # the four-eyes rule: this account edited it last
        return await issue_page(admin, request, session, status_code=403, notices=[("error", str(exc))])
    due = approval.outlook.when == SendWhen.AT_ONCE
    return redirect_to(f"/admin/issues/{number}", "approved-due" if due else "approved")


async def post_editorial(admin: Admin, request: Request, session: AdminSession) -> Response:
    """Subject, intro and lead story text, in the site language and in readers' other languages."""
    return await _edit(admin, request, session, "saved", **editorial_changes(request.state.form, admin.settings))


async def post_items(admin: Admin, request: Request, session: AdminSession) -> Response:
    """Apply the pin/drop checkboxes as the new set of choices."""
    number = request.path_params["number"]
    issue = await run_in_threadpool(issues.find_issue, admin.engine, number)
    if issue is None:
        return message(admin, request, session, 404, "No such issue", "There is no such issue.", "/admin/issues")
    form = request.state.form
    pins, drops = set(map(str, form.getlist("pin"))), set(map(str, form.getlist("drop")))
    current_pins, current_drops = set(issue.editorial.pinned), set(issue.editorial.dropped)
    return await _edit(admin, request, session, "items",
                       drop=sorted(drops - current_drops), undrop=sorted(current_drops - drops),
                       pin=sorted(pins - current_pins - drops), unpin=sorted(current_pins - (pins - drops)))


async def _edit(admin: Admin, request: Request, session: AdminSession, done: str, **changes: Any) -> Response:
    number = request.path_params["number"]
    try:
        changed = await run_in_threadpool(_save_editorial, admin.settings, admin.engine, number, changes,
                                          session.account)
    except (EditorialError, IssueError, LookupError) as exc:
        return await issue_page(admin, request, session, status_code=400, notices=[("error", str(exc))])
    return redirect_to(f"/admin/issues/{number}", done if changed else "unchanged")


def _save_editorial(settings: Settings, engine: Engine, number: int, changes: dict[str, Any], actor: Account) -> bool:
    """Apply editorial changes; True if what readers get or the choices changed (issues.issue_changed)."""
    before = issues.get_issue(engine, number)
    after = issues.edit_issue(settings, engine, number, datetime.now(UTC), actor, **changes)
    return issues.issue_changed(before, after)


async def post_rebuild(admin: Admin, request: Request, session: AdminSession) -> Response:
    """Compose the draft's window again from the stored items."""
    number = request.path_params["number"]
    try:
        await run_in_threadpool(issues.rebuild_issue, admin.settings, admin.engine, number, datetime.now(UTC),
                                session.account)
    except IssueError as exc:  # not a draft or approved issue; a window conflict
        return await issue_page(admin, request, session, status_code=409, notices=[("error", str(exc))])
    return redirect_to(f"/admin/issues/{number}", "rebuilt")


async def post_test_send(admin: Admin, request: Request, session: AdminSession) -> Response:
    """Send this issue (the full edition or a subscriber's) to one address; subscribers get nothing."""
    number = request.path_params["number"]
    form = request.state.form
    like = str(form.get("subscriber", "")).strip() or None
    try:
        address = check_address(str(form.get("address", "")).strip())
        results = await run_in_threadpool(functools.partial(
            sending.send_test, admin.settings, admin.engine, number, [address], subscriber_email=like,
            actor=session.account))
    except (HeaderError, LookupError, ValueError) as exc:
        return await issue_page(admin, request, session, status_code=400, notices=[("error", str(exc))])
    except accounts.NotAllowed as exc:  # an account sends tests to itself or the staff list only
        return await issue_page(admin, request, session, status_code=403, notices=[("error", str(exc))])
    except (EditionError, TransportError) as exc:
        # The settings or templates cannot make or send this edition: say so on the page, not as a 500.
        return await issue_page(admin, request, session, status_code=502,
                                notices=[("error", f"The test could not be sent: {exc}")])
    failed = [r for r in results if not r.ok]
    if failed:  # nothing was sent: showing the page again (a reload would only try again) is safe
        return await issue_page(admin, request, session, status_code=502,
                                notices=[("error", f"The test to {address} failed: {failed[0].error}")])
    return redirect_to(f"/admin/issues/{request.path_params['number']}", "test-sent", to=address)


async def report_page(admin: Admin, request: Request, session: AdminSession) -> Response:
    number = request.path_params["number"]
    report = await run_in_threadpool(reports.issue_report, admin.engine, number)
    if report is None:
        return no_such_issue(admin, request, session, number)
    return page(admin, request, "admin/report.html",
                {"issue": report.issue, "summary": report.summary, "report": report.delivery, "runs": report.runs,
                 "active": "issues"}, session)


# --- health and people ----------------------------------------------------------------------------

async def runs_page(admin: Admin, request: Request, session: AdminSession) -> Response:
    status = await run_in_threadpool(collect_status, admin.settings, admin.engine, datetime.now(UTC), runs=50)
    return page(admin, request, "admin/runs.html", {"status": status, "active": "schedule"}, session)


async def archive_page(admin: Admin, request: Request, session: AdminSession) -> Response:
    sent = await run_in_threadpool(reports.archive_index, admin.engine)
    return page(admin, request, "admin/archive.html", {"issues": sent, "active": "archive"}, session)
