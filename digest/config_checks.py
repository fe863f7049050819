"""Settings checked at load beyond their types: values in range, settings that go together, names and
addresses that must be usable. Each ConfigError names the key and the fix (digest.config builds the
typed Settings, then calls check_settings)."""

from __future__ import annotations

import math
import re
from dataclasses import asdict
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .addresses import (
    address_settings_problem,
    base_url_problem,
    dns_name_problem,
    is_helo_name,
    is_loopback_host,
    origin_problem,
)
from .branding import CONTROL_CHARS, check_branding_fields
from .config import (
    _PRINTABLE_ASCII,
    GREETINGS,
    LANGUAGES,
    ConfigError,
    DeliverySettings,
    DkimSettings,
    FetchSettings,
    Settings,
    WebhookSettings,
)


def check_settings(s: Settings) -> None:
    """The rules beyond each setting's type; ConfigError naming the key and the fix."""
    try:
        ZoneInfo(s.site.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"'site.timezone' is {s.site.timezone!r}: use an IANA name such as \"Europe/Brussels\"") from None
    if s.site.language not in LANGUAGES:
        raise ConfigError(f"'site.language' is {s.site.language!r}: use one of {', '.join(LANGUAGES)}")
    if s.render.greeting not in GREETINGS:
        raise ConfigError(f"'render.greeting' is {s.render.greeting!r}: use one of {', '.join(GREETINGS)}")
    if s.digest.related_links < 0:
        raise ConfigError(f"'digest.related_links' is {s.digest.related_links}: use 0 (no related links) or more")
    if not s.store.url.startswith(("sqlite:", "postgresql")):
        raise ConfigError(f"'store.url' is {s.store.url!r}: use sqlite:///path.db or postgresql+psycopg://user@host/db")
    if s.delivery.transport not in ("outbox", "smtp"):
        raise ConfigError(f"'delivery.transport' is {s.delivery.transport!r}: use \"outbox\" or \"smtp\"")
    if s.delivery.late_subscribers not in ("current", "next"):
        raise ConfigError(f"'delivery.late_subscribers' is {s.delivery.late_subscribers!r}: use \"current\" or \"next\"")
    if s.delivery.smtp.security not in ("none", "starttls", "tls"):
        raise ConfigError(f"'delivery.smtp.security' is {s.delivery.smtp.security!r}: use none, starttls or tls")
    for name, value in (("digest.window_days", s.digest.window_days), ("fetch.concurrency", s.fetch.concurrency),
                        ("delivery.batch_size", s.delivery.batch_size),
                        ("delivery.late_subscriber_days", s.delivery.late_subscriber_days)):
        if value < 1:
            raise ConfigError(f"'{name}' is {value}: use a number of at least 1")
    _check_delivery(s.delivery)
    if problem := address_settings_problem(s):
        raise ConfigError(problem)
    _check_base_url(s.web.base_url)
    for origin in s.web.embed_origins:
        if problem := origin_problem(origin):
            raise ConfigError(f"'web.embed_origins' has {origin!r}: {problem}; e.g. \"https://www.example.org\"")
    _check_https_over_smtp(s)
    _check_fetch(s.fetch)
    if not 0 <= s.web.confirm_mail_cooldown_hours < float("inf"):  # also refuses nan
        raise ConfigError(f"'web.confirm_mail_cooldown_hours' is {s.web.confirm_mail_cooldown_hours}: use 0 (no cooldown) or more hours")
    if s.web.confirm_mail_per_domain_hour < 0:
        raise ConfigError(f"'web.confirm_mail_per_domain_hour' is {s.web.confirm_mail_per_domain_hour}: use 0 (no cap) or more")
    for name, value in (("digest.late_item_days", s.digest.late_item_days), ("fetch.stabilise_minutes", s.fetch.stabilise_minutes)):
        if value < 0:
            raise ConfigError(f"'{name}' is {value}: use 0 (off) or more")
    if s.web.login_hash_slots < 1:
        raise ConfigError(f"'web.login_hash_slots' is {s.web.login_hash_slots}: use a number of at least 1")
    if not s.web.suppression_key_env.strip() or s.web.suppression_key_env == s.web.secret_env:
        raise ConfigError(f"'web.suppression_key_env' is {s.web.suppression_key_env!r}: name an environment variable of its own "
                          "(not web.secret_env), e.g. \"DIGEST_SUPPRESSION_KEY\"")
    _check_branding(s)
    _check_unique([f.name for f in s.feeds], "feeds", "name")
    _check_unique([x.id for x in s.series], "series", "id")
    for i, f in enumerate(s.feeds):
        if f.language is not None and f.language not in LANGUAGES and len(f.language) != 2:
            raise ConfigError(f"'feeds[{i}].language' is {f.language!r}: use a two-letter code such as \"de\"")


def _check_branding(s: Settings) -> None:
    """[branding] by the admin's own rules (digest.branding): a provisioned value is held to the same bar."""
    values = asdict(s.branding)
    for name, value in values.items():  # the form folds line breaks into spaces; the file's value is used as it is
        if CONTROL_CHARS.search(value):
            raise ConfigError(f"'branding.{name}': remove the control characters (line breaks, tabs)")
    _, problems = check_branding_fields(values, s.web.base_url)
    for name, problem in problems.items():
        raise ConfigError(f"'branding.{name}': {problem}")


# (setting, smallest, largest, whether the smallest itself is allowed); None: no bound.
_FETCH_BOUNDS = (
    ("connect_timeout", 0, None, False), ("read_timeout", 0, None, False), ("deadline", 0, None, False),
    ("max_bytes", 1, None, True), ("max_redirects", 0, 20, True), ("retries", 0, 10, True),
    ("retry_backoff", 0, None, True), ("retry_after_max_hours", 0, None, True),
    ("parse_cpu_seconds", 0, None, True),
)


def _check_fetch(fetch: FetchSettings) -> None:
    """[fetch] numbers within their sense: timeouts above 0, counts not negative, nothing infinite."""
    for name, low, high, low_allowed in _FETCH_BOUNDS:
        value = getattr(fetch, name)
        above_low = value >= low if low_allowed else value > low
        if not math.isfinite(value) or not above_low or (high is not None and value > high):
            wanted = f"{'at least' if low_allowed else 'more than'} {low}" + (f" and at most {high}" if high is not None else "")
            raise ConfigError(f"'fetch.{name}' is {value!r}: use a number {wanted}")
    if not _PRINTABLE_ASCII.fullmatch(fetch.user_agent):
        raise ConfigError(f"'fetch.user_agent' is {fetch.user_agent!r}: use printable ASCII text (it is sent as a header)")


MAX_SMTP_CONNECTIONS = 64


def _check_delivery(d: DeliverySettings) -> None:
    _check_dkim(d.dkim)
    _check_webhooks(d.webhooks)
    if d.soft_bounce_limit < 1:
        raise ConfigError(f"'delivery.soft_bounce_limit' is {d.soft_bounce_limit}: use a number of issues of at least 1")
    if not 1 <= d.smtp.connections <= MAX_SMTP_CONNECTIONS:
        raise ConfigError(f"'delivery.smtp.connections' is {d.smtp.connections}: use 1 to {MAX_SMTP_CONNECTIONS} "
                          "(more rarely helps: ask your provider how many it allows)")
    if not 0 <= d.nice <= 19:
        raise ConfigError(f"'delivery.nice' is {d.nice}: use 0 (the usual priority) to 19 (the lowest); 10 is the default")
    if d.stop_after_refusals < 0:
        raise ConfigError(f"'delivery.stop_after_refusals' is {d.stop_after_refusals}: use 0 (never stop) or more")
    if d.smtp.final_reply_timeout <= 0:
        raise ConfigError(f"'delivery.smtp.final_reply_timeout' is {d.smtp.final_reply_timeout}: use a number of "
                          "seconds above 0 (RFC 5321 says 600)")
    if d.smtp.helo_name and not is_helo_name(d.smtp.helo_name):
        raise ConfigError(f"'delivery.smtp.helo_name' is {d.smtp.helo_name!r}: use a host name (mail.example.org) "
                          "or an address literal ([192.0.2.1])")


_SNS_TOPIC_ARN = re.compile(r"arn:aws(?:-[a-z]+)*:sns:[a-z]{2}(?:-[a-z]+)+-\d:\d{12}:[A-Za-z0-9_-]{1,256}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_webhooks(w: WebhookSettings) -> None:
    """Topic ARNs, the Postmark user and the names of the secrets' variables (the secrets are read by `digest serve`)."""
    for i, arn in enumerate(w.ses_topic_arns):
        if not _SNS_TOPIC_ARN.fullmatch(arn):
            raise ConfigError(f"'delivery.webhooks.ses_topic_arns[{i}]' is {arn!r}: use the topic's ARN as the SNS "
                              "console shows it, e.g. \"arn:aws:sns:eu-west-1:123456789012:ses-bounces\"")
    if w.postmark_username and not re.fullmatch(r"[A-Za-z0-9._~-]{1,100}", w.postmark_username):
        raise ConfigError(f"'delivery.webhooks.postmark_username' is {w.postmark_username!r}: use 1 to 100 letters, "
                          "digits, '.', '_', '~' or '-' (it goes into the webhook URL)")
    for key in ("postmark_password_env", "mailgun_signing_key_env"):
        value = getattr(w, key)
        if (value or key == "postmark_password_env") and not _ENV_NAME.fullmatch(value):
            raise ConfigError(f"'delivery.webhooks.{key}' is {value!r}: name an environment variable, e.g. "
                              "\"DIGEST_MAILGUN_SIGNING_KEY\"")


def _check_dkim(dkim: DkimSettings) -> None:
    """The DNS names and the keys' presence; the key files are read when digest first signs (deliver/dkim_keys.py)."""
    named = (("selector", dkim.selector, 1), ("domain", dkim.domain, 2), ("ed25519_selector", dkim.ed25519_selector, 1))
    for key, value, min_labels in named:
        problem = dns_name_problem(value, min_labels) if value else ""
        if problem:
            raise ConfigError(f"'delivery.dkim.{key}' is {value!r}: {problem}")
    if dkim.selector and not dkim.key_file:
        raise ConfigError("'delivery.dkim.selector' is set but 'delivery.dkim.key_file' is empty: "
                          "set key_file = \"dkim.pem\" (see docs/delivery-messages.md)")
    if bool(dkim.ed25519_selector) != bool(dkim.ed25519_key_file) or (dkim.ed25519_key_file and not dkim.selector):
        raise ConfigError("'delivery.dkim.ed25519_key_file' and 'ed25519_selector' go together, beside the RSA "
                          "'selector' and 'key_file' (Ed25519 is a second signature): set all four, or neither Ed25519 key")
    if dkim.ed25519_selector and dkim.ed25519_selector.lower() == dkim.selector.lower():
        raise ConfigError(f"'delivery.dkim.ed25519_selector' is {dkim.ed25519_selector!r}, the RSA selector: "
                          "each key needs its own DNS record, e.g. ed25519_selector = \"" + dkim.selector + "-ed\"")


def _check_base_url(url: str) -> None:
    """web.base_url starts every link in emails (unsubscribe, preferences, archive): it must be usable."""
    problem = base_url_problem(url)
    if problem:
        raise ConfigError(f"'web.base_url' is {url!r}: {problem}. Use the public address of `digest serve`, "
                          "e.g. \"https://digest.example.org\" (percent-encode anything unusual, e.g. %20 for a space)")


def _check_https_over_smtp(s: Settings) -> None:
    """Over SMTP the links in emails must be https: RFC 8058 one-click unsubscribe (the button Gmail
    and Yahoo show, and require of bulk senders) is https only. Loopback (local tests) may use http."""
    if s.delivery.transport != "smtp":
        return
    base = urlsplit(s.web.base_url)
    if base.scheme == "https" or is_loopback_host(base.hostname or ""):
        return
    raise ConfigError(f"'web.base_url' is {s.web.base_url!r}, but with delivery.transport = \"smtp\" the links in "
                      "emails must be https: one-click unsubscribe (RFC 8058; Gmail and Yahoo require it) only works "
                      "over https. Serve `digest serve` behind https and set web.base_url = \"https://…\" (http is "
                      "accepted only for a loopback host such as 127.0.0.1, for local tests, or with "
                      "delivery.transport = \"outbox\")")


def _check_unique(values: list[str], table: str, key: str) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            raise ConfigError(f"'{table}[{i}].{key}' repeats {value!r}: each [[{table}]] needs its own {key}")
        seen.add(value)
