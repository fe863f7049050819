"""Run the `digest` command line counting PostgreSQL round trips and ledger claims (bench_workers.py).

Usage: python bench/sender_probe.py STATS.json [digest arguments...]; the counts go to STATS.json
when the process exits (not when it is killed). What is counted: every request that waits for the
server (psycopg `Connection.wait`: each execute, and the empty statement SQLAlchemy's pool pings a
connection with at checkout), each COMMIT or ROLLBACK sent inside a transaction (not the pool's no-op
rollback of an idle connection), and the BEGIN psycopg sends before a transaction's first statement;
connection set-up is not. Claims: calls of `digest.store.ledger.claim_rows`, those that returned
rows (batches), and the round trips made inside it and `claimed_subscribers`. Counting costs well
under a microsecond per round trip.
"""

from __future__ import annotations

import atexit
import json
import sys
import threading

import psycopg
from psycopg import pq
from psycopg._connection_base import BaseConnection

import digest.store.ledger as ledger

COUNTS = dict.fromkeys(("round_trips", "begins", "claim_round_trips", "claim_calls", "batches", "claimed_rows"), 0)
LOCK, LOCAL = threading.Lock(), threading.local()


def add(name: str, n: int = 1) -> None:
    with LOCK:
        COUNTS[name] += n


def count_round_trip() -> None:
    add("round_trips")
    if getattr(LOCAL, "claiming", False):
        add("claim_round_trips")


def counting_wait(original):
    def wait(self, gen, *args, **kwargs):
        if not getattr(LOCAL, "ending", False):  # COMMIT and ROLLBACK are counted by `ending`
            count_round_trip()
        return original(self, gen, *args, **kwargs)
    return wait


def ending(original):
    # COMMIT or ROLLBACK goes to the server only inside a transaction.
    def wrapper(self):
        if self.pgconn.transaction_status != pq.TransactionStatus.IDLE:
            count_round_trip()
        LOCAL.ending = True
        try:
            return original(self)
        finally:
            LOCAL.ending = False
    return wrapper


def counting_begin(original):
    def start_query(self):
        if not self._autocommit and self.pgconn.transaction_status == pq.TransactionStatus.IDLE:
            add("begins")  # psycopg sends BEGIN on its own before the transaction's first statement
            count_round_trip()
        return (yield from original(self))
    return start_query


def claiming(function, is_claim: bool):
    def wrapper(*args, **kwargs):
        LOCAL.claiming = True
        try:
            result = function(*args, **kwargs)
        finally:
            LOCAL.claiming = False
        if is_claim:
            add("claim_calls")
            if result:
                add("batches")
                add("claimed_rows", len(result))
        return result
    return wrapper


def main() -> None:
    stats_path = sys.argv[1]
    psycopg.Connection.wait = counting_wait(psycopg.Connection.wait)
    psycopg.Connection.commit = ending(psycopg.Connection.commit)
    psycopg.Connection.rollback = ending(psycopg.Connection.rollback)
    BaseConnection._start_query = counting_begin(BaseConnection._start_query)
    # Before the command line imports the send loop, which takes these names from the module.
    ledger.claim_rows = claiming(ledger.claim_rows, True)
    ledger.claimed_subscribers = claiming(ledger.claimed_subscribers, False)

    def save() -> None:
        with open(stats_path, "w") as f:
            json.dump(COUNTS, f)

    atexit.register(save)
    from digest.__main__ import main as command_line

    sys.argv = ["digest", *sys.argv[2:]]
    command_line()


if __name__ == "__main__":
    main()
