"""The admin's series page: names per language, aliases, URL and order; the categories of the last 8
weeks that matched no series, each with a one-click "add as alias of …".

Each handler calls one use case of digest.pipeline.series_settings. When digest.toml lists [[series]]
the page is read-only ("managed in digest.toml") and every form answers 409. Every form is a POST
with the session's CSRF token that ends in a redirect (Post/Redirect/Get), so a reload changes
nothing; a refused form shows the page again with the reason and saves nothing. Edits, moves and
removals carry the version the page showed: when someone changed the series since, the edit is
refused with a conflict (409) and the page shows the series as it is now.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..config import LANGUAGES
from ..pipeline import series_settings as use_cases
from .admin import Admin, message, page, redirect_to
from .admin_auth import AdminSession

MAX_FIELD = 2000
LANGUAGE_NAMES = {"en": "English", "fr": "French", "de": "German"}
DONE = {  # messages after a redirect, chosen by key
    "added": "Series added. The next fetch matches items to it.",
    "saved": "Series saved. The next fetch matches with these names and aliases.",
    "alias-added": "Alias added: the next fetch matches it. Items already stored keep their series until you "
                   "re-match them (below).",
    "alias-known": "Nothing changed: that series already matches this category.",
    "moved": "Order changed. Editions show the series in this order.",
    "not-moved": "Nothing changed: the series already is at that end.",
    "removed": "Series removed. Its categories match nothing from the next fetch on; items and past issues keep it.",
    "unchanged": "Nothing changed.",
}
REFUSED = (use_cases.InvalidSeries, use_cases.DuplicateSeries)  # AliasTaken is an InvalidSeries


def routes(admin: Admin, get: Callable, post: Callable) -> list[BaseRoute]:
    """The /admin/series routes; `get`/`post` wrap a handler with the session (and CSRF) checks of digest.web.admin."""
    return [
        Route("/admin/series", get(series_page)),
        Route("/admin/series/edit", get(edit_page)),
        Route("/admin/series/remove", get(remove_page)),
        Route("/admin/series/add", post(post_add, action="settings"), methods=["POST"]),
        Route("/admin/series/edit", post(post_edit, action="settings"), methods=["POST"]),
        Route("/admin/series/alias", post(post_alias, action="settings"), methods=["POST"]),
        Route("/admin/series/move", post(post_move, action="settings"), methods=["POST"]),
        Route("/admin/series/remove", post(post_remove, action="settings"), methods=["POST"]),
        Route("/admin/series/rematch", post(post_rematch, action="settings"), methods=["POST"]),
    ]


def _other_languages(admin: Admin) -> list[tuple[str, str]]:
    return [(code, LANGUAGE_NAMES.get(code, code)) for code in LANGUAGES if code != admin.settings.site.language]


# --- pages -----------------------------------------------------------------------------------------

async def series_page(admin: Admin, request: Request, session: AdminSession, status_code: int = 200,
                      error: str = "", fields: dict[str, str] | None = None) -> Response:
    now = datetime.now(UTC)
    entries = await run_in_threadpool(use_cases.list_series, admin.settings, admin.engine)
    unmatched = await run_in_threadpool(use_cases.unmatched_categories, admin.settings, admin.engine, now)
    notices = [("error", error)] if error else []
    if done := DONE.get(request.query_params.get("done", "")):
        notices.append(("ok", done))
    if rematched := request.query_params.get("rematched", ""):
        if rematched.isdigit():
            notices.append(("ok", f"Stored items matched again: {rematched} now in other series."))
    return page(admin, request, "admin/series.html",
                {"entries": entries, "provisioned": use_cases.provisioned(admin.settings), "unmatched": unmatched,
                 "weeks": use_cases.UNMATCHED_WEEKS, "languages": _other_languages(admin),
                 "site_language": LANGUAGE_NAMES.get(admin.settings.site.language, admin.settings.site.language),
                 "fields": fields or {}, "active": "series"}, session, status_code, notices=notices)


async def edit_page(admin: Admin, request: Request, session: AdminSession, status_code: int = 200,
                    error: str = "", series_id: str = "") -> Response:
    """One series' form: name, names per language, aliases (one per line), URL; it carries the version shown."""
    if use_cases.provisioned(admin.settings):
        return _provisioned(admin, request, session)
    series_id = series_id or request.query_params.get("id", "")[:200]
    entries = await run_in_threadpool(use_cases.list_series, admin.settings, admin.engine)
    entry = next((e for e in entries if e.series.id == series_id), None)
    if entry is None:
        return message(admin, request, session, 404, "No such series",
                       "This series does not exist (any more): someone may have removed it.", back="/admin/series")
    return page(admin, request, "admin/series_edit.html",
                {"entry": entry, "names": dict(entry.series.names), "languages": _other_languages(admin),
                 "site_language": LANGUAGE_NAMES.get(admin.settings.site.language, admin.settings.site.language),
                 "active": "series"}, session, status_code, notices=[("error", error)] if error else [])


async def remove_page(admin: Admin, request: Request, session: AdminSession) -> Response:
    """Ask before removing a series."""
    if use_cases.provisioned(admin.settings):
        return _provisioned(admin, request, session)
    series_id = request.query_params.get("id", "")[:200]
    entries = await run_in_threadpool(use_cases.list_series, admin.settings, admin.engine)
    entry = next((e for e in entries if e.series.id == series_id), None)
    if entry is None:
        return message(admin, request, session, 404, "No such series",
                       "This series does not exist (any more): someone may have removed it.", back="/admin/series")
    return page(admin, request, "admin/series_remove.html", {"entry": entry, "active": "series"}, session)


def _provisioned(admin: Admin, request: Request, session: AdminSession) -> Response:
    return message(admin, request, session, 409, "Managed in digest.toml", use_cases.PROVISIONED, back="/admin/series")


# --- forms -----------------------------------------------------------------------------------------

def _field(request: Request, key: str) -> str:
    return str(request.state.form.get(key, ""))[:MAX_FIELD]


def _version(request: Request) -> int | None:
    value = _field(request, "version").strip()
    return int(value) if value.isdigit() and len(value) < 12 else None


def _names(admin: Admin, request: Request) -> dict[str, str]:
    return {code: _field(request, f"name_{code}") for code, _ in _other_languages(admin)}


def _aliases(request: Request) -> list[str]:
    return _field(request, "aliases").splitlines()


async def _run(admin: Admin, request: Request, session: AdminSession, func: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a use case off the event loop as this session's account."""
    return await run_in_threadpool(functools.partial(func, actor=session.account, **kwargs), admin.settings,
                                   admin.engine, *args)


async def post_add(admin: Admin, request: Request, session: AdminSession) -> Response:
    fields = {key: _field(request, key) for key in ("id", "name", "aliases", "url",
                                                    *(f"name_{code}" for code, _ in _other_languages(admin)))}
    try:
        await _run(admin, request, session, use_cases.add_series, fields["id"], fields["name"],
                   names=_names(admin, request), aliases=_aliases(request), url=fields["url"])
    except use_cases.SeriesProvisioned:
        return _provisioned(admin, request, session)
    except REFUSED as exc:
        return await series_page(admin, request, session, 400, f"Not added: {exc}.", fields)
    return redirect_to("/admin/series", "added")


async def post_edit(admin: Admin, request: Request, session: AdminSession) -> Response:
    series_id, version = _field(request, "id"), _version(request)
    if version is None:
        return await edit_page(admin, request, session, 400, "Not saved: the form lost its version; reload the page.",
                               series_id)
    try:
        entry = await _run(admin, request, session, use_cases.edit_series, series_id, version,
                           name=_field(request, "name"), names=_names(admin, request), aliases=_aliases(request),
                           url=_field(request, "url"))
    except use_cases.SeriesProvisioned:
        return _provisioned(admin, request, session)
    except use_cases.NoSuchSeries as exc:
        return message(admin, request, session, 404, "No such series", f"Not saved: {exc}.", back="/admin/series")
    except use_cases.StaleSeries:
        return await edit_page(admin, request, session, 409, _conflict(), series_id)
    except REFUSED as exc:
        return await edit_page(admin, request, session, 400, f"Not saved: {exc}.", series_id)
    return redirect_to("/admin/series", "saved" if entry.version != version else "unchanged")


def _conflict() -> str:
    return ("Someone changed this series since you opened the page, so your change was not saved. "
            "This is the series as it is now: make your change again.")


async def post_alias(admin: Admin, request: Request, session: AdminSession) -> Response:
    """Add an unmatched category as an alias of the chosen series."""
    series_id, alias = _field(request, "id"), _field(request, "alias")
    if not series_id:
        return await series_page(admin, request, session, 400, "Not added: choose the series this category means.")
    try:
        added = await _run(admin, request, session, use_cases.add_alias, series_id, alias)
    except use_cases.SeriesProvisioned:
        return _provisioned(admin, request, session)
    except (use_cases.NoSuchSeries, use_cases.StaleSeries, *REFUSED) as exc:
        code = 404 if isinstance(exc, use_cases.NoSuchSeries) else 409 if isinstance(exc, use_cases.StaleSeries) else 400
        return await series_page(admin, request, session, code, f"Not added: {exc}.")
    return redirect_to("/admin/series", "alias-added" if added else "alias-known")


async def post_move(admin: Admin, request: Request, session: AdminSession) -> Response:
    series_id, version = _field(request, "id"), _version(request)
    try:
        if version is None:
            raise use_cases.StaleSeries("the form lost its version")
        moved = await _run(admin, request, session, use_cases.move_series, series_id, version,
                           _field(request, "direction"))
    except use_cases.SeriesProvisioned:
        return _provisioned(admin, request, session)
    except use_cases.StaleSeries:
        return await series_page(admin, request, session, 409, "Not moved: someone changed this series since you "
                                 "opened the page. This is the list as it is now.")
    except (use_cases.NoSuchSeries, *REFUSED) as exc:
        return await series_page(admin, request, session, 400, f"Not moved: {exc}.")
    return redirect_to("/admin/series", "moved" if moved else "not-moved")


async def post_remove(admin: Admin, request: Request, session: AdminSession) -> Response:
    series_id, version = _field(request, "id"), _version(request)
    if request.state.form.get("confirm") != "yes":
        return RedirectResponse(f"/admin/series/remove?{urlencode({'id': series_id})}", status_code=303)
    try:
        if version is None:
            raise use_cases.StaleSeries("the form lost its version")
        await _run(admin, request, session, use_cases.remove_series, series_id, version)
    except use_cases.SeriesProvisioned:
        return _provisioned(admin, request, session)
    except use_cases.NoSuchSeries:
        return redirect_to("/admin/series", "removed")  # gone already: what was asked is done
    except use_cases.StaleSeries:
        return await series_page(admin, request, session, 409, "Not removed: someone changed this series since you "
                                 "opened the page. Check it below, then remove it again if you still want to.")
    return redirect_to("/admin/series", "removed")


async def post_rematch(admin: Admin, request: Request, session: AdminSession) -> Response:
    if use_cases.provisioned(admin.settings):
        return _provisioned(admin, request, session)
    changed = await _run(admin, request, session, use_cases.rematch_items, datetime.now(UTC))
    return RedirectResponse(f"/admin/series?{urlencode({'rematched': changed})}", status_code=303)
