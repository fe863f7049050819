"""Shared data for the compose tests: the feeds in tests/data/compose parsed as the pipeline would."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from digest.config import Settings
from digest.models import Feed, Item, ItemKind, Window
from digest.parse import parse_feed

COMPOSE_DATA = Path(__file__).resolve().parent / "data" / "compose"
BRUSSELS = ZoneInfo("Europe/Brussels")
WINDOW = Window(datetime(2026, 11, 16, tzinfo=BRUSSELS), datetime(2026, 11, 23, tzinfo=BRUSSELS))
# The build runs at the window end; first_seen for fixture items is a day before it.
NOW = WINDOW.end
FIRST_SEEN = NOW - timedelta(days=1)

FEEDS = [
    Feed("Publications", str(COMPOSE_DATA / "briefs.rss"), ItemKind.BRIEF),
    Feed("News", str(COMPOSE_DATA / "news.atom"), ItemKind.NEWS),
    Feed("Events", str(COMPOSE_DATA / "events.rss"), ItemKind.EVENT),
    Feed("Alerts", str(COMPOSE_DATA / "alerts.atom"), ItemKind.MEDIA, language=None),
]
SEC, ECO, DIG = "esa-security-defence", "esa-economy-trade", "esa-digital-technology"


def p(n: int) -> str:
    """The key of fixture post n."""
    return f"https://www.example.org/?p={n}"


def event_key(n: int) -> str:
    return f"https://www.example.org/?post_type=event&p={n}"


def fixture_items(settings: Settings) -> list[Item]:
    """Every item of the four fixture feeds, parsed with the settings' series."""
    items: list[Item] = []
    for feed in FEEDS:
        result = parse_feed(Path(feed.url).read_bytes(), feed, settings.series)
        assert result.error is None, result.error
        items.extend(result.items)
    return items


def feeds_config() -> list[dict]:
    return [{"name": f.name, "url": f.url, "kind": f.kind.value} for f in FEEDS]
