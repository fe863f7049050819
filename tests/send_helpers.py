"""Fixtures shared by the delivery tests: an approved issue with one recognisable item per section,
subscribers with chosen preferences, and settings pointing at a test SMTP server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

from conftest import make_settings
from sqlalchemy import Engine

from digest.config import Settings
from digest.manifest import issue_to_manifest
from digest.models import (
    EventInfo,
    Issue,
    IssueEntry,
    IssueStatus,
    Item,
    ItemKind,
    MediaInfo,
    Section,
    SectionType,
    Subscriber,
    SubscriberStatus,
    Window,
)
from digest.store.issues import approve_issue, create_issue
from digest.store.subscribers import add_subscriber

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
SERIES_IDS = ("esa-security-defence", "esa-economy-trade", "esa-digital-technology")
# One item per section; its title tells which section a received message contains.
MARKERS = {
    "esa-security-defence": "Marker brief on defence procurement",
    "esa-economy-trade": "Marker brief on trade instruments",
    "esa-digital-technology": "Marker brief on chips and cloud",
    "events": "Marker event on strategic autonomy",
    "media": "Marker mention in a newspaper",
}


def _item(key: str, kind: ItemKind, title: str, series: tuple[str, ...] = (), **extra) -> Item:
    published = NOW - timedelta(days=2)
    return Item(key=f"https://www.example.org/?p={key}", feed="Publications", kind=kind, title=title,
                url=f"https://www.example.org/{key}/", published=published, first_seen=published,
                series=series, language="en", summary_html="<p>A short summary.</p>", **extra)


def sample_issue() -> Issue:
    sections = [Section(id=sid, type=SectionType.SERIES, title=f"Series {sid}", series=sid,
                        entries=(IssueEntry(_item(sid, ItemKind.BRIEF, MARKERS[sid], (sid,))),))
                for sid in SERIES_IDS]
    event = EventInfo(start=NOW + timedelta(days=10), end=NOW + timedelta(days=10, hours=2), location="Brussels")
    sections.append(Section(id="events", type=SectionType.EVENTS, title="Upcoming events",
                            entries=(IssueEntry(_item("event", ItemKind.EVENT, MARKERS["events"], event=event)),)))
    sections.append(Section(id="media", type=SectionType.MEDIA, title="In the media",
                            entries=(IssueEntry(_item("media", ItemKind.MEDIA, MARKERS["media"],
                                                      media=MediaInfo(outlet="Le Soir"))),)))
    return Issue(number=None, status=IssueStatus.DRAFT, window=Window(NOW - timedelta(days=7), NOW),
                 sections=tuple(sections), version="v1", created_at=NOW)


def approved_issue(engine: Engine, settings: Settings) -> int:
    """Store the sample issue and approve it; returns its number."""
    issue = sample_issue()
    stored = create_issue(engine, issue, issue_to_manifest(issue, settings), NOW)
    approve_issue(engine, stored.number, "editor@example.org", "v1", NOW)
    return stored.number


def add_confirmed(engine: Engine, email: str, series: tuple[str, ...] = (), want_events: bool = True,
                  want_media: bool = True, name: str = "", language: str = "en") -> Subscriber:
    subscriber = Subscriber(email=email, name=name, language=language, series=series, want_events=want_events,
                            want_media=want_media, status=SubscriberStatus.CONFIRMED, consent_method="admin")
    return add_subscriber(engine, subscriber, NOW)


def add_many(engine: Engine, count: int, prefix: str = "reader") -> list[str]:
    """`count` confirmed subscribers following everything, added in one go (fast fixtures)."""
    from digest.store.schema import subscribers

    rows = [{"email": f"{prefix}{i}@example.net", "name": f"Reader {i}", "language": "en", "series": [],
             "want_events": True, "want_media": True, "status": "confirmed", "consent_method": "import",
             "consent_ip": "", "created_at": NOW, "updated_at": NOW, "confirmed_at": NOW}
            for i in range(count)]
    with engine.begin() as conn:
        conn.execute(subscribers.insert(), rows)
    return [r["email"] for r in rows]


def smtp_settings(tmp_path: Path, store_url: str, port: int, **delivery) -> Settings:
    """Settings sending over SMTP to 127.0.0.1:`port`, with fast retries."""
    values = {"transport": "smtp", "retry_delay": 0.05, "retry_max_delay": 0.5, "batch_size": 20,
              "smtp": {"host": "127.0.0.1", "port": port, "connections": 2, "timeout": 10.0}}
    values.update(delivery)
    return make_settings(tmp_path, store_url, delivery=values, web={"base_url": "https://digest.example.org"})


def sections_in(message: EmailMessage) -> set[str]:
    """Which sample sections a received message shows (by their marker titles, in the text part)."""
    text = message.get_body(("plain",)).get_content()
    return {section for section, marker in MARKERS.items() if marker in text}


# --- test SMTP servers that misbehave ----------------------------------------------------------------

class Wrapped:
    """Wraps the conftest handler (or another wrapper); subclasses change EHLO, RCPT or DATA."""

    def __init__(self, inner):
        self.inner = inner

    async def handle_RCPT(self, server, session, envelope, address, options):
        return await self.inner.handle_RCPT(server, session, envelope, address, options)

    async def handle_DATA(self, server, session, envelope):
        return await self.inner.handle_DATA(server, session, envelope)


class Offers(Wrapped):
    """EHLO offers PIPELINING when `pipelining`, and leaves out SIZE unless `size` (the limit still holds
    after DATA: aiosmtpd's data_size_limit); records the EHLO names it was greeted with."""

    def __init__(self, inner, pipelining: bool = True, size: bool = True):
        super().__init__(inner)
        self.pipelining, self.size, self.helo_names = pipelining, size, []

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        self.helo_names.append(hostname)
        responses = [r for r in responses if self.size or not r.startswith("250-SIZE")]
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses


class StoreThenDrop(Wrapped):
    """Stores each message (to `addresses`, or every one) and then drops the connection before its reply to
    the final ".": the client cannot know the message arrived."""

    def __init__(self, inner, addresses: tuple[str, ...] = ()):
        super().__init__(inner)
        self.addresses, self.drops = addresses, 0

    async def handle_DATA(self, server, session, envelope):
        reply = await self.inner.handle_DATA(server, session, envelope)
        if not self.addresses or set(self.addresses) & set(envelope.rcpt_tos):
            self.drops += 1
            server.transport.abort()
        return reply


class SlowAck(Wrapped):
    """Stores each message, then waits `delay` seconds before acknowledging the final "." (a slow
    content filter)."""

    def __init__(self, inner, delay: float):
        super().__init__(inner)
        self.delay = delay

    async def handle_DATA(self, server, session, envelope):
        reply = await self.inner.handle_DATA(server, session, envelope)
        await asyncio.sleep(self.delay)
        return reply


def size_limit(controller, limit: int) -> None:
    """aiosmtpd's own size limit for the controller's next connections: advertised in EHLO SIZE,
    552 to MAIL FROM … SIZE=n above it, and 552 after DATA for a longer message."""
    controller.SMTP_kwargs["data_size_limit"] = limit


def count_reads(controller) -> list[tuple[str, int]]:
    """Make the controller's next connections note, for every MAIL, RCPT and DATA command, how many
    reads from the socket the connection had made when it came: commands pipelined in one write share
    a number; each command that waited for the reply before it has its own. Returns the live list."""
    from aiosmtpd.smtp import SMTP

    log: list[tuple[str, int]] = []

    class Counting(SMTP):
        reads = 0

        def data_received(self, data: bytes) -> None:
            self.reads += 1
            super().data_received(data)

        async def smtp_MAIL(self, arg):
            log.append(("MAIL", self.reads))
            await super().smtp_MAIL(arg)

        async def smtp_RCPT(self, arg):
            log.append(("RCPT", self.reads))
            await super().smtp_RCPT(arg)

        async def smtp_DATA(self, arg):
            log.append(("DATA", self.reads))
            await super().smtp_DATA(arg)

    controller.factory = lambda: Counting(controller.handler, **controller.SMTP_kwargs)
    return log
