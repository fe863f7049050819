"""One TOML file → a typed, validated Settings object.

Every setting is a dataclass field with a default and a help line (field metadata "help");
`load_settings` rejects unknown keys and wrong types with a ConfigError naming the key and the fix.
Relative paths are resolved against the config file's folder.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .addresses import (
    address_settings_problem,
    base_url_problem,
    dns_name_problem,
    is_helo_name,
    is_loopback_host,
)
from .models import Feed, ItemKind, Series

CONFIG_ENV = "DIGEST_CONFIG"
DEFAULT_CONFIG_NAME = "digest.toml"
LANGUAGES = ("en", "fr", "de")
MAX_FEED_NAME_CHARS = 200  # the store's feed name columns
FEED_SCHEMES = ("http", "https", "file")
# A URL's scheme (group 1), as feeds are told from local paths here and in fetch.py. It has two
# letters or more, so a Windows drive ("C:\\feeds\\a.xml") reads as a path.
URL_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]+):")
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]+")


class ConfigError(Exception):
    """A configuration problem; the message names the key and how to fix it."""


def _help(text: str, default: Any = MISSING, factory: Any = MISSING) -> Any:
    if factory is not MISSING:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class SiteSettings:
    name: str = _help("Organisation name shown in every edition.", "Europa Progressiva Foundation")
    url: str = _help("Base URL of the organisation's site and the public archive.", "https://www.example.org")
    timezone: str = _help("IANA timezone for windows, schedules and displayed dates.", "Europe/Brussels")
    language: str = _help("Default edition language (en, fr or de).", "en")
    postal_address: str = _help("Postal address printed in every footer (required by law).", "Rue Example 1, 1000 Brussels")
    logo_url: str = _help("Absolute URL of the logo image; empty shows the name only.", "")

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class StoreSettings:
    url: str = _help("SQLAlchemy URL of the store: sqlite:///digest.db or postgresql+psycopg://user@host/db.", "sqlite:///digest.db")


@dataclass(frozen=True)
class FetchSettings:
    connect_timeout: float = _help("Seconds to wait for a feed server to accept the connection.", 10.0)
    read_timeout: float = _help("Seconds to wait between two chunks of a response.", 20.0)
    deadline: float = _help("Total seconds one feed may take, however the server trickles.", 60.0)
    max_bytes: int = _help("Cap on a feed's decoded size in bytes (stops gzip bombs).", 32 * 1024 * 1024)
    max_redirects: int = _help("Redirects followed per feed (http/https only on every hop).", 5)
    concurrency: int = _help("Feeds fetched at once.", 8)
    retries: int = _help("Retries after a connection error or 5xx, with exponential backoff.", 2)
    retry_backoff: float = _help("Seconds before the first retry; each further retry waits twice as long.", 1.0)
    retry_after_max_hours: float = _help("Longest Retry-After a feed server may impose; later runs skip the feed until then.", 24.0)
    parse_cpu_seconds: float = _help("CPU seconds a feed's parse may take before it is abandoned.", 20.0)
    user_agent: str = _help("User-Agent sent to feed servers.", "digest/0.1 (+https://github.com/digest-email/digest)")
    allow_private_addresses: bool = _help("Follow redirects to loopback, private, link-local and multicast addresses too (a feed's own configured url may always be one).", False)


@dataclass(frozen=True)
class DigestSettings:
    window_days: int = _help("Days covered by the first issue (later ones start where the last sent one ended).", 7)
    upcoming_events_days: int = _help("Days ahead of the window end whose events are listed as upcoming.", 60)
    related_links: int = _help("Related links shown per item.", 3)
    max_html_kib: int = _help("Largest decoded HTML edition in KiB before summaries are shortened (Gmail clips near 102 KB).", 90)
    summary_chars: int = _help("Longest summary shown per item, in characters.", 400)


@dataclass(frozen=True)
class ScheduleSettings:
    cron: str = _help("When the draft is built (crontab: minute hour day month weekday), site timezone.", "0 9 * * mon")
    send_cron: str = _help("When an approved issue is sent, site timezone.", "0 11 * * mon")
    fetch_every_hours: int = _help("Hours between scheduled fetches.", 4)
    auto_approve: bool = _help("Send built issues without human approval.", False)
    stale_after_hours: int = _help("A missed send older than this waits for a fresh approval.", 24)
    staff: list[str] = _help("Addresses told when a draft is ready.", factory=list)
    misfire_grace_hours: int = _help("How late a missed scheduled job may still run once on start.", 72)


@dataclass(frozen=True)
class SmtpSettings:
    host: str = _help("SMTP server host.", "127.0.0.1")
    port: int = _help("SMTP server port.", 25)
    security: str = _help("none, starttls or tls (implicit TLS, usually port 465).", "none")
    username: str = _help("SMTP AUTH user; empty disables AUTH.", "")
    password_env: str = _help("Environment variable holding the SMTP password (never the file).", "DIGEST_SMTP_PASSWORD")
    connections: int = _help("SMTP connections used in parallel (1 to 64; each sender thread also holds a database connection).", 4)
    rate_limit: float = _help("Messages per second at most across connections; 0 is unlimited.", 0.0)
    timeout: float = _help("Seconds for one SMTP command.", 30.0)
    final_reply_timeout: float = _help("Seconds to wait for the server's reply once a whole message is sent (RFC 5321 §4.5.3.2 says 10 minutes); a connection lost or a reply not come by then means the message was possibly delivered: resent once at most, after a backoff.", 600.0)
    helo_name: str = _help("Name sent with EHLO (a host name, or an address literal like [192.0.2.1]); empty uses the machine's host name.", "")
    ca_file: str = _help("PEM file of CA certificates trusted for starttls/tls instead of the system ones (certificates are always verified).", "")


@dataclass(frozen=True)
class DkimSettings:
    selector: str = _help("DKIM selector; empty disables signing.", "")
    domain: str = _help("DKIM signing domain (d=); default is the sender's domain.", "")
    key_file: str = _help("Path to the PEM RSA private key (1024 to 4096 bits; 2048 is usual).", "")
    ed25519_selector: str = _help("Selector of the optional second signature, Ed25519 (RFC 8463); not the RSA one.", "")
    ed25519_key_file: str = _help("Path to the PEM Ed25519 private key of that second signature; empty signs with RSA only.", "")


@dataclass(frozen=True)
class DeliverySettings:
    transport: str = _help("outbox (an .eml file per message) or smtp.", "outbox")
    outbox_dir: str = _help("Folder the outbox transport writes to.", "outbox")
    sender: str = _help("From header of every digest.", "Europa Progressiva Digest <digest@example.org>")
    reply_to: str = _help("Reply-To header; empty leaves it out.", "")
    list_id: str = _help("List-Id header value; default derived from the sender domain.", "")
    unsubscribe_mailto: str = _help("mailto: address added to List-Unsubscribe; empty leaves it out.", "")
    batch_size: int = _help("Ledger rows a sender claims at a time.", 200)
    max_attempts: int = _help("Temporary failures before a message is given up.", 5)
    bounce_threshold: int = _help("Refusals of a subscriber's address (5.1.x, 5.2.x, a bare 550) after which they are marked bounced.", 2)
    stop_after_refusals: int = _help("Permanent refusals in a row, none accepted in between, after which sending stops: the server refuses everyone (relay or login settings); those messages stay queued. Refusals naming the address (5.1.x, 5.2.x) never count. 0 never stops.", 20)
    retry_delay: float = _help("Seconds before a temporary failure (4xx, connection) is retried; doubles each attempt.", 60.0)
    retry_max_delay: float = _help("Longest wait between retries, and the longest pause while the server is down.", 3600.0)
    claim_timeout: float = _help("Seconds after which rows claimed by a sender that stopped answering are sent by another.", 300.0)
    utm: bool = _help("Add utm_source/medium/campaign to links to the site.", False)
    smtp: SmtpSettings = _help("SMTP transport settings.", factory=SmtpSettings)
    dkim: DkimSettings = _help("DKIM signing settings.", factory=DkimSettings)


@dataclass(frozen=True)
class WebSettings:
    base_url: str = _help("Public URL where `digest serve` is reached (links in emails); https with the smtp transport, unless its host is loopback.", "http://127.0.0.1:8080")
    secret_env: str = _help("Environment variable holding the signing secret(s), comma-separated, newest first.", "DIGEST_SECRET")
    suppression_key_env: str = _help("Environment variable holding the suppression key(s) of erased addresses (hex, comma-separated, newest first); unset uses digest-suppression.key next to the config file, generated once.", "DIGEST_SUPPRESSION_KEY")
    admin_password_hash: str = _help("scrypt hash of the admin password (`digest admin hash-password`); or set DIGEST_ADMIN_PASSWORD_HASH.", "")
    confirm_hours: int = _help("Hours a subscription confirmation link stays valid.", 72)
    confirm_mail_cooldown_hours: float = _help("Hours before the subscribe form sends another confirmation email to the same address (the page shown is the same either way); 0 sends one for every sign-up.", 1.0)
    confirm_mail_per_domain_hour: int = _help("Confirmation emails the subscribe form sends to one mail domain (the part after @) per hour, whoever signs up; further sign-ups get the same page and no email. 0: no cap.", 30)
    subscribe_rate_per_minute: float = _help("Sign-ups allowed per client IP per minute (token bucket); more get 429.", 6.0)
    subscribe_burst: int = _help("Sign-ups one client IP may make in a quick burst before the rate applies.", 5)
    unsubscribe_rate_per_minute: float = _help("Unsubscribe and preference requests per client IP per minute (mailbox providers post RFC 8058 one-clicks from few IPs, so keep it generous).", 120.0)
    unsubscribe_burst: int = _help("Unsubscribe and preference requests one client IP may make in a quick burst.", 60)
    login_hash_slots: int = _help("Admin password checks (scrypt, about 32 MiB each) that may run at once; further sign-in attempts get 429 at once, so a burst cannot stall the other pages.", 2)
    forwarded_allow_ips: str = _help("Comma-separated proxy IPs whose X-Forwarded-For is trusted by `digest serve` (the client IP rate limits and consent records use); empty trusts none.", "")


@dataclass(frozen=True)
class Settings:
    site: SiteSettings = _help("The organisation.", factory=SiteSettings)
    store: StoreSettings = _help("Where digest keeps its data.", factory=StoreSettings)
    feeds: list[Feed] = _help("Feeds to fetch ([[feeds]] tables: name, url, kind, language).", factory=list)
    series: list[Series] = _help("Series in display order ([[series]] tables: id, name, aliases, url).", factory=list)
    fetch: FetchSettings = _help("Fetching feeds.", factory=FetchSettings)
    digest: DigestSettings = _help("What an issue holds.", factory=DigestSettings)
    schedule: ScheduleSettings = _help("The weekly run.", factory=ScheduleSettings)
    delivery: DeliverySettings = _help("Sending.", factory=DeliverySettings)
    web: WebSettings = _help("The web app.", factory=WebSettings)
    templates_dir: str = _help("Folder whose files override the bundled email templates; empty uses the bundled ones.", "")
    # Where the file was read from; relative paths in it resolve against this folder.
    base_dir: Path = field(default=Path("."), metadata={"internal": True})

    def resolve_path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.base_dir / path)

    def series_by_id(self) -> dict[str, Series]:
        return {s.id: s for s in self.series}


def find_config(explicit: str | os.PathLike | None = None) -> Path:
    """The config path: `--config`, else $DIGEST_CONFIG, else ./digest.toml."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    return Path(DEFAULT_CONFIG_NAME)


def load_settings(path: str | os.PathLike) -> Settings:
    """Read and validate a digest.toml; raises ConfigError naming the key and the fix."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file; create one with `digest init` or pass --config PATH") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason}); save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return settings_from_dict(raw, base_dir=path.resolve().parent)


def settings_from_dict(raw: dict[str, Any], base_dir: Path = Path(".")) -> Settings:
    """Validate an already-parsed mapping (as from TOML) into Settings."""
    settings = _build(Settings, raw, "")
    settings = _replace(settings, base_dir=base_dir, store=_resolve_sqlite(settings.store, base_dir))
    _check_semantics(settings)
    return settings


def _replace(obj: Any, **changes: Any) -> Any:
    from dataclasses import replace

    return replace(obj, **changes)


def _resolve_sqlite(store: StoreSettings, base_dir: Path) -> StoreSettings:
    prefix = "sqlite:///"
    if store.url.startswith(prefix) and not store.url.startswith(prefix + "/") and ":memory:" not in store.url:
        return StoreSettings(url=prefix + str((base_dir / store.url[len(prefix):]).resolve()))
    return store


def _build(cls: type, raw: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(raw, dict):
        raise ConfigError(f"[{where}] must be a table, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if not f.metadata.get("internal")}
    for key in raw:
        if key not in known:
            choices = ", ".join(sorted(known))
            raise ConfigError(f"unknown key '{prefix}{key}': remove it or use one of: {choices}")
    values = {}
    for name, value in raw.items():
        values[name] = _convert(hints[name], value, f"{prefix}{name}")
    return cls(**values)


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin = get_origin(hint)
    if is_dataclass(hint) and hint not in (Feed, Series):
        return _build(hint, value, key + ".")
    if origin is list:
        (inner,) = get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"'{key}' must be a list (e.g. {key} = [...]), got {type(value).__name__}")
        if inner is Feed:
            return [_feed(v, f"{key}[{i}]") for i, v in enumerate(value)]
        if inner is Series:
            return [_series(v, f"{key}[{i}]") for i, v in enumerate(value)]
        return [_convert(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
    return _scalar(hint, value, key)


def _scalar(hint: Any, value: Any, key: str) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{key}' must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{key}' must be a whole number, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"'{key}' must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{key}' must be a string in quotes, got {value!r}")
        return value
    raise ConfigError(f"'{key}': unsupported setting type {hint}")  # pragma: no cover - programming error


def _table(raw: Any, key: str, required: tuple[str, ...], optional: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"'{key}' must be a table ([[...]] with keys {', '.join(required + optional)})")
    for name in raw:
        if name not in required + optional:
            raise ConfigError(f"unknown key '{key}.{name}': remove it or use one of: {', '.join(required + optional)}")
    for name in required:
        if name not in raw:
            raise ConfigError(f"'{key}' is missing '{name}': add {name} = \"...\"")
    return raw


def _feed(raw: Any, key: str) -> Feed:
    raw = _table(raw, key, ("name", "url"), ("kind", "language"))
    kind = raw.get("kind", "brief")
    try:
        kind = ItemKind(kind)
    except ValueError:
        raise ConfigError(f"'{key}.kind' is {kind!r}: use one of {', '.join(k.value for k in ItemKind)}") from None
    name = _scalar(str, raw["name"], f"{key}.name").strip()
    url = _scalar(str, raw["url"], f"{key}.url").strip()
    if not name or not url:
        raise ConfigError(f"'{key}': name and url must not be empty")
    if len(name) > MAX_FEED_NAME_CHARS:
        raise ConfigError(f"'{key}.name' is {len(name)} characters long: use at most {MAX_FEED_NAME_CHARS}")
    _check_feed_url(url, f"{key}.url")
    language = raw.get("language")
    if language is not None:
        language = _scalar(str, language, f"{key}.language")
    return Feed(name=name, url=url, kind=kind, language=language)


def _check_feed_url(url: str, key: str) -> None:
    """An http(s) URL with a host, a file: URL or a local path; anything else names the key."""
    match = URL_SCHEME.match(url)
    if match is None:
        return  # a local path
    scheme = match.group(1).lower()
    if scheme not in FEED_SCHEMES:
        raise ConfigError(f"'{key}' is {url!r}: the {scheme}: scheme is not fetched; use an http:// or https:// URL "
                          "or a local file path")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"'{key}' is {url!r}, not a valid URL ({exc}); fix the URL") from None
    if scheme != "file" and not parts.hostname:
        raise ConfigError(f"'{key}' is {url!r}: the URL has no host name; use e.g. https://www.example.org/feed/")


def _series(raw: Any, key: str) -> Series:
    raw = _table(raw, key, ("id", "name"), ("aliases", "url"))
    aliases = raw.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise ConfigError(f"'{key}.aliases' must be a list of strings, e.g. aliases = [\"Other spelling\"]")
    series_id = _scalar(str, raw["id"], f"{key}.id")
    if not series_id or not all(c.isalnum() or c in "-_" for c in series_id):
        raise ConfigError(f"'{key}.id' is {series_id!r}: use letters, digits, '-' and '_' only")
    return Series(
        id=series_id,
        name=_scalar(str, raw["name"], f"{key}.name"),
        aliases=tuple(aliases),
        url=_scalar(str, raw.get("url", ""), f"{key}.url"),
    )


def _check_semantics(s: Settings) -> None:
    try:
        ZoneInfo(s.site.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"'site.timezone' is {s.site.timezone!r}: use an IANA name such as \"Europe/Brussels\"") from None
    if s.site.language not in LANGUAGES:
        raise ConfigError(f"'site.language' is {s.site.language!r}: use one of {', '.join(LANGUAGES)}")
    if not s.store.url.startswith(("sqlite:", "postgresql")):
        raise ConfigError(f"'store.url' is {s.store.url!r}: use sqlite:///path.db or postgresql+psycopg://user@host/db")
    if s.delivery.transport not in ("outbox", "smtp"):
        raise ConfigError(f"'delivery.transport' is {s.delivery.transport!r}: use \"outbox\" or \"smtp\"")
    if s.delivery.smtp.security not in ("none", "starttls", "tls"):
        raise ConfigError(f"'delivery.smtp.security' is {s.delivery.smtp.security!r}: use none, starttls or tls")
    for name, value in (("digest.window_days", s.digest.window_days), ("fetch.concurrency", s.fetch.concurrency),
                        ("delivery.batch_size", s.delivery.batch_size)):
        if value < 1:
            raise ConfigError(f"'{name}' is {value}: use a number of at least 1")
    _check_delivery(s.delivery)
    if problem := address_settings_problem(s):
        raise ConfigError(problem)
    _check_base_url(s.web.base_url)
    _check_https_over_smtp(s)
    _check_fetch(s.fetch)
    if not 0 <= s.web.confirm_mail_cooldown_hours < float("inf"):  # also refuses nan
        raise ConfigError(f"'web.confirm_mail_cooldown_hours' is {s.web.confirm_mail_cooldown_hours}: use 0 (no cooldown) or more hours")
    if s.web.confirm_mail_per_domain_hour < 0:
        raise ConfigError(f"'web.confirm_mail_per_domain_hour' is {s.web.confirm_mail_per_domain_hour}: use 0 (no cap) or more")
    if s.web.login_hash_slots < 1:
        raise ConfigError(f"'web.login_hash_slots' is {s.web.login_hash_slots}: use a number of at least 1")
    if not s.web.suppression_key_env.strip() or s.web.suppression_key_env == s.web.secret_env:
        raise ConfigError(f"'web.suppression_key_env' is {s.web.suppression_key_env!r}: name an environment variable of its own "
                          "(not web.secret_env), e.g. \"DIGEST_SUPPRESSION_KEY\"")
    _check_unique([f.name for f in s.feeds], "feeds", "name")
    _check_unique([x.id for x in s.series], "series", "id")
    for i, f in enumerate(s.feeds):
        if f.language is not None and f.language not in LANGUAGES and len(f.language) != 2:
            raise ConfigError(f"'feeds[{i}].language' is {f.language!r}: use a two-letter code such as \"de\"")


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
    if not 1 <= d.smtp.connections <= MAX_SMTP_CONNECTIONS:
        raise ConfigError(f"'delivery.smtp.connections' is {d.smtp.connections}: use 1 to {MAX_SMTP_CONNECTIONS} "
                          "(more rarely helps: ask your provider how many it allows)")
    if d.stop_after_refusals < 0:
        raise ConfigError(f"'delivery.stop_after_refusals' is {d.stop_after_refusals}: use 0 (never stop) or more")
    if d.smtp.final_reply_timeout <= 0:
        raise ConfigError(f"'delivery.smtp.final_reply_timeout' is {d.smtp.final_reply_timeout}: use a number of "
                          "seconds above 0 (RFC 5321 says 600)")
    if d.smtp.helo_name and not is_helo_name(d.smtp.helo_name):
        raise ConfigError(f"'delivery.smtp.helo_name' is {d.smtp.helo_name!r}: use a host name (mail.example.org) "
                          "or an address literal ([192.0.2.1])")


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


def describe_settings(cls: type = Settings, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, help) for every documented setting; the docs test checks each is in the README."""
    rows = []
    for f in fields(cls):
        if f.metadata.get("internal"):
            continue
        hint = get_type_hints(cls)[f.name]
        if is_dataclass(hint):
            rows.extend(describe_settings(hint, f"{prefix}{f.name}."))
            continue
        default = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING else "")
        rows.append((f"{prefix}{f.name}", repr(default), f.metadata.get("help", "")))
    return rows


def settings_reference_markdown() -> str:
    """The settings table for docs/configuration.md (regenerated by `make docs`)."""
    lines = ["| key | default | what it does |", "|---|---|---|"]
    for key, default, text in describe_settings():
        lines.append(f"| `{key}` | `{default}` | {text} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover - `make docs`
    print(settings_reference_markdown(), end="")
