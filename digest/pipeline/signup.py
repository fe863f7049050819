"""Use case: what readers do themselves: sign up, confirm, change their preferences, unsubscribe.

The public pages call these (and any later front door may): they take the token from a link as
it came, and hand back plain results for the front door to show.

Rules that live here and nowhere else:
- an accepted sign-up looks the same whatever the address's state, and takes the same time: before
  answering, a front door only checks the form (`check_signup`, no store); storing it and the
  confirmation email (`register_signup`) come after the response, whatever the address;
- confirmed, bounced and complained addresses get no confirmation email (a stranger could type
  them); one mailbox gets at most one per `web.confirm_mail_cooldown_hours`, whatever sub-address
  ("+tag") or case of domain it is typed with, one mail domain at most
  `web.confirm_mail_per_domain_hour` an hour, and an email that could not be sent does not count
  (its sign-up request is withdrawn);
- a confirmation applies the choices of the sign-up request its link names, with that form's IP
  as the consent record, and drops the address's erasure hashes; bounced and complained
  subscribers are never confirmed by a link, and an opt-out withdraws older requests (the store);
- sign-ups whose links have expired are forgotten at the next sign-up (data minimisation);
- preferences are saved and unsubscribing done only for confirmed and pending subscribers; "Subscribe
  again" on a genuine preferences link confirms anyone (their own action, consent `web`);
- an unsubscribe is attributed to the newest issue the subscriber received (per-issue reports);
- with `delivery.late_subscribers = "current"`, a confirmation queues, through the ledger, the issue
  sent within the last `delivery.late_subscriber_days` (once per reader: the ledger's key);
  `sending.send_to_late_readers` sends it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from ..config import Settings
from ..deliver.editions import STAFF_ID
from ..deliver.notes import confirmation_message, welcome_message
from ..models import Subscriber, SubscriberStatus
from ..signing import (
    PREFERENCES,
    UNSUBSCRIBE,
    TokenSigner,
    confirm_url,
    read_confirm_token,
)
from ..store import signups
from ..store import subscribers as store
from ..store.ledger import queue_late_reader
from ..store.signups import SignupRequest
from ..subscriber_fields import InvalidSubscriber, make_subscriber, parse_choices
from ..suppression_keys import email_hash
from .managed import uses_current_settings
from .sending import TransportFactory, deliver_now
from .subscribers import checked_suppression_keys

log = logging.getLogger(__name__)

# Bounced mailboxes are dead and complainers marked us as spam: a stranger typing their address
# must not make us mail them. Unsubscribed people may come back through their own confirmation.
NO_CONFIRMATION_MAIL = (SubscriberStatus.CONFIRMED, SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED)
# ... and their old confirmation links stay dead too.
NEVER_CONFIRMED_BY_LINK = (SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED)
# Who can change preferences and unsubscribe: everyone not opted out.
ACTIVE = (SubscriberStatus.CONFIRMED, SubscriberStatus.PENDING)
# One sign-up at a time in this process, so the per-address cooldown holds on SQLite too
# (PostgreSQL also locks the subscriber row, for several processes).
_SIGNUP_LOCK = threading.Lock()


@dataclass(frozen=True)
class SignupForm:
    """A sign-up as typed (untrusted): the subscribe form's fields. An empty language is the site's."""

    email: str
    name: str = ""
    language: str = ""
    series: tuple[str, ...] = ()
    want_events: bool = True
    want_media: bool = True


@dataclass(frozen=True)
class ChoicesForm:
    """New preferences as typed (untrusted). An empty language keeps the subscriber's."""

    language: str = ""
    series: tuple[str, ...] = ()
    want_events: bool = True
    want_media: bool = True


@dataclass(frozen=True)
class ConfirmationEmail:
    """A confirmation email that is due: to this subscriber (address and chosen language), for this request."""

    subscriber: Subscriber
    nonce: str


@dataclass(frozen=True)
class SignupOutcome:
    """What a sign-up did.

    Accepted sign-ups must all look alike to the visitor: whether `confirmation` is None (the address
    is confirmed, bounced, complained or in its cooldown) is for the front door to act on, never to show.
    """

    invalid_fields: tuple[str, ...] = ()  # "email", "language", "series" to correct; nothing was stored
    language: str = ""  # the language the sign-up asked for
    confirmation: ConfirmationEmail | None = None  # send with send_confirmation, after answering
    # The accepted form as a pending subscriber (check_signup): what register_signup stores.
    checked: Subscriber | None = None

    @property
    def accepted(self) -> bool:
        """Every field was acceptable: show "check your inbox", whatever else happened."""
        return not self.invalid_fields


@dataclass(frozen=True)
class ConfirmationSent:
    """Whether a confirmation email went out; when not, its request was withdrawn (`withdrawn`) if it could be."""

    sent: bool
    error: str = ""
    withdrawn: bool = False


@dataclass(frozen=True)
class Confirmation:
    """Where a confirmation link (or "Subscribe again") leads."""

    # None: the link is not valid (forged, expired, its request withdrawn; the subscriber gone,
    # bounced or complained). All such links get the same answer.
    subscriber: Subscriber | None = None
    # The sign-up waiting for this link; None once confirmed (repeating the link is harmless).
    request: SignupRequest | None = None
    confirmed: bool = False  # this call confirmed the subscriber
    # The sent issue this confirmation queued for the reader (delivery.late_subscribers = "current").
    late_issue: int | None = None
    preferences_url: str = ""

    @property
    def valid(self) -> bool:
        """The link leads somewhere; every other link gets the same "not valid" answer."""
        return self.subscriber is not None

    @property
    def language(self) -> str:
        """The page's language: the one the sign-up asked for while it waits, else the subscriber's."""
        return self.request.choices.language if self.request else self.subscriber.language


@dataclass(frozen=True)
class Preferences:
    """The subscriber a preferences link names, and what saving did."""

    subscriber: Subscriber | None = None  # None: the link is not valid (or its subscriber was erased)
    unsubscribe_token: str = ""  # for the page's own unsubscribe form (/unsubscribe/TOKEN)
    saved: bool = False  # save_preferences stored the new choices
    invalid_fields: tuple[str, ...] = ()  # "language", "series" to correct; nothing was stored
    test: bool = False  # a genuine link from a staff test send: it names nobody, and changes nothing

    @property
    def valid(self) -> bool:
        """The link names a stored subscriber."""
        return self.subscriber is not None

    @property
    def active(self) -> bool:
        """Confirmed or pending: choices can be saved; anyone else is offered "Subscribe again"."""
        return self.subscriber is not None and self.subscriber.status in ACTIVE


@dataclass(frozen=True)
class UnsubscribeLink:
    """The subscriber an unsubscribe link names, and what unsubscribing did."""

    genuine: bool  # False: forged, tampered, or made for another page
    subscriber: Subscriber | None = None  # None: nobody is left to unsubscribe (erased)
    unsubscribed: bool = False  # this call unsubscribed them
    test: bool = False  # a genuine link from a staff test send: it names nobody, and changes nothing

    @property
    def active(self) -> bool:
        """Confirmed or pending: there is something to unsubscribe."""
        return self.subscriber is not None and self.subscriber.status in ACTIVE


# --- sign up --------------------------------------------------------------------------------------

@uses_current_settings
def check_signup(settings: Settings, engine: Engine, form: SignupForm, ip: str) -> SignupOutcome:
    """Check a sign-up's fields against the series in force; reads no subscriber and writes nothing, so it
    costs the same for every address.

    An accepted outcome carries the form as a pending subscriber (`checked`, consent `web` from `ip`)
    for `register_signup`, which the front door runs after answering.
    """
    try:
        wanted = make_subscriber(settings, form.email, form.name, form.language, form.series,
                                 want_events=form.want_events, want_media=form.want_media,
                                 status=SubscriberStatus.PENDING, consent_method="web", consent_ip=ip)
    except InvalidSubscriber as exc:
        return SignupOutcome(invalid_fields=exc.fields)
    return SignupOutcome(language=wanted.language, checked=wanted)


@uses_current_settings
def register_signup(settings: Settings, engine: Engine, checked: Subscriber, now: datetime,
                    make_transport: TransportFactory | None = None) -> ConfirmationSent | None:
    """Store a checked sign-up and send its confirmation email if one is due; None when none is. Never raises.

    Meant to run after the visitor has their answer (the work differs by the address's state), so
    problems go to the log only.
    """
    try:
        due = _record_signup(settings, engine, checked, checked.consent_ip, now)
    except Exception:  # the store is unreachable or broken: the visitor already has their page
        log.exception("could not store a sign-up (subscriber not recorded, no confirmation email sent)")
        return None
    return send_confirmation(settings, engine, due, make_transport) if due is not None else None


@uses_current_settings
def sign_up(settings: Settings, engine: Engine, form: SignupForm, ip: str, now: datetime) -> SignupOutcome:
    """check_signup and store it at once; the outcome says which fields to correct or which email is due.

    A front door answering people uses check_signup and register_signup instead, so its answer
    takes the same time whatever the address's state.
    """
    outcome = check_signup(settings, engine, form, ip)
    if outcome.checked is None:
        return outcome
    return replace(outcome, confirmation=_record_signup(settings, engine, outcome.checked, ip, now))


def canonical_mailbox(email: str) -> str:
    """The mailbox an address reaches: the sub-address ("+tag") dropped, lower case (`a+x@Ex.org` -> `a@ex.org`)."""
    local, _, domain = email.rpartition("@")
    base = local.split("+", 1)[0] or local  # "+tag@…" alone has no sub-address to drop
    return f"{base}@{domain}".lower() if local else email.lower()


def _record_signup(settings: Settings, engine: Engine, wanted: Subscriber, ip: str,
                   now: datetime) -> ConfirmationEmail | None:
    """Store the sign-up: a new address as pending, the choices and `ip` in a sign-up request.

    A known address keeps its row as it is until the link is used. No email is due for confirmed,
    bounced and complained addresses, while the mailbox's last confirmation email is younger than
    web.confirm_mail_cooldown_hours, nor past web.confirm_mail_per_domain_hour emails to its domain
    in the last hour. Sign-ups whose links have expired are deleted first.
    """
    web = settings.web
    expired = now - timedelta(hours=web.confirm_hours)
    cooldown = timedelta(hours=web.confirm_mail_cooldown_hours)
    store.purge_unconfirmed(engine, expired)
    # Requests are kept at least as long as the cooldown and the domain cap look back.
    signups.purge_signup_requests(engine, min(expired, now - cooldown, now - signups.DOMAIN_CAP_WINDOW))
    with _SIGNUP_LOCK:
        stored = _stored_signup(engine, wanted)
        if stored is None or stored.status in NO_CONFIRMATION_MAIL:
            return None
        nonce = signups.record_signup_request(engine, stored.id, wanted, ip, cooldown, now,
                                              mailbox=canonical_mailbox(wanted.email),
                                              per_domain_hour=web.confirm_mail_per_domain_hour)
    return ConfirmationEmail(replace(wanted, id=stored.id), nonce) if nonce else None


def _stored_signup(engine: Engine, wanted: Subscriber) -> Subscriber | None:
    """The stored row for the address, added as pending if new."""
    existing = store.get_subscriber(engine, wanted.email)
    if existing is not None:
        return existing
    try:
        added = store.add_subscriber(engine, wanted, source="web", event="signup")
    except IntegrityError:  # the same address signed up at the same moment in another process
        added = None
    return added or store.get_subscriber(engine, wanted.email)


@uses_current_settings
def send_confirmation(settings: Settings, engine: Engine, due: ConfirmationEmail,
                      make_transport: TransportFactory | None = None) -> ConfirmationSent:
    """Mail the confirmation link; if it cannot go out, log why and withdraw its request. Never raises.

    A link that reached nobody must not use up the address's cooldown: the next sign-up (once the
    mail server is back) sends a new one. Meant to run after the visitor has their answer, so the
    log is the only place left to tell.
    """
    subscriber, nonce = due.subscriber, due.nonce
    try:
        message = confirmation_message(settings, subscriber, confirm_url(settings, subscriber.id, nonce))
        results = deliver_now(settings, [message], make_transport)
        error = "; ".join(r.error or "refused" for r in results if not r.ok)
    except Exception as exc:  # e.g. unusable SMTP or DKIM settings: whatever it is, the request is withdrawn
        log.exception("could not send the confirmation email for subscriber %s", subscriber.id)
        error = f"{type(exc).__name__}: {exc}"
    if not error:
        return ConfirmationSent(sent=True)
    log.warning("confirmation email for subscriber %s not sent: %s; the next sign-up with the address "
                "sends a new one", subscriber.id, error)
    try:
        signups.withdraw_signup_request(engine, subscriber.id, nonce)
    except Exception:  # the store is unreachable too: the log is the only place left to tell
        log.exception("could not withdraw the unsent sign-up request of subscriber %s: the address gets a new "
                      "link only after web.confirm_mail_cooldown_hours", subscriber.id)
        return ConfirmationSent(sent=False, error=error)
    return ConfirmationSent(sent=False, error=error, withdrawn=True)


def send_welcome(settings: Settings, confirmation: Confirmation, make_transport: TransportFactory | None = None) -> bool:
    """Mail the welcome (web.welcome_email) to a reader this confirmation just confirmed; False when none went.

    Meant to run after the reader has their page, so a failure is logged, never raised.
    """
    if not (settings.web.welcome_email and confirmation.confirmed and confirmation.subscriber is not None):
        return False
    subscriber = confirmation.subscriber
    try:
        message = welcome_message(settings, subscriber, confirmation.preferences_url)
        (result,) = deliver_now(settings, [message], make_transport)
    except Exception:  # unusable settings or templates: the reader is subscribed either way
        log.exception("could not send the welcome email to subscriber %s", subscriber.id)
        return False
    if not result.ok:
        log.warning("welcome email to subscriber %s not sent: %s", subscriber.id, result.error or "refused")
    return result.ok


# --- confirm --------------------------------------------------------------------------------------

@uses_current_settings
def read_confirmation(settings: Settings, engine: Engine, token: str) -> Confirmation:
    """Where a confirmation link's token leads; changes nothing (mail systems' link scanners open links)."""
    signer = TokenSigner(settings)
    confirm = read_confirm_token(settings, token, signer=signer)
    if confirm is None:
        return Confirmation()
    found = store.get_subscriber(engine, confirm.subscriber_id)
    if found is None or found.status in NEVER_CONFIRMED_BY_LINK:
        return Confirmation()
    request = signups.find_signup_request(engine, confirm.subscriber_id, confirm.nonce)
    if request is None and found.status != SubscriberStatus.CONFIRMED:
        return Confirmation()  # withdrawn by an opt-out since, or purged
    return Confirmation(found, request, preferences_url=signer.url(PREFERENCES, found.id))


@uses_current_settings
def confirm_subscription(settings: Settings, engine: Engine, token: str, now: datetime) -> Confirmation:
    """Confirm the sign-up a confirmation link names: its choices, consent `web` with the form's IP.

    Series no longer configured are dropped from the choices. A link already used, while the
    subscriber stays confirmed, changes nothing and is still valid.
    """
    found = read_confirmation(settings, engine, token)
    if not found.valid or found.request is None:
        return found
    chosen = found.request.choices
    series_ids = settings.series_by_id()
    subscriber = replace(found.subscriber, name=chosen.name, language=chosen.language,
                         series=tuple(s for s in chosen.series if s in series_ids),
                         want_events=chosen.want_events, want_media=chosen.want_media)
    confirmed = store.confirm_subscriber(engine, subscriber, "web", found.request.ip, now,
                                         _erasure_hashes(settings, engine, subscriber.email))
    late_issue = None
    if confirmed and settings.delivery.late_subscribers == "current":
        late_issue = queue_late_reader(engine, subscriber.id, now - timedelta(days=settings.delivery.late_subscriber_days))
    return replace(found, subscriber=replace(subscriber, status=SubscriberStatus.CONFIRMED), request=None,
                   confirmed=confirmed, late_issue=late_issue)


def _erasure_hashes(settings: Settings, engine: Engine, email: str) -> list[str]:
    """The hashes an erasure of the address would have left, under every suppression key."""
    return [email_hash(key, email) for key in checked_suppression_keys(settings, engine, require=False)]


def adopt_old_erasures(settings: Settings, engine: Engine) -> None:
    """Take over erasures from before migration 0002 (their keys go into the key file) before a secret changes.

    What `digest serve` does at start, as the subscriber commands do on their way.
    """
    checked_suppression_keys(settings, engine, require=False)


# --- preferences ----------------------------------------------------------------------------------

@uses_current_settings
def read_preferences(settings: Settings, engine: Engine, token: str) -> Preferences:
    """The subscriber a preferences link names, with what their page needs; changes nothing."""
    signer = TokenSigner(settings)
    if _subscriber_id(signer, PREFERENCES, token) == STAFF_ID:
        return Preferences(test=True)
    found = _linked(engine, signer, PREFERENCES, token)
    if found is None:
        return Preferences()
    return Preferences(found, unsubscribe_token=signer.sign(UNSUBSCRIBE, found.id))


@uses_current_settings
def save_preferences(settings: Settings, engine: Engine, token: str, form: ChoicesForm,
                     now: datetime) -> Preferences:
    """Save a confirmed or pending subscriber's choices (event `preferences`, source `reader`).

    Imports never overwrite choices saved here. Nothing is saved for anyone else (`active` False),
    nor when a field is not acceptable (`invalid_fields`).
    """
    found = read_preferences(settings, engine, token)
    if not found.active:
        return found
    subscriber = found.subscriber
    try:
        language, series = parse_choices(settings, form.language, form.series, subscriber.language)
    except InvalidSubscriber as exc:
        return replace(found, invalid_fields=exc.fields)
    chosen = replace(subscriber, language=language, series=series, want_events=form.want_events,
                     want_media=form.want_media)
    saved = store.update_choices(engine, chosen, now, "reader")
    return replace(found, subscriber=chosen, saved=saved)


@uses_current_settings
def resubscribe(settings: Settings, engine: Engine, token: str, ip: str, now: datetime) -> Confirmation:
    """"Subscribe again" from a preferences link: confirm with the stored choices, consent `web` from `ip`.

    Their own action through their own link, so it also brings back a bounced or complained address.
    """
    found = read_preferences(settings, engine, token)
    if not found.valid:
        return Confirmation()
    subscriber = found.subscriber
    confirmed = store.confirm_subscriber(engine, subscriber, "web", ip, now,
                                         _erasure_hashes(settings, engine, subscriber.email))
    return Confirmation(replace(subscriber, status=SubscriberStatus.CONFIRMED), confirmed=confirmed,
                        preferences_url=TokenSigner(settings).url(PREFERENCES, subscriber.id))


# --- unsubscribe ----------------------------------------------------------------------------------

@uses_current_settings
def read_unsubscribe(settings: Settings, engine: Engine, token: str) -> UnsubscribeLink:
    """Whom an unsubscribe link names; changes nothing (link scanners open links)."""
    signer = TokenSigner(settings)
    subscriber_id = _subscriber_id(signer, UNSUBSCRIBE, token)
    if subscriber_id is None:
        return UnsubscribeLink(genuine=False)
    if subscriber_id == STAFF_ID:
        return UnsubscribeLink(genuine=True, test=True)
    return UnsubscribeLink(genuine=True, subscriber=store.get_subscriber(engine, subscriber_id))


@uses_current_settings
def unsubscribe(settings: Settings, engine: Engine, token: str, how: str, now: datetime) -> UnsubscribeLink:
    """Unsubscribe the confirmed or pending subscriber an unsubscribe link names; `how` is the event's detail.

    Repeating it changes nothing. The event is attributed to the newest issue they received.
    """
    found = read_unsubscribe(settings, engine, token)
    if not found.active:
        return found
    subscriber = found.subscriber
    issue = store.last_issue_sent(engine, subscriber.id)
    done = store.set_status(engine, subscriber.id, SubscriberStatus.UNSUBSCRIBED, now, how, issue)
    return replace(found, subscriber=replace(subscriber, status=SubscriberStatus.UNSUBSCRIBED), unsubscribed=done)


def _subscriber_id(signer: TokenSigner, purpose: str, token: str) -> int | None:
    """The subscriber id in a genuine token for `purpose`, else None."""
    subscriber_id = signer.load(purpose, token)
    if not isinstance(subscriber_id, int) or isinstance(subscriber_id, bool):
        return None
    return subscriber_id


def _linked(engine: Engine, signer: TokenSigner, purpose: str, token: str) -> Subscriber | None:
    """The stored subscriber a genuine token for `purpose` names, else None."""
    subscriber_id = _subscriber_id(signer, purpose, token)
    return None if subscriber_id is None else store.get_subscriber(engine, subscriber_id)
