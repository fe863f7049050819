"""Shared fixtures: a fresh store per test on SQLite and PostgreSQL, a real SMTP server, Chromium.

PostgreSQL tests create and drop their own database. They skip when no server answers, unless
DIGEST_REQUIRE_POSTGRES=1 (set by .ci/run), where they fail instead.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import create_engine, text

from digest.config import Settings, settings_from_dict
from digest.store import open_store

T = TypeVar("T")


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(coroutine) in a thread of its own.

    Once a browser test has started Playwright's sync API in this worker (the session's `browser`
    fixture), its event loop counts as running in the main thread until the session ends, and
    asyncio.run there raises "cannot be called from a running event loop".
    """
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
FEEDS = DATA / "feeds"
ARTEFACTS = Path(__file__).resolve().parent / "artefacts"
PG_ADMIN_URL = os.environ.get("DIGEST_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("DIGEST_REQUIRE_POSTGRES") == "1"


def _postgres_available() -> str | None:
    try:
        engine = create_engine(PG_ADMIN_URL)
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "no server here"
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc.__class__.__name__}"


_PG_PROBLEM: str | None | bool = False


def postgres_problem() -> str | None:
    global _PG_PROBLEM
    if _PG_PROBLEM is False:
        _PG_PROBLEM = _postgres_available()
    return _PG_PROBLEM  # type: ignore[return-value]


def require_postgres() -> None:
    problem = postgres_problem()
    if problem:
        if REQUIRE_PG:
            pytest.fail(f"DIGEST_REQUIRE_POSTGRES=1 but {problem}")
        pytest.skip(problem)


def make_postgres_database() -> tuple[str, callable]:
    """Create an empty database; returns its URL and a function that drops it."""
    require_postgres()
    name = f"digest_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path):
    """A fresh, empty store URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'digest.db'}"
        return
    url, drop = make_postgres_database()
    yield url
    drop()


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'digest.db'}"


@pytest.fixture
def postgres_url():
    url, drop = make_postgres_database()
    yield url
    drop()


@pytest.fixture
def engine(store_url):
    """A migrated store on each backend."""
    eng = open_store(store_url)
    yield eng
    eng.dispose()


SERIES = [
    {"id": "esa-security-defence", "name": "European Strategic Autonomy series – Security & Defence",
     "aliases": ["European Strategic Autonomy series - Security & Defense"],
     "url": "https://www.example.org/series/security-defence/"},
    {"id": "esa-economy-trade", "name": "European Strategic Autonomy series – Economy & Trade",
     "url": "https://www.example.org/series/economy-trade/"},
    {"id": "esa-digital-technology", "name": "European Strategic Autonomy series – Digital & Technology",
     "url": "https://www.example.org/series/digital-technology/"},
]


def make_settings(tmp_path: Path, store_url: str | None = None, **sections) -> Settings:
    """Settings for a test: the three ESA series, a store in tmp_path, outbox in tmp_path."""
    raw = {
        "store": {"url": store_url or f"sqlite:///{tmp_path / 'digest.db'}"},
        "series": SERIES,
        "delivery": {"outbox_dir": str(tmp_path / "outbox")},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return settings_from_dict(raw, base_dir=tmp_path)


@pytest.fixture
def settings(tmp_path, store_url):
    return make_settings(tmp_path, store_url)


# --- a real SMTP server on loopback -------------------------------------------------------------

@contextmanager
def serving(app: Any, port: int) -> Iterator[str]:
    """`app` under a real uvicorn on 127.0.0.1:`port`, in a thread, for the browser tests; yields its base URL.

    The port is chosen first (free_port) because the app's settings name it in web.base_url.
    """
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SmtpServer:
    host: str
    port: int
    received: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    # Per-recipient canned replies: address -> list of replies used in order (e.g. ["451 later", None]).
    replies: dict[str, list[str | None]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def messages(self) -> list[EmailMessage]:
        with self.lock:
            return [message_from_bytes(data, policy=policy.default) for _, _, data in self.received]

    def for_recipient(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [message_from_bytes(d, policy=policy.default) for _, rcpts, d in self.received if address in rcpts]


class _Handler:
    def __init__(self, server: SmtpServer):
        self.server = server

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        queue = self.server.replies.get(address)
        if queue:
            reply = queue.pop(0)
            if reply:
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.server.lock:
            self.server.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content or envelope.content))
        return "250 Message accepted for delivery"


def start_smtp_server(port: int | None = None, **controller_options):
    """Start aiosmtpd on 127.0.0.1; returns (SmtpServer, controller).

    controller_options go to aiosmtpd's Controller (e.g. tls_context, ssl_context, authenticator).
    """
    from aiosmtpd.controller import Controller

    server = SmtpServer("127.0.0.1", port or free_port())
    controller = Controller(_Handler(server), hostname="127.0.0.1", port=server.port,
                            decode_data=False, data_size_limit=50 * 1024 * 1024, **controller_options)
    controller.start()
    return server, controller


@pytest.fixture
def smtp_server():
    """A real SMTP server on 127.0.0.1 recording every message it accepts."""
    server, controller = start_smtp_server()
    yield server
    controller.stop()


# --- headless Chromium --------------------------------------------------------------------------

CHROMIUM = os.environ.get("DIGEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-quic", "--disable-sync"]


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright (never a downloaded browser)."""
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing in CI: .ci/run must apt-get install chromium")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def artefacts():
    ARTEFACTS.mkdir(exist_ok=True)
    return ARTEFACTS
