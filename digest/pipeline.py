"""The only place that knows the order of the stages. Front doors (cli, web, schedule) call these.

fetch_all → build_issue → render_issue → send_issue; each a recipe of explicit calls (after Pelican's run()).
Each function below has one owner; keep them short recipes that call stage modules.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine

from .config import Settings


# --- ingest (owner: fetch) ------------------------------------------------------------------------
def fetch_all(settings: Settings, engine: Engine, progress=None):  # noqa: ANN001, ANN201
    """Fetch, parse and store every configured feed; returns one FetchReport per feed."""
    raise NotImplementedError


# --- compose (owner: compose) ---------------------------------------------------------------------
def build_issue(settings: Settings, engine: Engine, now: datetime, since: datetime | None = None,
                until: datetime | None = None, allow_empty: bool = False):  # noqa: ANN201
    """Compose the draft issue for a window (creating or refreshing it); None when nothing is new."""
    raise NotImplementedError


# --- render (owner: render) -----------------------------------------------------------------------
def render_issue(settings: Settings, engine: Engine, number: int, subscriber_email: str | None = None):  # noqa: ANN201
    """The full edition of an issue, or one subscriber's personalised edition."""
    raise NotImplementedError


# --- deliver (owner: deliver) ---------------------------------------------------------------------
def send_issue(settings: Settings, engine: Engine, number: int, progress=None):  # noqa: ANN001, ANN201
    """Fill the ledger for an approved issue and send until every row is done; returns a SendReport."""
    raise NotImplementedError
