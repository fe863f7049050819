"""The admin preview: an issue's edition as a given reader gets it (full, a segment, or one subscriber).

The switches on the issue page become a `PreviewChoice` (every field checked), the choice an
audience of digest.pipeline.editions.edition_for: the preview of a subscriber is their real
edition (their sections, language and signed links). Compiled editions come from the app's
EditionCache, so flipping between desktop/mobile or HTML/text does not render MJML again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Engine

from ..clicks import uncounted
from ..config import LANGUAGES, Settings
from ..i18n import language_name
from ..manifest import issue_subject
from ..models import EDITORIAL_FIELDS, Issue, IssueStatus, Segment
from ..pipeline.editions import Audience, EditionCache, NoEdition, Reader, Staff, edition_for
from ..pipeline.managed import current_settings
from ..pipeline.reports import IssueReview, IssueTiming
from ..timetable import SendOutlook, SendWhen, send_outlook

FORMATS = ("html", "text")
VIEWS = ("desktop", "mobile")
PREVIEW_CSP = ("default-src 'none'; img-src https: http: data:; style-src 'unsafe-inline'; font-src https: data:; "
               "frame-ancestors 'self'; base-uri 'none'; form-action 'none'; "
               # allow-same-origin lets the issue page read the preview's height (static/preview.js);
               # without allow-scripts nothing in the preview runs, and the CSP allows no script anyway.
               "sandbox allow-same-origin allow-popups allow-popups-to-escape-sandbox")


@dataclass(frozen=True)
class PreviewChoice:
    """What the switches on the issue page ask for; every field validated."""

    view: str = "desktop"
    format: str = "html"
    language: str = ""
    subscriber: str = ""
    segment: str = ""

    @classmethod
    def from_query(cls, query: dict[str, str], settings: Settings) -> PreviewChoice:
        """The choice a query string makes; anything unknown falls back to its default."""
        def pick(name: str, allowed: tuple[str, ...], default: str) -> str:
            value = query.get(name, default)
            return value if value in allowed else default

        language = pick("lang", LANGUAGES, settings.site.language)
        subscriber = query.get("subscriber", "").strip()[:320]
        segment = query.get("segment", "").strip()[:64]
        if not segment.isalnum():
            segment = ""
        return cls(view=pick("view", VIEWS, "desktop"), format=pick("format", FORMATS, "html"),
                   language=language, subscriber=subscriber if "@" in subscriber else "", segment=segment)

    def query(self, **changes: str) -> dict[str, str]:
        """The query string of this choice with some switches changed (empty values left out)."""
        values = {"view": self.view, "format": self.format, "lang": self.language,
                  "subscriber": self.subscriber, "segment": self.segment, **changes}
        return {k: v for k, v in values.items() if v}

    @property
    def audience(self) -> Audience:
        """Who the preview is for: a subscriber, else a segment or the full edition in a language."""
        if self.subscriber:
            return Reader(self.subscriber)
        return Staff(language=self.language, segment_id=self.segment)


def preview_document(settings: Settings, engine: Engine, issue: Issue, choice: PreviewChoice,
                     cache: EditionCache) -> str:
    """The HTML or text document the choice shows; NoEdition when it shows nothing (the reason says why)."""
    reading = edition_for(uncounted(settings), engine, issue, choice.audience, cache)  # staff clicks are no reader's
    return reading.html if choice.format == "html" else reading.text


def segment_label(segment: Segment, issue: Issue) -> str:
    """A readable name for a segment: its language and section titles."""
    titles = {s.id: s.title for s in issue.sections}
    return f"{segment.language}: " + ", ".join(titles.get(i, i) for i in segment.section_ids)


def issue_page_context(settings: Settings, engine: Engine, review: IssueReview, choice: PreviewChoice,
                       cache: EditionCache) -> dict[str, Any]:
    """Everything the issue page template shows besides the session (series names as in force now)."""
    settings = current_settings(settings, engine)
    issue, timing, outlook = review.issue, review.timing, review.outlook
    preview_error = ""
    try:  # rendered now so the page can say what is wrong, and cached for the iframe's request
        preview_document(settings, engine, issue, choice, cache)
    except NoEdition as exc:  # said as a sentence, with what to do
        text = str(exc)
        preview_error = (f"{text[:1].upper()}{text[1:]}: nothing to preview. Check the address, or choose a "
                         "segment or the full edition.")
    # A segment is in one language: the language picker shows that one, so the two never disagree.
    shown_language = next((s.language for s in review.segments if s.id == choice.segment), choice.language)
    return {
        "issue": issue, "summary": review.summary, "choice": choice, "languages": LANGUAGES,
        "shown_language": shown_language,
        "subject": issue_subject(issue, settings),
        "default_subject": issue_subject(replace(issue, editorial=replace(issue.editorial, subject="")), settings),
        "segments": [(s.id, segment_label(s, issue)) for s in review.segments],
        "subscriber_emails": review.subscriber_emails,
        "build_notes": review.build_notes,
        "preview_src": f"/admin/issues/{issue.number}/preview?" + urlencode({**choice.query(), "v": issue.version[:12]}),
        "preview_error": preview_error, "showing": _showing(choice, review.segments, issue),
        "entries": [{"key": e.item.key, "title": e.item.title, "section": s.title,
                     "pinned": e.pinned or e.item.key in issue.editorial.pinned}
                    for s in issue.sections for e in s.entries],
        "editable": issue.status in (IssueStatus.DRAFT, IssueStatus.APPROVED),
        "send_due": outlook.due if outlook else None,
        "send_note": send_note(settings, timing, outlook=outlook) if timing and outlook else "",
        "timezone": settings.site.timezone,
        "send_at_value": timing.send_at.astimezone(settings.site.tz).strftime("%Y-%m-%dT%H:%M")
        if timing and timing.send_at else "",
        **texts_context(settings, issue, review.segments),
    }


# --- texts per language ---------------------------------------------------------------------------

FIELD_WORDS = {"subject": "subject", "intro": "intro", "lead": "lead story text"}


def reader_languages(settings: Settings, segments: list[Segment]) -> list[str]:
    """Languages other than the site's that today's readers read, in LANGUAGES order."""
    read = {s.language for s in segments}
    return [code for code in LANGUAGES if code in read and code != settings.site.language]


def texts_context(settings: Settings, issue: Issue, segments: list[Segment]) -> dict[str, Any]:
    """The editorial form's per-language fields and the warnings shown before approval.

    A language gets fields when readers read it, or staff already wrote in it (so they can clear it).
    """
    site = settings.site.language
    ed = issue.editorial
    readers = reader_languages(settings, segments)
    languages = [code for code in LANGUAGES
                 if code != site and (code in readers or any(t.language == code for t in ed.texts))]
    return {
        "site_language": site, "site_language_name": language_name(site, "en"),
        "text_languages": [(code, language_name(code, "en"), ed.own_texts(code)) for code in languages],
        "text_warnings": text_warnings(settings, issue, segments),
    }


def text_warnings(settings: Settings, issue: Issue, segments: list[Segment]) -> list[str]:
    """What readers of other languages get in the site language, and series without a name in their
    language, as sentences: "French readers will get the English intro." """
    site = settings.site.language
    site_name = language_name(site, "en")
    ed = issue.editorial
    warnings = []
    for code in reader_languages(settings, segments):
        fields = [FIELD_WORDS[f] for f in ed.borrowed(code, site)]
        if fields:
            said = fields[0] if len(fields) == 1 else ", ".join(fields[:-1]) + " and " + fields[-1]
            warnings.append(f"{language_name(code, 'en')} readers will get the {site_name} {said}.")
    if any((ed.lead, *(t.lead for t in ed.texts))) and not ed.pinned:
        warnings.append("The lead story text shows with the lead story, the first pinned item: pin one, "
                        "or readers will not see it.")
    by_id = settings.series_by_id()
    for code in reader_languages(settings, segments):
        read = {sid for s in segments if s.language == code for sid in s.section_ids}
        unnamed = [by_id[sid].name for sid in by_id if sid in read and code not in dict(by_id[sid].names)]
        if unnamed:
            warnings.append(f"{language_name(code, 'en')} readers will see these series under their "
                            f"{site_name} names (no {language_name(code, 'en')} name set): {'; '.join(unnamed)}.")
    return warnings


def editorial_changes(form: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """The editorial form as edit_issue's changes: subject, intro and lead (the site language's) and,
    for fields named like "fr.intro", other languages' texts. Fields the form lacks are left as they are."""
    changes: dict[str, Any] = {f: str(form[f]) for f in EDITORIAL_FIELDS if f in form}
    texts = {}
    for code in LANGUAGES:
        if code == settings.site.language:
            continue
        fields = {f: str(form[f"{code}.{f}"]) for f in EDITORIAL_FIELDS if f"{code}.{f}" in form}
        if fields:
            texts[code] = fields
    if texts:
        changes["texts"] = texts
    return changes


def send_note(settings: Settings, timing: IssueTiming, now: datetime | None = None,
              outlook: SendOutlook | None = None) -> str:
    """What the page says under "Goes out" once the send time has passed ('' while it is ahead).

    Worded from digest.timetable.send_outlook (at `now`, unless the caller has its `outlook`), the
    rule the send job itself follows.
    """
    outlook = outlook or send_outlook(settings, timing, now or datetime.now(UTC))
    if outlook.when in (SendWhen.NOT_SCHEDULED, SendWhen.AT_SEND_TIME):
        return ""
    send_time = f"its send time ({outlook.due.astimezone(settings.site.tz):%d %b %Y, %H:%M})"
    if outlook.when == SendWhen.AFTER_FRESH_APPROVAL:
        return (f"Only after a fresh approval: {send_time} passed more than {settings.schedule.stale_after_hours} h "
                "ago (schedule.stale_after_hours), so the scheduler holds it back.")
    if timing.status == IssueStatus.DRAFT.value:
        return f"At once when approved: {send_time} has passed."
    return f"Now: {send_time} has passed, so the scheduler sends it at its next check (every minute)."


def _showing(choice: PreviewChoice, segments: list[Segment], issue: Issue) -> str:
    if choice.subscriber:
        return f"{choice.subscriber}'s edition"
    if choice.segment:
        return "segment " + next((segment_label(s, issue) for s in segments if s.id == choice.segment), "?")
    return f"the full edition ({choice.language})"
