"""The admin's subscribers page: the overview, search and filters, one subscriber's history; add, unsubscribe,
erase (after a confirmation page); CSV import after a dry run; CSV export.

Each handler calls one use case of digest.pipeline.subscribers or .subscriber_import. Every form is a
POST with the session's CSRF token that ends in a redirect (Post/Redirect/Get), so a reload changes
nothing. Pages link to a subscriber by id, so addresses never sit in URLs or access logs.
The import is two steps: the upload is held and answered with a redirect to its dry run (a GET,
changing nothing); "Import these" carries the dry run's digest, signed with the session's CSRF
secret, and the use case refuses when a fresh dry run differs. A held upload belongs to the session
that uploaded it. Counts shown after a redirect travel in the query signed the same way.
"""

from __future__ import annotations

import functools
import hmac
import io
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..config import LANGUAGES
from ..models import SubscriberStatus
from ..pipeline import accounts, reports, subscriber_import
from ..pipeline import subscribers as staff
from ..subscriber_fields import InvalidSubscriber
from ..suppression_keys import SuppressionKeyMissing
from .admin import Admin, message, page, redirect_to, signed_params, signed_redirect
from .admin_auth import AdminSession
from .admin_reports import weekly_chart
from .admin_uploads import UploadRoute, upload_endpoint

PER_PAGE = 50
MAX_SHOWN_LINES = 200  # lines listed per outcome on the dry-run page (the counts cover them all)
LIST_UPLOAD = UploadRoute("edit", subscriber_import.MAX_BYTES, "/admin/subscribers",
                          f"A list of at most {subscriber_import.MAX_BYTES // 1024 // 1024} MiB is read: "
                          "split it and import the parts.", max_part_bytes=subscriber_import.MAX_BYTES)
DONE = {  # messages after a redirect, chosen by key
    "added": "Subscriber added: they receive the next issue.",
    "confirmed": "Their sign-up, which waited for confirmation, is confirmed on your word.",
    "reactivated": "The bounced address is subscribed again, as its owner asked.",
    "updated": "Their choices are saved.",
    "unsubscribed": "Unsubscribed: they receive nothing more. The address stays listed so no import adds it back.",
    "already-out": "Nothing changed: this subscriber already receives nothing.",
    "erased": "Erased: everything about that address is deleted; only a keyed hash is kept so it is never added again.",
    "import-cancelled": "Import cancelled: nothing was imported.",
}
# Subscriber statuses and history events as staff read them.
STATUS_WORDS = {
    "confirmed": "subscribed", "pending": "waiting for their confirmation", "unsubscribed": "unsubscribed",
    "bounced": "bounced: the address no longer works", "complained": "marked a digest as spam",
}
EVENT_WORDS = {
    "subscribed": "subscribed", "confirmed": "confirmed", "preferences": "changed their choices",
    "unsubscribed": "unsubscribed", "bounce": "a message bounced", "bounced": "stopped: too many bounces",
    "complained": "marked a digest as spam", "imported": "imported", "pending": "signed up, not yet confirmed",
    "signup": "signed up, not yet confirmed", "soft_bounce": "a message was refused for now (soft bounce)",
    "delayed": "a message was delayed", "complaint": "marked a digest as spam", "erased": "erased",
}
OUTCOME_WORDS = {"added": "Added", "updated": "Updated", "unchanged": "Unchanged", "suppressed": "Suppressed",
                 "rejected": "Rejected"}


def routes(admin: Admin, get: Any, post: Any) -> list[BaseRoute]:
    """The /admin/subscribers routes; `get`/`post` wrap a handler with the session (and CSRF) checks of digest.web.admin."""
    return [
        Route("/admin/subscribers", get(subscribers_page, action="read_reports")),
        Route("/admin/subscribers/export.csv", get(export_download, action="read_reports")),
        Route("/admin/subscribers/{sid:int}", get(subscriber_page, action="read_reports")),
        Route("/admin/subscribers/{sid:int}/erase", get(erase_page, action="erase")),
        Route("/admin/subscribers/import/{token}", get(dry_run_page, action="edit")),
        Route("/admin/subscribers/add", post(post_add, action="edit"), methods=["POST"]),
        Route("/admin/subscribers/{sid:int}/unsubscribe", post(post_unsubscribe, action="edit"), methods=["POST"]),
        Route("/admin/subscribers/{sid:int}/erase", post(post_erase, action="erase"), methods=["POST"]),
        Route("/admin/subscribers/import/{token}/apply", post(post_apply, action="edit"), methods=["POST"]),
        Route("/admin/subscribers/import/{token}/cancel", post(post_cancel, action="edit"), methods=["POST"]),
        # An upload is larger than read_form's cap: this route reads its own form (same checks).
        Route("/admin/subscribers/import", upload_endpoint(admin, LIST_UPLOAD, _hold), methods=["POST"]),
    ]


# --- signed values ---------------------------------------------------------------------------------

def _owner(session: AdminSession) -> str:
    """Who a held upload belongs to: this session (its CSRF secret), never another."""
    return session.sign("subscriber-import")


def _done(request: Request) -> list[tuple[str, str]]:
    text = DONE.get(request.query_params.get("done", ""))
    return [("ok", text)] if text else []


def _words() -> dict[str, Any]:
    return {"status_words": STATUS_WORDS, "event_words": EVENT_WORDS, "outcome_words": OUTCOME_WORDS,
            "active": "subscribers"}


# --- pages -----------------------------------------------------------------------------------------

async def subscribers_page(admin: Admin, request: Request, session: AdminSession, status_code: int = 200,
                           notices: list[tuple[str, str]] | None = None, fields: dict[str, Any] | None = None) -> Response:
    """The overview, the search with its page of results, and the add, import and export forms."""
    query = request.query_params
    wanted = {key: query.get(key, "")[:200].strip() for key in ("q", "status", "series", "language")}
    status = wanted["status"] if wanted["status"] in STATUS_WORDS else ""
    try:
        number = max(1, int(query.get("page", "1")))
    except ValueError:
        number = 1
    now = datetime.now(UTC)
    overview = await run_in_threadpool(reports.subscribers_overview, admin.settings, admin.engine, now)
    series = await run_in_threadpool(staff.series_in_force, admin.settings, admin.engine)
    found = await run_in_threadpool(functools.partial(
        staff.search_subscribers, admin.settings, admin.engine, wanted["q"],
        SubscriberStatus(status) if status else None, wanted["series"], wanted["language"], number, PER_PAGE))
    shown = _done(request)
    imported = signed_params(request, session)
    if "added" in imported:
        shown.append(("ok", "Imported {file}: {added} added, {updated} updated, {unchanged} unchanged, "
                            "{suppressed} suppressed, {rejected} rejected.".format_map(_Counts(imported))))
    filters = {k: v for k, v in {**wanted, "status": status}.items() if v}
    return page(admin, request, "admin/subscribers.html",
                {"overview": overview, "chart": weekly_chart(overview.weeks), "found": found, "wanted": wanted,
                 "status": status, "series": series, "languages": _languages(found.languages),
                 "filters": filters, "page_link": lambda n: "/admin/subscribers?" + urlencode({**filters, "page": n}),
                 "fields": fields or {}, "export_query": urlencode({k: filters[k] for k in ("status", "series") if k in filters}),
                 "max_mib": subscriber_import.MAX_BYTES // 1024 // 1024,
                 "default_language": admin.settings.site.language, **_words()},
                session, status_code, notices=shown + (notices or []))


class _Counts(dict):
    def __missing__(self, key: str) -> str:
        return "0"


def _languages(stored: list[str]) -> list[str]:
    """The configurable languages and any a stored subscriber reads."""
    return sorted(set(LANGUAGES) | set(stored))


async def subscriber_page(admin: Admin, request: Request, session: AdminSession) -> Response:
    """One subscriber's record: choices, consent, history, deliveries and waiting sign-ups."""
    sid = request.path_params["sid"]
    found = await run_in_threadpool(staff.subscriber_history, admin.settings, admin.engine, sid)
    if found is None or found.record is None:
        return message(admin, request, session, 404, "No such subscriber",
                       "There is no such subscriber: they may have been erased.", back="/admin/subscribers")
    record = found.record
    row = record["subscriber"]
    series = await run_in_threadpool(staff.series_in_force, admin.settings, admin.engine)
    refused = {action: accounts.why_not(session.account, action) for action in ("edit", "erase")}
    return page(admin, request, "admin/subscriber.html",
                {"row": row, "events": list(reversed(record["events"])), "deliveries": record["deliveries"],
                 "requests": record["signup_requests"], "series_names": {s.id: s.name for s in series},
                 "opted_out": row["status"] in ("unsubscribed", "bounced", "complained"), "refused": refused,
                 "when": functools.partial(_when, admin), **_words()}, session, notices=_done(request))


def _when(admin: Admin, stored: str | None) -> str:
    """A time from the subscriber's record (ISO text) as every admin page shows times."""
    return admin.env.filters["local"](datetime.fromisoformat(stored) if stored else None)


async def erase_page(admin: Admin, request: Request, session: AdminSession) -> Response:
    """Ask before erasing: what goes, what stays."""
    sid = request.path_params["sid"]
    found = await run_in_threadpool(staff.subscriber_history, admin.settings, admin.engine, sid)
    if found is None or found.record is None:
        return message(admin, request, session, 404, "No such subscriber",
                       "There is no such subscriber: they may have been erased already.", back="/admin/subscribers")
    return page(admin, request, "admin/subscriber_erase.html",
                {"row": found.record["subscriber"], "deliveries": len(found.record["deliveries"]), **_words()}, session)


async def export_download(admin: Admin, request: Request, session: AdminSession) -> Response:
    """Every subscriber (or those of a status or series) as a formula-safe CSV that imports again."""
    status = request.query_params.get("status", "")
    series = request.query_params.get("series", "")
    known = await run_in_threadpool(staff.series_in_force, admin.settings, admin.engine)
    out = io.StringIO()
    try:
        await run_in_threadpool(staff.export_subscribers, admin.settings, admin.engine, out, "csv",
                                SubscriberStatus(status) if status in STATUS_WORDS else None,
                                series if series in {s.id for s in known} else None)
    except InvalidSubscriber as exc:
        return message(admin, request, session, 400, "Not exported", str(exc), back="/admin/subscribers")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"content-disposition": f'attachment; filename="subscribers-{stamp}.csv"',
                             "cache-control": "no-store"})


async def dry_run_page(admin: Admin, request: Request, session: AdminSession, notices: list | None = None,
                       status_code: int = 200) -> Response:
    """What importing the held upload would do, line by line; nothing is written."""
    held = subscriber_import.held_upload(request.path_params["token"], _owner(session))
    if held is None:
        return _import_gone(admin, request, session)
    try:
        plan = await run_in_threadpool(subscriber_import.plan_import, admin.settings, admin.engine, held.path)
    except subscriber_import.ImportFileError as exc:
        subscriber_import.drop_upload(held)
        return message(admin, request, session, 400, "Not imported", f"Nothing was imported: {exc}",
                       back="/admin/subscribers")
    except SuppressionKeyMissing as exc:
        return message(admin, request, session, 500, "Not imported", str(exc), back="/admin/subscribers")
    lines = {o: [r for r in plan.rows if r.outcome == o][:MAX_SHOWN_LINES] for o in subscriber_import.OUTCOMES}
    return page(admin, request, "admin/subscriber_import.html",
                {"held": held, "plan": plan, "lines": lines, "shown_max": MAX_SHOWN_LINES,
                 "plan_sig": session.sign("plan", held.token, plan.digest), **_words()},
                session, status_code, notices=notices)


def _import_gone(admin: Admin, request: Request, session: AdminSession) -> Response:
    return message(admin, request, session, 410, "This import is no longer waiting",
                   "It was imported or cancelled already, or it expired (an upload waits "
                   f"{subscriber_import.HOLD_HOURS} hours). Nothing was changed now: upload the file again if needed.",
                   back="/admin/subscribers")


# --- forms -----------------------------------------------------------------------------------------

async def post_add(admin: Admin, request: Request, session: AdminSession) -> Response:
    """Add (or update) a confirmed subscriber on staff's word (consent method "admin")."""
    form = request.state.form
    fields = {"email": str(form.get("email", ""))[:320], "name": str(form.get("name", ""))[:200],
              "language": str(form.get("language", ""))[:10], "series": [str(s)[:100] for s in form.getlist("series")],
              "want_events": form.get("want_events") == "yes", "want_media": form.get("want_media") == "yes"}
    try:
        done = await run_in_threadpool(functools.partial(
            staff.add_subscriber, admin.settings, admin.engine, fields["email"], name=fields["name"],
            language=fields["language"], series=fields["series"], want_events=fields["want_events"],
            want_media=fields["want_media"], reactivate_bounced=form.get("reactivate_bounced") == "yes",
            now=datetime.now(UTC)))
    except InvalidSubscriber as exc:
        return await subscribers_page(admin, request, session, 400, [("error", f"Not added: {exc}")], fields)
    except SuppressionKeyMissing as exc:
        return await subscribers_page(admin, request, session, 500, [("error", f"Not added: {exc}")], fields)
    if done.refused:
        return await subscribers_page(admin, request, session, 409, [("error", _refusal(done))], fields)
    kind = next(k for k in ("added", "confirmed", "reactivated", "updated") if getattr(done, k))
    found = await run_in_threadpool(staff.show_subscriber, admin.settings, admin.engine, done.subscriber.email)
    return redirect_to(f"/admin/subscribers/{found.record['subscriber']['id']}", kind)


def _refusal(done: staff.Addition) -> str:
    if done.erased and done.signup_waiting:
        return ("Not added: this address was erased. Its owner signed up again; only their own confirmation "
                "brings it back.")
    if done.erased:
        return "Not added: this address was erased, and an erased address is never added again by staff."
    if done.opted_out == SubscriberStatus.BOUNCED:
        return ("Not added: this address bounced. If its owner asked to receive the digest again, tick "
                "\"they asked to be added back\" and add it again.")
    return (f"Not added: this address {STATUS_WORDS.get(done.opted_out.value, done.opted_out.value)}. "
            "Only their own sign-up brings them back.")


async def post_unsubscribe(admin: Admin, request: Request, session: AdminSession) -> Response:
    sid = request.path_params["sid"]
    found = await run_in_threadpool(staff.subscriber_history, admin.settings, admin.engine, sid)
    if found is None or found.record is None:
        return message(admin, request, session, 404, "No such subscriber", "There is no such subscriber.",
                       back="/admin/subscribers")
    removal = await run_in_threadpool(staff.remove_subscriber, admin.settings, admin.engine, found.email,
                                      datetime.now(UTC))
    return redirect_to(f"/admin/subscribers/{sid}", "unsubscribed" if removal.unsubscribed else "already-out")


async def post_erase(admin: Admin, request: Request, session: AdminSession) -> Response:
    """Erase after the confirmation page: without its box ticked, back to that page."""
    sid = request.path_params["sid"]
    if request.state.form.get("confirm") != "yes":
        return RedirectResponse(f"/admin/subscribers/{sid}/erase", status_code=303)
    found = await run_in_threadpool(staff.subscriber_history, admin.settings, admin.engine, sid)
    if found is None or found.record is None:
        return message(admin, request, session, 404, "No such subscriber",
                       "There is no such subscriber: they may have been erased already.", back="/admin/subscribers")
    await run_in_threadpool(staff.erase_subscriber, admin.settings, admin.engine, found.email, datetime.now(UTC),
                            session.account)
    return redirect_to("/admin/subscribers", "erased")


async def post_apply(admin: Admin, request: Request, session: AdminSession) -> Response:
    """Import exactly what the dry run showed; if a fresh dry run differs, show that one instead (409)."""
    held = subscriber_import.held_upload(request.path_params["token"], _owner(session))
    if held is None:
        return _import_gone(admin, request, session)
    form = request.state.form
    digest = str(form.get("digest", ""))[:64]
    if not hmac.compare_digest(str(form.get("sig", "")), session.sign("plan", held.token, digest)):
        return await dry_run_page(admin, request, session, [("error", "Not imported: import from the dry run below.")], 400)
    try:
        report = await run_in_threadpool(subscriber_import.apply_import, admin.settings, admin.engine, held, digest,
                                         datetime.now(UTC), session.account)
    except subscriber_import.PlanChanged as exc:
        return await dry_run_page(admin, request, session, [("error", str(exc))], 409)
    except subscriber_import.UploadGone:
        return _import_gone(admin, request, session)
    except (subscriber_import.ImportFileError, SuppressionKeyMissing) as exc:
        return message(admin, request, session, 400, "Not imported", f"Nothing was imported: {exc}",
                       back="/admin/subscribers")
    return signed_redirect(session, "/admin/subscribers", file=held.filename, added=str(report.added),
                            updated=str(report.updated), unchanged=str(report.unchanged),
                            suppressed=str(len(report.suppressed)), rejected=str(len(report.rejected)))


async def post_cancel(admin: Admin, request: Request, session: AdminSession) -> Response:
    held = subscriber_import.held_upload(request.path_params["token"], _owner(session))
    if held is not None:
        subscriber_import.drop_upload(held)
    return redirect_to("/admin/subscribers", "import-cancelled")


# --- the CSV upload --------------------------------------------------------------------------------

async def _hold(admin: Admin, request: Request, session: AdminSession, form: FormData) -> Response:
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        return message(admin, request, session, 400, "Not imported", "Choose a CSV file to import.",
                       back="/admin/subscribers")
    data = await upload.read()
    try:
        held = await run_in_threadpool(subscriber_import.hold_upload, data, upload.filename or "upload.csv",
                                       _owner(session))
    except subscriber_import.ImportFileError as exc:
        return message(admin, request, session, 400, "Not imported", str(exc), back="/admin/subscribers")
    return RedirectResponse(f"/admin/subscribers/import/{held.token}", status_code=303)
