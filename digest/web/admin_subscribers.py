"""The admin's subscribers page."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..pipeline import reports
from .admin import Admin, page
from .admin_auth import AdminSession
from .admin_reports import weekly_chart


def routes(admin: Admin, get: Callable, post: Callable) -> list[BaseRoute]:
    """The subscribers page's routes."""
    return [Route("/admin/subscribers", get(subscribers_page))]


async def subscribers_page(admin: Admin, request: Request, session: AdminSession) -> Response:
    overview = await run_in_threadpool(reports.subscribers_overview, admin.settings, admin.engine, datetime.now(UTC))
    return page(admin, request, "admin/subscribers.html",
                {"overview": overview, "chart": weekly_chart(overview.weeks), "active": "subscribers"}, session)
