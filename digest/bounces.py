"""Bounce and complaint reports → typed events (pure): RFC 3464 DSNs and RFC 5965 ARF reports.

`parse_report(data)` reads one email with the stdlib email package and returns one `ReportEvent`
per recipient it reports on, or raises `MalformedReport` naming what is wrong. What an event does
to a subscriber is decided in digest.pipeline.bounces; here only what the report says:

- a DSN (multipart/report; report-type=delivery-status): each per-recipient block's Action and
  Status. `failed` with 5.0.x, 5.1.x (the address) or 5.2.x (the mailbox) is HARD, as send-time
  refusals of the address are; `failed` with any other code (4.x.x: the MTA gave up retrying;
  5.7.x: policy; 5.3/5.4/5.5/5.6: system, network, protocol, content) is SOFT; `delayed` is
  DELAYED (the MTA still tries: a warning, counted nowhere); delivered, relayed and expanded
  report nothing;
- an ARF report (report-type=feedback-report): one COMPLAINT, whatever the Feedback-Type (abuse,
  fraud, virus, other: the reader does not want the mail; not-spam reports nothing);
- a plain bounce with X-Failed-Recipients (old Exim, qmail-like servers): one event per address,
  classed by the first enhanced status code in its text (HARD when it has none: the server gave up);
  X-Failed-Recipients also names the recipient of a DSN whose only recipient block lacks one.

The original message's Message-ID is read from the attached message or headers
(message/rfc822, text/rfc822-headers, or the text of a plain bounce); digest's messages carry no
VERP address, so that Message-ID (and failing it the recipient) is what matches a report to the
ledger. Input is untrusted: every value kept is bounded and stripped of control characters.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import mailbox
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.parser import HeaderParser
from enum import StrEnum
from pathlib import Path

MAX_REPORT_BYTES = 10 * 1024 * 1024  # a bounce carrying a whole large digest is still well under this
MAX_TEXT = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_MESSAGE_ID = re.compile(r"<[^<>\s\x00-\x1f]{3,250}>")
_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")
_STATUS_IN_TEXT = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_HEADER_MESSAGE_ID = re.compile(r"^message-id:[ \t]*(<[^<>\s]{3,250}>)", re.IGNORECASE | re.MULTILINE)
_ADDRESS = re.compile(r"^[^@\s<>\"]{1,64}@[^@\s<>\"]{1,255}$")
# A bounce address refusal: 5.0.x (a bare 5xx relayed in a DSN), 5.1.x (the address), 5.2.x (the mailbox).
HARD_SUBJECTS = ("0", "1", "2")


class ReportKind(StrEnum):
    HARD = "hard"
    SOFT = "soft"
    DELAYED = "delayed"
    COMPLAINT = "complaint"


class MalformedReport(ValueError):
    """A message that is no usable bounce or complaint report; the text says what is missing."""


@dataclass(frozen=True)
class ReportEvent:
    """One recipient's outcome as a report or webhook states it.

    `key` identifies the event for deduplication (the same report imported twice has the same
    keys); `recipient` may be "" (an ARF report with the address redacted) when
    `original_message_id` is known.
    """

    kind: ReportKind
    key: str
    source: str  # dsn, arf, bounce (plain), ses, postmark, mailgun
    recipient: str = ""
    status: str = ""  # the enhanced status code, e.g. 5.1.1, or the provider's own type
    diagnostic: str = ""
    original_message_id: str = ""

    @property
    def detail(self) -> str:
        """One line for the subscriber's history."""
        words = [self.source, self.status, self.diagnostic]
        return clean(" ".join(w for w in words if w), MAX_TEXT)


class MailboxError(Exception):
    """PATH is not a readable message file, mbox or Maildir; the text says which and why."""


def clean(text: object, limit: int = MAX_TEXT) -> str:
    """Untrusted text as one bounded line: control characters (CR, LF…) and runs of spaces become one space."""
    return " ".join(_CONTROL.sub(" ", str(text or "")).split())[:limit]


def read_messages(path: Path) -> Iterator[tuple[str, bytes]]:
    """(position, raw bytes) of each message in a Maildir, an mbox or a single message file.

    A folder with cur/ and new/ is a Maildir (position: the file's key), read in delivery order;
    a file starting with "From " is an mbox (position: "message N", counting from 1); any other
    file is one message.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / "cur").is_dir() or not (path / "new").is_dir():
            raise MailboxError(f"{path} is a folder but not a Maildir (no cur/ and new/ in it)")
        box = mailbox.Maildir(path, factory=None, create=False)
        for key in sorted(box.keys(), key=maildir_order):
            yield f"message {key}", box.get_bytes(key)
        return
    try:
        with path.open("rb") as handle:
            start = handle.read(5)
    except OSError as exc:
        raise MailboxError(f"cannot read {path}: {exc.strerror or exc}") from None
    if start != b"From ":
        with path.open("rb") as handle:  # one more byte than a report may have: parse_report refuses it
            yield str(path), handle.read(MAX_REPORT_BYTES + 1)
        return
    box = mailbox.mbox(path, factory=None, create=False)
    try:
        for number, key in enumerate(box.keys(), start=1):
            yield f"message {number}", box.get_bytes(key)
    finally:
        box.close()


# A Maildir file name: delivery time in seconds, then what made it unique; the microseconds (M…,
# Python and Dovecot) and the delivery counter (Q…, Python) are numbers without leading zeros.
_MAILDIR_NAME = re.compile(r"(\d+)\.(?:[^.]*?M(\d+))?(?:[^.]*?Q(\d+))?")


def maildir_order(key: str) -> tuple[int, int, int, str]:
    """A sort key putting Maildir files in delivery order: by the numbers in their names, not as
    text ("M99" was delivered before "M123456" in the same second); names of another form last."""
    match = _MAILDIR_NAME.match(key)
    if match is None:
        return (2**63, 0, 0, key)
    seconds, micro, count = match.groups()
    return (int(seconds), int(micro or 0), int(count or 0), key)


def event_key(*parts: str) -> str:
    """A stable key from the report's identity and the recipient: sha256 hex."""
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "replace")).hexdigest()


def message_id_in(value: object) -> str:
    """The first `<id>` in a header value (Message-ID, In-Reply-To…), or ""."""
    found = _MESSAGE_ID.search(str(value or ""))
    return found.group(0) if found else ""


def address_in(value: object) -> str:
    """The address of a DSN recipient field (`rfc822; a@b`) or ARF field (`<a@b>`), lower-cased; "" if none."""
    text = clean(value, 400)
    if ";" in text:
        address_type, _, text = text.partition(";")
        if address_type.strip().lower() not in ("rfc822", "utf-8", ""):
            return ""
    text = text.strip().strip("<>").strip()
    return text.lower() if _ADDRESS.match(text) else ""


def status_in_text(text: str) -> str:
    """The first enhanced status code (e.g. 5.1.1) in free text, or ""."""
    found = _STATUS_IN_TEXT.search(text)
    return found.group(0) if found else ""


def classify(action: str, status: str) -> ReportKind | None:
    """A DSN recipient block's Action and Status → its kind; None for nothing to act on."""
    action = action.strip().lower()
    if action == "delayed":
        return ReportKind.DELAYED
    if action != "failed":
        return None  # delivered, relayed, expanded
    match = _STATUS.match(status.strip())
    if match and match.group(1) == "5" and match.group(2) in HARD_SUBJECTS:
        return ReportKind.HARD
    return ReportKind.SOFT


def parse_report(data: bytes) -> tuple[ReportEvent, ...]:
    """One email → the events it reports; raises MalformedReport when it is none of the three forms."""
    if len(data) > MAX_REPORT_BYTES:
        raise MalformedReport(f"larger than {MAX_REPORT_BYTES // (1024 * 1024)} MiB: not a bounce report")
    try:
        message = email.message_from_bytes(data, policy=email.policy.default)
        report_id = message_id_in(message.get("Message-ID", "")) or hashlib.sha256(data).hexdigest()
        content_type = message.get_content_type()
        report_type = str(message.get_param("report-type", "") or "").lower()
        if content_type == "multipart/report" and report_type == "delivery-status":
            return _dsn(message, report_id)
        if content_type == "multipart/report" and report_type == "feedback-report":
            return _arf(message, report_id)
        if message.get("X-Failed-Recipients"):
            return _plain_bounce(message, report_id)
    except MalformedReport:
        raise
    except Exception as exc:  # noqa: BLE001 - the email package on hostile input: any error means "unusable"
        raise MalformedReport(f"cannot be read as an email ({exc.__class__.__name__}: {clean(exc, 120)})") from None
    raise MalformedReport("not a delivery status notification (multipart/report; report-type=delivery-status), "
                          "a feedback report (report-type=feedback-report) or a bounce with X-Failed-Recipients")


def _dsn(message: EmailMessage, report_id: str) -> tuple[ReportEvent, ...]:
    parts = list(message.iter_parts())
    status_part = next((p for p in parts if p.get_content_type() in
                        ("message/delivery-status", "message/global-delivery-status")), None)
    if status_part is None:
        raise MalformedReport("a delivery status notification without its message/delivery-status part")
    blocks = _field_blocks(status_part)
    if len(blocks) < 2:
        raise MalformedReport("the message/delivery-status part has no per-recipient fields")
    per_message = blocks[0]
    original = _original_message_id(parts) or message_id_in(per_message.get("X-Original-Message-ID", ""))
    # X-Failed-Recipients (Exim, Gmail) names the address when the only recipient block does not.
    failed = _failed_recipients(message)
    fallback = failed[0] if len(failed) == 1 and len(blocks) == 2 else ""
    events = []
    for number, block in enumerate(blocks[1:], start=1):
        recipient = (address_in(block.get("Final-Recipient", "")) or address_in(block.get("Original-Recipient", ""))
                     or fallback)
        action, status = clean(block.get("Action", ""), 40), clean(block.get("Status", ""), 20)
        if not recipient:
            raise MalformedReport(f"recipient block {number} has no usable Final-Recipient or Original-Recipient")
        if not action or not _STATUS.match(status):
            raise MalformedReport(f"recipient block {number} ({recipient}) lacks a valid Action and Status "
                                  f"(got Action {action!r}, Status {status!r})")
        kind = classify(action, status)
        if kind is None:
            continue
        diagnostic = clean(block.get("Diagnostic-Code", ""), MAX_TEXT)
        events.append(ReportEvent(kind=kind, key=event_key("dsn", report_id, recipient, action, status),
                                  source="dsn", recipient=recipient, status=status, diagnostic=diagnostic,
                                  original_message_id=original))
    return tuple(events)


def _arf(message: EmailMessage, report_id: str) -> tuple[ReportEvent, ...]:
    parts = list(message.iter_parts())
    feedback_part = next((p for p in parts if p.get_content_type() == "message/feedback-report"), None)
    if feedback_part is None:
        raise MalformedReport("a feedback report without its message/feedback-report part")
    blocks = _field_blocks(feedback_part)
    fields = blocks[0] if blocks else None
    feedback_type = clean(fields.get("Feedback-Type", "") if fields else "", 40).lower()
    if not feedback_type:
        raise MalformedReport("the message/feedback-report part has no Feedback-Type")
    if feedback_type == "not-spam":
        return ()
    original = _original_message_id(parts)
    recipients = [address_in(v) for v in fields.get_all("Original-Rcpt-To", [])]
    recipients = [r for r in recipients if r]
    if not original and not recipients:
        raise MalformedReport("a feedback report naming neither the original message (its Message-ID) "
                              "nor its recipient (Original-Rcpt-To)")
    return tuple(ReportEvent(kind=ReportKind.COMPLAINT, key=event_key("arf", report_id, recipient),
                             source="arf", recipient=recipient, status=feedback_type,
                             diagnostic=clean(fields.get("User-Agent", ""), 80), original_message_id=original)
                 for recipient in (recipients or [""]))


def _failed_recipients(message: EmailMessage) -> list[str]:
    found = [address_in(a) for a in str(message.get("X-Failed-Recipients", "")).split(",")]
    return [a for a in found if a]


def _plain_bounce(message: EmailMessage, report_id: str) -> tuple[ReportEvent, ...]:
    recipients = _failed_recipients(message)
    if not recipients:
        raise MalformedReport("X-Failed-Recipients holds no usable address")
    text = _text_of(message)
    status = status_in_text(text)
    kind = classify("failed", status) if status else ReportKind.HARD
    original = _original_message_id(list(message.iter_parts()) if message.is_multipart() else [])
    if not original:
        match = _HEADER_MESSAGE_ID.search(text)
        original = match.group(1) if match else ""
    return tuple(ReportEvent(kind=kind, key=event_key("bounce", report_id, recipient), source="bounce",
                             recipient=recipient, status=status, original_message_id=original)
                 for recipient in recipients)


def _field_blocks(part: Message) -> list[Message]:
    """The header-like blocks of a delivery-status or feedback-report part (the email package's list)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    if isinstance(payload, str):  # e.g. a base64-encoded part: decode and split on blank lines
        raw = part.get_payload(decode=True) or b""
        text = raw.decode("utf-8", "replace").replace("\r\n", "\n")
        return [HeaderParser().parsestr(block) for block in re.split(r"\n\s*\n", text) if block.strip()]
    return []


def _original_message_id(parts: list[Message]) -> str:
    """The Message-ID of the returned message, from a message/rfc822 or text/rfc822-headers part."""
    for part in parts:
        content_type = part.get_content_type()
        if content_type in ("message/rfc822", "message/global"):
            inner = part.get_payload()
            inner = inner[0] if isinstance(inner, list) and inner else inner
            if isinstance(inner, Message) and (found := message_id_in(inner.get("Message-ID", ""))):
                return found
        elif content_type in ("text/rfc822-headers", "message/global-headers"):
            raw = part.get_payload(decode=True) or b""
            headers = HeaderParser().parsestr(raw.decode("utf-8", "replace"), headersonly=True)
            if found := message_id_in(headers.get("Message-ID", "")):
                return found
    return ""


def _text_of(message: EmailMessage) -> str:
    """The readable text of a plain bounce (its first text/plain part), for codes and the copied headers."""
    body = message.get_body(("plain",)) if message.is_multipart() else message
    if body is None:
        return ""
    raw = body.get_payload(decode=True) or b""
    return raw[:MAX_REPORT_BYTES].decode(body.get_content_charset() or "utf-8", "replace")
