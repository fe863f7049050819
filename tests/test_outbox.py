"""The outbox transport: private files whatever the umask, and a full disk said as such (not as SMTP)."""

from __future__ import annotations

import logging
import os
import stat

import pytest
from conftest import make_settings
from send_helpers import add_many, approved_issue

from digest.deliver.outbox import OutboxTransport, transport_from_settings
from digest.deliver.transport import OutgoingMessage
from digest.pipeline.sending import send_issue
from digest.store.ledger import ledger_counts


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(params=[0o022, 0o002, 0o000], ids=["umask022", "umask002", "umask000"])
def umask(request):
    """The process umask for one test (0o022 is the usual one: files 0644 unless digest says otherwise)."""
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def message(number: int) -> OutgoingMessage:
    return OutgoingMessage(envelope_from="digest@example.org", recipients=(f"r{number}@example.org",),
                           data=b"Subject: x\r\n\r\nhttps://digest.example.org/unsubscribe?t=secret\r\n",
                           message_id=f"<{number}@example.org>")


def test_outbox_files_are_0600_and_its_folder_0700_whatever_the_umask(tmp_path, umask):
    outbox = tmp_path / "deep" / "outbox"
    results = OutboxTransport(outbox).send_messages([message(1), message(2)])
    assert all(r.ok for r in results)
    assert mode(outbox) == 0o700
    files = list(outbox.iterdir())
    assert len(files) == 2 and all(mode(f) == 0o600 for f in files)


def test_an_existing_outbox_folder_keeps_its_mode_and_gets_private_files(tmp_path, umask):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o750)  # a folder staff chose to share: its files still are the owner's alone
    assert OutboxTransport(shared).send_messages([message(1)])[0].ok
    assert mode(shared) == 0o750 and [mode(f) for f in shared.iterdir()] == [0o600]


def test_a_full_outbox_disk_pauses_sending_and_says_so_in_outbox_words(tmp_path, store_url, engine, monkeypatch,
                                                                        caplog):
    settings = make_settings(tmp_path, store_url, delivery={"retry_delay": 0.05, "retry_max_delay": 0.2,
                                                            "smtp": {"connections": 1}})
    number = approved_issue(engine, settings)
    add_many(engine, 3)
    disk_full = [True]
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if disk_full[0] and stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    class FreeSpaceOnPause(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:  # staff free some space once told
            disk_full[0] = False

    monkeypatch.setattr(os, "fsync", fsync)
    freeing = FreeSpaceOnPause(logging.WARNING)
    logging.getLogger("digest.deliver.retries").addHandler(freeing)
    try:
        with caplog.at_level(logging.WARNING, logger="digest.deliver.retries"):
            report = send_issue(settings, engine, number)
    finally:
        logging.getLogger("digest.deliver.retries").removeHandler(freeing)
    outbox = transport_from_settings(settings).directory
    (pause,) = [r.getMessage() for r in caplog.records if "sending pauses" in r.getMessage()]
    assert pause.startswith(f"the outbox folder {outbox} cannot be written (No space left on device: free some space")
    assert "SMTP" not in pause and "server" not in pause
    assert report.sent == 3 and ledger_counts(engine, number).get("sent") == 3
    assert len(list(outbox.glob("*.eml"))) == 3
