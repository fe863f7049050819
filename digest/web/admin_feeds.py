"""The admin's feeds page: health in plain words; when the store manages the feeds, add (after a test
fetch), pause, resume, rename, remove, OPML import and export.

Each handler calls one use case of digest.pipeline.feeds. When digest.toml lists [[feeds]] the page
is read-only ("managed in digest.toml") and every form answers 409. Every form is a POST with the
session's CSRF token that ends in a redirect (Post/Redirect/Get), so a reload changes nothing.
Testing a feed changes nothing, so it is a GET (`/admin/feeds/new?url=…`; a reload fetches again).
The save form carries a token signed with the session's CSRF secret when the test passed; without
it, saving needs the explicit "save it anyway" box. Words shown after a redirect (an import's
skipped lines) travel in the query signed the same way, so a crafted URL cannot put words on the page.
"""

from __future__ import annotations

import functools
import hmac
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..feed_fields import KINDS
from ..opml import MAX_BYTES as MAX_OPML_BYTES
from ..pipeline import feeds
from .admin import Admin, message, page, redirect_to, signed_params, signed_redirect
from .admin_auth import AdminSession
from .admin_uploads import UploadRoute, upload_endpoint

MAX_SHOWN_PROBLEMS = 20
OPML_UPLOAD = UploadRoute("settings", MAX_OPML_BYTES, "/admin/feeds",
                          f"An OPML file of at most {MAX_OPML_BYTES // 1024 // 1024} MiB is read.")
DONE = {  # messages after a redirect, chosen by key
    "feed-added": "Feed added. It is fetched from the next fetch on.",
    "feed-paused": "Feed paused: it is not fetched until you resume it.",
    "feed-resumed": "Feed resumed: the next fetch reads it.",
    "feed-renamed": "Feed renamed.",
    "feed-removed": "Feed removed. Its items and past issues stay.",
    "feed-unchanged": "Nothing changed: the feed already was that way.",
}


def routes(admin: Admin, get: Any, post: Any) -> list[BaseRoute]:
    """The /admin/feeds routes; `get`/`post` wrap a handler with the session (and CSRF) checks of digest.web.admin."""
    return [
        Route("/admin/feeds", get(feeds_page)),
        Route("/admin/feeds/new", get(new_feed_page)),
        Route("/admin/feeds/export.opml", get(export_download)),
        Route("/admin/feeds/remove", get(remove_page)),
        Route("/admin/feeds/add", post(post_add, action="settings"), methods=["POST"]),
        Route("/admin/feeds/pause", post(post_pause, action="settings"), methods=["POST"]),
        Route("/admin/feeds/resume", post(post_resume, action="settings"), methods=["POST"]),
        Route("/admin/feeds/rename", post(post_rename, action="settings"), methods=["POST"]),
        Route("/admin/feeds/remove", post(post_remove, action="settings"), methods=["POST"]),
        # An upload is larger than read_form's cap: this route reads its own form (same checks).
        Route("/admin/feeds/import", upload_endpoint(admin, OPML_UPLOAD, _import), methods=["POST"]),
    ]


# --- signed values ---------------------------------------------------------------------------------

# --- pages -----------------------------------------------------------------------------------------

async def feeds_page(admin: Admin, request: Request, session: AdminSession) -> Response:
    now = datetime.now(UTC)
    rows = await run_in_threadpool(feeds.feeds_overview, admin.settings, admin.engine, now)
    notices = []
    if done := DONE.get(request.query_params.get("done", "")):
        notices.append(("ok", done))
    imported = signed_params(request, session)
    if "added" in imported:
        problems = [v for k, v in sorted(imported.items()) if k.startswith("p")]
        more = int(imported.get("more", "0") or 0)
        notices.append(("ok" if not problems else "error",
                        f"OPML import: {_count(imported['added'], 'feed')} added, "
                        f"{_count(str(len(problems) + more), 'line')} skipped."))
        imported_problems = problems + ([f"… and {more} more"] if more else [])
    else:
        imported_problems = []
    return page(admin, request, "admin/feeds.html",
                {"rows": rows, "provisioned": feeds.provisioned(admin.settings), "kinds": KINDS,
                 "import_problems": imported_problems, "active": "feeds", "now": now,
                 "max_opml_kib": MAX_OPML_BYTES // 1024}, session, notices=notices)


def _count(number: str, noun: str) -> str:
    return f"{number} {noun}{'' if number == '1' else 's'}"


async def new_feed_page(admin: Admin, request: Request, session: AdminSession) -> Response:
    """Test-fetch a feed (storing nothing) and show what adding it would store, with the save form."""
    if feeds.provisioned(admin.settings):
        return _provisioned(admin, request, session)
    query = request.query_params
    fields = {key: query.get(key, "")[:2000] for key in ("name", "url", "kind", "language")}
    try:
        trial = await run_in_threadpool(feeds.try_feed, admin.settings, admin.engine, fields["name"], fields["url"],
                                        fields["kind"] or None, fields["language"] or None)
    except (feeds.InvalidFeed, feeds.DuplicateFeed) as exc:
        return await _feeds_page_with(admin, request, session, 400, str(exc), fields)
    feed = trial.feed
    passed = session.sign("tested", feed.name, feed.url, feed.kind.value, feed.language or "") if trial.ok else ""
    return page(admin, request, "admin/feed_test.html",
                {"trial": trial, "passed": passed, "active": "feeds"}, session)


async def _feeds_page_with(admin: Admin, request: Request, session: AdminSession, status_code: int, error: str,
                           fields: dict[str, str]) -> Response:
    rows = await run_in_threadpool(feeds.feeds_overview, admin.settings, admin.engine, datetime.now(UTC))
    return page(admin, request, "admin/feeds.html",
                {"rows": rows, "provisioned": feeds.provisioned(admin.settings), "kinds": KINDS, "fields": fields,
                 "import_problems": [], "active": "feeds", "max_opml_kib": MAX_OPML_BYTES // 1024},
                session, status_code, notices=[("error", error)])


async def remove_page(admin: Admin, request: Request, session: AdminSession) -> Response:
    """Ask before removing a feed."""
    if feeds.provisioned(admin.settings):
        return _provisioned(admin, request, session)
    name = request.query_params.get("name", "")[:400]
    return page(admin, request, "admin/feed_remove.html", {"name": name, "active": "feeds"}, session)


async def export_download(admin: Admin, request: Request, session: AdminSession) -> Response:
    text = await run_in_threadpool(feeds.export_opml, admin.settings, admin.engine, datetime.now(UTC))
    return Response(text, media_type="text/x-opml; charset=utf-8",
                    headers={"content-disposition": 'attachment; filename="feeds.opml"', "cache-control": "no-store"})


def _provisioned(admin: Admin, request: Request, session: AdminSession) -> Response:
    return message(admin, request, session, 409, "Managed in digest.toml", feeds.PROVISIONED, back="/admin/feeds")


# --- forms -----------------------------------------------------------------------------------------

async def post_add(admin: Admin, request: Request, session: AdminSession) -> Response:
    """Save a tested feed: the test passed (signed token), or staff ticked "save it anyway"."""
    form = request.state.form
    fields = {key: str(form.get(key, ""))[:2000] for key in ("name", "url", "kind", "language")}
    token = str(form.get("passed", ""))
    try:
        feed = await run_in_threadpool(feeds.check_new_feed, admin.settings, admin.engine, fields["name"],
                                       fields["url"], fields["kind"] or None, fields["language"] or None)
    except feeds.FeedsProvisioned:
        return _provisioned(admin, request, session)
    except (feeds.InvalidFeed, feeds.DuplicateFeed) as exc:
        return await _feeds_page_with(admin, request, session, 400, str(exc), fields)
    expected = session.sign("tested", feed.name, feed.url, feed.kind.value, feed.language or "")
    if not hmac.compare_digest(token, expected) and form.get("confirm_failed") != "yes":
        return await _feeds_page_with(admin, request, session, 400,
                                      "Not saved: test the feed first, or tick \"save it anyway\" after a failed test.",
                                      fields)
    try:
        await run_in_threadpool(feeds.add_feed, admin.settings, admin.engine, feed.name, feed.url, feed.kind.value,
                                feed.language, datetime.now(UTC), session.account)
    except feeds.DuplicateFeed as exc:  # added by someone else since the check
        return await _feeds_page_with(admin, request, session, 409, str(exc), fields)
    return redirect_to("/admin/feeds", "feed-added")


async def _change(admin: Admin, request: Request, session: AdminSession, done: str, func: Any, *args: str) -> Response:
    try:
        changed = await run_in_threadpool(functools.partial(func, actor=session.account), admin.settings,
                                          admin.engine, *args)
    except feeds.FeedsProvisioned:
        return _provisioned(admin, request, session)
    except (feeds.InvalidFeed, feeds.DuplicateFeed, feeds.NoSuchFeed) as exc:
        return message(admin, request, session, 400 if not isinstance(exc, feeds.NoSuchFeed) else 404,
                       "Not changed", str(exc), back="/admin/feeds")
    return redirect_to("/admin/feeds", done if changed is not False else "feed-unchanged")


async def post_pause(admin: Admin, request: Request, session: AdminSession) -> Response:
    return await _change(admin, request, session, "feed-paused", feeds.pause_feed, _name(request))


async def post_resume(admin: Admin, request: Request, session: AdminSession) -> Response:
    return await _change(admin, request, session, "feed-resumed", feeds.resume_feed, _name(request))


async def post_rename(admin: Admin, request: Request, session: AdminSession) -> Response:
    new_name = str(request.state.form.get("new_name", ""))[:400]
    return await _change(admin, request, session, "feed-renamed", feeds.rename_feed, _name(request), new_name)


async def post_remove(admin: Admin, request: Request, session: AdminSession) -> Response:
    if request.state.form.get("confirm") != "yes":
        return RedirectResponse(f"/admin/feeds/remove?{urlencode({'name': _name(request)})}", status_code=303)
    return await _change(admin, request, session, "feed-removed", feeds.remove_feed, _name(request))


def _name(request: Request) -> str:
    return str(request.state.form.get("name", ""))[:400]


# --- the OPML upload -------------------------------------------------------------------------------

async def _import(admin: Admin, request: Request, session: AdminSession, form: FormData) -> Response:
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        return message(admin, request, session, 400, "Not imported", "Choose an OPML file to import.",
                       back="/admin/feeds")
    data = await upload.read()
    try:
        result = await run_in_threadpool(feeds.import_opml, admin.settings, admin.engine, data, datetime.now(UTC),
                                         session.account)
    except feeds.FeedsProvisioned:
        return _provisioned(admin, request, session)
    except feeds.OpmlError as exc:
        return message(admin, request, session, 400, "Not imported", f"Nothing was imported: {exc}",
                       back="/admin/feeds")
    shown = result.problems[:MAX_SHOWN_PROBLEMS]
    params = {f"p{i:03d}": problem[:300] for i, problem in enumerate(shown)}
    return signed_redirect(session, "/admin/feeds", added=str(len(result.added)),
                            more=str(len(result.problems) - len(shown)), **params)
