"""A staff test send (issue 14, item 9) through a real SMTP server: a localised "[Test]" in the
subject, a banner in the body, and no preferences or unsubscribe link that would claim to do
something for the staff address; the ledger stays untouched."""

from __future__ import annotations

import pytest
from send_helpers import add_confirmed, approved_issue, smtp_settings

from digest.pipeline.sending import send_test
from digest.store.ledger import ledger_counts


@pytest.fixture
def settings(tmp_path, store_url, smtp_server):
    return smtp_settings(tmp_path, store_url, smtp_server.port)


def test_a_test_send_is_marked_and_explains_its_links(engine, settings, smtp_server):
    issue = approved_issue(engine, settings)
    add_confirmed(engine, "lecteur@example.net", language="fr")
    assert all(r.ok for r in send_test(settings, engine, issue, ["editor@example.org"]))
    assert all(r.ok for r in send_test(settings, engine, issue, ["chef@example.org"],
                                       subscriber_email="lecteur@example.net"))
    [english] = smtp_server.for_recipient("editor@example.org")
    [french] = smtp_server.for_recipient("chef@example.org")
    assert english["Subject"].startswith("[Test] ")
    assert french["Subject"].startswith("[Essai] ")
    for message, banner in ((english, "Test send"), (french, "Envoi de test")):
        text = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        assert banner in text and banner in html
        for body in (text, html):
            assert "/unsubscribe" not in body and "/preferences" not in body
    assert sum(ledger_counts(engine, issue).values()) == 0
