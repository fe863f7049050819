"""Issues for render tests, built directly from Items: a demo-like issue and a 60-item issue in three languages."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from digest.models import (
    Editorial,
    EventInfo,
    Issue,
    IssueEntry,
    IssueStatus,
    Item,
    ItemKind,
    MediaInfo,
    RelatedLink,
    Section,
    SectionType,
    Segment,
    Window,
)

TZ = ZoneInfo("Europe/Brussels")
WINDOW = Window(datetime(2026, 11, 16, tzinfo=TZ), datetime(2026, 11, 23, tzinfo=TZ))
SERIES_IDS = ("esa-security-defence", "esa-economy-trade", "esa-digital-technology")
SERIES_NAMES = {
    "esa-security-defence": "European Strategic Autonomy series – Security & Defence",
    "esa-economy-trade": "European Strategic Autonomy series – Economy & Trade",
    "esa-digital-technology": "European Strategic Autonomy series – Digital & Technology",
}
LOREM = ("The European Union's pursuit of strategic autonomy raises hard questions about defence "
         "procurement, industrial capacity and the transatlantic relationship. This paper looks at "
         "how member states can pool resources, where the Commission's new instruments fall short, "
         "and what a credible division of labour with NATO could look like by the end of the decade. ")


def brief(n: int, series: str | None = None, language: str = "en", summary: str = "", kind=ItemKind.BRIEF,
          **extra) -> Item:
    return Item(
        key=f"https://www.example.org/?p={48000 + n}", feed="Publications", kind=kind,
        title=extra.pop("title", f"Policy brief {n}: defence procurement & the single market"),
        url=extra.pop("url", f"https://www.example.org/publications/brief-{n}/"),
        published=WINDOW.start + timedelta(hours=10 + n),
        authors=("Anna Schmidt", "Luc Dupont"), series=(series,) if series else (), language=language,
        summary_html=summary or f"<p>{LOREM[:300]}</p>", **extra)


def event(n: int, language: str = "en", online=False, hybrid=False, summary: str = "") -> Item:
    start = WINDOW.end + timedelta(days=3 + n, hours=14)
    return Item(
        key=f"https://www.example.org/events/{n}/", feed="Events", kind=ItemKind.EVENT,
        title=f"Roundtable {n}: the future of European defence industry", url=f"https://www.example.org/events/{n}/",
        published=WINDOW.start + timedelta(hours=n), language=language,
        summary_html=summary or "<p>A closed-door roundtable with policymakers and experts.</p>",
        event=EventInfo(start=start, end=start + timedelta(hours=2),
                        location="HQ Brussels (Hybrid)" if hybrid else "Rue Example 1, Brussels",
                        online=online, hybrid=hybrid))


def media(n: int, language: str = "de", summary: str = "") -> Item:
    return Item(
        key=f"https://press.example.net/article/{n}", feed="Media", kind=ItemKind.MEDIA,
        title=f"Europas strategische Autonomie: Experten warnen ({n})", url=f"https://press.example.net/article/{n}",
        published=WINDOW.start + timedelta(days=1, hours=n), language=language,
        summary_html=summary or "<p>Die Stiftung stellt eine neue Studie vor.</p>",
        media=MediaInfo(outlet="Austria Presse Agentur"))


def related(n: int) -> tuple[RelatedLink, ...]:
    return (RelatedLink(key=f"r{n}", kind=ItemKind.EVENT, title=f"Launch event for brief {n}",
                        url=f"https://www.example.org/events/launch-{n}/"),)


def section(sid: str, stype: SectionType, title: str, items, series=None, more_url="", with_related=False):
    entries = tuple(IssueEntry(item=i, related=related(k) if with_related else ()) for k, i in enumerate(items))
    return Section(id=sid, type=stype, title=title, series=series, entries=entries, more_url=more_url)


def demo_issue(intro: str = "This week: three new papers on strategic autonomy and a roundtable in Brussels.") -> Issue:
    """Roughly what `digest demo` builds: a few briefs per series, events, media mentions."""
    sections = [
        section(SERIES_IDS[0], SectionType.SERIES, SERIES_NAMES[SERIES_IDS[0]],
                [brief(1, SERIES_IDS[0]), brief(2, SERIES_IDS[0], language="fr")],
                series=SERIES_IDS[0], more_url="https://www.example.org/series/security-defence/", with_related=True),
        section(SERIES_IDS[1], SectionType.SERIES, SERIES_NAMES[SERIES_IDS[1]], [brief(3, SERIES_IDS[1])],
                series=SERIES_IDS[1], more_url="https://www.example.org/series/economy-trade/"),
        section("events", SectionType.EVENTS, "Upcoming events", [event(1, hybrid=True), event(2, online=True)]),
        section("media", SectionType.MEDIA, "In the media", [media(1), media(2, language="fr")]),
        section("more", SectionType.MORE, "More from us", [brief(9, kind=ItemKind.NEWS)]),
    ]
    return Issue(number=12, status=IssueStatus.DRAFT, window=WINDOW, sections=tuple(sections),
                 editorial=Editorial(intro=intro))


def big_issue(items: int = 60) -> Issue:
    """60 items with long summaries, events and media in de/fr: the size and layout stress case."""
    long_summary = "<p>" + (LOREM * 3) + "</p>"
    per = items // 6
    languages = ("en", "de", "fr")
    sections = []
    for s, sid in enumerate(SERIES_IDS):
        sections.append(section(sid, SectionType.SERIES, SERIES_NAMES[sid],
                                [brief(s * 100 + k, sid, languages[k % 3], long_summary) for k in range(per)],
                                series=sid, with_related=True))
    sections.append(section("events", SectionType.EVENTS, "Upcoming events",
                            [event(k, languages[k % 3], online=k % 2 == 0, hybrid=k % 3 == 0, summary=long_summary)
                             for k in range(per)]))
    sections.append(section("media", SectionType.MEDIA, "In the media",
                            [media(k, languages[k % 3], long_summary) for k in range(per)]))
    sections.append(section("more", SectionType.MORE, "More from us",
                            [brief(900 + k, None, "en", long_summary, kind=ItemKind.ARTICLE)
                             for k in range(items - 5 * per)]))
    return Issue(number=13, status=IssueStatus.DRAFT, window=WINDOW, sections=tuple(sections),
                 editorial=Editorial(intro="A long issue.\n\nWith two paragraphs of introduction from the staff."))


def all_sections(issue: Issue, language: str = "en", sid: str = "all") -> Segment:
    return Segment(id=sid, section_ids=tuple(s.id for s in issue.sections), language=language)
