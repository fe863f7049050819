"""File uploads in the admin (OPML, subscriber lists, the logo): one guard for every upload route.

Uploads cannot go through read_form, whose 64 KiB cap would refuse most files. The guard checks what
every admin form checks — a session, the role's right (before the body is read), this site's origin
and the CSRF token — and reads the body up to the route's cap plus the multipart envelope: a larger
body, declared or streamed, is refused before it is read in full. Starlette then parses the form
from the bytes already read, and a malformed upload is refused, never a 500.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from .admin import Admin, message, not_allowed
from .admin_auth import AdminSession

ENVELOPE_BYTES = 16 * 1024  # the multipart envelope and the other fields around the file


@dataclass(frozen=True)
class UploadRoute:
    """What one upload route takes: the role's action, the largest file, and where its page is."""

    action: str  # a key of digest.pipeline.accounts.ROLE_NEEDED
    max_bytes: int
    page: str  # the page the upload belongs to, e.g. "/admin/feeds"
    too_large: str  # said when the file is larger than max_bytes
    max_part_bytes: int | None = None  # a form part larger than Starlette's default 1 MiB is allowed up to this


# (admin, request, session, status code, what went wrong) → the answer the route's page gives
Refusal = Callable[[Admin, Request, AdminSession, int, str], Awaitable[Response]]
Handler = Callable[[Admin, Request, AdminSession, FormData], Awaitable[Response]]


async def refuse_with_message(admin: Admin, request: Request, session: AdminSession, status_code: int,
                              text: str, page: str = "/admin") -> Response:
    """A refused upload on the plain message page, with a way back."""
    title = "File too large" if status_code == 413 else "Not imported"
    return message(admin, request, session, status_code, title, text, back=page)


def upload_endpoint(admin: Admin, route: UploadRoute, handle: Handler, refuse: Refusal | None = None) -> Callable:
    """The route's endpoint: the checks of every admin form, the capped body, then `handle(…, form)`."""

    async def default_refusal(admin: Admin, request: Request, session: AdminSession, status_code: int,
                              text: str) -> Response:
        return await refuse_with_message(admin, request, session, status_code, text, route.page)

    refused_by = refuse or default_refusal

    async def endpoint(request: Request) -> Response:
        session = await run_in_threadpool(admin.auth.session, request)
        if session is None:
            return message(admin, request, None, 401, "Signed out", "Sign in again, then send the file again.",
                           back=f"/admin/login?next={route.page}")
        if refused := not_allowed(admin, request, session, route.action):  # before the upload is even read
            return refused
        body = await _read_capped(request, route.max_bytes + ENVELOPE_BYTES)
        if body is None:
            return await refused_by(admin, request, session, 413, route.too_large)

        async def replay() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        options = {"max_part_size": route.max_part_bytes} if route.max_part_bytes else {}
        try:
            form = await Request(request.scope, replay).form(max_files=1, max_fields=10, **options)
        except Exception:  # noqa: BLE001 - starlette's multipart errors: a malformed upload is refused, never a 500
            return await refused_by(admin, request, session, 400, "The upload could not be read; try again.")
        if not admin.auth.same_origin(request) or not admin.auth.csrf_ok(session, form.get("csrf_token")):
            return message(admin, request, session, 403, "Form expired",
                           "This form's security token is missing or wrong, so nothing was changed. "
                           "Reload the page and try again.", back=route.page)
        return await handle(admin, request, session, form)

    return endpoint


async def _read_capped(request: Request, limit: int) -> bytes | None:
    """The request's body, or None once it is (or says it will be) larger than `limit` bytes."""
    length = request.headers.get("content-length", "")
    if length and (not length.isdigit() or int(length) > limit):
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)
