"""One road to an edition: `edition_for` for every audience, one segment rule, one archive address.

Real store (SQLite and PostgreSQL), real compose and render: the draft comes from the fixture feeds.
"""

from __future__ import annotations

import html
from email import message_from_bytes, policy

import pytest
from admin_fixtures import READERS, AdminStore, admin_store
from compose_fixtures import NOW
from starlette.testclient import TestClient

from digest.archive_urls import archive_path, archive_url
from digest.deliver.editions import edition_messages
from digest.models import IssueStatus, Subscriber, SubscriberStatus
from digest.pipeline.editions import (
    EditionCache,
    Everyone,
    NoEdition,
    Reader,
    Staff,
    Visitor,
    edition_for,
    issue_segments,
    render_issue,
)
from digest.pipeline.issues import edit_issue
from digest.segments import segment_for
from digest.store.issues import approve_issue, get_issue, set_status
from digest.store.subscribers import add_subscriber, get_subscriber
from digest.web.app import create_app

BASE = "https://digest.example.org"


@pytest.fixture
def store(tmp_path, store_url) -> AdminStore:
    return admin_store(tmp_path, store_url, web={"base_url": BASE})


def send(store: AdminStore) -> None:
    approve_issue(store.engine, 1, by="Anna", version=store.issue.version)
    set_status(store.engine, 1, IssueStatus.SENDING)
    set_status(store.engine, 1, IssueStatus.SENT)


def html_part(data: bytes) -> str:
    return message_from_bytes(data, policy=policy.default).get_body(("html",)).get_content()


def test_each_audience_reads_its_own_edition(store):
    settings, issue = store.settings, store.issue
    everyone = edition_for(settings, store.engine, 1, Everyone())
    assert everyone.edition.segment_id == "all" and everyone.edition.language == settings.site.language
    assert everyone.email == "reader@example.org" and "Hello there," in everyone.text

    staff = edition_for(settings, store.engine, issue, Staff(language="fr"))
    assert staff.edition.language == "fr" and staff.edition.segment_id == "all"
    assert f"{BASE}/unsubscribe/" in staff.text  # signed for no subscriber: a click changes nothing
    for segment in issue_segments(settings, store.engine, issue):
        shown = edition_for(settings, store.engine, issue, Staff(segment_id=segment.id))
        assert (shown.edition.segment_id, shown.edition.language) == (segment.id, segment.language)
    with pytest.raises(NoEdition, match="no segment"):
        edition_for(settings, store.engine, issue, Staff(segment_id="0123456789abcdef"))

    carla = edition_for(settings, store.engine, issue, Reader("Carla@Example.org"))
    assert carla.edition.language == "fr" and carla.name == "Carla" and carla.email == "carla@example.org"
    assert "Bonjour Carla," in carla.text and f"{BASE}/unsubscribe/" in carla.text
    with pytest.raises(NoEdition, match="no subscriber nobody@example.org"):
        edition_for(settings, store.engine, issue, Reader("nobody@example.org"))


def test_an_archive_visitor_reads_only_a_sent_issue_and_gets_no_personal_links(store):
    with pytest.raises(NoEdition, match="only sent issues are public"):
        edition_for(store.settings, store.engine, 1, Visitor())
    send(store)
    visitor = edition_for(store.settings, store.engine, 1, Visitor(language="xx"))
    assert visitor.edition.language == store.settings.site.language  # not offered: the site's
    assert "/unsubscribe/" not in visitor.html and f"{BASE}/subscribe" in visitor.html


def test_one_segment_rule_for_the_delivery_the_render_and_the_preview(store):
    """A subscriber whose language is not offered reads the site's language, whoever renders for them."""
    add_subscriber(store.engine, Subscriber(email="eva@example.org", name="Eva", language="es",
                                            series=("esa-economy-trade",), status=SubscriberStatus.CONFIRMED), now=NOW)
    eva = get_subscriber(store.engine, "eva@example.org")
    segment = segment_for(store.issue, eva, store.settings.site.language)
    assert segment is not None and segment.language == "en"
    assert segment.id in {s.id for s in issue_segments(store.settings, store.engine, store.issue)}
    preview = edition_for(store.settings, store.engine, store.issue, Reader(eva.email))
    assert preview.edition.segment_id == segment.id and 'lang="en"' in preview.html
    rendered = render_issue(store.settings, store.engine, 1, eva.email)
    assert rendered.edition.segment_id == segment.id
    delivered = edition_messages(store.settings, store.issue)(eva)
    assert 'lang="en"' in html_part(delivered.data)


def test_every_view_in_browser_link_is_the_archive_page_the_web_app_serves(store):
    address = archive_url(store.settings, 1)
    assert address == f"{BASE}{archive_path(1)}" == f"{BASE}/archive/1"
    anna = get_subscriber(store.engine, READERS[0].email)
    delivered = html.unescape(html_part(edition_messages(store.settings, store.issue)(anna).data))
    assert f'href="{address}"' in delivered
    for audience in (Everyone(), Staff(), Reader(anna.email)):
        assert address in edition_for(store.settings, store.engine, 1, audience).text, audience
    send(store)
    assert address in edition_for(store.settings, store.engine, 1, Visitor()).text
    with TestClient(create_app(store.settings, store.engine), base_url=BASE) as client:
        assert client.get(archive_path(1)).status_code == 200
        assert f"<id>{address}</id>" in client.get(archive_path("feed.atom")).text
        assert f'href="{archive_path(1)}"' in client.get(archive_path()).text


def test_the_cache_compiles_an_edition_once_per_version(store):
    cache = EditionCache()
    first = edition_for(store.settings, store.engine, 1, Staff(language="de"), cache)
    again = edition_for(store.settings, store.engine, 1, Reader("anna@example.org"), cache)  # de, her sections
    assert edition_for(store.settings, store.engine, 1, Staff(language="de"), cache).edition is first.edition
    assert again.edition is not first.edition  # another segment
    edit_issue(store.settings, store.engine, 1, NOW, intro="A new intro")
    edited = edition_for(store.settings, store.engine, get_issue(store.engine, 1), Staff(language="de"), cache)
    assert edited.edition is not first.edition and "A new intro" in edited.text
