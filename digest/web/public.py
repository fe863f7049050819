"""Public pages: subscribe (double opt-in), confirm, preferences and unsubscribe (RFC 8058 one-click).

URLs: GET/POST /subscribe · GET/POST /confirm/{token} · GET/POST /preferences/{token} ·
GET/POST /unsubscribe/{token}. GET never changes anything. Every token problem (forged,
tampered, expired, unknown purpose, a sign-up request withdrawn by a later opt-out) answers
the same 400 "this link is not valid" page. Sign-ups answer the same page whatever the
address's state, and the email goes out after the response, so neither the page nor its
timing tells whether someone is subscribed; one address gets at most one confirmation email
per `web.confirm_mail_cooldown_hours`, however many sign-ups name it (an email that could not be
sent does not count).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..config import LANGUAGES, Settings
from ..deliver.transport import Transport
from ..models import Subscriber, SubscriberStatus
from ..store import signups
from ..store import subscribers as store
from ..subscribers import (
    InvalidSubscriber,
    SignupRequest,
    clean_name,
    email_hash,
    normalise_email,
    parse_language,
    parse_series,
)
from ..tokens import (
    PREFERENCES,
    UNSUBSCRIBE,
    TokenSigner,
    checked_suppression_keys,
    confirm_url,
    read_confirm_token,
)
from .mail import confirmation_message
from .pages import make_templates, render_page
from .security import CSRF_FIELD, RateLimiter, client_ip, csrf_ok, read_form
from .texts import LANGUAGE_NAMES, negotiate_language, texts

log = logging.getLogger(__name__)

# Bounced mailboxes are dead and complainers marked us as spam: a stranger typing their address
# must not make us mail them. Unsubscribed people may come back through their own confirmation.
NO_CONFIRMATION_MAIL = (SubscriberStatus.CONFIRMED, SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED)
# ... and their old confirmation links stay dead too.
NEVER_CONFIRMED_BY_LINK = (SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED)
ONE_CLICK = ("List-Unsubscribe", "One-Click")

TransportFactory = Callable[[], Transport]


def default_transport_factory(settings: Settings) -> TransportFactory:
    def factory() -> Transport:
        from ..deliver.transports import transport_from_settings

        return transport_from_settings(settings)

    return factory


def routes(settings: Settings, engine: Engine, transport_factory: TransportFactory | None = None) -> list[Route]:
    """The public routes, sharing one set of rate limiters, templates and token signer."""
    site = PublicSite(settings, engine, transport_factory or default_transport_factory(settings))
    return [
        Route("/subscribe", site.subscribe_form, methods=["GET"]),
        Route("/subscribe", site.subscribe_submit, methods=["POST"]),
        Route("/confirm/{token}", site.confirm_page, methods=["GET"]),
        Route("/confirm/{token}", site.confirm_submit, methods=["POST"]),
        Route("/preferences/{token}", site.preferences_page, methods=["GET"]),
        Route("/preferences/{token}", site.preferences_submit, methods=["POST"]),
        Route("/unsubscribe/{token}", site.unsubscribe_page, methods=["GET"]),
        Route("/unsubscribe/{token}", site.unsubscribe_submit, methods=["POST"]),
    ]


class PublicSite:
    """The public endpoints and what they share (settings, store, signer, limiters, templates)."""

    def __init__(self, settings: Settings, engine: Engine, transport_factory: TransportFactory):
        web = settings.web
        self.settings, self.engine, self.transport_factory = settings, engine, transport_factory
        self.signer = TokenSigner(settings)
        # Adopting pre-0002 erasures here too, so `digest serve` keeps them before a secret changes.
        self.keys = checked_suppression_keys(settings, engine, require=False)
        self.templates = make_templates()
        self.subscribe_limit = RateLimiter(web.subscribe_rate_per_minute, web.subscribe_burst)
        self.link_limit = RateLimiter(web.unsubscribe_rate_per_minute, web.unsubscribe_burst)
        # One sign-up at a time in this process, so the per-address cooldown holds on SQLite too
        # (PostgreSQL also locks the subscriber row, for several processes).
        self.signup_lock = threading.Lock()

    # --- shared page helpers ------------------------------------------------------------------

    def page(self, request: Request, name: str, lang: str, title_key: str, status: int = 200,
             headers: dict | None = None, **context: object) -> Response:
        t = texts(lang)
        return render_page(self.templates, request, self.settings, name,
                           {"lang": lang, "t": t, "title": t[title_key], "skip_text": t["skip_text"], **context},
                           status, headers)

    def message(self, request: Request, lang: str, title_key: str, paragraphs: list[str], status: int = 200,
                link: tuple[str, str] | None = None, headers: dict | None = None) -> Response:
        return self.page(request, "message.html", lang, title_key, status, headers, paragraphs=paragraphs,
                         link_url=link[0] if link else "", link_text=link[1] if link else "")

    def request_language(self, request: Request) -> str:
        wanted = request.query_params.get("lang", "")
        if wanted in LANGUAGES:
            return wanted
        return negotiate_language(request.headers.get("accept-language", ""), self.settings.site.language)

    def invalid_link(self, request: Request) -> Response:
        lang = self.request_language(request)
        return self.message(request, lang, "invalid_title", [texts(lang)["invalid_body"]], 400,
                            ("/subscribe", texts(lang)["start_again"]))

    def too_many(self, request: Request, wait: int) -> Response:
        lang = self.request_language(request)
        return self.message(request, lang, "rate_title", [texts(lang)["rate_body"]], 429,
                            headers={"retry-after": str(wait)})

    def forbidden(self, request: Request, lang: str) -> Response:
        return self.message(request, lang, "csrf_title", [texts(lang)["csrf_body"]], 403)

    async def read_form(self, request: Request) -> FormData:
        """The posted form, at most MAX_FORM_BYTES (else 413) and 50 fields (digest.web.security.read_form)."""
        return await read_form(request, max_fields=50)

    def subscriber_for(self, token: str, purpose: str) -> Subscriber | None:
        sid = self.signer.load(purpose, token)
        if not isinstance(sid, int) or isinstance(sid, bool):
            return None
        return store.get_subscriber(self.engine, sid)

    def forget_hashes(self, email: str) -> list[str]:
        return [email_hash(k, email) for k in self.keys]

    # --- subscribe ----------------------------------------------------------------------------

    async def subscribe_form(self, request: Request) -> Response:
        lang = self.request_language(request)
        values = {"email": "", "name": "", "language": lang, "series": (), "want_events": True, "want_media": True}
        return self.page(request, "subscribe.html", lang, "subscribe_title", values=values, errors={},
                         **self.choice_lists())

    def choice_lists(self) -> dict:
        return {"languages": [(code, LANGUAGE_NAMES[code]) for code in LANGUAGES], "series": self.settings.series}

    async def subscribe_submit(self, request: Request) -> Response:
        wait = self.subscribe_limit.retry_after(client_ip(request))
        if wait:
            return self.too_many(request, wait)
        form = await self.read_form(request)
        lang = self.request_language(request)
        if not csrf_ok(request, form.get(CSRF_FIELD)):
            return self.forbidden(request, lang)
        wanted, values, errors = self.validate_signup(form, lang, client_ip(request))
        if errors:
            return self.page(request, "subscribe.html", values["language"], "subscribe_title", 400,
                             values=values, errors=errors, **self.choice_lists())
        to_mail = await run_in_threadpool(self.register_signup, wanted)
        t = texts(wanted.language)
        task = BackgroundTask(self.send_confirmation, *to_mail) if to_mail else None
        response = self.message(request, wanted.language, "check_title",
                                [t["check_body"].format(hours=self.settings.web.confirm_hours)])
        response.background = task
        return response

    def validate_signup(self, form: FormData, lang: str, ip: str) -> tuple[Subscriber | None, dict, dict]:
        """The pending Subscriber the form asks for, the values to show again, and errors per field."""
        raw_language = str(form.get("language", ""))
        values = {"email": str(form.get("email", ""))[:320], "name": str(form.get("name", ""))[:200],
                  "language": raw_language if raw_language in LANGUAGES else lang,
                  "series": [str(s) for s in form.getlist("series")][:50],
                  "want_events": "want_events" in form, "want_media": "want_media" in form}
        t, errors, fields = texts(values["language"]), {}, {}
        for name, check, key in (("email", lambda: normalise_email(values["email"]), "email_error"),
                                 ("language", lambda: parse_language(raw_language, lang), "language_error"),
                                 ("series", lambda: parse_series(values["series"], self.settings), "series_error")):
            try:
                fields[name] = check()
            except InvalidSubscriber:
                errors[name] = t[key]
        if errors:
            return None, values, errors
        wanted = Subscriber(email=fields["email"], name=clean_name(values["name"]), language=fields["language"],
                            series=fields["series"], want_events=values["want_events"],
                            want_media=values["want_media"], status=SubscriberStatus.PENDING,
                            consent_method="web", consent_ip=ip)
        return wanted, values, {}

    def register_signup(self, wanted: Subscriber) -> tuple[Subscriber, str] | None:
        """Store the sign-up; the subscriber to send a confirmation to and their request's nonce, or None.

        A new address is stored as pending; a known one keeps its row as it is until the link is
        used. Either way the choices and IP (`wanted.consent_ip`) wait in a sign-up request. None
        (no email) for confirmed, bounced and complained addresses, and while the address's last
        confirmation email is younger than web.confirm_mail_cooldown_hours. Sign-ups whose link has expired
        are deleted first (data minimisation).
        """
        web, now = self.settings.web, datetime.now(UTC)
        expired = now - timedelta(hours=web.confirm_hours)
        cooldown = timedelta(hours=web.confirm_mail_cooldown_hours)
        store.purge_unconfirmed(self.engine, expired)
        signups.purge_signup_requests(self.engine, min(expired, now - cooldown))
        with self.signup_lock:
            stored = self.stored_signup(wanted)
            if stored is None or stored.status in NO_CONFIRMATION_MAIL:
                return None
            nonce = signups.record_signup_request(self.engine, stored.id, wanted, wanted.consent_ip, cooldown, now)
        return (replace(wanted, id=stored.id), nonce) if nonce else None

    def stored_signup(self, wanted: Subscriber) -> Subscriber | None:
        """The stored row for the address, added as pending if new."""
        existing = store.get_subscriber(self.engine, wanted.email)
        if existing is not None:
            return existing
        try:
            added = store.add_subscriber(self.engine, wanted, source="web", event="signup")
        except IntegrityError:  # the same address signed up at the same moment in another process
            added = None
        return added or store.get_subscriber(self.engine, wanted.email)

    def send_confirmation(self, subscriber: Subscriber, nonce: str) -> None:
        """Mail the link (after the response); if it cannot go out, withdraw its request.

        A link that reached nobody must not use up the address's cooldown: the next sign-up
        (once the mail server is back) sends a new one. The log is the only place left to tell.
        """
        error = self.mail_confirmation(subscriber, nonce)
        if not error:
            return
        log.warning("confirmation email for subscriber %s not sent: %s; the next sign-up with the address "
                    "sends a new one", subscriber.id, error)
        try:
            signups.withdraw_signup_request(self.engine, subscriber.id, nonce)
        except Exception:  # noqa: BLE001 - after the response; the log is the only place left to tell
            log.exception("could not withdraw the unsent sign-up request of subscriber %s: the address gets a new "
                          "link only after web.confirm_mail_cooldown_hours", subscriber.id)

    def mail_confirmation(self, subscriber: Subscriber, nonce: str) -> str:
        """'' once the confirmation email is accepted by the transport, else why it was not."""
        url = confirm_url(self.settings, subscriber.id, nonce, self.signer)
        transport = None
        try:
            transport = self.transport_factory()
            results = transport.send_messages([confirmation_message(self.settings, subscriber, url)])
        except Exception as exc:  # noqa: BLE001 - e.g. unusable SMTP settings: logged, the request withdrawn
            log.exception("could not send the confirmation email for subscriber %s", subscriber.id)
            return f"{type(exc).__name__}: {exc}"
        finally:
            if transport is not None:
                transport.close()
        return "; ".join(r.error or "refused" for r in results if not r.ok)

    # --- confirm ------------------------------------------------------------------------------

    async def confirmation_for(self, request: Request) -> tuple[Subscriber | None, SignupRequest | None]:
        """The subscriber a genuine, unexpired confirm token names, and its sign-up request.

        (None, None) when the link is not valid: bad token, subscriber gone, bounced or complained.
        The request is None when it was used (the subscriber is confirmed: a harmless repeat) or
        withdrawn by a later opt-out (the link is then not valid either).
        """
        token = read_confirm_token(self.settings, request.path_params["token"], signer=self.signer)
        if token is None:
            return None, None
        found = await run_in_threadpool(store.get_subscriber, self.engine, token.subscriber_id)
        if found is None or found.status in NEVER_CONFIRMED_BY_LINK:
            return None, None
        signup = await run_in_threadpool(signups.find_signup_request, self.engine, token.subscriber_id, token.nonce)
        if signup is None and found.status != SubscriberStatus.CONFIRMED:
            return None, None
        return found, signup

    async def confirm_page(self, request: Request) -> Response:
        found, signup = await self.confirmation_for(request)
        if found is None:
            return self.invalid_link(request)
        if signup is None:
            return self.confirmed(request, found)
        lang = signup.choices.language
        t = texts(lang)
        return self.page(request, "confirm.html", lang, "confirm_title",
                         body=t["confirm_body"].format(email=found.email), button=t["confirm_button"],
                         action=request.url.path)

    async def confirm_submit(self, request: Request) -> Response:
        wait = self.link_limit.retry_after(client_ip(request))
        if wait:
            return self.too_many(request, wait)
        found, signup = await self.confirmation_for(request)
        if found is None:
            return self.invalid_link(request)
        form = await self.read_form(request)
        lang = signup.choices.language if signup else found.language
        if not csrf_ok(request, form.get(CSRF_FIELD)):
            return self.forbidden(request, lang)
        if signup is not None:
            chosen = signup.choices
            found = replace(found, name=chosen.name, language=chosen.language, want_events=chosen.want_events,
                            series=tuple(s for s in chosen.series if s in self.settings.series_by_id()),
                            want_media=chosen.want_media)
            await run_in_threadpool(store.confirm_subscriber, self.engine, found, "web", signup.ip,
                                    None, self.forget_hashes(found.email))
        return self.confirmed(request, found)

    def confirmed(self, request: Request, subscriber: Subscriber) -> Response:
        t = texts(subscriber.language)
        link = self.signer.url(PREFERENCES, subscriber.id)
        return self.message(request, subscriber.language, "confirmed_title",
                            [t["confirmed_body"].format(email=subscriber.email)], link=(link, t["preferences_link"]))

    # --- preferences --------------------------------------------------------------------------

    async def preferences_page(self, request: Request) -> Response:
        wait = self.link_limit.retry_after(client_ip(request))
        if wait:
            return self.too_many(request, wait)
        found = await run_in_threadpool(self.subscriber_for, request.path_params["token"], PREFERENCES)
        if found is None:
            return self.invalid_link(request)
        return self.preferences(request, found)

    def preferences(self, request: Request, subscriber: Subscriber, saved: bool = False,
                    values: dict | None = None, errors: dict | None = None) -> Response:
        s, t = subscriber, texts(subscriber.language)
        shown = values or {"language": s.language, "want_events": s.want_events, "want_media": s.want_media,
                           "series": s.series or tuple(x.id for x in self.settings.series)}
        return self.page(request, "preferences.html", s.language, "preferences_title", 400 if errors else 200,
                         intro=t["preferences_intro"].format(email=s.email), saved=saved, errors=errors or {},
                         active=s.status in (SubscriberStatus.CONFIRMED, SubscriberStatus.PENDING),
                         values=shown, action=request.url.path,
                         unsubscribe_action="/unsubscribe/" + self.signer.sign(UNSUBSCRIBE, s.id),
                         **self.choice_lists())

    async def preferences_submit(self, request: Request) -> Response:
        wait = self.link_limit.retry_after(client_ip(request))
        if wait:
            return self.too_many(request, wait)
        found = await run_in_threadpool(self.subscriber_for, request.path_params["token"], PREFERENCES)
        if found is None:
            return self.invalid_link(request)
        form = await self.read_form(request)
        if not csrf_ok(request, form.get(CSRF_FIELD)):
            return self.forbidden(request, found.language)
        if form.get("action") == "resubscribe":
            await run_in_threadpool(store.confirm_subscriber, self.engine, found, "web", client_ip(request),
                                    None, self.forget_hashes(found.email))
            return self.confirmed(request, found)
        if found.status not in (SubscriberStatus.CONFIRMED, SubscriberStatus.PENDING):
            return self.preferences(request, found)
        values = {"language": str(form.get("language", "")), "series": [str(x) for x in form.getlist("series")][:50],
                  "want_events": "want_events" in form, "want_media": "want_media" in form}
        t = texts(found.language)
        try:
            language = parse_language(values["language"], found.language)
        except InvalidSubscriber:
            return self.preferences(request, found, values=values, errors={"language": t["language_error"]})
        try:
            series = parse_series(values["series"], self.settings)
        except InvalidSubscriber:
            return self.preferences(request, found, values=values, errors={"series": t["series_error"]})
        chosen = replace(found, language=language, series=series,
                         want_events=values["want_events"], want_media=values["want_media"])
        await run_in_threadpool(store.update_choices, self.engine, chosen, None, "reader")
        return self.preferences(request, chosen, saved=True)

    # --- unsubscribe --------------------------------------------------------------------------

    async def unsubscribe_page(self, request: Request) -> Response:
        wait = self.link_limit.retry_after(client_ip(request))
        if wait:
            return self.too_many(request, wait)
        sid = self.signer.load(UNSUBSCRIBE, request.path_params["token"])
        if not isinstance(sid, int) or isinstance(sid, bool):
            return self.invalid_link(request)
        found = await run_in_threadpool(store.get_subscriber, self.engine, sid)
        if found is None or found.status not in (SubscriberStatus.CONFIRMED, SubscriberStatus.PENDING):
            return self.unsubscribed(request, found.language if found else self.request_language(request))
        t = texts(found.language)
        return self.page(request, "confirm.html", found.language, "unsubscribe_title",
                         body=t["unsubscribe_body"].format(email=found.email), button=t["unsubscribe_button"],
                         action=request.url.path)

    async def unsubscribe_submit(self, request: Request) -> Response:
        """RFC 8058 one-click (no cookie, no CSRF token) or the confirmation page's own form (CSRF).

        Only posts with a token that does not verify are rate-limited: mailbox providers' link
        scanners may use up an IP's bucket with GETs, and the one-click POST must still work.
        """
        sid = self.signer.load(UNSUBSCRIBE, request.path_params["token"])
        if not isinstance(sid, int) or isinstance(sid, bool):
            wait = self.link_limit.retry_after(client_ip(request))
            return self.too_many(request, wait) if wait else self.invalid_link(request)
        form = await self.read_form(request)
        one_click = form.get(ONE_CLICK[0]) == ONE_CLICK[1]
        found = await run_in_threadpool(store.get_subscriber, self.engine, sid)
        lang = found.language if found else self.request_language(request)
        if not one_click and not csrf_ok(request, form.get(CSRF_FIELD)):
            return self.forbidden(request, lang)
        if found is not None and found.status in (SubscriberStatus.CONFIRMED, SubscriberStatus.PENDING):
            await run_in_threadpool(self.unsubscribe, found, "one-click" if one_click else "web")
        return self.unsubscribed(request, lang)

    def unsubscribe(self, subscriber: Subscriber, how: str) -> None:
        # Attributed to the newest issue they received, so per-issue reports count it.
        issue = store.last_issue_sent(self.engine, subscriber.id)
        store.set_status(self.engine, subscriber.id, SubscriberStatus.UNSUBSCRIBED, None, how, issue)

    def unsubscribed(self, request: Request, lang: str) -> Response:
        return self.message(request, lang, "unsubscribed_title", [texts(lang)["unsubscribed_body"]])

