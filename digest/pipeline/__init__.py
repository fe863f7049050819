"""The use cases: the front doors' (cli, web, schedule) only road to the store. Each rule lives here once.

Import a use case from its module (`from digest.pipeline.issues import approve_issue`): this package
imports none of them, so `digest fetch` does not load rendering and delivery.

The weekly run, as `digest run` does it (digest.schedule calls these on its cron):
    ingest.scheduled_fetch → weekly.build_for_week (fetch first, build, then approve and send or tell staff)
    → sending.send_due_issues (at the send time, once approved)

Modules, one per use case:
- ingest: fetch, parse and store every feed; feed health.
- feeds: the feed list from one source of truth (digest.toml, else the store): list, add after a
  test fetch, pause, resume, rename, remove, OPML import/export, `config export`, health in words.
- issues: build, rebuild, edit, approve, cancel, schedule a send; the manifest; the build report
  (late, held back, too old items: digest.offers); the weekly fetch-build-and-notify step.
- editions: what one audience reads (edition_for: everyone, staff, a reader, an archive visitor).
- sending: send an approved issue through the ledger, worker passes, test sends, due sends, send
  now, the staff note.
- subscribers: the list as staff manage it: import, export, add, remove, erase, list, show.
- signup: what readers do themselves: sign up, confirm, preferences, unsubscribe.
- bounces: bounces and complaints arriving after the send (`digest bounces import`, provider
  webhooks): matched to the ledger, acted on once.
- reports: what the admin pages and the public archive read.
- accounts: the admin password and signed-out sessions.
- status: what `digest status` and the admin's health pages show.
- runs: the run log's job names and wording.
"""
