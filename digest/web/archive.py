"""The public archive: every SENT issue as a web page ("view in browser"), indexes, and an Atom feed.

Drafts, approved and sending issues are never public: every route reads only sent issues and
answers 404 for anything else. The edition page is the full edition (every section) as sent,
rendered from the stored manifest, with its own CSP (no scripts; the edition's inline styles).
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from xml.etree import ElementTree as ET

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..config import LANGUAGES, Settings
from ..models import Issue, IssueStatus, SectionType
from ..render import full_segment, personalise, reader_values, safe_url
from .admin_preview import EditionCache
from .pages import make_templates, render_page

EDITION_CSP = ("default-src 'none'; img-src https: http: data:; style-src 'unsafe-inline'; font-src https: data:; "
               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
ATOM = "http://www.w3.org/2005/Atom"
FEED_ENTRIES = 50


def routes(settings: Settings, engine: Engine) -> list[BaseRoute]:
    """The /archive routes of the web app."""
    context = (settings, engine, make_templates(), EditionCache(size=16))
    return [
        Route("/archive", lambda request: RedirectResponse("/archive/", status_code=308)),
        Route("/archive/", functools.partial(archive_index, *context)),
        Route("/archive/feed.atom", functools.partial(archive_feed, *context)),
        Route("/archive/series/{series_id}", functools.partial(series_index, *context)),
        Route("/archive/{number:int}", functools.partial(edition_page, *context)),
    ]


def sent_issues(engine: Engine) -> list[Issue]:
    """Every sent issue, newest first (the only issues the public ever sees)."""
    from ..store.issues import get_issue, list_issues

    issues = [get_issue(engine, s.number) for s in list_issues(engine, (IssueStatus.SENT,))]
    return [i for i in issues if i is not None and i.status == IssueStatus.SENT]


def _sent_at(engine: Engine) -> dict[int, datetime | None]:
    from ..store.issues import list_issues

    return {s.number: s.sent_at for s in list_issues(engine, (IssueStatus.SENT,))}


async def archive_index(settings: Settings, engine: Engine, templates, cache, request: Request) -> Response:  # noqa: ANN001
    from ..store.issues import list_issues

    rows = [{"number": s.number, "subject": s.subject, "sent_at": _day(settings, s.sent_at), "count": s.items}
            for s in list_issues(engine, (IssueStatus.SENT,))]
    return render_page(templates, request, settings, "archive/index.html", {
        "lang": settings.site.language, "title": "Archive", "issues": rows, "series": settings.series,
    })


async def series_index(settings: Settings, engine: Engine, templates, cache, request: Request) -> Response:  # noqa: ANN001
    from ..manifest import issue_subject

    series = settings.series_by_id().get(request.path_params["series_id"])
    if series is None:
        return _not_found(settings, templates, request)
    sent_at = _sent_at(engine)
    rows = []
    for issue in sent_issues(engine):
        entries = [e for s in issue.sections if s.type == SectionType.SERIES for e in s.entries
                   if s.series == series.id or series.id in e.also_in]
        if entries:
            rows.append({"number": issue.number, "subject": issue_subject(issue, settings),
                         "sent_at": _day(settings, sent_at.get(issue.number)),
                         "items": [{"title": e.item.title, "url": safe_url(e.item.url)} for e in entries]})
    return render_page(templates, request, settings, "archive/series.html", {
        "lang": settings.site.language, "title": series.name, "series": series, "issues": rows,
    })


async def edition_page(settings: Settings, engine: Engine, templates, cache, request: Request) -> Response:  # noqa: ANN001
    """A sent issue's full edition, as the web version of the email; 404 for anything not sent."""
    from ..store.issues import get_issue

    issue = get_issue(engine, request.path_params["number"])
    if issue is None or issue.status != IssueStatus.SENT:
        return _not_found(settings, templates, request)
    language = request.query_params.get("lang", settings.site.language)
    language = language if language in LANGUAGES else settings.site.language
    html = await run_in_threadpool(archive_document, settings, issue, language, cache)
    return HTMLResponse(html, headers={"content-security-policy": EDITION_CSP})


def archive_document(settings: Settings, issue: Issue, language: str, cache: EditionCache) -> str:
    """The full edition's HTML with links for a visitor (subscribe instead of a personal unsubscribe)."""
    edition = cache.get(issue, full_segment(issue, language), settings)
    base = settings.web.base_url.rstrip("/")
    values = reader_values("", "", language, f"{base}/subscribe", f"{base}/subscribe", f"{base}/archive/{issue.number}")
    return personalise(edition, values)[0]


async def archive_feed(settings: Settings, engine: Engine, templates, cache, request: Request) -> Response:  # noqa: ANN001
    return Response(atom_feed(settings, sent_issues(engine)[:FEED_ENTRIES], _sent_at(engine)),
                    media_type="application/atom+xml; charset=utf-8")


def atom_feed(settings: Settings, issues: list[Issue], sent_at: dict[int, datetime | None]) -> bytes:
    """An Atom 1.0 feed of sent issues (newest first): title, link to the archive page, item titles."""
    from ..manifest import issue_subject

    base = settings.web.base_url.rstrip("/")
    ET.register_namespace("", ATOM)
    feed = ET.Element(f"{{{ATOM}}}feed")
    _text(feed, "title", f"{settings.site.name} digest")
    _text(feed, "id", f"{base}/archive/")
    ET.SubElement(feed, f"{{{ATOM}}}link", rel="self", href=f"{base}/archive/feed.atom")
    ET.SubElement(feed, f"{{{ATOM}}}link", rel="alternate", type="text/html", href=f"{base}/archive/")
    newest = max((t for t in sent_at.values() if t), default=datetime(2000, 1, 1, tzinfo=UTC))
    _text(feed, "updated", newest.isoformat())
    _text(ET.SubElement(feed, f"{{{ATOM}}}author"), "name", settings.site.name)
    for issue in issues:
        entry = ET.SubElement(feed, f"{{{ATOM}}}entry")
        _text(entry, "title", issue_subject(issue, settings))
        _text(entry, "id", f"{base}/archive/{issue.number}")
        ET.SubElement(entry, f"{{{ATOM}}}link", rel="alternate", type="text/html", href=f"{base}/archive/{issue.number}")
        _text(entry, "updated", (sent_at.get(issue.number) or issue.window.end).isoformat())
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


def _not_found(settings: Settings, templates, request: Request) -> Response:  # noqa: ANN001
    return render_page(templates, request, settings, "archive/missing.html",
                       {"lang": settings.site.language, "title": "Not found"}, status_code=404)
