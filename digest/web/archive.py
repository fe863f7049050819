"""The public archive: every SENT issue as a web page ("view in browser"), indexes, and an Atom feed.

Drafts, approved and sending issues are never public: every route reads through
digest.pipeline.reports (sent issues only) or edition_for's archive visitor, and answers 404 for
anything else. The edition page is the full edition (every section) as sent, rendered from the
stored manifest, with its own CSP (no scripts; the edition's inline styles). Addresses come from
digest.archive_urls, as the emails' "view in browser" links do. Store reads and rendering run in
the thread pool.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from xml.etree import ElementTree as ET

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.templating import Jinja2Templates

from ..archive_urls import archive_path, archive_url
from ..config import Settings
from ..manifest import issue_subject
from ..pipeline import reports
from ..pipeline.editions import EditionCache, Visitor, edition_for
from ..render import safe_url
from .pages import make_templates, render_page

EDITION_CSP = ("default-src 'none'; img-src https: http: data:; style-src 'unsafe-inline'; font-src https: data:; "
               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
ATOM = "http://www.w3.org/2005/Atom"
FEED_ENTRIES = 50


@dataclass(frozen=True)
class Archive:
    """What every archive route needs; built once per app."""

    settings: Settings
    engine: Engine
    templates: Jinja2Templates
    editions: EditionCache  # compiled pages, kept for the app's life (see digest.pipeline.editions)


def routes(settings: Settings, engine: Engine) -> list[BaseRoute]:
    """The /archive routes of the web app."""
    archive = Archive(settings, engine, make_templates(), EditionCache(size=16))
    return [  # the paths digest.archive_urls gives out, so every link finds its page
        Route(archive_path().rstrip("/"), lambda request: RedirectResponse(archive_path(), status_code=308)),
        Route(archive_path(), functools.partial(index_page, archive)),
        Route(archive_path("feed.atom"), functools.partial(feed_page, archive)),
        Route(archive_path("series/{series_id}"), functools.partial(series_page, archive)),
        Route(archive_path("{number:int}"), functools.partial(edition_page, archive)),
    ]


async def index_page(archive: Archive, request: Request) -> Response:
    settings = archive.settings
    sent = await run_in_threadpool(reports.archive_index, archive.engine)
    rows = [{"number": s.number, "subject": s.subject, "sent_at": _day(settings, s.sent_at), "count": s.items}
            for s in sent]
    return render_page(archive.templates, request, settings, "archive/index.html", {
        "lang": settings.site.language, "title": "Archive", "issues": rows, "series": settings.series,
    })


async def series_page(archive: Archive, request: Request) -> Response:
    settings = archive.settings
    series = settings.series_by_id().get(request.path_params["series_id"])
    if series is None:
        return _not_found(archive, request)
    found = await run_in_threadpool(reports.series_archive, archive.engine, series.id)
    rows = [{"number": s.sent.issue.number, "subject": issue_subject(s.sent.issue, settings),
             "sent_at": _day(settings, s.sent.sent_at),
             "items": [{"title": e.item.title, "url": safe_url(e.item.url)} for e in s.entries]} for s in found]
    return render_page(archive.templates, request, settings, "archive/series.html", {
        "lang": settings.site.language, "title": series.name, "series": series, "issues": rows,
    })


async def edition_page(archive: Archive, request: Request) -> Response:
    """A sent issue's full edition, as the web version of the email; 404 for anything not sent."""
    visitor = Visitor(language=request.query_params.get("lang", "")[:8])  # an unknown one reads the site's
    try:
        reading = await run_in_threadpool(edition_for, archive.settings, archive.engine,
                                          request.path_params["number"], visitor, archive.editions)
    except LookupError:  # no such issue, or not sent
        return _not_found(archive, request)
    return HTMLResponse(reading.html, headers={"content-security-policy": EDITION_CSP})


async def feed_page(archive: Archive, request: Request) -> Response:
    sent = await run_in_threadpool(reports.sent_issues, archive.engine, FEED_ENTRIES)
    return Response(atom_feed(archive.settings, sent), media_type="application/atom+xml; charset=utf-8")


def atom_feed(settings: Settings, sent: list[reports.ArchivedIssue]) -> bytes:
    """An Atom 1.0 feed of sent issues (newest first): title, link to the archive page, item titles."""
    ET.register_namespace("", ATOM)
    feed = ET.Element(f"{{{ATOM}}}feed")
    _text(feed, "title", f"{settings.site.name} digest")
    _text(feed, "id", archive_url(settings))
    ET.SubElement(feed, f"{{{ATOM}}}link", rel="self", href=archive_url(settings, "feed.atom"))
    ET.SubElement(feed, f"{{{ATOM}}}link", rel="alternate", type="text/html", href=archive_url(settings))
    newest = max((s.sent_at for s in sent if s.sent_at), default=datetime(2000, 1, 1, tzinfo=UTC))
    _text(feed, "updated", newest.isoformat())
    _text(ET.SubElement(feed, f"{{{ATOM}}}author"), "name", settings.site.name)
    for issue, sent_at in ((s.issue, s.sent_at) for s in sent):
        entry = ET.SubElement(feed, f"{{{ATOM}}}entry")
        _text(entry, "title", issue_subject(issue, settings))
        _text(entry, "id", archive_url(settings, issue.number))
        ET.SubElement(entry, f"{{{ATOM}}}link", rel="alternate", type="text/html",
                      href=archive_url(settings, issue.number))
        _text(entry, "updated", (sent_at or issue.window.end).isoformat())
        titles = [e.item.title for s in issue.sections for e in s.entries]
        _text(entry, "summary", (issue.editorial.intro + "\n\n" if issue.editorial.intro else "") +
              "\n".join(f"• {t}" for t in titles))
    return ET.tostring(feed, encoding="utf-8", xml_declaration=True)


def _text(parent: ET.Element, name: str, value: str) -> ET.Element:
    element = ET.SubElement(parent, f"{{{ATOM}}}{name}")
    # XML 1.0 cannot carry most control characters; feed text may contain them.
    element.text = "".join(c for c in value if c in "\t\n\r" or ord(c) >= 0x20)
    return element


def _day(settings: Settings, value: datetime | None) -> str:
    return value.astimezone(settings.site.tz).strftime("%d %B %Y") if value else ""


def _not_found(archive: Archive, request: Request) -> Response:
    return render_page(archive.templates, request, archive.settings, "archive/missing.html",
                       {"lang": archive.settings.site.language, "title": "Not found"}, status_code=404)
