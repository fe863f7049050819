"""The uploaded logo, served publicly at /branding/logo-{sha8}.{ext} (emails load it from here).

A logo's name carries the start of its SHA-256, so each name always means the same bytes: it is
cached as immutable, and an email sent with an older logo keeps showing that one. The content type is
the one read from the file's own bytes at upload; `nosniff` keeps browsers to it.
"""

from __future__ import annotations

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from ..config import Settings
from ..pipeline.site_settings import logo_file

IMMUTABLE = "public, max-age=31536000, immutable"


def routes(settings: Settings, engine: Engine) -> list[BaseRoute]:
    async def logo(request: Request) -> Response:
        found = await run_in_threadpool(logo_file, engine, request.path_params["name"])
        if found is None:
            return PlainTextResponse("No such file.", status_code=404)
        content_type, data = found
        return Response(data, media_type=content_type,
                        headers={"cache-control": IMMUTABLE, "x-content-type-options": "nosniff",
                                 "content-security-policy": "default-src 'none'; sandbox"})

    return [Route("/branding/{name:str}", logo, methods=["GET", "HEAD"])]
