"""A send staff can trust: a confirmation showing who it reaches and when, then live progress.

URLs: GET /admin/issues/N/send (the confirmation: readers per language and edition) · POST
/admin/issues/N/send (with the confirmation's `confirm`: starts the send in the background, then
the progress page) · POST /admin/issues/N/schedule (a new send time: first the confirmation, then
saved) · GET /admin/issues/N/progress (updates itself: /admin/static/progress.js polls
progress.json; without scripts, a reload does the same). It also serves the issue page's
/admin/static/preview.js, which grows the preview frame to the edition's height. Every form answers with a redirect or a
page that changes nothing on reload.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ..pipeline import audience, issues, sending
from ..store.issues import IssueError, IssueNotFound
from .admin import Admin, AdminSession, issue_page, message, no_such_issue, page, redirect_to

STATIC = Path(__file__).resolve().parent / "static"
SCRIPTS = {name: (STATIC / name).read_text(encoding="utf-8") for name in ("progress.js", "preview.js")}


def routes(admin: Admin, get: Callable[..., Callable], post: Callable[..., Callable]) -> list[BaseRoute]:
    return [
        Route("/admin/static/{name:str}.js", _script),
        Route("/admin/issues/{number:int}/send", get(confirm_send, action="send"), methods=["GET"]),
        Route("/admin/issues/{number:int}/send", post(post_send_now, action="send"), methods=["POST"]),
        Route("/admin/issues/{number:int}/schedule", post(post_schedule, action="schedule"), methods=["POST"]),
        Route("/admin/issues/{number:int}/progress", get(progress_page, action="read_reports")),
        Route("/admin/issues/{number:int}/progress.json", get(progress_json, action="read_reports")),
    ]


async def _script(request: Request) -> Response:
    """The admin's two small scripts: the send progress and the preview's height (issue page)."""
    script = SCRIPTS.get(request.path_params["name"] + ".js")
    if script is None:
        raise HTTPException(404)
    return Response(script, media_type="text/javascript; charset=utf-8", headers={"cache-control": "public, max-age=3600"})


async def _confirmation(admin: Admin, request: Request, session: AdminSession, *, when: str, action: str,
                        fields: dict[str, str], button: str) -> Response:
    number = request.path_params["number"]
    try:
        reach = await run_in_threadpool(audience.send_audience, admin.settings, admin.engine, number)
    except IssueNotFound:
        return no_such_issue(admin, request, session, number)
    return page(admin, request, "admin/send_confirm.html",
                {"audience": reach, "when": when, "action": action, "fields": fields, "button": button,
                 "active": "issues"}, session)


async def confirm_send(admin: Admin, request: Request, session: AdminSession) -> Response:
    """GET: "Send issue N now to 1,234 readers?", with the readers per language and edition."""
    number = request.path_params["number"]
    try:
        await run_in_threadpool(sending.check_sendable, admin.engine, number)
    except IssueError as exc:  # not approved (or already sent), or no such issue
        return message(admin, request, session, 409, "Not sent", str(exc), f"/admin/issues/{number}")
    return await _confirmation(admin, request, session, when="now", action=f"/admin/issues/{number}/send",
                               fields={"confirm": "yes"}, button="Yes, send it now")


async def post_send_now(admin: Admin, request: Request, session: AdminSession) -> Response:
    """Start sending an approved issue to every subscriber, in the background; the ledger makes it once."""
    number = request.path_params["number"]
    if request.state.form.get("confirm") != "yes":  # straight from a bookmark or an old page: confirm first
        return redirect_to(f"/admin/issues/{number}/send")
    try:
        await run_in_threadpool(sending.check_sendable, admin.engine, number)
    except IssueError as exc:  # not approved (or already sending), or no such issue
        return message(admin, request, session, 409, "Not sent", str(exc), f"/admin/issues/{number}")
    response = redirect_to(f"/admin/issues/{number}/progress", "sending")
    response.background = BackgroundTask(sending.send_now_noted, admin.settings, admin.engine, number,
                                         session.account)
    return response


async def post_schedule(admin: Admin, request: Request, session: AdminSession) -> Response:
    """Give the issue its own send time (site timezone), after a confirmation; or back to the regular send_cron."""
    number = request.path_params["number"]
    form = request.state.form
    send_at, done = None, "unscheduled"
    if not form.get("clear"):
        raw = str(form.get("send_at", ""))
        try:
            local = datetime.strptime(raw, "%Y-%m-%dT%H:%M")
        except ValueError:
            return await issue_page(admin, request, session, status_code=400,
                                    notices=[("error", "Give the send time as a date and time.")])
        send_at, done = local.replace(tzinfo=admin.settings.site.tz).astimezone(UTC), "scheduled"
        try:  # what saving would refuse, refused before asking to confirm
            await run_in_threadpool(issues.check_send_time, admin.engine, number, send_at, datetime.now(UTC))
        except ValueError as exc:
            return await issue_page(admin, request, session, status_code=400, notices=[("error", str(exc))])
        except IssueError as exc:
            return await issue_page(admin, request, session, status_code=409, notices=[("error", str(exc))])
        if form.get("confirm") != "yes":  # this page changes nothing: a reload shows it again
            when = f"at {local:%A %-d %B %Y, %H:%M} ({admin.settings.site.timezone})"
            return await _confirmation(admin, request, session, when=when, action=f"/admin/issues/{number}/schedule",
                                       fields={"confirm": "yes", "send_at": raw}, button="Yes, schedule it")
    try:
        await run_in_threadpool(issues.schedule_send, admin.settings, admin.engine, number, send_at,
                                datetime.now(UTC), session.account)
    except ValueError as exc:  # the time has passed
        return await issue_page(admin, request, session, status_code=400, notices=[("error", str(exc))])
    except IssueError as exc:  # being sent or sent
        return await issue_page(admin, request, session, status_code=409, notices=[("error", str(exc))])
    return redirect_to(f"/admin/issues/{number}", done)


async def progress_page(admin: Admin, request: Request, session: AdminSession) -> Response:
    number = request.path_params["number"]
    try:
        progress = await run_in_threadpool(audience.send_progress, admin.engine, number)
    except IssueNotFound:
        return no_such_issue(admin, request, session, number)
    return page(admin, request, "admin/progress.html", {"progress": progress, "active": "issues"}, session)


async def progress_json(admin: Admin, request: Request, session: AdminSession) -> Response:
    number = request.path_params["number"]
    try:
        progress = await run_in_threadpool(audience.send_progress, admin.engine, number)
    except IssueNotFound:
        return JSONResponse({"error": f"there is no issue {number}"}, status_code=404)
    return JSONResponse(progress.as_dict(), headers={"cache-control": "no-store"})
