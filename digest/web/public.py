"""Public pages: subscribe (double opt-in), confirm, preferences and unsubscribe (RFC 8058 one-click).

URLs: GET/POST /subscribe · GET/POST /confirm/{token} · GET/POST /preferences/{token} ·
GET/POST /unsubscribe/{token}. GET never changes anything. Every token problem (forged,
tampered, expired, unknown purpose, a sign-up request withdrawn by a later opt-out) answers
the same 400 "this link is not valid" page. Sign-ups answer the same page whatever the
address's state, after the same work (the form is checked, nothing read or stored); storing the
sign-up and sending the email happen after the response, so neither the page nor its timing tells
whether someone is subscribed.

This module is the HTTP side only: forms (size-capped), CSRF, rate limits, templates, status
codes. What a sign-up, a confirmation, a preferences change or an unsubscribe does is decided by
the use cases in digest.pipeline.signup.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine
from starlette.background import BackgroundTask, BackgroundTasks
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..config import LANGUAGES, Settings
from ..pipeline.managed import current_settings
from ..pipeline.sending import TransportFactory, send_to_late_readers
from ..pipeline.signup import (
    ChoicesForm,
    Confirmation,
    Preferences,
    SignupForm,
    adopt_old_erasures,
    check_signup,
    confirm_subscription,
    read_confirmation,
    read_preferences,
    read_unsubscribe,
    register_signup,
    resubscribe,
    save_preferences,
    send_welcome,
    unsubscribe,
)
from ..pipeline.subscribers import series_in_force
from .pages import make_templates, render_page
from .security import CSRF_FIELD, RateLimiter, client_ip, csrf_ok, read_form
from .texts import LANGUAGE_NAMES, negotiate_language, texts

ONE_CLICK = ("List-Unsubscribe", "One-Click")  # RFC 8058's body
# Where each field's problem is worded, in digest.web.texts.
ERROR_TEXTS = {"email": "email_error", "language": "language_error", "series": "series_error"}
MAX_FORM_FIELDS = 50


def routes(settings: Settings, engine: Engine, transport_factory: TransportFactory | None = None) -> list[Route]:
    """The public routes, sharing one set of rate limiters and templates.

    `transport_factory` makes the transport confirmation emails, and a late reader's first issue,
    go through (default: the configured one; tests pass a MemoryTransport's).
    """
    # Adopting pre-0002 erasures here too, so `digest serve` keeps them before a secret changes.
    adopt_old_erasures(settings, engine)
    site = PublicSite(settings, engine, transport_factory)
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
    """The public endpoints and what they share (settings, store, limiters, templates, the transport)."""

    def __init__(self, settings: Settings, engine: Engine, transport_factory: TransportFactory | None) -> None:
        web = settings.web
        self.settings, self.engine, self.transport_factory = settings, engine, transport_factory
        self.templates = make_templates()
        self.subscribe_limit = RateLimiter(web.subscribe_rate_per_minute, web.subscribe_burst)
        self.link_limit = RateLimiter(web.unsubscribe_rate_per_minute, web.unsubscribe_burst)

    # --- shared page helpers ------------------------------------------------------------------

    def page(self, request: Request, name: str, lang: str, title_key: str, status: int = 200,
             headers: dict | None = None, **context: object) -> Response:
        """A page of `name` in `lang`, titled by the text `title_key`."""
        t = texts(lang)
        # The footer's postal address as in force (the admin's Branding page may have changed it).
        return render_page(self.templates, request, current_settings(self.settings, self.engine), name,
                           {"lang": lang, "t": t, "title": t[title_key], "skip_text": t["skip_text"], **context},
                           status, headers)

    def message(self, request: Request, lang: str, title_key: str, paragraphs: list[str], status: int = 200,
                link: tuple[str, str] | None = None, headers: dict | None = None) -> Response:
        """The one-message page: paragraphs and an optional link (url, text)."""
        return self.page(request, "message.html", lang, title_key, status, headers, paragraphs=paragraphs,
                         link_url=link[0] if link else "", link_text=link[1] if link else "")

    def request_language(self, request: Request) -> str:
        """The language a page without a subscriber speaks: ?lang=, else Accept-Language, else the site's."""
        wanted = request.query_params.get("lang", "")
        if wanted in LANGUAGES:
            return wanted
        return negotiate_language(request.headers.get("accept-language", ""), self.settings.site.language)

    def invalid_link(self, request: Request) -> Response:
        """The one answer to every link that is not valid (400): it tells nothing about why."""
        lang = self.request_language(request)
        return self.message(request, lang, "invalid_title", [texts(lang)["invalid_body"]], 400,
                            ("/subscribe", texts(lang)["start_again"]))

    def too_many(self, request: Request, wait: int) -> Response:
        """429 with Retry-After."""
        lang = self.request_language(request)
        return self.message(request, lang, "rate_title", [texts(lang)["rate_body"]], 429,
                            headers={"retry-after": str(wait)})

    def limited(self, request: Request, limiter: RateLimiter) -> Response | None:
        """The 429 page when the client's IP has used up `limiter`, else None."""
        wait = limiter.retry_after(client_ip(request))
        return self.too_many(request, wait) if wait else None

    def forbidden(self, request: Request, lang: str) -> Response:
        """403: the form's CSRF token is missing or not this browser's."""
        return self.message(request, lang, "csrf_title", [texts(lang)["csrf_body"]], 403)

    async def choice_lists(self) -> dict:
        """The languages and series (those in force: digest.toml's or the store's) the choice fields offer."""
        series = await run_in_threadpool(series_in_force, self.settings, self.engine)
        return {"languages": [(code, LANGUAGE_NAMES[code]) for code in LANGUAGES], "series": series}

    # --- subscribe ----------------------------------------------------------------------------

    async def subscribe_form(self, request: Request) -> Response:
        """GET /subscribe: the empty form, in the visitor's language."""
        lang = self.request_language(request)
        values = {"email": "", "name": "", "language": lang, "series": (), "want_events": True, "want_media": True}
        return self.page(request, "subscribe.html", lang, "subscribe_title", values=values, errors={},
                         **await self.choice_lists())

    async def subscribe_submit(self, request: Request) -> Response:
        """POST /subscribe: the form again (400) with its problems, else "Check your inbox" and the email after it."""
        if too_many := self.limited(request, self.subscribe_limit):
            return too_many
        form = await read_form(request, max_fields=MAX_FORM_FIELDS)
        lang = self.request_language(request)
        if not csrf_ok(request, form.get(CSRF_FIELD)):
            return self.forbidden(request, lang)
        raw_language = str(form.get("language", ""))
        values = {"email": str(form.get("email", ""))[:320], "name": str(form.get("name", ""))[:200],
                  "language": raw_language if raw_language in LANGUAGES else lang,
                  "series": _series(form), "want_events": "want_events" in form, "want_media": "want_media" in form}
        asked = SignupForm(email=values["email"], name=values["name"],
                           language=raw_language if raw_language.strip() else lang,  # the page's, when left empty
                           series=tuple(values["series"]), want_events=values["want_events"],
                           want_media=values["want_media"])
        # Only the form is checked before answering (against the settings in force, the same for every
        # address): storing it and the email (whose work depends on the address's state) come after
        # the response, so its timing tells nothing.
        outcome = await run_in_threadpool(check_signup, self.settings, self.engine, asked, client_ip(request))
        if not outcome.accepted:
            t = texts(values["language"])
            errors = {field: t[ERROR_TEXTS[field]] for field in outcome.invalid_fields}
            return self.page(request, "subscribe.html", values["language"], "subscribe_title", 400,
                             values=values, errors=errors, **await self.choice_lists())
        t = texts(outcome.language)
        response = self.message(request, outcome.language, "check_title",
                                [t["check_body"].format(hours=self.settings.web.confirm_hours)])
        response.background = BackgroundTask(register_signup, self.settings, self.engine, outcome.checked,
                                             datetime.now(UTC), self.transport_factory)
        return response

    # --- confirm ------------------------------------------------------------------------------

    async def confirm_page(self, request: Request) -> Response:
        """GET /confirm/TOKEN: a button to confirm; changes nothing."""
        found = await run_in_threadpool(read_confirmation, self.settings, self.engine, request.path_params["token"])
        if not found.valid:
            return self.invalid_link(request)
        if found.request is None:
            return self.confirmed(request, found)
        t = texts(found.language)
        return self.page(request, "confirm.html", found.language, "confirm_title",
                         body=t["confirm_body"].format(email=found.subscriber.email), button=t["confirm_button"],
                         action=request.url.path)

    async def confirm_submit(self, request: Request) -> Response:
        """POST /confirm/TOKEN: confirm the sign-up the link names."""
        if too_many := self.limited(request, self.link_limit):
            return too_many
        token = request.path_params["token"]
        found = await run_in_threadpool(read_confirmation, self.settings, self.engine, token)
        if not found.valid:
            return self.invalid_link(request)
        form = await read_form(request, max_fields=MAX_FORM_FIELDS)
        if not csrf_ok(request, form.get(CSRF_FIELD)):
            return self.forbidden(request, found.language)
        done = await run_in_threadpool(confirm_subscription, self.settings, self.engine, token, datetime.now(UTC))
        if not done.valid:
            return self.invalid_link(request)
        response = self.confirmed(request, done)
        # After the answer: the welcome (web.welcome_email), and the issue sent before this reader came.
        after = BackgroundTasks()
        after.add_task(send_welcome, self.settings, done, self.transport_factory)
        if done.late_issue is not None:
            after.add_task(send_to_late_readers, self.settings, self.engine, datetime.now(UTC), self.transport_factory)
        response.background = after
        return response

    def confirmed(self, request: Request, confirmation: Confirmation) -> Response:
        """"You are subscribed", with the link to the preferences page."""
        subscriber = confirmation.subscriber
        t = texts(subscriber.language)
        body = t["confirmed_late_body" if confirmation.late_issue is not None else "confirmed_body"]
        return self.message(request, subscriber.language, "confirmed_title", [body.format(email=subscriber.email)],
                            link=(confirmation.preferences_url, t["preferences_link"]))

    # --- preferences --------------------------------------------------------------------------

    async def preferences_page(self, request: Request) -> Response:
        """GET /preferences/TOKEN: the subscriber's choices, or "Subscribe again"."""
        if too_many := self.limited(request, self.link_limit):
            return too_many
        found = await run_in_threadpool(read_preferences, self.settings, self.engine, request.path_params["token"])
        if found.test:
            return self.test_link(request)
        return await self.preferences(request, found) if found.valid else self.invalid_link(request)

    async def preferences(self, request: Request, found: Preferences, values: dict | None = None) -> Response:
        """The preferences page for what `found` holds; `values` are the form's own when it is shown again."""
        s = found.subscriber
        t = texts(s.language)
        errors = {field: t[ERROR_TEXTS[field]] for field in found.invalid_fields}
        choices = await self.choice_lists()
        # "All series" (stored as none) shows as every box ticked.
        shown = values or {"language": s.language, "want_events": s.want_events, "want_media": s.want_media,
                           "series": s.series or tuple(x.id for x in choices["series"])}
        return self.page(request, "preferences.html", s.language, "preferences_title", 400 if errors else 200,
                         intro=t["preferences_intro"].format(email=s.email), saved=found.saved, errors=errors,
                         active=found.active, values=shown, action=request.url.path,
                         unsubscribe_action="/unsubscribe/" + found.unsubscribe_token, **choices)

    async def preferences_submit(self, request: Request) -> Response:
        """POST /preferences/TOKEN: save the choices (action=save) or subscribe again (action=resubscribe)."""
        if too_many := self.limited(request, self.link_limit):
            return too_many
        token = request.path_params["token"]
        found = await run_in_threadpool(read_preferences, self.settings, self.engine, token)
        if found.test:
            return self.test_link(request)
        if not found.valid:
            return self.invalid_link(request)
        form = await read_form(request, max_fields=MAX_FORM_FIELDS)
        if not csrf_ok(request, form.get(CSRF_FIELD)):
            return self.forbidden(request, found.subscriber.language)
        now = datetime.now(UTC)
        if form.get("action") == "resubscribe":
            done = await run_in_threadpool(resubscribe, self.settings, self.engine, token, client_ip(request), now)
            return self.confirmed(request, done) if done.valid else self.invalid_link(request)
        values = {"language": str(form.get("language", "")), "series": _series(form),
                  "want_events": "want_events" in form, "want_media": "want_media" in form}
        chosen = ChoicesForm(language=values["language"], series=tuple(values["series"]),
                             want_events=values["want_events"], want_media=values["want_media"])
        saved = await run_in_threadpool(save_preferences, self.settings, self.engine, token, chosen, now)
        if not saved.valid:
            return self.invalid_link(request)
        return await self.preferences(request, saved, values if saved.invalid_fields else None)

    # --- unsubscribe --------------------------------------------------------------------------

    async def unsubscribe_page(self, request: Request) -> Response:
        """GET /unsubscribe/TOKEN: a button to unsubscribe; changes nothing."""
        if too_many := self.limited(request, self.link_limit):
            return too_many
        link = await run_in_threadpool(read_unsubscribe, self.settings, self.engine, request.path_params["token"])
        if not link.genuine:
            return self.invalid_link(request)
        if link.test:
            return self.test_link(request)
        if not link.active:
            return self.unsubscribed(request, link.subscriber.language if link.subscriber else
                                     self.request_language(request))
        s = link.subscriber
        t = texts(s.language)
        return self.page(request, "confirm.html", s.language, "unsubscribe_title",
                         body=t["unsubscribe_body"].format(email=s.email), button=t["unsubscribe_button"],
                         action=request.url.path)

    async def unsubscribe_submit(self, request: Request) -> Response:
        """RFC 8058 one-click (no cookie, no CSRF token) or the confirmation page's own form (CSRF).

        Only posts with a token that does not verify are rate-limited: mailbox providers' link
        scanners may use up an IP's bucket with GETs, and the one-click POST must still work.
        """
        token = request.path_params["token"]
        link = await run_in_threadpool(read_unsubscribe, self.settings, self.engine, token)
        if not link.genuine:
            return self.limited(request, self.link_limit) or self.invalid_link(request)
        if link.test:
            return self.test_link(request)
        form = await read_form(request, max_fields=MAX_FORM_FIELDS)
        one_click = form.get(ONE_CLICK[0]) == ONE_CLICK[1]
        lang = link.subscriber.language if link.subscriber else self.request_language(request)
        if not one_click and not csrf_ok(request, form.get(CSRF_FIELD)):
            return self.forbidden(request, lang)
        if link.active:
            await run_in_threadpool(unsubscribe, self.settings, self.engine, token,
                                    "one-click" if one_click else "web", datetime.now(UTC))
        return self.unsubscribed(request, lang)

    def test_link(self, request: Request) -> Response:
        """A link from a staff test send: it says so, and that nothing happened."""
        lang = self.request_language(request)
        return self.message(request, lang, "test_link_title", [texts(lang)["test_link_body"]])

    def unsubscribed(self, request: Request, lang: str) -> Response:
        """"You are unsubscribed"."""
        return self.message(request, lang, "unsubscribed_title", [texts(lang)["unsubscribed_body"]])


def _series(form: FormData) -> list[str]:
    """The ticked series boxes, at most 50 (the form has a handful)."""
    return [str(s) for s in form.getlist("series")][:50]
