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
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from html import escape
from xml.etree import ElementTree as ET

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.templating import Jinja2Templates

from ..archive_urls import archive_path, archive_url
from ..config import LANGUAGES, Settings
from ..manifest import issue_subject
from ..pipeline import reports
from ..pipeline.editions import EditionCache, Visitor, edition_for
from ..pipeline.managed import current_settings
from ..render import Edition, safe_url
from .pages import make_templates, render_page
from .texts import LANGUAGE_NAMES, texts

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
        Route(archive_path("feed.rss"), functools.partial(feed_page, archive)),
        Route(archive_path("series/{series_id}"), functools.partial(series_page, archive)),
        Route(archive_path("series/{series_id}/feed.atom"), functools.partial(series_feed_page, archive)),
        Route(archive_path("series/{series_id}/feed.rss"), functools.partial(series_feed_page, archive)),
        Route(archive_path("{number:int}"), functools.partial(edition_page, archive)),
    ]


async def index_page(archive: Archive, request: Request) -> Response:
    settings = await run_in_threadpool(current_settings, archive.settings, archive.engine)
    sent = await run_in_threadpool(reports.archive_index, archive.engine)
    rows = [{"number": s.number, "subject": s.subject, "sent_at": _day(settings, s.sent_at), "count": s.items}
            for s in sent]
    return render_page(archive.templates, request, settings, "archive/index.html", {
        "lang": settings.site.language, "title": "Archive", "issues": rows, "series": settings.series,
    })


async def series_page(archive: Archive, request: Request) -> Response:
    settings = await run_in_threadpool(current_settings, archive.settings, archive.engine)
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
    page = with_site_chrome(archive.settings, reading.html, request.path_params["number"], reading.edition)
    return HTMLResponse(page, headers={"content-security-policy": EDITION_CSP})


_HEAD = re.compile(r"<head[^>]*>", re.IGNORECASE)
_BODY = re.compile(r"<body[^>]*>", re.IGNORECASE)
_BAR_LINK = "color:#ffffff;text-decoration:underline;margin-left:12px"


def with_site_chrome(settings: Settings, html: str, number: int, edition: Edition) -> str:
    """The archive copy of an edition as a web page: sharing tags, feed links and the site's bar.

    The edition keeps its own CSP (inline styles, no scripts), so the bar is inline-styled and the
    page loads nothing from elsewhere. Everything put in is escaped.
    """
    base = settings.web.base_url.rstrip("/")
    lang = edition.language
    meta = "".join([
        f'<meta property="og:title" content="{escape(edition.subject)}">',
        f'<meta property="og:description" content="{escape(edition.preheader[:300])}">',
        '<meta property="og:type" content="article">',
        f'<meta property="og:url" content="{escape(archive_url(settings, number))}">',
        f'<link rel="alternate" type="application/atom+xml" title="{escape(settings.site.name)} digest" '
        f'href="{escape(base + archive_path("feed.atom"))}">',
        f'<link rel="alternate" type="application/rss+xml" title="{escape(settings.site.name)} digest" '
        f'href="{escape(base + archive_path("feed.rss"))}">',
    ])
    t = texts(lang)
    languages = " ".join(
        f'<a lang="{code}" hreflang="{code}" href="?lang={code}" style="{_BAR_LINK}">{LANGUAGE_NAMES[code]}</a>'
        for code in LANGUAGES if code != lang)
    bar = (f'<nav aria-label="{escape(settings.site.name)}" style="background:#163a69;color:#ffffff;padding:10px 16px;'
           f'font-family:system-ui,Arial,sans-serif;font-size:15px;line-height:1.6">'
           f'<a href="{escape(base)}/?lang={lang}" style="color:#ffffff;font-weight:700;text-decoration:none">'
           f'{escape(settings.site.name)}</a>'
           f'<a href="{escape(base + archive_path())}" style="{_BAR_LINK}">{escape(t["home_archive"])}</a>'
           f'<a href="{escape(base)}/subscribe?lang={lang}" style="{_BAR_LINK}">{escape(t["home_subscribe"])}</a>'
           f'{languages}</nav>')
    html = _HEAD.sub(lambda m: m.group(0) + meta, html, count=1)
    return _BODY.sub(lambda m: m.group(0) + bar, html, count=1)


async def feed_page(archive: Archive, request: Request) -> Response:
    """GET /archive/feed.atom and /archive/feed.rss: the newest sent issues."""
    sent = await run_in_threadpool(reports.sent_issues, archive.engine, FEED_ENTRIES)
    entries = [FeedEntry(s.issue.number, issue_subject(s.issue, archive.settings), s.sent_at or s.issue.window.end,
                         _summary(s.issue.editorial.intro, [e.item.title for sec in s.issue.sections for e in sec.entries]))
               for s in sent]
    return _feed(archive.settings, request, f"{archive.settings.site.name} digest", "feed", archive_path(), entries)


async def series_feed_page(archive: Archive, request: Request) -> Response:
    """GET /archive/series/ID/feed.atom and feed.rss: the sent issues with items of one series, and those items."""
    settings = await run_in_threadpool(current_settings, archive.settings, archive.engine)
    series = settings.series_by_id().get(request.path_params["series_id"])
    if series is None:
        return _not_found(archive, request)
    found = await run_in_threadpool(reports.series_archive, archive.engine, series.id)
    entries = [FeedEntry(s.sent.issue.number, issue_subject(s.sent.issue, archive.settings),
                         s.sent.sent_at or s.sent.issue.window.end, _summary("", [e.item.title for e in s.entries]))
               for s in found[:FEED_ENTRIES]]
    return _feed(archive.settings, request, f"{archive.settings.site.name} digest: {series.name}",
                 f"series/{series.id}/feed", archive_path(f"series/{series.id}"), entries)


@dataclass(frozen=True)
class FeedEntry:
    number: int
    title: str
    sent_at: datetime
    summary: str


def _summary(intro: str, titles: list[str]) -> str:
    return (intro + "\n\n" if intro else "") + "\n".join(f"• {t}" for t in titles)


def _feed(settings: Settings, request: Request, title: str, stem: str, page: str,
          entries: list[FeedEntry]) -> Response:
    if request.url.path.endswith(".rss"):
        return Response(rss_feed(settings, title, stem, page, entries), media_type="application/rss+xml; charset=utf-8")
    return Response(atom_feed(settings, title, stem, page, entries), media_type="application/atom+xml; charset=utf-8")


def atom_feed(settings: Settings, title: str, stem: str, page: str, entries: list[FeedEntry]) -> bytes:
    """An Atom 1.0 feed: one entry per sent issue, linking to its archive page, its items' titles as the summary."""
    ET.register_namespace("", ATOM)
    base = settings.web.base_url.rstrip("/")
    feed = ET.Element(f"{{{ATOM}}}feed")
    _text(feed, "title", title)
    _text(feed, "id", base + page)
    ET.SubElement(feed, f"{{{ATOM}}}link", rel="self", href=base + archive_path(f"{stem}.atom"))
    ET.SubElement(feed, f"{{{ATOM}}}link", rel="alternate", type="text/html", href=base + page)
    newest = max((e.sent_at for e in entries), default=datetime(2000, 1, 1, tzinfo=UTC))
    _text(feed, "updated", newest.isoformat())
    _text(ET.SubElement(feed, f"{{{ATOM}}}author"), "name", settings.site.name)
    for e in entries:
        entry = ET.SubElement(feed, f"{{{ATOM}}}entry")
        _text(entry, "title", e.title)
        _text(entry, "id", archive_url(settings, e.number))
        ET.SubElement(entry, f"{{{ATOM}}}link", rel="alternate", type="text/html", href=archive_url(settings, e.number))
        _text(entry, "updated", e.sent_at.isoformat())
        _text(entry, "summary", e.summary)
    return ET.tostring(feed, encoding="utf-8", xml_declaration=True)


def rss_feed(settings: Settings, title: str, stem: str, page: str, entries: list[FeedEntry]) -> bytes:
    """The same feed as RSS 2.0, for readers that take only RSS."""
    base = settings.web.base_url.rstrip("/")
    rss = ET.Element("rss", version="2.0")
    channel = ET.SubElement(rss, "channel")
    for name, value in (("title", title), ("link", base + page),
                        ("description", f"Every issue of the {settings.site.name} digest as it was sent")):
        _plain(channel, name, value)
    for e in entries:
        item = ET.SubElement(channel, "item")
        _plain(item, "title", e.title)
        _plain(item, "link", archive_url(settings, e.number))
        _plain(item, "guid", archive_url(settings, e.number))
        _plain(item, "pubDate", format_datetime(e.sent_at.astimezone(UTC), usegmt=True))
        _plain(item, "description", e.summary)
    return ET.tostring(rss, encoding="utf-8", xml_declaration=True)


def _text(parent: ET.Element, name: str, value: str) -> ET.Element:
    return _plain(parent, f"{{{ATOM}}}{name}", value)


def _plain(parent: ET.Element, tag: str, value: str) -> ET.Element:
    element = ET.SubElement(parent, tag)
    # XML 1.0 cannot carry most control characters; feed text may contain them.
    element.text = "".join(c for c in value if c in "\t\n\r" or ord(c) >= 0x20)
    return element


def _day(settings: Settings, value: datetime | None) -> str:
    return value.astimezone(settings.site.tz).strftime("%d %B %Y") if value else ""


def _not_found(archive: Archive, request: Request) -> Response:
    return render_page(archive.templates, request, archive.settings, "archive/missing.html",
                       {"lang": archive.settings.site.language, "title": "Not found"}, status_code=404)
