"""The counted-link redirect: GET /c/{issue}/{language}/{link}/{signature} (digest.clicks).

A genuine link of a sent issue answers 302 to the target the issue contained, never cached and
with no referrer; anything else answers the site's 404 page and stores nothing. The count is one
number per issue, link and language (digest.pipeline.clicks): nothing about who clicked, from
where or when, and no cookie of its own. HEAD requests, and clients that say they are crawlers or
link checkers, are redirected without being counted; mail scanners that open links while posing
as a browser cannot be told apart (docs/web-public.md says so).
"""

from __future__ import annotations

import re

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..clicks import PATH
from ..config import Settings
from ..pipeline.clicks import follow_click

# User agents that say they are no person: crawlers, link previews, command-line fetchers.
MACHINE_AGENTS = re.compile(r"bot\b|bot/|crawl|spider|slurp|preview|facebookexternalhit|curl/|wget/|"
                            r"python-requests|python-urllib|go-http-client|libwww|httpclient", re.IGNORECASE)
HEADERS = {"cache-control": "no-store", "referrer-policy": "no-referrer", "x-robots-tag": "noindex, nofollow"}


def counted(request: Request) -> bool:
    """Whether this request is a click worth counting: a GET from something that does not say it is a machine."""
    agent = request.headers.get("user-agent", "")
    return request.method == "GET" and bool(agent.strip()) and not MACHINE_AGENTS.search(agent)


def routes(settings: Settings, engine: Engine) -> list[BaseRoute]:
    """The counted-link route (always there: links sent while counting was on keep working after it is off)."""

    async def follow(request: Request) -> Response:
        p = request.path_params
        target = await run_in_threadpool(follow_click, settings, engine, p["number"], p["language"], p["link"],
                                         p["signature"], counted(request))
        if target is None:
            raise HTTPException(404)
        return RedirectResponse(target, status_code=302, headers=HEADERS)

    return [Route(PATH + "{number:int}/{language}/{link}/{signature}", follow, methods=["GET"])]
