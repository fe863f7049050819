"""Use case: who a send reaches, before it starts, and how far it has got, while it runs.

Rules that live here and nowhere else:
- an issue's audience is every confirmed subscriber whose choices select something in it, counted
  per edition (language and sections) exactly as the send will split them (segments.segment_for);
  readers whose choices select nothing in this issue are counted apart: they get nothing;
- a send's progress is its ledger in plain words: sent, failed, retrying, still to go; it is
  finished when nothing is left to go.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine

from ..config import Settings
from ..models import Issue, IssueStatus, Subscriber
from ..segments import segment_for
from ..store.issues import require_issue
from ..store.ledger import ledger_counts
from ..store.subscribers import confirmed_choice_groups

LANGUAGE_NAMES = {"en": "English", "fr": "French", "de": "German"}


@dataclass(frozen=True)
class Edition:
    """One edition of the send: its language, the sections it holds, how many readers get it."""

    language: str
    sections: tuple[str, ...]
    readers: int


@dataclass(frozen=True)
class Audience:
    issue: Issue
    editions: tuple[Edition, ...]
    readers: int  # every message the send will make
    nothing_selected: int  # confirmed, but their choices select nothing in this issue

    def per_language(self) -> list[tuple[str, int]]:
        totals: dict[str, int] = {}
        for edition in self.editions:
            totals[edition.language] = totals.get(edition.language, 0) + edition.readers
        return sorted(((LANGUAGE_NAMES.get(k, k), v) for k, v in totals.items()), key=lambda kv: -kv[1])


def send_audience(settings: Settings, engine: Engine, number: int) -> Audience:
    """Who issue `number` would reach if it were sent now; IssueNotFound when there is none."""
    issue = require_issue(engine, number)
    titles = {s.id: s.title for s in issue.sections}
    counts: dict[tuple[str, tuple[str, ...]], int] = {}
    nothing = 0
    for language, series, events, media, count in confirmed_choice_groups(engine):
        reader = Subscriber(email="", language=language, series=series, want_events=events, want_media=media)
        segment = segment_for(issue, reader, settings.site.language)
        if segment is None:
            nothing += count
            continue
        key = (segment.language, tuple(titles.get(s, s) for s in segment.section_ids))
        counts[key] = counts.get(key, 0) + count
    editions = tuple(Edition(lang, sections, n) for (lang, sections), n in
                     sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return Audience(issue, editions, sum(e.readers for e in editions), nothing)


@dataclass(frozen=True)
class Progress:
    number: int
    status: str  # the issue's status
    sent: int
    failed: int
    retrying: int
    to_go: int  # queued or being sent right now
    total: int
    at: datetime

    @property
    def finished(self) -> bool:
        return self.status == IssueStatus.SENT.value or (self.total > 0 and self.to_go == 0 and self.retrying == 0)

    def as_dict(self) -> dict[str, object]:
        return {"number": self.number, "status": self.status, "sent": self.sent, "failed": self.failed,
                "retrying": self.retrying, "to_go": self.to_go, "total": self.total, "finished": self.finished,
                "at": self.at.isoformat()}


def send_progress(engine: Engine, number: int) -> Progress:
    """How far issue `number`'s send has got, from its ledger; IssueNotFound when there is none."""
    issue = require_issue(engine, number)
    counts = ledger_counts(engine, number)
    sent = counts.get("sent", 0) + counts.get("possibly_delivered", 0)
    failed = counts.get("failed_permanent", 0)
    return Progress(number=number, status=issue.status.value, sent=sent, failed=failed,
                    retrying=counts.get("failed_temporary", 0),
                    to_go=counts.get("queued", 0) + counts.get("sending", 0), total=sum(counts.values()),
                    at=datetime.now(UTC))
