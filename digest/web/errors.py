"""Error pages: 404, 405, 413 and 500 as pages people can use, in the visitor's language.

Public paths get the site's page (its name, the words in en, fr or de from ?lang= or
Accept-Language, a link home); /admin paths the admin's; /api paths a JSON error. The security
headers come from the middleware around everything, so error answers carry them too.
"""

from __future__ import annotations

import logging

from jinja2 import Environment, FileSystemLoader
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from ..config import LANGUAGES, Settings
from .pages import TEMPLATES, make_templates, render_page
from .texts import negotiate_language, texts

log = logging.getLogger(__name__)

WORDS = {404: "not_found", 405: "method", 413: "too_large", 500: "error"}
ADMIN_WORDS = {404: ("Page not found", "There is no admin page at this address."),
               405: ("Not possible here", "This address cannot be used this way: use the page's own buttons."),
               413: ("Too much sent at once", "What was sent is larger than this page accepts."),
               500: ("Something went wrong", "The page could not be shown because of a fault; the server log says "
                                             "what. Try again, and tell whoever runs digest if it goes on.")}


class ErrorPages:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.templates = make_templates()
        self.admin_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True)

    def answer(self, request: Request, status: int, detail: str = "", headers: dict[str, str] | None = None) -> Response:
        shown = status if status in WORDS else 500  # another status (a 400 from a handler) reads as a fault
        path = request.url.path
        if path.startswith("/api/"):
            message = detail or texts("en")[f"{WORDS.get(shown, 'error')}_body"]
            return JSONResponse({"error": {"status": status, "message": message}}, status_code=status, headers=headers)
        if path == "/admin" or path.startswith("/admin/"):
            heading, text = ADMIN_WORDS.get(shown, ADMIN_WORDS[500])
            html = self.admin_env.get_template("admin/message.html").render(
                site_name=self.settings.site.name, session=None, notices=[], heading=heading,
                text=detail if shown == 413 and detail else text, back="/admin/issues")
            return HTMLResponse(html, status_code=status, headers={"cache-control": "no-store", **(headers or {})})
        lang = self._language(request)
        t = texts(lang)
        key = WORDS.get(shown, "error")
        return render_page(self.templates, request, self.settings, "message.html",
                           {"lang": lang, "t": t, "title": t[f"{key}_title"], "skip_text": t["skip_text"],
                            "paragraphs": [t[f"{key}_body"]], "link_url": "/", "link_text": t["home_link"]},
                           status, headers)

    def _language(self, request: Request) -> str:
        wanted = request.query_params.get("lang", "")
        if wanted in LANGUAGES:
            return wanted
        return negotiate_language(request.headers.get("accept-language", ""), self.settings.site.language)

    async def http_error(self, request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)  # Starlette calls this for HTTPException only
        return self.answer(request, status, str(getattr(exc, "detail", "")) if status == 413 else "",
                           dict(getattr(exc, "headers", None) or {}))

    async def server_error(self, request: Request, exc: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return self.answer(request, 500)


def handlers(settings: Settings) -> dict:
    """Starlette's exception_handlers for the app."""
    pages = ErrorPages(settings)
    return {HTTPException: pages.http_error, Exception: pages.server_error}
