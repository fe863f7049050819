"""The public home page at /: what the digest is, a way to subscribe, the latest issues and the archive."""

from __future__ import annotations

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..config import LANGUAGES, Settings
from ..pipeline.managed import current_settings
from ..pipeline.reports import archive_index
from .pages import make_templates, render_page
from .texts import LANGUAGE_NAMES, negotiate_language, texts

LATEST = 5


def routes(settings: Settings, engine: Engine) -> list[BaseRoute]:
    templates = make_templates()

    async def home(request: Request) -> Response:
        wanted = request.query_params.get("lang", "")
        lang = wanted if wanted in LANGUAGES else negotiate_language(request.headers.get("accept-language", ""),
                                                                     settings.site.language)
        t = texts(lang)
        latest = (await run_in_threadpool(archive_index, engine))[:LATEST]
        shown = await run_in_threadpool(current_settings, settings, engine)  # the footer's address as in force
        return render_page(templates, request, shown, "home.html",
                           {"lang": lang, "t": t, "title": t["home_title"].format(site=settings.site.name),
                            "skip_text": t["skip_text"], "latest": latest, "tz": settings.site.tz,
                            "languages": [(code, LANGUAGE_NAMES[code]) for code in LANGUAGES]})

    return [Route("/", home, methods=["GET"])]
