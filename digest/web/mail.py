"""The double opt-in email: plain text, localised, built with Python's email package.

Nothing a visitor typed goes into it but the address: the form's name is applied on confirmation
only, so the subscribe form cannot be used to mail a stranger a message of someone else's making.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr

from ..config import Settings
from ..deliver.transport import OutgoingMessage
from ..models import Subscriber
from .texts import texts


def confirmation_message(settings: Settings, subscriber: Subscriber, url: str,
                         now: datetime | None = None) -> OutgoingMessage:
    """The email asking `subscriber` (their address only) to open `url`."""
    t = texts(subscriber.language)
    sender = parseaddr(settings.delivery.sender)[1]
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = settings.delivery.sender
    message["To"] = Address(addr_spec=subscriber.email)
    message["Subject"] = t["mail_subject"].format(site=settings.site.name)
    message["Date"] = format_datetime(now or datetime.now(UTC))
    message_id = make_msgid(domain=sender.rpartition("@")[2] or None)
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(t["mail_body"].format(site=settings.site.name, url=url,
                                              hours=settings.web.confirm_hours,
                                              address=settings.site.postal_address))
    message["Content-Language"] = subscriber.language  # after set_content, which resets Content-* headers
    return OutgoingMessage(envelope_from=sender, recipients=(subscriber.email,), data=message.as_bytes(),
                           message_id=message_id)
