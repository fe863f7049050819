"""The admin's schedule and branding pages: the store-managed settings, or read-only when digest.toml provisions them.

Each handler calls one use case of digest.pipeline.site_settings. Every form is a POST with the
session's CSRF token and the version the page showed; it ends in a redirect (Post/Redirect/Get), so
a reload changes nothing. A refused save shows the page again with the values typed and a message
per field (400), a conflict (409) or "managed in digest.toml" (409). The logo upload reads its own
multipart body (read_form's 64 KiB cap is below a logo's 512 KiB), with the same session, origin and
CSRF checks. Previews are the edition itself, in a sandboxed iframe with the preview's strict CSP:
the saved branding (GET), or the values on the form, unsaved (POST from "Preview these values").
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from ..branding import MAX_LOGO_BYTES
from ..pipeline import site_settings
from ..pipeline.site_settings import (
    WEEKDAYS,
    InvalidSettings,
    LogoRefused,
    SettingsProvisioned,
    StaleSettings,
)
from .admin import Admin, page, redirect_to
from .admin_auth import AdminSession
from .admin_preview import PREVIEW_CSP
from .admin_uploads import UploadRoute, upload_endpoint

LOGO_UPLOAD = UploadRoute("settings", MAX_LOGO_BYTES, "/admin/branding",
                          f"a logo may be {MAX_LOGO_BYTES // 1024} KiB at most. Export it smaller "
                          "(the masthead shows it 160 px wide).")
PREVIEW_HEADERS = {"content-security-policy": PREVIEW_CSP, "x-frame-options": "SAMEORIGIN", "cache-control": "no-store"}
DONE = {  # messages after a redirect, chosen by key
    "schedule-saved": "Schedule saved. The running scheduler follows it within a minute; no restart needed.",
    "branding-saved": "Branding saved. Editions rendered from now on use it (issues already sent keep theirs).",
    "logo-saved": "Logo uploaded. It is served from this site and shown in the masthead of every new edition.",
    "settings-unchanged": "Nothing changed: the values were already these.",
}
SCHEDULE_FIELDS = ("build_time", "send_time", "fetch_every_hours", "staff", "skip_if_empty", "auto_approve")
BRANDING_FIELDS = ("logo_url", "logo_alt", "accent_color", "footer_text", "sender_name", "postal_address")


def routes(admin: Admin, get: Callable, post: Callable) -> list[BaseRoute]:
    """The schedule and branding pages' routes."""
    return [
        Route("/admin/schedule", get(schedule_page)),
        Route("/admin/schedule", post(post_schedule, action="settings"), methods=["POST"]),
        Route("/admin/branding", get(branding_page)),
        Route("/admin/branding", post(post_branding, action="settings"), methods=["POST"]),
        Route("/admin/branding/preview", get(preview_saved)),
        Route("/admin/branding/preview", post(preview_unsaved), methods=["POST"]),
        Route("/admin/branding/logo", upload_endpoint(admin, LOGO_UPLOAD, _save_logo, _refuse_logo), methods=["POST"]),
    ]


def _notices(request: Request) -> list[tuple[str, str]]:
    done = DONE.get(request.query_params.get("done", ""))
    return [("ok", done)] if done else []


def _version(request: Request) -> int:
    value = str(request.state.form.get("version", ""))
    return int(value) if value.isdigit() else -1


# --- schedule --------------------------------------------------------------------------------------

async def schedule_page(admin: Admin, request: Request, session: AdminSession, typed: dict[str, Any] | None = None,
                        problems: dict[str, str] | None = None, status_code: int = 200,
                        notices: list[tuple[str, str]] | None = None) -> Response:
    """The schedule in force and the next runs in plain words (also the answer to a refused save)."""
    view = await run_in_threadpool(site_settings.schedule_overview, admin.settings, admin.engine, datetime.now(UTC))
    form = view.form
    shown = typed or {"days": form.days, "build_time": form.build_time, "send_time": form.send_time,
                      "fetch_every_hours": form.fetch_every_hours, "staff": "\n".join(form.staff),
                      "skip_if_empty": form.skip_if_empty, "auto_approve": form.auto_approve}
    return page(admin, request, "admin/schedule.html",
                {"view": view, "shown": shown, "problems": problems or {}, "weekdays": WEEKDAYS,
                 "day_names": site_settings.DAY_NAMES, "active": "schedule"},
                session, status_code, notices=_notices(request) + (notices or []))


async def post_schedule(admin: Admin, request: Request, session: AdminSession) -> Response:
    form = request.state.form
    typed: dict[str, Any] = {name: str(form.get(name, ""))[:4000] for name in SCHEDULE_FIELDS}
    typed["days"] = tuple(str(d) for d in form.getlist("days"))[:7]
    try:
        changed = await run_in_threadpool(site_settings.save_schedule, admin.settings, admin.engine, typed,
                                          _version(request), session.account, datetime.now(UTC))
    except (SettingsProvisioned, StaleSettings) as exc:  # 409 either way, the reason shown
        return await schedule_page(admin, request, session, status_code=409, notices=[("error", str(exc))])
    except InvalidSettings as exc:
        typed = {**typed, "skip_if_empty": typed["skip_if_empty"] == "yes", "auto_approve": typed["auto_approve"] == "yes"}
        return await schedule_page(admin, request, session, typed, exc.problems, 400,
                                   [("error", "Not saved: correct the fields marked below.")])
    return redirect_to("/admin/schedule", "schedule-saved" if changed else "settings-unchanged")


# --- branding --------------------------------------------------------------------------------------

async def branding_page(admin: Admin, request: Request, session: AdminSession, typed: dict[str, str] | None = None,
                        problems: dict[str, str] | None = None, status_code: int = 200,
                        notices: list[tuple[str, str]] | None = None) -> Response:
    view = await run_in_threadpool(site_settings.branding_overview, admin.settings, admin.engine)
    shown = typed or {name: getattr(view.branding, name) for name in BRANDING_FIELDS}
    return page(admin, request, "admin/branding.html",
                {"view": view, "shown": shown, "problems": problems or {}, "site": admin.settings.site,
                 "max_logo_kib": MAX_LOGO_BYTES // 1024, "active": "branding"},
                session, status_code, notices=_notices(request) + (notices or []))


def _typed_branding(form: Any) -> dict[str, str]:
    return {name: str(form.get(name, ""))[:4000] for name in BRANDING_FIELDS}


async def post_branding(admin: Admin, request: Request, session: AdminSession) -> Response:
    typed = _typed_branding(request.state.form)
    try:
        changed = await run_in_threadpool(site_settings.save_branding, admin.settings, admin.engine, typed,
                                          _version(request), session.account, datetime.now(UTC))
    except (SettingsProvisioned, StaleSettings) as exc:  # 409 either way, the reason shown
        return await branding_page(admin, request, session, status_code=409, notices=[("error", str(exc))])
    except InvalidSettings as exc:
        return await branding_page(admin, request, session, typed, exc.problems, 400,
                                   [("error", "Not saved: correct the fields marked below.")])
    return redirect_to("/admin/branding", "branding-saved" if changed else "settings-unchanged")


async def preview_saved(admin: Admin, request: Request, session: AdminSession) -> Response:
    """The newest issue with the saved branding, for the page's iframe."""
    return await _preview(admin, None)


async def preview_unsaved(admin: Admin, request: Request, session: AdminSession) -> Response:
    """The newest issue with the values on the form, saving nothing (a reload repeats nothing)."""
    return await _preview(admin, _typed_branding(request.state.form))


async def _preview(admin: Admin, typed: dict[str, str] | None) -> Response:
    try:
        html = await run_in_threadpool(site_settings.preview_branding, admin.settings, admin.engine, typed)
    except InvalidSettings as exc:
        return PlainTextResponse(f"No preview: {exc}", status_code=400, headers=PREVIEW_HEADERS)
    except LookupError as exc:
        return PlainTextResponse(f"No preview: {exc}", status_code=404, headers=PREVIEW_HEADERS)
    return HTMLResponse(html, headers=PREVIEW_HEADERS)


# --- the logo upload -------------------------------------------------------------------------------

async def _refuse_logo(admin: Admin, request: Request, session: AdminSession, status_code: int, text: str) -> Response:
    return await branding_page(admin, request, session, status_code=status_code, notices=[("error", f"Not uploaded: {text}")])


async def _save_logo(admin: Admin, request: Request, session: AdminSession, form: FormData) -> Response:
    upload = form.get("logo")
    if not isinstance(upload, UploadFile):
        return await branding_page(admin, request, session, status_code=400,
                                   notices=[("error", "Not uploaded: choose an image file.")])
    data = await upload.read(MAX_LOGO_BYTES + 1)
    version = str(form.get("version", ""))
    try:
        await run_in_threadpool(site_settings.upload_logo, admin.settings, admin.engine, data,
                                str(form.get("logo_alt", ""))[:4000], int(version) if version.isdigit() else -1,
                                session.account, datetime.now(UTC))
    except (SettingsProvisioned, StaleSettings) as exc:  # 409 either way, the reason shown
        return await branding_page(admin, request, session, status_code=409, notices=[("error", str(exc))])
    except (LogoRefused, InvalidSettings) as exc:
        return await branding_page(admin, request, session, status_code=400, notices=[("error", f"Not uploaded: {exc}.")])
    return redirect_to("/admin/branding", "logo-saved")
