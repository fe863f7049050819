"""HTML pages from the Jinja2 templates in web/templates (autoescaped), shared by every route module.

Templates extend `base.html`, which expects `lang`, `title`, `site_name` and the block `content`;
`render_page` fills those plus `csrf_field` and `csrf_token(action)` for forms: a form's token is
made for the path it posts to, `<input name="{{ csrf_field }}" value="{{ csrf_token(action) }}">`.
Every template can call `archive_path(page)` (digest.archive_urls) for links into the archive.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.templating import Jinja2Templates

from ..archive_urls import archive_path
from ..config import Settings
from .security import CSRF_FIELD, csrf_token

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = Path(__file__).resolve().parent / "static"


def make_templates() -> Jinja2Templates:
    """The web app's templates; autoescape is always on, whatever the file name."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.globals["archive_path"] = archive_path
    return Jinja2Templates(env=env)


def render_page(templates: Jinja2Templates, request: Request, settings: Settings, name: str,
                context: dict[str, Any], status_code: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    """A page with the shared context; never cached (forms carry CSRF tokens, URLs carry link tokens)."""
    full = {"site_name": settings.site.name, "csrf_field": CSRF_FIELD,
            "csrf_token": functools.partial(csrf_token, request),  # csrf_token(action) in the template
            "postal_address": settings.postal_address, **context}
    return templates.TemplateResponse(request, name, full, status_code=status_code,
                                      headers={"cache-control": "no-store", **(headers or {})})
