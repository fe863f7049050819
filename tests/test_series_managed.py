"""Series from one source of truth, on SQLite and PostgreSQL: digest.toml's [[series]] (provisioned,
read-only) or the store's (managed with `digest series …` and the admin). Real feed files, the real
CLI, the real web app; conflicts between two pages and two processes (two engines on one database)."""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path

import pytest
from admin_fixtures import PASSWORD_HASH, csrf_of, log_in
from click.testing import CliRunner
from conftest import SERIES, make_settings
from sqlalchemy import select
from starlette.testclient import TestClient

from digest.cli import main
from digest.config import settings_from_dict
from digest.models import Series
from digest.pipeline import series_settings as use_cases
from digest.pipeline.audit import audit_trail
from digest.pipeline.ingest import fetch_all
from digest.pipeline.managed import current_settings
from digest.store import open_store
from digest.store.schema import items
from digest.web.app import create_app

FEEDS = Path(__file__).resolve().parent / "data" / "feeds"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SD, ET, DT = (s["name"] for s in SERIES)
NEAR_MISS = "Europen Strategic Autonomy series – Digital & Technology"


def store_managed(tmp_path: Path, store_url: str, **sections):
    """Settings whose digest.toml lists no [[series]] (the test defaults list three: taken away)."""
    settings = make_settings(tmp_path, store_url, **sections)
    return replace(settings, series=[], provisioned=settings.provisioned - {"series"})


def add_three(settings, engine) -> None:
    for raw in SERIES:
        use_cases.add_series(settings, engine, raw["id"], raw["name"], aliases=raw.get("aliases", ()),
                             url=raw["url"], now=NOW)


def ids(settings, engine) -> list[str]:
    return [e.series.id for e in use_cases.list_series(settings, engine)]


def entry(settings, engine, series_id):
    return next(e for e in use_cases.list_series(settings, engine) if e.series.id == series_id)


@pytest.fixture
def managed(tmp_path, store_url):
    settings = store_managed(tmp_path, store_url)
    engine = open_store(settings.store.url)
    yield settings, engine
    engine.dispose()


# --- the use cases on a store-managed site --------------------------------------------------------

def test_add_edit_move_and_remove_store_series_with_an_audit_trail(managed):
    settings, engine = managed
    assert use_cases.list_series(settings, engine) == []
    add_three(settings, engine)
    listed = use_cases.list_series(settings, engine)
    assert [e.series.id for e in listed] == ["esa-security-defence", "esa-economy-trade", "esa-digital-technology"]
    assert {(e.source, e.version) for e in listed} == {("store", 1)}
    assert listed[0].series.aliases == ("European Strategic Autonomy series - Security & Defense",)

    saved = use_cases.edit_series(settings, engine, "esa-economy-trade", 1, names={"de": "Wirtschaft  und Handel",
                                                                                    "fr": "Économie et commerce"},
                                  url="https://www.example.org/eco/")
    assert saved.version == 2 and saved.series.names == (("de", "Wirtschaft und Handel"), ("fr", "Économie et commerce"))
    assert saved.series.name_in("de") == "Wirtschaft und Handel" and saved.series.name_in("en") == ET
    assert use_cases.edit_series(settings, engine, "esa-economy-trade", 2, names={"fr": ""}).series.names == \
        (("de", "Wirtschaft und Handel"),)  # an empty name removes that language's

    assert use_cases.move_series(settings, engine, "esa-digital-technology", 1, "up") is True
    assert use_cases.move_series(settings, engine, "esa-security-defence", 1, "up") is False  # first already
    assert ids(settings, engine) == ["esa-security-defence", "esa-digital-technology", "esa-economy-trade"]
    use_cases.remove_series(settings, engine, "esa-security-defence", 1)
    assert ids(settings, engine) == ["esa-digital-technology", "esa-economy-trade"]
    actions = [e.action for e in audit_trail(engine).entries]
    assert actions.count("series.add") == 3 and {"series.edit", "series.move", "series.remove"} <= set(actions)


def test_a_duplicate_id_is_refused_and_nothing_is_saved(managed):
    settings, engine = managed
    add_three(settings, engine)
    with pytest.raises(use_cases.DuplicateSeries, match="already a series with the id 'esa-economy-trade'"):
        use_cases.add_series(settings, engine, "esa-economy-trade", "Something else")
    assert len(use_cases.list_series(settings, engine)) == 3


@pytest.mark.parametrize("series_id, alias, owner", [
    ("esa-economy-trade", "European Strategic Autonomy series - Security & Defense", "esa-security-defence"),
    # as the matching stage compares: case, dashes, "&" and "and", entities
    ("esa-economy-trade", "european strategic autonomy series — security and defence", "esa-security-defence"),
    ("esa-security-defence", "European Strategic Autonomy series &#8211; Digital &amp; Technology",
     "esa-digital-technology"),
])
def test_an_alias_of_another_series_is_refused_naming_it(managed, series_id, alias, owner):
    settings, engine = managed
    add_three(settings, engine)
    with pytest.raises(use_cases.AliasTaken, match=f"already belongs to the series .*id '{owner}'"):
        use_cases.add_alias(settings, engine, series_id, alias)
    with pytest.raises(use_cases.AliasTaken, match=owner):
        use_cases.edit_series(settings, engine, series_id, 1, aliases=[alias])
    with pytest.raises(use_cases.AliasTaken, match=owner):
        use_cases.add_series(settings, engine, "new", "New series", aliases=[alias])
    assert entry(settings, engine, series_id).version == 1 and ids(settings, engine)[-1] != "new"


def test_a_name_that_is_another_series_alias_is_refused(managed):
    settings, engine = managed
    add_three(settings, engine)
    with pytest.raises(use_cases.AliasTaken, match="the name .* already belongs to the series"):
        use_cases.edit_series(settings, engine, "esa-economy-trade", 1,
                              name="European Strategic Autonomy series - Security & Defense")


def test_an_alias_the_series_already_matches_changes_nothing(managed):
    settings, engine = managed
    add_three(settings, engine)
    assert use_cases.add_alias(settings, engine, "esa-economy-trade", "european strategic autonomy series - economy and trade") is False
    assert entry(settings, engine, "esa-economy-trade").version == 1
    assert use_cases.add_alias(settings, engine, "esa-economy-trade", "  Economy   & Trade ") is True
    assert entry(settings, engine, "esa-economy-trade").series.aliases == ("Economy & Trade",)
    assert use_cases.remove_alias(settings, engine, "esa-economy-trade", "economy and trade") is True
    assert use_cases.remove_alias(settings, engine, "esa-economy-trade", "economy and trade") is False


@pytest.mark.parametrize("fields, words", [
    ({"series_id": "", "name": "X"}, "needs an id"),
    ({"series_id": "has space", "name": "X"}, "is not usable"),
    ({"series_id": "x" * 101, "name": "X"}, "at most 100"),
    ({"series_id": "x", "name": "   "}, "name is empty"),
    ({"series_id": "x", "name": "Bad\x1b[31m"}, "control characters"),
    ({"series_id": "x", "name": "Bidi\u202e"}, "control characters"),
    ({"series_id": "x", "name": "X" * 201}, "at most 200"),
    ({"series_id": "x", "name": "X", "url": "javascript:alert(1)"}, r"not an http\(s\) URL"),
    ({"series_id": "x", "name": "X", "url": "https://"}, r"not an http\(s\) URL"),
    ({"series_id": "x", "name": "X", "names": {"it": "Serie"}}, "unknown; use one of en, fr, de"),
    ({"series_id": "x", "name": "X", "aliases": [f"alias {i}" for i in range(51)]}, "at most 50 aliases"),
])
def test_bad_fields_are_refused_with_a_reason(managed, fields, words):
    settings, engine = managed
    with pytest.raises(use_cases.InvalidSeries, match=words):
        use_cases.add_series(settings, engine, **fields)
    assert use_cases.list_series(settings, engine) == []


def test_a_stale_version_is_refused_and_the_other_change_stays(managed):
    settings, engine = managed
    add_three(settings, engine)
    # Two pages opened at version 1; the first saves.
    use_cases.edit_series(settings, engine, "esa-economy-trade", 1, aliases=["Economy & Trade"])
    with pytest.raises(use_cases.StaleSeries, match="someone changed the series 'esa-economy-trade' since you opened"):
        use_cases.edit_series(settings, engine, "esa-economy-trade", 1, url="https://other.example.org/")
    with pytest.raises(use_cases.StaleSeries):
        use_cases.edit_series(settings, engine, "esa-economy-trade", 1)  # even with nothing to change
    with pytest.raises(use_cases.StaleSeries):
        use_cases.move_series(settings, engine, "esa-economy-trade", 1, "up")
    with pytest.raises(use_cases.StaleSeries):
        use_cases.remove_series(settings, engine, "esa-economy-trade", 1)
    kept = entry(settings, engine, "esa-economy-trade")
    assert (kept.version, kept.series.aliases, kept.series.url) == (2, ("Economy & Trade",), SERIES[1]["url"])
    assert ids(settings, engine)[1] == "esa-economy-trade"
    with pytest.raises(use_cases.NoSuchSeries):
        use_cases.edit_series(settings, engine, "gone", 1, name="X")


def test_an_edit_reaches_another_process_without_a_restart(managed):
    """Two engines on one database stand for serve and run: the other's next use sees the edit."""
    settings, engine = managed
    other = open_store(settings.store.url)
    try:
        add_three(settings, engine)
        assert [s.id for s in current_settings(settings, other).series] == [s["id"] for s in SERIES]
        use_cases.add_alias(settings, engine, "esa-digital-technology", NEAR_MISS)
        seen = current_settings(settings, other).series_by_id()["esa-digital-technology"]
        assert NEAR_MISS in seen.aliases
        use_cases.remove_series(settings, engine, "esa-economy-trade")
        assert "esa-economy-trade" not in current_settings(settings, other).series_by_id()
        # The store's series do not make the site provisioned once applied.
        assert use_cases.provisioned(current_settings(settings, other)) is False
    finally:
        other.dispose()


# --- unmatched categories, near misses, the next fetch ----------------------------------------------

def fetched_site(tmp_path, store_url):
    (tmp_path / "pubs.xml").write_bytes((FEEDS / "near-miss-categories.xml").read_bytes())
    settings = store_managed(tmp_path, store_url, feeds=[{"name": "Publications", "url": "pubs.xml", "kind": "brief"}])
    engine = open_store(settings.store.url)
    add_three(settings, engine)
    return settings, engine


def item_series(engine) -> dict[str, list[str]]:
    with engine.connect() as conn:
        return {row.title: row.series for row in conn.execute(select(items.c.title, items.c.series))}


def test_unmatched_categories_suggest_the_near_miss_and_an_alias_reaches_the_next_fetch(tmp_path, store_url):
    settings, engine = fetched_site(tmp_path, store_url)
    other = open_store(settings.store.url)  # the fetching process
    try:
        fetch_all(settings, other)
        chips = "Chips, clouds and Europe's digital dependence"
        assert item_series(engine)[chips] == []
        found = use_cases.unmatched_categories(settings, engine, datetime.now(UTC))
        first = found.categories[0]
        assert (first.category, first.items, first.suggestion) == (NEAR_MISS, 2, "esa-digital-technology")
        by_name = {c.category: c for c in found.categories}
        assert by_name["Policy Brief"].suggestion == "" and by_name["Policy Brief"].items == 1
        assert by_name["Security & Defence"].suggestion == ""  # a different category: no guess
        assert "European Strategic Autonomy series – Economy & Trade" not in by_name  # it matches
        assert use_cases.unmatched_categories(settings, engine, datetime.now(UTC) + timedelta(weeks=9)).categories == []

        assert use_cases.add_alias(settings, engine, first.suggestion, first.category) is True
        after = {c.category for c in use_cases.unmatched_categories(settings, engine, datetime.now(UTC)).categories}
        assert NEAR_MISS not in after and "Policy Brief" in after
        # Stored items keep their series until re-matched, explicitly.
        assert item_series(engine)[chips] == []
        assert use_cases.rematch_items(settings, engine, datetime.now(UTC)) == 2
        assert item_series(engine)[chips] == ["esa-digital-technology"]
        assert use_cases.rematch_items(settings, engine, datetime.now(UTC)) == 0
        # A new item with that spelling is matched by the next fetch, in the other process.
        body = (FEEDS / "near-miss-categories.xml").read_text(encoding="utf-8").replace("52001", "52999").replace(
            "chips-clouds", "chips-clouds-2").replace("Chips, clouds", "More chips")
        (tmp_path / "pubs.xml").write_text(body, encoding="utf-8")
        (report,) = fetch_all(settings, other)
        assert report.new == 1 and "did you mean" not in report.message
        assert item_series(engine)["More chips and Europe's digital dependence"] == ["esa-digital-technology"]
    finally:
        other.dispose()
        engine.dispose()


# --- a provisioned site -----------------------------------------------------------------------------

def test_provisioned_series_are_listed_and_every_change_is_refused(tmp_path, store_url):
    settings = make_settings(tmp_path, store_url)
    engine = open_store(settings.store.url)
    listed = use_cases.list_series(settings, engine)
    assert [(e.series.id, e.source) for e in listed] == [(s["id"], "digest.toml") for s in SERIES]
    for change in (lambda: use_cases.add_series(settings, engine, "x", "X"),
                   lambda: use_cases.edit_series(settings, engine, "esa-economy-trade", 0, name="X"),
                   lambda: use_cases.add_alias(settings, engine, "esa-economy-trade", "X"),
                   lambda: use_cases.remove_alias(settings, engine, "esa-economy-trade", "X"),
                   lambda: use_cases.move_series(settings, engine, "esa-economy-trade", 0, "up"),
                   lambda: use_cases.remove_series(settings, engine, "esa-economy-trade", 0)):
        with pytest.raises(use_cases.SeriesProvisioned, match="managed in digest.toml"):
            change()
    assert "managed in digest.toml" in use_cases.series_as_toml(settings, engine)
    # Series left in the store are ignored while the file lists any.
    add_three(store_managed(tmp_path, store_url), engine)
    use_cases.edit_series(store_managed(tmp_path, store_url), engine, "esa-economy-trade", 1, name="Store name")
    assert current_settings(settings, engine).series_by_id()["esa-economy-trade"].name == ET
    engine.dispose()


def test_the_store_series_export_as_toml_that_digest_toml_accepts(managed, tmp_path):
    settings, engine = managed
    assert use_cases.series_as_toml(settings, engine) == "# No series in the store.\n"
    use_cases.add_series(settings, engine, "quotes", 'Quotes "and" \\ back', names={"de": "Zitate", "fr": "Citations"},
                         aliases=["Quotes", "Zitate – alle"], url="https://www.example.org/q/")
    use_cases.add_series(settings, engine, "plain", "Plain")
    text = use_cases.series_as_toml(settings, engine)
    loaded = settings_from_dict({**tomllib.loads(text), "store": {"url": "sqlite://"}}, base_dir=tmp_path)
    assert loaded.series == [
        Series("quotes", 'Quotes "and" \\ back', ("Quotes", "Zitate – alle"), "https://www.example.org/q/",
               (("de", "Zitate"), ("fr", "Citations"))),
        Series("plain", "Plain")]


# --- the CLI ----------------------------------------------------------------------------------------

def write_config(tmp_path: Path, store_url: str, series: bool = False) -> str:
    text = f'[store]\nurl = "{store_url}"\n'
    if series:
        text += '\n[[series]]\nid = "esa-economy-trade"\nname = "Economy & Trade"\n'
    (tmp_path / "digest.toml").write_text(text, encoding="utf-8")
    return str(tmp_path / "digest.toml")


def cli(config: str, *args: str):
    return CliRunner().invoke(main, ["--config", config, *args])


def test_the_cli_manages_store_series(tmp_path, store_url):
    config = write_config(tmp_path, store_url)
    assert "no series yet" in cli(config, "series", "list").output
    added = cli(config, "series", "add", "esa-security-defence", "--name", SD, "--name-in", "de=Sicherheit",
                "--alias", "Security & Defence", "--url", "https://www.example.org/sd/")
    assert added.exit_code == 0, added.output
    assert cli(config, "series", "add", "esa-economy-trade", "--name", ET).exit_code == 0
    assert cli(config, "series", "alias", "esa-economy-trade", "Economy & Trade").stdout.startswith("added the alias")
    assert "unchanged" in cli(config, "series", "alias", "esa-economy-trade", "economy and trade").stdout
    edited = cli(config, "series", "edit", "esa-security-defence", "--name-in", "fr=Sécurité", "--url", "")
    assert edited.exit_code == 0 and "version 2" in edited.stdout
    assert cli(config, "series", "move", "esa-economy-trade", "up").stdout.startswith("moved")
    listed = json.loads(cli(config, "series", "list", "--json").stdout)
    assert listed == [
        {"id": "esa-economy-trade", "name": ET, "names": {}, "aliases": ["Economy & Trade"], "url": "",
         "version": 3, "source": "store"},
        {"id": "esa-security-defence", "name": SD, "names": {"de": "Sicherheit", "fr": "Sécurité"},
         "aliases": ["Security & Defence"], "url": "", "version": 2, "source": "store"}]
    assert cli(config, "series", "alias", "esa-economy-trade", "Economy & Trade", "--remove").exit_code == 0
    assert cli(config, "series", "remove", "esa-economy-trade").exit_code == 0
    assert [s["id"] for s in json.loads(cli(config, "series", "list", "--json").stdout)] == ["esa-security-defence"]
    assert "every category" in cli(config, "series", "unmatched").output
    assert cli(config, "series", "rematch").stdout == "0 items now in other series\n"


@pytest.mark.parametrize("args, words", [
    (["add", "esa-security-defence", "--name", "Again"], "already a series with the id"),
    (["add", "other", "--name", "Other", "--alias", "security and defence"], "already belongs to the series"),
    (["add", "bad id", "--name", "X"], "is not usable"),
    (["add", "x", "--name", "X", "--name-in", "Deutsch"], "--name-in takes LANG=NAME"),
    (["edit", "nobody", "--name", "X"], "no series with the id 'nobody'"),
    (["alias", "nobody", "X"], "no series with the id 'nobody'"),
    (["remove", "nobody"], "no series with the id 'nobody'"),
    (["move", "nobody", "up"], "no series with the id 'nobody'"),
])
def test_bad_cli_input_is_refused_and_nothing_is_saved(tmp_path, store_url, args, words):
    config = write_config(tmp_path, store_url)
    assert cli(config, "series", "add", "esa-security-defence", "--name", SD, "--alias", "Security & Defence").exit_code == 0
    result = cli(config, "series", *args)
    assert result.exit_code == 2, result.output
    assert words in " ".join(result.output.split())
    assert [(s["id"], s["version"]) for s in json.loads(cli(config, "series", "list", "--json").stdout)] == \
        [("esa-security-defence", 1)]


def test_the_cli_refuses_changes_to_provisioned_series(tmp_path, store_url):
    config = write_config(tmp_path, store_url, series=True)
    listed = json.loads(cli(config, "series", "list", "--json").stdout)
    assert listed == [{"id": "esa-economy-trade", "name": "Economy & Trade", "names": {}, "aliases": [], "url": "",
                       "version": 0, "source": "digest.toml"}]
    for args in (["add", "x", "--name", "X"], ["edit", "esa-economy-trade", "--name", "X"],
                 ["alias", "esa-economy-trade", "X"], ["move", "esa-economy-trade", "down"],
                 ["remove", "esa-economy-trade"]):
        result = cli(config, "series", *args)
        assert result.exit_code == 2 and "managed in digest.toml" in " ".join(result.output.split()), args


# --- the admin's forms (the browser flows are tests/test_browser_series.py) -----------------------

def admin_client(tmp_path, store_url, monkeypatch, provisioned: bool):
    monkeypatch.delenv("DIGEST_ADMIN_PASSWORD_HASH", raising=False)
    monkeypatch.setenv("DIGEST_SECRET", "series-test-secret")
    web = {"admin_password_hash": PASSWORD_HASH}
    settings = make_settings(tmp_path, store_url, web=web) if provisioned else store_managed(tmp_path, store_url, web=web)
    engine = open_store(settings.store.url)
    client = TestClient(create_app(settings, engine), base_url="https://testserver")
    assert log_in(client).status_code == 303
    return settings, engine, client, csrf_of(client.get("/admin/series").text)


def test_a_provisioned_series_page_is_read_only(tmp_path, store_url, monkeypatch):
    settings, engine, client, csrf = admin_client(tmp_path, store_url, monkeypatch, provisioned=True)
    html = client.get("/admin/series").text
    assert "Managed in digest.toml" in html and escape(SD) in html
    for action in ("add", "edit", "alias", "move", "remove", "rematch"):
        assert f'action="/admin/series/{action}"' not in html
    for path, data in (("/admin/series/add", {"id": "x", "name": "X"}),
                       ("/admin/series/edit", {"id": "esa-economy-trade", "version": "0", "name": "X"}),
                       ("/admin/series/alias", {"id": "esa-economy-trade", "alias": "X"}),
                       ("/admin/series/move", {"id": "esa-economy-trade", "version": "0", "direction": "up"}),
                       ("/admin/series/remove", {"id": "esa-economy-trade", "version": "0", "confirm": "yes"}),
                       ("/admin/series/rematch", {})):
        answer = client.post(path, data={"csrf_token": csrf, **data}, follow_redirects=False)
        assert answer.status_code == 409 and "managed in digest.toml" in answer.text, path
    assert client.get("/admin/series/edit", params={"id": "esa-economy-trade"}).status_code == 409
    assert use_cases.list_series(store_managed(tmp_path, store_url), engine) == []
    client.close()
    engine.dispose()


def test_admin_forms_redirect_refuse_bad_input_and_conflicts(tmp_path, store_url, monkeypatch):
    settings, engine, client, csrf = admin_client(tmp_path, store_url, monkeypatch, provisioned=False)
    add = {"id": "esa-economy-trade", "name": ET, "name_de": "Wirtschaft", "aliases": "Economy & Trade\n\n", "url": ""}
    assert client.post("/admin/series/add", data=add).status_code == 403  # no token
    saved = client.post("/admin/series/add", data={**add, "csrf_token": csrf}, follow_redirects=False)
    assert saved.status_code == 303 and saved.headers["location"] == "/admin/series?done=added"
    again = client.post("/admin/series/add", data={**add, "csrf_token": csrf})
    assert again.status_code == 400 and "already a series with the id" in again.text
    assert 'value="Wirtschaft"' in again.text  # the typed fields come back
    taken = client.post("/admin/series/add", data={"csrf_token": csrf, "id": "x", "name": "X", "aliases": "economy and trade"})
    assert taken.status_code == 400 and "already belongs to the series" in taken.text
    edit = {"csrf_token": csrf, "id": "esa-economy-trade", "version": "1", "name": ET, "aliases": "Trade",
            "url": "https://www.example.org/eco/", "name_de": "Wirtschaft", "name_fr": ""}
    assert client.post("/admin/series/edit", data=edit, follow_redirects=False).headers["location"] == \
        "/admin/series?done=saved"
    conflict = client.post("/admin/series/edit", data={**edit, "aliases": "Other"})  # the same page, version 1
    assert conflict.status_code == 409 and "Someone changed this series since you opened the page" in conflict.text
    assert 'name="version" value="2"' in conflict.text and ">Trade</textarea>" in conflict.text
    assert entry(settings, engine, "esa-economy-trade").series.aliases == ("Trade",)
    assert client.post("/admin/series/edit", data={**edit, "version": "x"}).status_code == 400
    alias = client.post("/admin/series/alias", data={"csrf_token": csrf, "id": "esa-economy-trade", "alias": NEAR_MISS},
                        follow_redirects=False)
    assert alias.headers["location"] == "/admin/series?done=alias-added"
    unchosen = client.post("/admin/series/alias", data={"csrf_token": csrf, "id": "", "alias": "Policy Brief"})
    assert unchosen.status_code == 400 and "choose the series" in unchosen.text
    nobody = client.post("/admin/series/alias", data={"csrf_token": csrf, "id": "nobody", "alias": "Policy Brief"})
    assert nobody.status_code == 404
    unconfirmed = client.post("/admin/series/remove", data={"csrf_token": csrf, "id": "esa-economy-trade",
                                                             "version": "3"}, follow_redirects=False)
    assert unconfirmed.headers["location"] == "/admin/series/remove?id=esa-economy-trade"
    stale = client.post("/admin/series/remove", data={"csrf_token": csrf, "id": "esa-economy-trade", "version": "1",
                                                       "confirm": "yes"})
    assert stale.status_code == 409 and ids(settings, engine) == ["esa-economy-trade"]
    assert client.get("/admin/series/edit", params={"id": "nobody"}).status_code == 404
    client.close()
    engine.dispose()


def test_an_editor_sees_the_series_but_only_an_admin_changes_them(tmp_path, store_url, monkeypatch):
    from admin_fixtures import login_token

    from digest.pipeline import accounts

    monkeypatch.setenv("DIGEST_SECRET", "series-test-secret")
    settings = store_managed(tmp_path, store_url, web={"admin_password_hash": PASSWORD_HASH})
    engine = open_store(settings.store.url)
    add_three(settings, engine)
    accounts.add_account(settings, engine, "eda@example.org", "editor", password="a long new passphrase")
    client = TestClient(create_app(settings, engine), base_url="https://testserver")
    form = client.get("/admin/login")
    assert client.post("/admin/login", data={"login_token": login_token(form.text), "email": "eda@example.org",
                                             "password": "a long new passphrase", "next": "/admin/series"},
                       follow_redirects=False).status_code == 303
    shown = client.get("/admin/series")
    assert shown.status_code == 200 and "esa-economy-trade" in shown.text
    refused = client.post("/admin/series/alias", data={"csrf_token": csrf_of(shown.text), "id": "esa-economy-trade",
                                                       "alias": "Trade"})
    assert refused.status_code == 403 and "admin" in refused.text
    assert entry(settings, engine, "esa-economy-trade").series.aliases == ()
    client.close()
    engine.dispose()
