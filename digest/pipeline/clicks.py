"""Use case: clicks. Following a counted link (digest.clicks), and what the counts say.

Rules that live here and nowhere else:
- a counted link leads only where its issue led: its id is looked up among the links of the
  issue's stored manifest (`issue_links`), never taken from the request, and only for an issue
  being sent or sent; anything else (a forged or foreign signature, an unknown id, a draft) is
  no link at all, and nothing is stored;
- a click adds one to its (issue, link, language) count and stores nothing else; with
  web.count_clicks off, links already sent still lead to their targets, uncounted;
- "this week" is the issues that went out in the last 7 days, "12 weeks" those of the last 84
  (a count has no time of its own: it belongs to its issue);
- an item counts for its series (its section's series when the link leads to something that is
  not one of the issue's items, such as a series page or an older related item).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine

from ..clicks import COUNTED_STATUSES, KEY_PURPOSE, Link, genuine_click
from ..config import Settings
from ..edition_view import add_utm, safe_url
from ..models import Issue, SectionType
from ..signing import derived_keys
from ..store.clicks import ClickCount, click_counts_of, count_click
from ..store.issues import IssueSummary, get_issue, get_summary, list_issues
from .managed import uses_current_settings

WEEK, QUARTER = timedelta(days=7), timedelta(weeks=12)
MOST_READ, MOST_READ_PER_SERIES = 10, 5


# --- following a link -------------------------------------------------------------------------------

def issue_links(settings: Settings, issue: Issue) -> dict[str, Link]:
    """Every link an edition of `issue` can show, by id: each item, related and series-page target in each section.

    Targets are made as digest.edition_view._link makes them (safe URL, UTM where delivery.utm asks):
    a generous set, so a link moved to another section by a template still finds its target, and
    every target is one the issue contained.
    """
    items: dict[tuple[str, str], None] = {}
    for section in issue.sections:
        for entry in section.entries:
            items[(entry.item.key, entry.item.url)] = None
            items.update({(r.key, r.url): None for r in entry.related})
    pages = [s.more_url for s in issue.sections] + [s.url for s in settings.series] + [settings.site.url]
    items.update({("", url): None for url in pages if url})
    safe = [(key, target) for key, url in items if (target := safe_url(url)) is not None]
    found: dict[str, Link] = {}
    for section in issue.sections:
        for key, target in safe:
            if settings.delivery.utm:
                target = add_utm(target, settings.site.url, section.id, issue.number)
            link = Link(section.id, key, target)
            found[link.id] = link
    return found


@uses_current_settings
def follow_click(settings: Settings, engine: Engine, number: int, language: str, link: str, signature: str,
                 count: bool = True) -> str | None:
    """The target of a genuine counted link of issue `number` (counted when `count` and web.count_clicks); else None."""
    if not genuine_click(derived_keys(settings, KEY_PURPOSE), number, language, link, signature):
        return None
    issue = get_issue(engine, number)
    if issue is None or issue.status not in COUNTED_STATUSES:
        return None
    found = issue_links(settings, issue).get(link)
    if found is None:
        return None
    if count and settings.web.count_clicks:
        count_click(engine, number, link, language, section=found.section, item_key=found.item_key, url=found.url)
    return found.url


# --- what the counts say ----------------------------------------------------------------------------

@dataclass
class ReadLink:
    """Clicks on one target (an item, or a page such as a series page), summed over sections and languages."""

    title: str  # the item's title; "" for a target that is not an item (show the URL)
    url: str
    item_key: str
    section: str  # where it was clicked most
    clicks: int = 0
    by_language: dict[str, int] = field(default_factory=dict)
    issues: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class SeriesReading:
    series_id: str
    name: str
    links: list[ReadLink]
    clicks: int


@dataclass(frozen=True)
class IssueClicks:
    """One sent issue's total: the link to its own counts."""

    number: int
    subject: str
    sent_at: datetime | None
    clicks: int


@dataclass(frozen=True)
class ReadingOverview:
    counting: bool  # web.count_clicks
    this_week: list[ReadLink]
    by_series: list[SeriesReading]
    issues: list[IssueClicks]


@dataclass(frozen=True)
class IssueReading:
    """Every counted link of one issue, most clicked first, with the clicks per language."""

    number: int
    subject: str
    status: str
    sent_at: datetime | None
    counting: bool
    links: list[ReadLink]
    sections: dict[str, str]  # section id → its title
    clicks: int


def _sent_at(summary: IssueSummary) -> datetime | None:
    return summary.sent_at or summary.sending_started_at


def _sent_since(engine: Engine, since: datetime) -> list[IssueSummary]:
    return [s for s in list_issues(engine, COUNTED_STATUSES) if (sent := _sent_at(s)) is not None and sent >= since]


class _Catalogue:
    """What the issues' manifests say about their items: titles and series (read once per issue)."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.engine = engine
        self.titles: dict[str, str] = {}
        # Targets that are not items, named: the series pages and the site (their URLs without UTM).
        self.pages = {_without_query(s.url): f"All publications: {s.name}" for s in settings.series if s.url}
        self.pages.setdefault(_without_query(settings.site.url), f"{settings.site.name}: home page")
        self.series: dict[str, tuple[str, ...]] = {}
        self.section_series: dict[tuple[int, str], str] = {}
        self.section_titles: dict[tuple[int, str], str] = {}

    def read(self, number: int) -> Issue | None:
        issue = get_issue(self.engine, number)
        for section in issue.sections if issue else ():
            self.section_titles[(number, section.id)] = section.title or section.id
            if section.type == SectionType.SERIES and section.series:
                self.section_series[(number, section.id)] = section.series
            for entry in section.entries:
                self.titles[entry.item.key] = entry.item.title
                self.series[entry.item.key] = entry.item.series
                self.titles.update({r.key: r.title for r in entry.related if r.key not in self.titles})
        return issue

    def title(self, row: ClickCount) -> str:
        if row.item_key:
            return self.titles.get(row.item_key, "")
        return self.pages.get(_without_query(row.url), "")

    def series_of(self, row: ClickCount) -> tuple[str, ...]:
        if row.item_key in self.series and self.series[row.item_key]:
            return self.series[row.item_key]
        section = self.section_series.get((row.issue_number, row.section))
        return (section,) if section else ()


def _without_query(url: str) -> str:
    return url.split("?", 1)[0].split("#", 1)[0].rstrip("/")


def _most_read(rows: list[ClickCount], catalogue: _Catalogue) -> list[ReadLink]:
    """The rows summed per target (the item, else the URL), most clicked first."""
    found: dict[str, ReadLink] = {}
    best_section: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        key = row.item_key or row.url
        read = found.get(key)
        if read is None:
            read = found[key] = ReadLink(catalogue.title(row), row.url, row.item_key, row.section)
        read.clicks += row.clicks
        read.by_language[row.language] = read.by_language.get(row.language, 0) + row.clicks
        if row.issue_number not in read.issues:
            read.issues.append(row.issue_number)
        best_section[key][row.section] += row.clicks
    for key, read in found.items():
        read.section = max(best_section[key].items(), key=lambda kv: (kv[1], kv[0]))[0]
        read.by_language = dict(sorted(read.by_language.items()))
        read.issues.sort()
    return sorted(found.values(), key=lambda r: (-r.clicks, r.title or r.url))


@uses_current_settings
def reading_overview(settings: Settings, engine: Engine, now: datetime) -> ReadingOverview:
    """Most read this week, most read per series over 12 weeks, and each recent issue's clicks."""
    recent = _sent_since(engine, now - QUARTER)
    catalogue = _Catalogue(settings, engine)
    for summary in recent:
        catalogue.read(summary.number)
    rows = click_counts_of(engine, [s.number for s in recent])
    this_week = {s.number for s in recent if _sent_at(s) >= now - WEEK}
    per_series: dict[str, list[ClickCount]] = defaultdict(list)
    for row in rows:
        for series_id in catalogue.series_of(row):
            per_series[series_id].append(row)
    by_series = []
    for series in settings.series:
        links = _most_read(per_series.get(series.id, []), catalogue)
        by_series.append(SeriesReading(series.id, series.name, links[:MOST_READ_PER_SERIES],
                                       sum(r.clicks for r in links)))
    totals: dict[int, int] = defaultdict(int)
    for row in rows:
        totals[row.issue_number] += row.clicks
    return ReadingOverview(
        counting=settings.web.count_clicks,
        this_week=_most_read([r for r in rows if r.issue_number in this_week], catalogue)[:MOST_READ],
        by_series=by_series,
        issues=[IssueClicks(s.number, s.subject, _sent_at(s), totals.get(s.number, 0)) for s in recent])


@uses_current_settings
def issue_reading(settings: Settings, engine: Engine, number: int) -> IssueReading | None:
    """Every counted link of issue `number` (none before it is sent), or None when there is no such issue."""
    catalogue = _Catalogue(settings, engine)
    issue = catalogue.read(number)
    if issue is None:
        return None
    rows = click_counts_of(engine, [number])
    links: list[ReadLink] = []
    for row in rows:  # per link and section here: where a reader clicked matters on one issue's page
        same = next((r for r in links if r.url == row.url and r.section == row.section
                     and r.item_key == row.item_key), None)
        if same is None:
            same = ReadLink(catalogue.title(row), row.url, row.item_key, row.section,
                            issues=[number])
            links.append(same)
        same.clicks += row.clicks
        same.by_language[row.language] = same.by_language.get(row.language, 0) + row.clicks
    links.sort(key=lambda r: (-r.clicks, r.title or r.url))
    for read in links:
        read.by_language = dict(sorted(read.by_language.items()))
    summary = get_summary(engine, number)
    return IssueReading(
        number=number, subject=summary.subject if summary else "", status=issue.status.value,
        sent_at=_sent_at(summary) if summary else None, counting=settings.web.count_clicks, links=links,
        sections={section_id: title for (n, section_id), title in catalogue.section_titles.items() if n == number},
        clicks=sum(r.clicks for r in links))
