"""The admin's reading page: clicks counted per issue, section, item and language (counts only).

URLs: GET /admin/reading (most read this week, most read over 12 weeks per series, recent issues)
and GET /admin/reading/{number} (every counted link of one issue, per language). Reading it is
"read reports", which every role may (pipeline.accounts). The counts come from the signed redirect
of digest.web.clicks; what is and is not stored is explained on the page and in docs/admin.md.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..config import LANGUAGES
from ..pipeline import clicks
from .admin import Admin, message, page
from .admin_auth import AdminSession


def routes(admin: Admin, get: Callable, post: Callable) -> list[BaseRoute]:
    """The reading page's routes."""
    return [Route("/admin/reading", get(reading_page, action="read_reports")),
            Route("/admin/reading/{number:int}", get(issue_reading_page, action="read_reports"))]


async def reading_page(admin: Admin, request: Request, session: AdminSession) -> Response:
    overview = await run_in_threadpool(clicks.reading_overview, admin.settings, admin.engine, datetime.now(UTC))
    return page(admin, request, "admin/reading.html",
                {"overview": overview, "reading": None, "languages": LANGUAGES, "active": "reading"}, session)


async def issue_reading_page(admin: Admin, request: Request, session: AdminSession) -> Response:
    number = request.path_params["number"]
    reading = await run_in_threadpool(clicks.issue_reading, admin.settings, admin.engine, number)
    if reading is None:
        return message(admin, request, session, 404, "No such issue", f"There is no issue {number}.",
                       back="/admin/reading")
    return page(admin, request, "admin/reading.html",
                {"overview": None, "reading": reading, "languages": LANGUAGES, "active": "reading"}, session)
