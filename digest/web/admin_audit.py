"""The admin's audit trail page: every state change, filterable by issue and by person, exportable.

URLs: GET /admin/audit?issue=N&person=EMAIL&page=P · GET /admin/audit.csv · GET /admin/audit.json
(the same filters). Reading it is "read reports", which every role may (pipeline.accounts).
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..pipeline import audit
from .admin import Admin, AdminSession, Handler, message, page


def routes(admin: Admin, get: Callable[[Handler], Callable], post: Callable[[Handler], Callable]) -> list[BaseRoute]:
    return [
        Route("/admin/audit", get(audit_page, action="read_reports")),
        Route("/admin/audit.csv", get(audit_export, action="read_reports")),
        Route("/admin/audit.json", get(audit_export, action="read_reports")),
    ]


def _filters(request: Request) -> tuple[int | None, str, int] | None:
    """(issue, person, page) from the query; None when one is not a number."""
    query = request.query_params
    try:
        issue = int(query["issue"]) if query.get("issue", "").strip() else None
        page_number = int(query.get("page", "1") or "1")
    except ValueError:
        return None
    return issue, query.get("person", "").strip().lower()[:320], page_number


async def audit_page(admin: Admin, request: Request, session: AdminSession) -> Response:
    filters = _filters(request)
    if filters is None:
        return message(admin, request, session, 400, "Not a number", "The issue and page filters take whole numbers.",
                       back="/admin/audit")
    issue, person, page_number = filters
    found = await run_in_threadpool(audit.audit_trail, admin.engine, issue, person or None, page_number)
    people = await run_in_threadpool(audit.people, admin.engine)
    query = {k: v for k, v in (("issue", "" if issue is None else str(issue)), ("person", person)) if v}
    return page(admin, request, "admin/audit.html",
                {"trail": found, "issue": issue, "person": person, "people": people, "active": "audit",
                 "query": urlencode(query), "page_link": lambda n: "/admin/audit?" + urlencode({**query, "page": n})},
                session)


async def audit_export(admin: Admin, request: Request, session: AdminSession) -> Response:
    filters = _filters(request)
    if filters is None:
        return message(admin, request, session, 400, "Not a number", "The issue filter takes a whole number.",
                       back="/admin/audit")
    issue, person, _ = filters
    fmt = request.url.path.rsplit(".", 1)[1]
    text = await run_in_threadpool(audit.export_audit, admin.engine, fmt, issue, person or None)
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/json"
    return Response(text, media_type=media, headers={
        "content-disposition": f'attachment; filename="digest-audit.{fmt}"', "cache-control": "no-store"})
