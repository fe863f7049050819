"""One TOML file → a typed, validated Settings object.

Every setting is a dataclass field with a default and a help line (field metadata "help");
`load_settings` rejects unknown keys and wrong types with a ConfigError naming the key and the fix.
Relative paths are resolved against the config file's folder.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from .models import Feed, ItemKind, Series

CONFIG_ENV = "DIGEST_CONFIG"
DEFAULT_CONFIG_NAME = "digest.toml"
LANGUAGES = ("en", "fr", "de")
# Sections that digest.toml may define (provisioned) or leave to the store (managed in the admin).
MANAGEABLE = ("feeds", "series", "schedule", "branding")
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
class BrandingSettings:
    logo_url: str = _help("https URL of the logo shown in the masthead; empty uses site.logo_url, and with that empty the name alone.", "")
    logo_alt: str = _help("Alternative text of the logo; empty uses the site's name.", "")
    accent_color: str = _help("Accent colour of links and buttons, as #rrggbb; it must keep links readable (WCAG AA, 4.5:1) on the light and the dark background.", "#1a5fb4")
    footer_text: str = _help("A line of text above the footer's address and links; empty leaves it out.", "")
    sender_name: str = _help("Display name of the From header; empty uses the name in delivery.sender.", "")
    postal_address: str = _help("Postal address printed in every footer; empty uses site.postal_address.", "")


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
    stabilise_minutes: int = _help("Minutes an item's content must stay unchanged before a build offers it; an item changed more recently waits for the next build, unless waiting would make it too old for the next issue (digest.late_item_days). 0 offers every item as it stands.", 30)


@dataclass(frozen=True)
class DigestSettings:
    window_days: int = _help("Days covered by the first issue (later ones start where the last sent one ended).", 7)
    upcoming_events_days: int = _help("Days ahead of the window end whose events are listed as upcoming.", 60)
    related_links: int = _help("Most related links shown per item (each must be similar enough; none is better than a wrong one).", 2)
    max_html_kib: int = _help("Largest decoded HTML edition in KiB before summaries are shortened (Gmail clips near 102 KB).", 90)
    summary_chars: int = _help("Longest summary shown per item, in characters.", 400)
    late_item_days: int = _help("An item published before the last sent issue's window ended but first fetched after it was built goes into the next issue, if it was published at most this many days before that issue's window starts; older ones are listed in the build report as too old, not sent. 0 sends no late item.", 14)


GREETINGS = ("first_name", "full_name", "none")


@dataclass(frozen=True)
class RenderSettings:
    images: bool = _help("Show an item's image (from media:content, an enclosure or the first image of its content) in editions; one per item, https only.", True)
    image_hosts: list[str] = _help("Host names images may come from (e.g. \"cdn.example.org\"); empty allows only the host of site.url and its subdomains.", factory=list)
    greeting: str = _help("How editions greet a reader: \"first_name\" (\"Hello Anna,\"), \"full_name\" (\"Hello Anna Schmidt,\") "
                          "or \"none\" (a neutral \"Hello,\"); a reader without a name always gets the neutral greeting.",
                          "first_name")


@dataclass(frozen=True)
class ScheduleSettings:
    cron: str = _help("When the draft is built (crontab: minute hour day month weekday), site timezone.", "0 9 * * mon")
    send_cron: str = _help("When an approved issue is sent, site timezone.", "0 11 * * mon")
    fetch_every_hours: int = _help("Hours between scheduled fetches.", 4)
    auto_approve: bool = _help("Send built issues without human approval.", False)
    stale_after_hours: int = _help("A missed send older than this waits for a fresh approval.", 24)
    staff: list[str] = _help("Addresses told when a draft is ready.", factory=list)
    misfire_grace_hours: int = _help("How late a missed scheduled job may still run once on start.", 72)
    skip_if_empty: bool = _help("A scheduled build that finds nothing new skips the week (no draft); false builds a draft anyway.", True)


@dataclass(frozen=True)
class ReviewSettings:
    require_second_person: bool = _help("Four eyes: the last person who edited an issue (subject, intro, pins, drops, rebuild) cannot approve it; someone else must.", False)


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
class WebhookSettings:
    ses_topic_arns: list[str] = _help("ARNs of the SNS topics (arn:aws:sns:REGION:ACCOUNT:NAME) whose Amazon SES bounce and complaint notifications POST /webhooks/ses accepts; empty: that endpoint answers 404.", factory=list)
    postmark_username: str = _help("User name of the HTTP basic auth in the Postmark webhook URL (https://USER:PASSWORD@host/webhooks/postmark); empty: that endpoint answers 404.", "")
    postmark_password_env: str = _help("Environment variable holding that basic-auth password (never the file); `digest serve` refuses to start when it is empty and postmark_username is set.", "DIGEST_POSTMARK_WEBHOOK_PASSWORD")
    mailgun_signing_key_env: str = _help("Environment variable holding the Mailgun webhook signing key; empty: POST /webhooks/mailgun answers 404.", "")


@dataclass(frozen=True)
class DeliverySettings:
    transport: str = _help("outbox (an .eml file per message) or smtp.", "outbox")
    outbox_dir: str = _help("Folder the outbox transport writes to.", "outbox")
    sender: str = _help("From header of every digest.", "Europa Progressiva Digest <digest@example.org>")
    reply_to: str = _help("Reply-To header; empty leaves it out.", "")
    list_id: str = _help("List-Id header value; default derived from the sender domain.", "")
    unsubscribe_mailto: str = _help("mailto: address added to List-Unsubscribe; empty leaves it out.", "")
    batch_size: int = _help("Ledger rows a sender claims at a time.", 200)
    nice: int = _help("CPU priority of the sending threads, as a Linux nice value from 0 to 19 (higher yields more): other programs on the same machine, such as a mail server, PostgreSQL or `digest serve`, come first, which speeds a send up when it waits on them. A thread already nicer stays so; 0 leaves the priority as it is.", 10)
    max_attempts: int = _help("Temporary failures before a message is given up.", 5)
    bounce_threshold: int = _help("Refusals of a subscriber's address (5.1.x, 5.2.x, a bare 550) after which they are marked bounced.", 2)
    soft_bounce_limit: int = _help("Issues in a row that soft-bounced for a subscriber (reports arriving after the send: `digest bounces import`, webhooks) after which they are marked bounced.", 3)
    stop_after_refusals: int = _help("Permanent refusals in a row, none accepted in between, after which sending stops: the server refuses everyone (relay or login settings); those messages stay queued. Refusals naming the address (5.1.x, 5.2.x) never count. 0 never stops.", 20)
    retry_delay: float = _help("Seconds before a temporary failure (4xx, connection) is retried; doubles each attempt.", 60.0)
    retry_max_delay: float = _help("Longest wait between retries, and the longest pause while the server is down.", 3600.0)
    claim_timeout: float = _help("Seconds after which rows claimed by a sender that stopped answering are sent by another.", 300.0)
    utm: bool = _help("Add utm_source/medium/campaign to links to the site.", False)
    late_subscribers: str = _help("What a reader who confirms gets first: \"next\" waits for the next issue; \"current\" also sends them, once, the issue sent within the last late_subscriber_days.", "next")
    late_subscriber_days: int = _help("With late_subscribers = \"current\": how recent the sent issue must be for a new reader to get it.", 7)
    smtp: SmtpSettings = _help("SMTP transport settings.", factory=SmtpSettings)
    dkim: DkimSettings = _help("DKIM signing settings.", factory=DkimSettings)
    webhooks: WebhookSettings = _help("Bounce and complaint webhooks of email providers (Amazon SES, Postmark, Mailgun).", factory=WebhookSettings)


@dataclass(frozen=True)
class WebSettings:
    base_url: str = _help("Public URL where `digest serve` is reached (links in emails); https with the smtp transport, unless its host is loopback.", "http://127.0.0.1:8080")
    secret_env: str = _help("Environment variable holding the signing secret(s), comma-separated, newest first.", "DIGEST_SECRET")
    suppression_key_env: str = _help("Environment variable holding the suppression key(s) of erased addresses (hex, comma-separated, newest first); unset uses digest-suppression.key next to the config file, generated once.", "DIGEST_SUPPRESSION_KEY")
    admin_password_hash: str = _help("scrypt hash of the admin password (`digest admin hash-password`); or set DIGEST_ADMIN_PASSWORD_HASH.", "")
    confirm_hours: int = _help("Hours a subscription confirmation link stays valid.", 72)
    confirm_mail_cooldown_hours: float = _help("Hours before the subscribe form sends another confirmation email to the same address (the page shown is the same either way); 0 sends one for every sign-up.", 1.0)
    welcome_email: bool = _help("Send a reader who confirms a welcome email (HTML and text, in their language): what the digest brings and a button to choose their series.", False)
    confirm_mail_per_domain_hour: int = _help("Confirmation emails the subscribe form sends to one mail domain (the part after @) per hour, whoever signs up; further sign-ups get the same page and no email. 0: no cap.", 30)
    subscribe_rate_per_minute: float = _help("Sign-ups allowed per client IP per minute (token bucket); more get 429.", 6.0)
    subscribe_burst: int = _help("Sign-ups one client IP may make in a quick burst before the rate applies.", 5)
    unsubscribe_rate_per_minute: float = _help("Unsubscribe and preference requests per client IP per minute (mailbox providers post RFC 8058 one-clicks from few IPs, so keep it generous).", 120.0)
    unsubscribe_burst: int = _help("Unsubscribe and preference requests one client IP may make in a quick burst.", 60)
    login_hash_slots: int = _help("Admin password checks (scrypt, about 32 MiB each) that may run at once; further sign-in attempts get 429 at once, so a burst cannot stall the other pages.", 2)
    embed_origins: list[str] = _help("Origins of the organisation's own pages (e.g. \"https://www.example.org\") whose embedded sign-up form may post to /api/v1/signup (docs/web-public.md, embedding); empty: none may.", factory=list)
    count_clicks: bool = _help("Count clicks on an edition's links through a signed redirect on web.base_url (/c/…): a count per issue, link and language, nothing about the reader; off sends links straight to their target.", True)
    forwarded_allow_ips: str = _help("Comma-separated proxy IPs whose X-Forwarded-For is trusted by `digest serve` (the client IP rate limits and consent records use); empty trusts none.", "")


@dataclass(frozen=True)
class Settings:
    site: SiteSettings = _help("The organisation.", factory=SiteSettings)
    store: StoreSettings = _help("Where digest keeps its data.", factory=StoreSettings)
    feeds: list[Feed] = _help("Feeds to fetch ([[feeds]] tables: name, url, kind, language).", factory=list)
    series: list[Series] = _help("Series in display order ([[series]] tables: id, name, aliases, url, and names = {fr = \"…\", de = \"…\"} in other languages). Without any, series are managed in the store (`digest series …`, the admin).", factory=list)
    fetch: FetchSettings = _help("Fetching feeds.", factory=FetchSettings)
    digest: DigestSettings = _help("What an issue holds.", factory=DigestSettings)
    render: RenderSettings = _help("How editions read.", factory=RenderSettings)
    schedule: ScheduleSettings = _help("The weekly run. Without a [schedule] table it is managed in the store (the admin's Schedule page).", factory=ScheduleSettings)
    branding: BrandingSettings = _help("How editions look. Without a [branding] table it is managed in the store (the admin's Branding page).", factory=BrandingSettings)
    review: ReviewSettings = _help("Who may approve what.", factory=ReviewSettings)
    delivery: DeliverySettings = _help("Sending.", factory=DeliverySettings)
    web: WebSettings = _help("The web app.", factory=WebSettings)
    templates_dir: str = _help("Folder whose files override the bundled email templates; empty uses the bundled ones.", "")
    # Where the file was read from; relative paths in it resolve against this folder.
    base_dir: Path = field(default=Path("."), metadata={"internal": True})
    # The store-manageable sections the file defines (feeds, series, schedule, branding): those are
    # provisioned, read-only in the admin; the others live in the store (digest.pipeline.managed).
    provisioned: frozenset[str] = field(default=frozenset(), metadata={"internal": True})
    # True once digest.pipeline.managed.current_settings put the store's sections in: a use case
    # called by another one does not read them again.
    store_applied: bool = field(default=False, metadata={"internal": True})

    def resolve_path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.base_dir / path)

    def series_by_id(self) -> dict[str, Series]:
        return {s.id: s for s in self.series}

    @property
    def postal_address(self) -> str:
        """The address every footer prints: the branding's, else [site] postal_address."""
        return self.branding.postal_address or self.site.postal_address


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
    settings = _replace(settings, base_dir=base_dir, store=_resolve_sqlite(settings.store, base_dir),
                        provisioned=frozenset(section for section in MANAGEABLE if section in raw))
    from .config_checks import check_settings  # here: that module reads the setting types defined here

    check_settings(settings)
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
    raw = _table(raw, key, ("id", "name"), ("aliases", "url", "names"))
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
        names=_series_names(raw.get("names", {}), f"{key}.names"),
    )


def _series_names(raw: Any, key: str) -> tuple[tuple[str, str], ...]:
    """`names = {fr = "…", de = "…"}`: the series' name in other languages, as (language, name) pairs."""
    if not isinstance(raw, dict):
        raise ConfigError(f"'{key}' must be a table of names by language, e.g. names = {{fr = \"…\", de = \"…\"}}")
    pairs = []
    for language, name in raw.items():
        if language not in LANGUAGES:
            raise ConfigError(f"'{key}.{language}': unknown language; use one of {', '.join(LANGUAGES)}")
        text = _scalar(str, name, f"{key}.{language}").strip()
        if text:
            pairs.append((language, text))
    return tuple(pairs)


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
