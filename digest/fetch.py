"""The only HTTP code: feed bytes from http(s) URLs or local files, defensively.

Every fetch has connect/read timeouts and a total deadline (a server trickling a byte at a time,
even inside the headers, is cut off), a cap on *decoded* bytes (decompression is ours, so a gzip
bomb stops at the cap without ever being inflated in memory), redirects followed by hand with the
scheme re-checked on every hop and never into the private network (digest.fetch_guard),
conditional GET from stored validators, Retry-After, and retries with backoff on connection errors
and 5xx. TLS verification is always on.

Nothing here raises for a bad feed: every outcome is a FetchOutcome, errors typed by FetchErrorKind.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import os
import queue
import re
import ssl
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TypeVar
from urllib.parse import urljoin, urlsplit

import httpx

from .config import URL_SCHEME, FetchSettings
from .decompress import TooLarge, bounded_decoder
from .fetch_guard import (
    PUBLIC_ONLY,
    PrivateAddressRefused,
    RoutingTransport,
    redirect_refusal,
    refusal_message,
)

REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
RATE_LIMIT_CODES = frozenset({429, 503})
ALLOWED_SCHEMES = ("http", "https")
_CHUNK = 64 * 1024
# A validator is echoed back to the server in a header: keep only short, printable ASCII.
_SAFE_VALIDATOR = re.compile(r"[\x20-\x7e]{1,1024}")
_HTTPX_BAD_LOCATION = "Invalid URL in location header"
T = TypeVar("T")


class FetchErrorKind(StrEnum):
    DEADLINE = "deadline"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    TLS = "tls"
    HTTP_STATUS = "http_status"
    RATE_LIMITED = "rate_limited"
    REDIRECT = "redirect"
    SCHEME = "scheme"
    TOO_LARGE = "too_large"
    ENCODING = "encoding"
    FILE = "file"


@dataclass(frozen=True)
class FetchError:
    kind: FetchErrorKind
    message: str
    # Worth another attempt in this run (connection trouble, 5xx without Retry-After).
    retryable: bool = False


@dataclass(frozen=True)
class Validators:
    """What a conditional GET sends back: the ETag and Last-Modified of the last good fetch."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class FetchOutcome:
    """Bytes, or not-modified, or a typed error; plus the validators and Retry-After the server gave."""

    url: str
    body: bytes | None = None
    not_modified: bool = False
    error: FetchError | None = None
    etag: str | None = None
    last_modified: str | None = None
    retry_after: datetime | None = None
    content_location: str | None = None
    status_code: int | None = None
    # The server's Content-Type: its charset decides how the body is decoded (digest.feed_encoding).
    content_type: str | None = None

    @property
    def ok(self) -> bool:
        return self.body is not None


@dataclass(frozen=True)
class FetchJob:
    """One thing to fetch: an http(s) URL or a local file, with the validators stored for it."""

    location: str | Path
    validators: Validators = Validators()


def feed_location(url: str, resolve_path: Callable[[str], Path]) -> str | Path:
    """An http(s) URL as given; a file path (or file: URL) as a Path resolved by `resolve_path`.

    Any other scheme is returned as is, so fetching it fails with a clear SCHEME error.
    """
    match = URL_SCHEME.match(url)
    if match is None:
        return resolve_path(url)
    scheme = match.group(1).lower()
    if scheme == "file":
        try:
            return resolve_path(urlsplit(url).path)
        except ValueError:  # unreadable (e.g. "file://[::1/x"): fetch_feed reports it
            return url
    return url


def new_client(settings: FetchSettings) -> httpx.AsyncClient:
    """One shared client: explicit timeouts, TLS verified, our own redirect handling and decoding.

    Unless `fetch.allow_private_addresses`, requests that follow a redirect go through a pool of
    their own that connects to public addresses only (digest.fetch_guard).
    """
    timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout, pool=settings.deadline)
    limits = httpx.Limits(max_connections=max(settings.concurrency, 1) * 2, max_keepalive_connections=settings.concurrency)
    headers = {"User-Agent": settings.user_agent, "Accept-Encoding": "gzip, deflate",
               "Accept": "application/rss+xml, application/atom+xml, application/rdf+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"}
    transport = None if settings.allow_private_addresses else RoutingTransport(tls_context(), limits)
    return httpx.AsyncClient(timeout=timeout, limits=limits, headers=headers, verify=tls_context(),
                             follow_redirects=False, trust_env=True, transport=transport)


def tls_context() -> ssl.SSLContext:
    """The verifying TLS context every client in this process shares, its CA bundle loaded once.

    Loading the bundle costs about 40 ms, once per run otherwise; `digest run` pays it once in all.
    SSL_CERT_FILE and SSL_CERT_DIR are honoured as httpx honours them (a change takes effect).
    """
    return _tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=4)
def _tls_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    # The arguments are the cache key: httpx reads the same variables itself.
    return httpx.create_ssl_context(verify=True, trust_env=True)


async def fetch_feed(location: str | Path, validators: Validators, settings: FetchSettings,
                     client: httpx.AsyncClient) -> FetchOutcome:
    """Fetch one feed within `settings.deadline` seconds, retrying transient failures."""
    if isinstance(location, Path):
        return await asyncio.to_thread(read_feed_file, location, validators, settings.max_bytes)
    try:
        async with asyncio.timeout(settings.deadline):
            return await _fetch_with_retries(location, validators, settings, client)
    except TimeoutError:
        return _failed(location, FetchErrorKind.DEADLINE,
                       f"gave up after {settings.deadline:g} s (fetch.deadline): the server is too slow")


async def _fetch_with_retries(url: str, validators: Validators, settings: FetchSettings,
                              client: httpx.AsyncClient) -> FetchOutcome:
    outcome = await _fetch_following_redirects(url, validators, settings, client)
    for attempt in range(settings.retries):
        if outcome.error is None or not outcome.error.retryable:
            break
        await asyncio.sleep(settings.retry_backoff * 2**attempt)
        outcome = await _fetch_following_redirects(url, validators, settings, client)
    if outcome.error and outcome.error.retryable and settings.retries:
        tries = settings.retries + 1
        outcome = replace(outcome, error=replace(outcome.error, message=f"{outcome.error.message} (after {tries} tries)"))
    return outcome


async def _fetch_following_redirects(url: str, validators: Validators, settings: FetchSettings,
                                     client: httpx.AsyncClient) -> FetchOutcome:
    seen = [url]
    current = url
    for _hop in range(settings.max_redirects + 1):
        try:
            scheme = urlsplit(current).scheme.lower()
        except ValueError as exc:  # e.g. "http://[::1": urllib refuses to read it (redirects are checked earlier)
            return _failed(current, FetchErrorKind.SCHEME, f"not a valid URL {current!r} ({exc}); fix the feed's url")
        if scheme not in ALLOWED_SCHEMES:
            where = "" if current == url else f" (redirected from {url})"
            return _failed(current, FetchErrorKind.SCHEME,
                           f"refusing {scheme or 'scheme-less'} URL {current!r}{where}: only http and https are fetched")
        # Only the URL staff wrote may lead into the private network; every hop after it is checked.
        public_only = current != url and not settings.allow_private_addresses
        if public_only:
            # Refused early, before any connection (and for a proxy, which resolves the name itself);
            # the guarantee is the connect-time check in fetch_guard, as a name may resolve otherwise later.
            refusal = await redirect_refusal(current)
            if refusal:
                return _failed(url, FetchErrorKind.REDIRECT, refusal)
        result = await _request_once(current, validators, settings, client, public_only)
        if isinstance(result, FetchOutcome):
            return result
        current = result
        if current in seen:
            return _failed(url, FetchErrorKind.REDIRECT, f"redirect loop: {' -> '.join([*seen, current])}")
        seen.append(current)
    return _failed(url, FetchErrorKind.REDIRECT,
                   f"more than {settings.max_redirects} redirects (fetch.max_redirects): {' -> '.join(seen)}")


async def _request_once(url: str, validators: Validators, settings: FetchSettings,
                        client: httpx.AsyncClient, public_only: bool = False) -> FetchOutcome | str:
    """One GET: an outcome, or the next URL when the server redirects; `public_only` after a redirect."""
    try:
        request = client.build_request("GET", url, headers=_conditional_headers(validators),
                                       extensions={PUBLIC_ONLY: True} if public_only else None)
    except httpx.InvalidURL as exc:
        return _failed(url, FetchErrorKind.SCHEME, f"not a valid http(s) URL {url!r}: {exc}")
    try:
        response = await client.send(request, stream=True)
    except PrivateAddressRefused as exc:
        return _failed(url, FetchErrorKind.REDIRECT, refusal_message(url, exc.host, exc.address, exc.problem))
    except httpx.RemoteProtocolError as exc:
        # httpx parses a redirect's Location before handing the response back, and says so this way.
        if str(exc).startswith(_HTTPX_BAD_LOCATION):
            return _invalid_redirect(url, str(exc)[len(_HTTPX_BAD_LOCATION):].strip(" :."))
        return FetchOutcome(url=url, error=_transport_error(exc, settings))
    except httpx.HTTPError as exc:
        return FetchOutcome(url=url, error=_transport_error(exc, settings))
    except httpx.InvalidURL as exc:  # the same, for a Location httpx reads but cannot join
        return _invalid_redirect(url, str(exc))
    try:
        return await _handle_response(url, response, settings)
    except httpx.HTTPError as exc:
        return FetchOutcome(url=url, error=_transport_error(exc, settings))
    finally:
        await response.aclose()


async def _handle_response(url: str, response: httpx.Response, settings: FetchSettings) -> FetchOutcome | str:
    status = response.status_code
    if status in REDIRECT_CODES:
        location = response.headers.get("location", "").strip()
        if not location:
            return _failed(url, FetchErrorKind.REDIRECT, f"HTTP {status} redirect without a Location header", status)
        try:
            target = urljoin(str(response.url), location)
            urlsplit(target)
        except ValueError as exc:
            return _invalid_redirect(url, f"{location[:200]!r}: {exc}", status)
        return target
    etag, last_modified = _validators_from(response.headers)
    if status == 304:
        return FetchOutcome(url=url, not_modified=True, etag=etag, last_modified=last_modified, status_code=status)
    retry_after = parse_retry_after(response.headers.get("retry-after"), datetime.now(UTC),
                                    timedelta(hours=settings.retry_after_max_hours))
    if status in RATE_LIMIT_CODES and retry_after is not None:
        message = (f"HTTP {status} {response.reason_phrase}: the server asked us to wait until "
                   f"{retry_after:%Y-%m-%d %H:%M} UTC (Retry-After); later runs skip this feed until then")
        return FetchOutcome(url=url, error=FetchError(FetchErrorKind.RATE_LIMITED, message),
                            retry_after=retry_after, status_code=status)
    if status >= 400 or status < 200 or status in (204, 205):
        return _failed(url, FetchErrorKind.HTTP_STATUS, _status_message(status, response.reason_phrase),
                       status, retryable=status >= 500)
    body = await read_capped(response, settings.max_bytes)
    if isinstance(body, FetchError):
        return FetchOutcome(url=url, error=body, status_code=status)
    return FetchOutcome(url=url, body=body, etag=etag, last_modified=last_modified,
                        content_location=response.headers.get("content-location"), status_code=status,
                        content_type=response.headers.get("content-type"))


def _invalid_redirect(url: str, detail: str, status: int | None = None) -> FetchOutcome:
    return _failed(url, FetchErrorKind.REDIRECT, f"the server redirected to an invalid URL ({detail})", status)


def _status_message(status: int, reason: str) -> str:
    hints = {401: "the feed needs a login", 403: "the server refuses us", 404: "check the feed URL",
             410: "the feed was removed; delete it from digest.toml", 429: "too many requests"}
    hint = hints.get(status, "the server failed" if status >= 500 else "unexpected response")
    return f"HTTP {status} {reason}: {hint}".replace("  ", " ")


async def read_capped(response: httpx.Response, max_bytes: int) -> bytes | FetchError:
    """The decoded body, or a FetchError once it passes `max_bytes` or cannot be decoded."""
    declared = response.headers.get("content-length", "")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if declared.isdigit() and encoding in ("", "identity") and int(declared) > max_bytes:
        return _too_large(max_bytes, f" (Content-Length says {int(declared):,} bytes)")
    decoder = bounded_decoder(encoding)
    if decoder is None:
        return FetchError(FetchErrorKind.ENCODING, f"unsupported Content-Encoding {encoding[:40]!r}")
    body = bytearray()
    try:
        async for raw in response.aiter_raw(_CHUNK):
            body += decoder.decode(raw, max_bytes - len(body))
        body += decoder.flush(max_bytes - len(body))
    except TooLarge:
        return _too_large(max_bytes, " once decompressed" if encoding not in ("", "identity") else "")
    except zlib.error as exc:
        return FetchError(FetchErrorKind.ENCODING, f"corrupt {encoding} body: {exc}")
    return bytes(body)


def _too_large(max_bytes: int, detail: str = "") -> FetchError:
    return FetchError(FetchErrorKind.TOO_LARGE,
                      f"feed is larger than {max_bytes:,} bytes{detail}; stopped reading (raise fetch.max_bytes if it is genuine)")


def read_feed_file(path: Path, validators: Validators, max_bytes: int) -> FetchOutcome:
    """A local feed file, capped like a download; unchanged since last time (mtime and size) is not_modified."""
    where = str(path)
    try:
        stat = path.stat()
        if not path.is_file():
            return _failed(where, FetchErrorKind.FILE, f"{path} is not a file; point the feed's url at a feed file")
        version = f"{stat.st_mtime_ns}-{stat.st_size}"
        if validators.last_modified == version:
            return FetchOutcome(url=where, not_modified=True, last_modified=version)
        if stat.st_size > max_bytes:
            return FetchOutcome(url=where, error=_too_large(max_bytes, f" ({stat.st_size:,} bytes on disk)"))
        with path.open("rb") as handle:
            body = handle.read(max_bytes + 1)
    except FileNotFoundError:
        return _failed(where, FetchErrorKind.FILE,
                       f"no such file: {path} (relative paths are relative to the config file's folder)")
    except OSError as exc:
        return _failed(where, FetchErrorKind.FILE, f"cannot read {path}: {exc.strerror or exc}")
    if len(body) > max_bytes:
        return FetchOutcome(url=where, error=_too_large(max_bytes))
    return FetchOutcome(url=where, body=body, last_modified=version)


def _conditional_headers(validators: Validators) -> dict[str, str]:
    headers = {}
    if validators.etag and _SAFE_VALIDATOR.fullmatch(validators.etag):
        headers["If-None-Match"] = validators.etag
    if validators.last_modified and _SAFE_VALIDATOR.fullmatch(validators.last_modified):
        headers["If-Modified-Since"] = validators.last_modified
    return headers


def _validators_from(headers: httpx.Headers) -> tuple[str | None, str | None]:
    def safe(value: str | None) -> str | None:
        value = (value or "").strip()
        return value if _SAFE_VALIDATOR.fullmatch(value) else None

    return safe(headers.get("etag")), safe(headers.get("last-modified"))


def parse_retry_after(value: str | None, now: datetime, longest: timedelta) -> datetime | None:
    """Retry-After as an instant (seconds or an HTTP date), clamped to [now, now + longest]; None if absent or junk."""
    value = (value or "").strip()
    if not value:
        return None
    if value.isdigit():
        moment = now + timedelta(seconds=min(int(value[:12]), longest.total_seconds()))
    else:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    return min(max(moment, now), now + longest)


def _transport_error(exc: httpx.HTTPError, settings: FetchSettings) -> FetchError:
    """What went wrong below HTTP, in words; connection trouble and timeouts are worth a retry."""
    if isinstance(exc, httpx.ConnectTimeout):
        return FetchError(FetchErrorKind.TIMEOUT, f"no connection within {settings.connect_timeout:g} s (fetch.connect_timeout)", True)
    if isinstance(exc, httpx.TimeoutException):
        return FetchError(FetchErrorKind.TIMEOUT, f"the server sent nothing for {settings.read_timeout:g} s (fetch.read_timeout)", True)
    if _is_tls_error(exc):
        return FetchError(FetchErrorKind.TLS, f"TLS certificate check failed: {_root_cause(exc)}; "
                          "digest only fetches feeds with a valid certificate")
    if isinstance(exc, httpx.UnsupportedProtocol):
        return FetchError(FetchErrorKind.SCHEME, f"not a valid http(s) URL: {exc}")
    if isinstance(exc, httpx.DecodingError):
        return FetchError(FetchErrorKind.ENCODING, f"could not decode the response: {exc}")
    return FetchError(FetchErrorKind.CONNECTION, f"connection failed: {_root_cause(exc)}", True)


def _is_tls_error(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, ssl.SSLError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _root_cause(exc: BaseException) -> str:
    while (exc.__cause__ or exc.__context__) is not None:
        exc = exc.__cause__ or exc.__context__
    text = str(exc) or exc.__class__.__name__
    return text[:300]


def _failed(url: str, kind: FetchErrorKind, message: str, status: int | None = None,
            retryable: bool = False) -> FetchOutcome:
    return FetchOutcome(url=url, error=FetchError(kind, message, retryable), status_code=status)


# --- many feeds at once ----------------------------------------------------------------------------

def fetch_feeds(jobs: Sequence[FetchJob], settings: FetchSettings,
                then: Callable[[int, FetchOutcome], T] | None = None) -> Iterator[tuple[int, FetchOutcome, T | None]]:
    """Fetch every job concurrently; yield (index, outcome, then(index, outcome)) in the caller's thread as each lands.

    The event loop runs in a background thread; `then` (e.g. parsing) runs for each outcome in a
    pool of one thread per CPU while other feeds still download, and the caller does the rest (e.g.
    storing) one feed at a time. At most `settings.concurrency` fetched bodies wait unprocessed,
    bounding memory to concurrency × max_bytes. An outcome `then` has seen comes without its body
    (empty bytes: `ok` still says bytes arrived). Leaving the loop early cancels what is left.
    """
    if not jobs:
        return
    results: queue.Queue = queue.Queue()
    runner = _FetchRunner(jobs, settings, results, then)
    thread = threading.Thread(target=runner.run, name="digest-fetch", daemon=True)
    thread.start()
    try:
        for _ in range(len(jobs)):
            item = results.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            runner.release_slot()
    finally:
        runner.stop()
        thread.join()


class _FetchRunner:
    """The background event loop behind fetch_feeds."""

    def __init__(self, jobs: Sequence[FetchJob], settings: FetchSettings, results: queue.Queue,
                 then: Callable[[int, FetchOutcome], object] | None) -> None:
        self.jobs, self.settings, self.results, self.then = jobs, settings, results, then
        self.loop: asyncio.AbstractEventLoop | None = None
        self.slots: asyncio.Semaphore | None = None
        self.main: asyncio.Task | None = None
        self.ready = threading.Event()

    def run(self) -> None:
        try:
            asyncio.run(self._run_all())
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            self.results.put(exc)
        finally:
            self.ready.set()

    async def _run_all(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.slots = asyncio.Semaphore(self.settings.concurrency)
        self.main = asyncio.current_task()
        self.ready.set()
        workers = max(1, min(self.settings.concurrency, os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="digest-then") as pool:
            async with new_client(self.settings) as client:
                await asyncio.gather(*(self._one(i, job, client, pool) for i, job in enumerate(self.jobs)))

    async def _one(self, index: int, job: FetchJob, client: httpx.AsyncClient, pool: ThreadPoolExecutor) -> None:
        await self.slots.acquire()
        try:
            outcome = await fetch_feed(job.location, job.validators, self.settings, client)
        except Exception as exc:  # noqa: BLE001 - a bug must cost one feed, not the run
            outcome = _failed(str(job.location), FetchErrorKind.CONNECTION, f"unexpected {type(exc).__name__}: {exc}")
        extra = None
        if self.then is not None:
            extra = await self.loop.run_in_executor(pool, self.then, index, outcome)
            if outcome.body:  # what `then` made of it is all the caller needs: a 26 MB body is not kept
                outcome = replace(outcome, body=b"")
        self.results.put((index, outcome, extra))

    def release_slot(self) -> None:
        self._call_in_loop(lambda: self.slots.release())

    def stop(self) -> None:
        self._call_in_loop(lambda: self.main.cancel())

    def _call_in_loop(self, func: Callable[[], object]) -> None:
        self.ready.wait()
        if self.loop is None or self.loop.is_closed():
            return
        try:
            self.loop.call_soon_threadsafe(func)
        except RuntimeError:  # the loop closed in between: nothing left to do
            pass
