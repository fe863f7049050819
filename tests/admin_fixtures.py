"""A store with a real draft and subscribers for the admin, archive and browser tests.

The draft is composed by the real pipeline from the compose fixture feeds (tests/data/compose).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from compose_fixtures import NOW, WINDOW, feeds_config
from conftest import make_settings
from httpx import Response
from sqlalchemy import Engine
from starlette.testclient import TestClient

from digest.config import Settings
from digest.models import Issue, Subscriber, SubscriberStatus
from digest.passwords import hash_password
from digest.pipeline.ingest import fetch_all
from digest.pipeline.issues import build_issue
from digest.store import open_store
from digest.store.subscribers import add_subscriber

PASSWORD = "correct horse battery"
# log2(n) = 10 keeps the tests fast; real hashes use 15 (see digest/passwords.py).
PASSWORD_HASH = hash_password(PASSWORD, log_n=10)
READERS = [
    Subscriber(email="anna@example.org", name="Anna Müller", language="de", series=("esa-security-defence",),
               want_events=False, want_media=False, status=SubscriberStatus.CONFIRMED),
    Subscriber(email="bob@example.org", name="Bob", language="en", status=SubscriberStatus.CONFIRMED),
    Subscriber(email="carla@example.org", name="Carla", language="fr", series=("esa-economy-trade",),
               status=SubscriberStatus.CONFIRMED),
]


@dataclass
class AdminStore:
    settings: Settings
    engine: Engine
    issue: Issue | None


def admin_store(tmp_path: Path, store_url: str, build: bool = True, extra_feeds: tuple[dict, ...] = (),
                **sections) -> AdminStore:
    """Settings with the fixture feeds (and `extra_feeds`) and an admin password, the feeds ingested and
    (if `build`) draft 1 built."""
    web = {"admin_password_hash": PASSWORD_HASH, **sections.pop("web", {})}
    settings = make_settings(tmp_path, store_url, feeds=feeds_config() + list(extra_feeds), web=web, **sections)
    engine = open_store(settings.store.url)
    fetch_all(settings, engine)
    issue = build_issue(settings, engine, now=NOW, since=WINDOW.start, until=WINDOW.end) if build else None
    for reader in READERS:
        add_subscriber(engine, reader, now=NOW)
    return AdminStore(settings, engine, issue)


def login_token(html: str) -> str:
    return re.search(r'name="login_token" value="([^"]+)"', html).group(1)


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def log_in(client: TestClient, name: str = "Anna", password: str = PASSWORD) -> Response:
    """Sign in through the real login form; returns the response to the POST."""
    page = client.get("/admin/login")
    return client.post("/admin/login", data={"login_token": login_token(page.text), "name": name,
                                             "password": password, "next": "/admin/issues"},
                       follow_redirects=False)


def set_next_run(settings: Settings, engine: Engine, job_id: str, when: datetime) -> None:
    """Move a stored job's next run time, as if the scheduler had been down since `when`."""
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    from digest.schedule import make_scheduler
    from digest.store.locks import JOBS_TABLE

    jobs = SQLAlchemyJobStore(engine=engine, tablename=JOBS_TABLE)
    jobs.start(make_scheduler(settings, engine), "default")
    job = jobs.lookup_job(job_id)
    job._modify(next_run_time=when)
    jobs.update_job(job)
