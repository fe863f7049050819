"""Email providers' bounce and complaint webhooks → ReportEvents (pure): Amazon SES, Postmark, Mailgun.

Each function takes the already-decoded JSON (untrusted) and returns the events it reports, or
raises MalformedReport naming the field that is missing or wrong; a well-formed notification of
something else (a delivery, an open, an auto-reply) gives no events. How each provider's words
map onto digest's kinds (the rules that then apply are in digest.pipeline.bounces):

| provider | hard | soft | delay warning | complaint |
|---|---|---|---|---|
| SES | bounceType Permanent | Transient, Undetermined | – | Complaint |
| Postmark | HardBounce, BadEmailAddress, ManuallyDeactivated | SoftBounce, Transient, DnsError, Blocked | – | SpamComplaint |
| Mailgun | failed, severity permanent | permanent after retries (reason "old") or not naming the address | failed, severity temporary | complained |

`mailgun_signature_ok` checks Mailgun's HMAC-SHA256 of timestamp + token in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from .bounces import (
    MalformedReport,
    ReportEvent,
    ReportKind,
    address_in,
    classify,
    clean,
    event_key,
    message_id_in,
    status_in_text,
)

POSTMARK_KINDS = {
    "HardBounce": ReportKind.HARD, "BadEmailAddress": ReportKind.HARD, "ManuallyDeactivated": ReportKind.HARD,
    "SoftBounce": ReportKind.SOFT, "Transient": ReportKind.SOFT, "DnsError": ReportKind.SOFT,
    "Blocked": ReportKind.SOFT, "SpamComplaint": ReportKind.COMPLAINT,
}
SES_BOUNCE_KINDS = {"Permanent": ReportKind.HARD, "Transient": ReportKind.SOFT, "Undetermined": ReportKind.SOFT}


def _object(value: Any, name: str) -> dict:
    if not isinstance(value, dict):
        raise MalformedReport(f"{name} must be a JSON object")
    return value


def _text(mapping: dict, name: str, where: str, required: bool = True) -> str:
    value = mapping.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, (str, int)) or isinstance(value, bool) or (required and value == ""):
        raise MalformedReport(f"{where}.{name} is missing or not a string")
    return str(value)


def _recipient(value: str, where: str) -> str:
    address = address_in(value)
    if not address:
        raise MalformedReport(f"{where} is not an email address")
    return address


# --- Amazon SES (the Message of an SNS Notification, itself JSON) ----------------------------------

def ses_events(notification: Any, sns_message_id: str) -> tuple[ReportEvent, ...]:
    """An SES notification (or event-publishing record): Bounce and Complaint give events."""
    notification = _object(notification, "the SNS Message")
    kind = notification.get("notificationType") or notification.get("eventType")
    if kind not in ("Bounce", "Complaint"):
        if not isinstance(kind, str):
            raise MalformedReport("the SES notification has no notificationType")
        return ()  # Delivery, Send, Open…: nothing to act on
    mail = _object(notification.get("mail"), "mail")
    common = mail.get("commonHeaders") if isinstance(mail.get("commonHeaders"), dict) else {}
    original = message_id_in(common.get("messageId", "")) or _header(mail.get("headers"), "message-id")
    if kind == "Bounce":
        bounce = _object(notification.get("bounce"), "bounce")
        bounce_type = _text(bounce, "bounceType", "bounce")
        if bounce_type not in SES_BOUNCE_KINDS:
            raise MalformedReport(f"bounce.bounceType {clean(bounce_type, 40)!r} is not Permanent, Transient or Undetermined")
        recipients = bounce.get("bouncedRecipients")
        feedback_id = _text(bounce, "feedbackId", "bounce", required=False) or sns_message_id
        where = "bounce.bouncedRecipients"
    else:
        complaint = _object(notification.get("complaint"), "complaint")
        recipients = complaint.get("complainedRecipients")
        feedback_id = _text(complaint, "feedbackId", "complaint", required=False) or sns_message_id
        where = "complaint.complainedRecipients"
        if complaint.get("complaintFeedbackType") == "not-spam":
            return ()
    if not isinstance(recipients, list) or not recipients:
        raise MalformedReport(f"{where} must be a non-empty list")
    events = []
    for i, entry in enumerate(recipients):
        entry = _object(entry, f"{where}[{i}]")
        recipient = _recipient(_text(entry, "emailAddress", f"{where}[{i}]"), f"{where}[{i}].emailAddress")
        if kind == "Complaint":
            events.append(ReportEvent(ReportKind.COMPLAINT, event_key("ses", feedback_id, recipient), "ses",
                                      recipient, clean(complaint.get("complaintFeedbackType") or "complaint", 40),
                                      original_message_id=original))
            continue
        status = clean(entry.get("status") or bounce_type, 40)
        events.append(ReportEvent(SES_BOUNCE_KINDS[bounce_type], event_key("ses", feedback_id, recipient), "ses",
                                  recipient, status, clean(entry.get("diagnosticCode") or bounce.get("bounceSubType")),
                                  original_message_id=original))
    return tuple(events)


def _header(headers: Any, name: str) -> str:
    for header in headers if isinstance(headers, list) else ():
        if isinstance(header, dict) and str(header.get("name", "")).lower() == name:
            return message_id_in(header.get("value", ""))
    return ""


# --- Postmark ----------------------------------------------------------------------------------------

def postmark_events(payload: Any) -> tuple[ReportEvent, ...]:
    """A Postmark Bounce or SpamComplaint webhook."""
    payload = _object(payload, "the body")
    record_type = _text(payload, "RecordType", "body")
    if record_type not in ("Bounce", "SpamComplaint"):
        return ()  # Delivery, Open, Click, SubscriptionChange…
    bounce_type = _text(payload, "Type", "body")
    kind = POSTMARK_KINDS.get(bounce_type)
    if kind is None:
        return ()  # AutoResponder, Subscribe, ChallengeVerification…: not about the address
    event_id = _text(payload, "ID", "body")
    recipient = _recipient(_text(payload, "Email", "body"), "Email")
    original = message_id_in(payload.get("MessageID", "")) if "@" in str(payload.get("MessageID", "")) else ""
    return (ReportEvent(kind, event_key("postmark", event_id, recipient), "postmark", recipient, bounce_type,
                        clean(payload.get("Description") or payload.get("Details")), original_message_id=original),)


# --- Mailgun -----------------------------------------------------------------------------------------

def mailgun_signature_ok(signing_key: bytes, timestamp: str, token: str, signature: str) -> bool:
    """Mailgun's signature: hex HMAC-SHA256 of timestamp + token with the webhook signing key."""
    expected = hmac.new(signing_key, (timestamp + token).encode("utf-8"), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", "replace"))


def mailgun_signature(payload: Any) -> tuple[str, str, str]:
    """(timestamp, token, signature) of a Mailgun webhook body; MalformedReport when absent."""
    payload = _object(payload, "the body")
    signed = _object(payload.get("signature"), "signature")
    return (_text(signed, "timestamp", "signature"), _text(signed, "token", "signature"),
            _text(signed, "signature", "signature"))


def mailgun_events(payload: Any) -> tuple[ReportEvent, ...]:
    """A Mailgun `failed` or `complained` event (the event-data of a signed webhook)."""
    data = _object(_object(payload, "the body").get("event-data"), "event-data")
    event = _text(data, "event", "event-data")
    if event not in ("failed", "complained"):
        return ()
    event_id = _text(data, "id", "event-data")
    recipient = _recipient(_text(data, "recipient", "event-data"), "event-data.recipient")
    message = data.get("message") if isinstance(data.get("message"), dict) else {}
    headers = message.get("headers") if isinstance(message.get("headers"), dict) else {}
    raw_id = clean(headers.get("message-id", ""), 250)
    original = message_id_in(raw_id if raw_id.startswith("<") else f"<{raw_id}>") if raw_id else ""
    if event == "complained":
        return (ReportEvent(ReportKind.COMPLAINT, event_key("mailgun", event_id, recipient), "mailgun", recipient,
                            "complained", original_message_id=original),)
    severity = _text(data, "severity", "event-data")
    if severity not in ("permanent", "temporary"):
        raise MalformedReport(f"event-data.severity {clean(severity, 40)!r} is not permanent or temporary")
    status_info = data.get("delivery-status") if isinstance(data.get("delivery-status"), dict) else {}
    description = clean(status_info.get("message") or status_info.get("description") or data.get("reason"))
    found = status_in_text(description)
    code = str(status_info.get("code", ""))
    if severity == "temporary":
        kind = ReportKind.DELAYED
    elif data.get("reason") == "old":  # gave up after retrying temporary failures
        kind = ReportKind.SOFT
    elif data.get("reason") == "suppress-bounce" or (not found and code.startswith("5")):
        kind = ReportKind.HARD
    else:
        kind = classify("failed", found) if found else ReportKind.SOFT
    return (ReportEvent(kind, event_key("mailgun", event_id, recipient), "mailgun", recipient, found or code,
                        description, original_message_id=original),)
