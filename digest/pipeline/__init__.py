"""The use cases: the front doors' (cli, web, schedule) only road to the store. Each rule lives here once.

The weekly run, as `digest run` does it (digest.schedule calls these on its cron):
    ingest.fetch_all → issues.build_for_week (build, then approve and send or tell staff)
    → sending.send_due_issues (at the send time, once approved)

Modules, one per use case:
- ingest: fetch, parse and store every feed; feed health.
- issues: build, rebuild, edit, approve, cancel, schedule a send; the weekly build-and-notify step.
- editions: what one audience reads (full edition, one subscriber's); the segment rule.
- sending: send an approved issue through the ledger, worker passes, test sends, due sends, send now.
- subscribers: imports, staff changes, sign-up, confirmation, preferences, unsubscribe.
- status: what `digest status` and the admin's health pages show.
- runs: the run log's job names and wording.
"""

from .editions import render_issue
from .ingest import fetch_all
from .issues import approve_issue, build_issue, edit_issue
from .sending import send_issue, send_test, work_pending
from .subscribers import import_subscribers

__all__ = [
    "approve_issue",
    "build_issue",
    "edit_issue",
    "fetch_all",
    "import_subscribers",
    "render_issue",
    "send_issue",
    "send_test",
    "work_pending",
]
