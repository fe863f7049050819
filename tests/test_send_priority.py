"""The sending threads yield the CPU (`delivery.nice`); the thread that started the send keeps its own.

On Linux nice is a property of each thread: these tests read it per thread, in the transport the
sending threads call (the real SMTP transport underneath, to a real server) and in the thread that
called `send_issue`, as a web request or the command line would.
"""

from __future__ import annotations

import os
import sys
import threading

import pytest
from send_helpers import add_many, approved_issue, smtp_settings

from digest.deliver.outbox import transport_from_settings
from digest.deliver.sender import lower_thread_priority
from digest.deliver.transport import Transport
from digest.pipeline.sending import send_issue

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="nice per thread is Linux's")


def thread_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


class NiceWitness(Transport):
    """The real transport, noting the nice value of each thread that sends through it."""

    def __init__(self, inner: Transport, seen: set[int]) -> None:
        self.inner, self.seen = inner, seen

    def send_messages(self, messages):
        self.seen.add(thread_nice())
        return self.inner.send_messages(messages)

    def close(self) -> None:
        self.inner.close()


def send_from_a_thread(settings, engine, number, starting_nice: int) -> tuple[set[int], int]:
    """`send_issue` from a fresh thread at `starting_nice`: the sending threads' nice values seen,
    and the starting thread's own once the send is over."""
    seen: set[int] = set()
    outcome: dict = {}

    def start() -> None:
        try:
            lower_thread_priority(starting_nice)
            report = send_issue(settings, engine, number,
                                make_transport=lambda: NiceWitness(transport_from_settings(settings), seen))
            outcome.update(sent=report.sent, after=thread_nice())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=start)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the send did not end within 60 s"
    if "error" in outcome:
        raise outcome["error"]
    assert outcome["sent"] == 6
    return seen, outcome["after"]


@pytest.mark.parametrize(("setting", "starting", "expected"), [
    (None, 0, 10),  # the default, the nice command's own: sending threads yield, the caller does not
    (10, 0, 10),
    (19, 0, 19),
    (0, 0, 0),     # 0 leaves the priority as it is
    (10, 15, 15),  # never lowered: whoever made the process nicer meant it
])
def test_sending_threads_run_at_the_nice_value_set_and_the_caller_keeps_its_own(
        engine, tmp_path, store_url, smtp_server, setting, starting, expected):
    starting = max(starting, thread_nice())  # a test run already niced starts from there
    expected = max(expected, starting)
    settings = smtp_settings(tmp_path, store_url, smtp_server.port, **({} if setting is None else {"nice": setting}))
    number = approved_issue(engine, settings)
    add_many(engine, 6)

    seen, after = send_from_a_thread(settings, engine, number, starting)

    assert seen == {expected}
    assert after == starting
    assert len(smtp_server.messages()) == 6



def test_where_the_system_forbids_a_change_the_thread_goes_on_at_its_priority(monkeypatch):
    def forbidden(*_args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "setpriority", forbidden)
    seen: list[int] = []

    def start() -> None:
        before = thread_nice()
        lower_thread_priority(19)  # must not raise
        seen.extend((before, thread_nice()))

    thread = threading.Thread(target=start)
    thread.start()
    thread.join(timeout=10)
    assert len(seen) == 2 and seen[0] == seen[1]
