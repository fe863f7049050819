"""Configuration: defaults, validation errors that name the key and the fix, `digest init`."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from digest.cli import main
from digest.config import ConfigError, load_settings, settings_from_dict
from digest.models import ItemKind


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "digest.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_empty_file_gives_every_default(tmp_path):
    settings = load_settings(write(tmp_path, ""))
    assert settings.site.timezone == "Europe/Brussels"
    assert settings.digest.window_days == 7
    assert settings.delivery.transport == "outbox"
    assert settings.fetch.max_bytes == 32 * 1024 * 1024
    assert settings.store.url == f"sqlite:///{(tmp_path / 'digest.db').resolve()}"


def test_interface_example_loads(tmp_path):
    text = '''
[site]
name = "Europa Progressiva Foundation"
timezone = "Europe/Brussels"
[[feeds]]
name = "Publications"
url = "https://www.example.org/feed/"
kind = "brief"
[[feeds]]
name = "Media"
url = "media.xml"
kind = "media"
language = "de"
[[series]]
id = "esa-security-defence"
name = "European Strategic Autonomy – Security & Defence"
aliases = ["European Strategic Autonomy series - Security & Defense"]
url = "https://www.example.org/series/security-defence/"
[delivery.smtp]
security = "starttls"
port = 587
'''
    s = load_settings(write(tmp_path, text))
    assert [f.kind for f in s.feeds] == [ItemKind.BRIEF, ItemKind.MEDIA]
    assert s.series[0].aliases == ("European Strategic Autonomy series - Security & Defense",)
    assert s.delivery.smtp.port == 587
    assert s.resolve_path(s.feeds[1].url) == tmp_path / "media.xml"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[site]\ncolour = 'red'", "unknown key 'site.colour'"),
        ("bogus = 1", "unknown key 'bogus'"),
        ("[digest]\nwindow_days = 'seven'", "'digest.window_days' must be a whole number"),
        ("[digest]\nwindow_days = 0", "'digest.window_days' is 0"),
        ("[site]\ntimezone = 'Mars/Olympus'", "'site.timezone' is 'Mars/Olympus'"),
        ("[site]\nlanguage = 'xx'", "'site.language' is 'xx'"),
        ("[delivery]\ntransport = 'pigeon'", "'delivery.transport' is 'pigeon'"),
        ("[delivery.smtp]\nsecurity = 'ssl3'", "'delivery.smtp.security'"),
        ("[[feeds]]\nname = 'A'\nurl = 'a.xml'\nkind = 'podcast'", "'feeds[0].kind' is 'podcast'"),
        ("[[feeds]]\nname = 'A'", "'feeds[0]' is missing 'url'"),
        ("[[feeds]]\nname = 'A'\nurl = 'a'\n[[feeds]]\nname = 'A'\nurl = 'b'", "'feeds[1].name' repeats 'A'"),
        ("[[series]]\nid = 'bad id!'\nname = 'X'", "'series[0].id' is 'bad id!'"),
        ("[[series]]\nid = 'x'\nname = 'X'\naliases = 'Y'", "'series[0].aliases' must be a list"),
        ("[schedule]\nauto_approve = 'yes'", "'schedule.auto_approve' must be true or false"),
        ("[[series]]\nid = 'x'\nname = 'X'\nnames = {it = 'Serie'}", "'series[0].names.it': unknown language"),
        ("[[series]]\nid = 'x'\nname = 'X'\nnames = 'Y'", "'series[0].names' must be a table"),
        ("[branding]\naccent_color = '#ffff00'", "'branding.accent_color': #ffff00 gives links a contrast of 1.07:1"),
        ("[branding]\naccent_color = 'blue'", "'branding.accent_color': 'blue' is not a colour"),
        ("[branding]\nlogo_url = 'http://www.example.org/logo.png'", "'branding.logo_url': give the logo as an https://"),
        ("[branding]\nsender_name = \"Digest\\r\\nBcc: victim@example.net\"", "'branding.sender_name': remove the control"),
        ("[branding]\nsender_name = 'Digest <x@y>'", "'branding.sender_name': a display name without"),
        ("[store]\nurl = 'mysql://x'", "'store.url'"),
        ("site = 3", "[site] must be a table"),
        ("[site\nname='x'", "invalid TOML"),
        ("[fetch]\ndeadline = -1", "'fetch.deadline' is -1.0: use a number more than 0"),
        ("[fetch]\nread_timeout = 0", "'fetch.read_timeout' is 0.0: use a number more than 0"),
        ("[fetch]\nconnect_timeout = nan", "'fetch.connect_timeout' is nan"),
        ("[fetch]\ndeadline = inf", "'fetch.deadline' is inf"),
        ("[fetch]\nmax_bytes = 0", "'fetch.max_bytes' is 0: use a number at least 1"),
        ("[fetch]\nmax_redirects = -3", "'fetch.max_redirects' is -3: use a number at least 0 and at most 20"),
        ("[fetch]\nmax_redirects = 1000", "'fetch.max_redirects' is 1000"),
        ("[fetch]\nretries = -1", "'fetch.retries' is -1"),
        ("[fetch]\nretries = 50", "'fetch.retries' is 50: use a number at least 0 and at most 10"),
        ("[fetch]\nretry_backoff = -0.5", "'fetch.retry_backoff' is -0.5"),
        ("[fetch]\nretry_after_max_hours = -1", "'fetch.retry_after_max_hours' is -1.0"),
        ("[fetch]\nparse_cpu_seconds = -2", "'fetch.parse_cpu_seconds' is -2.0"),
        ("[fetch]\nconcurrency = 0", "'fetch.concurrency' is 0"),
        ('[fetch]\nuser_agent = "digest\\r\\nX-Evil: 1"', "'fetch.user_agent' is 'digest\\r\\nX-Evil: 1': use printable ASCII"),
        ("[[feeds]]\nname = 'A'\nurl = 'htps://www.example.org/feed/'", "'feeds[0].url' is 'htps://www.example.org/feed/'"),
        ("[[feeds]]\nname = 'A'\nurl = 'a.xml'\n[[feeds]]\nname = 'B'\nurl = 'ftp://example.org/f'",
         "'feeds[1].url' is 'ftp://example.org/f': the ftp: scheme is not fetched"),
        ("[[feeds]]\nname = 'A'\nurl = 'http://[::1'", "'feeds[0].url' is 'http://[::1', not a valid URL"),
        ("[[feeds]]\nname = 'A'\nurl = 'https:///feed'", "'feeds[0].url' is 'https:///feed': the URL has no host name"),
        ("[[feeds]]\nname = '" + "n" * 201 + "'\nurl = 'a.xml'", "'feeds[0].name' is 201 characters long: use at most 200"),
        ("[delivery]\nstop_after_refusals = -1", "'delivery.stop_after_refusals' is -1: use 0 (never stop) or more"),
        ("[delivery]\nnice = -5", "'delivery.nice' is -5: use 0 (the usual priority) to 19 (the lowest)"),
        ("[delivery]\nnice = 20", "'delivery.nice' is 20: use 0 (the usual priority) to 19"),
        ("[delivery]\nnice = 'low'", "delivery.nice"),
        ("[delivery.smtp]\nconnections = 0", "'delivery.smtp.connections' is 0: use 1 to 64"),
        ("[delivery.smtp]\nconnections = 65", "'delivery.smtp.connections' is 65: use 1 to 64"),
        ("[web]\nconfirm_mail_cooldown_hours = -1", "'web.confirm_mail_cooldown_hours' is -1.0: use 0 (no cooldown) or more"),
        ("[web]\nconfirm_mail_cooldown_hours = nan", "'web.confirm_mail_cooldown_hours' is nan: use 0"),
        ("[web]\nconfirm_mail_cooldown_hours = inf", "'web.confirm_mail_cooldown_hours' is inf: use 0"),
        ("[web]\nsuppression_key_env = ''", "'web.suppression_key_env' is '': name an environment variable of its own"),
        ("[web]\nsuppression_key_env = '  '", "'web.suppression_key_env' is '  ': name an environment variable of its own"),
        ("[web]\nsuppression_key_env = 'DIGEST_SECRET'", "'web.suppression_key_env' is 'DIGEST_SECRET': name an environment"),
        ("[web]\nsecret_env = 'K'\nsuppression_key_env = 'K'", "'web.suppression_key_env' is 'K': name an environment variable"),
    ],
)
def test_errors_name_the_key_and_the_fix(tmp_path, text, expected):
    with pytest.raises(ConfigError) as excinfo:
        load_settings(write(tmp_path, text))
    assert expected in str(excinfo.value)


def test_missing_file_says_how_to_create_one(tmp_path):
    with pytest.raises(ConfigError, match="digest init"):
        load_settings(tmp_path / "nope.toml")


def test_not_utf8_is_a_clear_error(tmp_path):
    path = tmp_path / "digest.toml"
    path.write_bytes(b"[site]\nname = '\xff'\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_settings(path)


def test_cli_config_error_exits_2_with_the_message(tmp_path):
    path = write(tmp_path, "[site]\ncolour = 'red'")
    result = CliRunner().invoke(main, ["--config", str(path), "init", str(tmp_path / "x")])
    # init writes its own config; a broken --config only matters to commands that read it
    assert result.exit_code == 0
    result = CliRunner().invoke(main, ["--config", str(path), "status"])
    assert result.exit_code == 2
    assert "unknown key 'site.colour'" in result.output


def test_init_writes_a_config_that_loads_and_creates_the_store(tmp_path):
    result = CliRunner().invoke(main, ["init", str(tmp_path / "site")])
    assert result.exit_code == 0, result.output
    settings = load_settings(tmp_path / "site" / "digest.toml")
    assert settings.feeds[0].name == "Publications"
    assert (tmp_path / "site" / "digest.db").exists()
    again = CliRunner().invoke(main, ["init", str(tmp_path / "site")])
    assert "keeping it" in again.output


def test_settings_from_dict_keeps_absolute_store_urls(tmp_path):
    s = settings_from_dict({"store": {"url": "postgresql+psycopg://u@h/db"}}, base_dir=tmp_path)
    assert s.store.url == "postgresql+psycopg://u@h/db"


def test_feed_urls_that_are_fine(tmp_path):
    text = "".join(f"[[feeds]]\nname = 'F{i}'\nurl = '{url}'\n" for i, url in enumerate(
        ["https://www.example.org/feed/", "HTTP://Example.org/rss", "feeds/local.xml", "/srv/feeds/a.xml",
         "file:///srv/feeds/b.xml", "C:/feeds/c.xml"]))
    text += "[[feeds]]\nname = '" + "n" * 200 + "'\nurl = 'a.xml'\n"
    assert len(load_settings(write(tmp_path, text)).feeds) == 7


def test_fetch_bounds_that_are_fine(tmp_path):
    text = ("[fetch]\nmax_redirects = 0\nretries = 0\nretry_backoff = 0\nparse_cpu_seconds = 0\n"
            "max_bytes = 1\ndeadline = 0.5\nretry_after_max_hours = 0\n")
    settings = load_settings(write(tmp_path, text))
    assert (settings.fetch.max_redirects, settings.fetch.parse_cpu_seconds, settings.fetch.max_bytes) == (0, 0.0, 1)


def test_cli_an_unknown_feed_scheme_exits_2_naming_the_key(tmp_path):
    path = write(tmp_path, "[[feeds]]\nname = 'A'\nurl = 'htps://www.example.org/feed/'\n")
    result = CliRunner().invoke(main, ["--config", str(path), "fetch"])
    assert result.exit_code == 2
    assert "'feeds[0].url' is 'htps://www.example.org/feed/'" in result.output


# --- links in emails over SMTP, and the one loopback test ---------------------------------------

@pytest.mark.parametrize("base_url, problem", [
    # The first problem found is the one named: the port here, not the space.
    ("https://exa mple.org:abc", "it is not a URL"),
    ("http://[::1", "it is not a URL"),
    ("example.org/digest", "it must be an absolute http:// or https:// URL"),
    ("ftp://example.org", "it must be an absolute http:// or https:// URL"),
    ("https://example.org/?list=1", "it must not have a query (?) or fragment (#)"),
    ("https://example.org/news#top", "it must not have a query (?) or fragment (#)"),
    ("https://example.org/news letter", "it has characters a link in an email header cannot carry (' ';"),
    ("https://example.org/" + "a" * 200, "it is longer than 200 characters"),
])
def test_a_bad_base_url_names_its_first_problem(tmp_path, base_url, problem):
    with pytest.raises(ConfigError) as excinfo:
        load_settings(write(tmp_path, f"[web]\nbase_url = '{base_url}'\n"))
    assert str(excinfo.value).startswith(f"'web.base_url' is {base_url!r}: {problem}"), str(excinfo.value)


SMTP_OVER = "[delivery]\ntransport = 'smtp'\n[web]\nbase_url = '{}'\n"


@pytest.mark.parametrize("base_url", ["http://digest.example.org", "http://192.168.1.5:8080", "http://mylocalhost",
                                      "http://localhost.example.org"])
def test_smtp_with_an_http_base_url_is_refused_at_load(tmp_path, base_url):
    # Refused when the file loads, not at every send: the scheduler would otherwise start and fail
    # its send-due poll every minute while the issue stays approved.
    with pytest.raises(ConfigError) as excinfo:
        load_settings(write(tmp_path, SMTP_OVER.format(base_url)))
    message = str(excinfo.value)
    assert f"'web.base_url' is '{base_url}'" in message and 'delivery.transport = "smtp"' in message
    assert 'web.base_url = "https://' in message and "RFC 8058" in message


@pytest.mark.parametrize("base_url", ["https://digest.example.org", "http://127.0.0.1:8080", "http://[::1]:8080",
                                      "http://localhost:8080", "http://localhost.:8080", "http://news.localhost"])
def test_smtp_with_https_or_a_loopback_base_url_loads(tmp_path, base_url):
    assert load_settings(write(tmp_path, SMTP_OVER.format(base_url))).web.base_url == base_url


def test_the_outbox_may_use_an_http_base_url(tmp_path):
    text = "[delivery]\ntransport = 'outbox'\n[web]\nbase_url = 'http://news.example.org'\n"
    assert load_settings(write(tmp_path, text)).web.base_url == "http://news.example.org"


def test_every_command_refuses_an_http_base_url_over_smtp_exit_2(tmp_path):
    path = write(tmp_path, SMTP_OVER.format("http://digest.example.org"))
    result = CliRunner().invoke(main, ["--config", str(path), "status"])  # as `digest run` and `serve` do
    assert result.exit_code == 2, result.output
    assert "'web.base_url'" in result.output and "delivery.transport" in result.output


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LocalHost", "localhost.",
                                  "news.localhost", "news.localhost.", "A.B.LOCALHOST"])
def test_loopback_hosts(host):
    from digest.addresses import is_loopback_host

    assert is_loopback_host(host)


@pytest.mark.parametrize("host", ["", "10.0.0.1", "192.168.1.5", "0.0.0.0", "::", "localhost.example.org",
                                  "mylocalhost", "example.org", "128.0.0.1"])
def test_hosts_that_are_not_loopback(host):
    from digest.addresses import is_loopback_host

    assert not is_loopback_host(host)


def test_the_package_has_one_loopback_test():
    # The admin cookies and the links in emails used to disagree ("localhost." was loopback for one only).
    from digest.addresses import is_loopback_host
    from digest.deliver import editions
    from digest.web import admin_auth

    assert admin_auth.is_loopback_host is is_loopback_host
    assert not hasattr(editions, "_is_loopback")


def test_feed_urls_and_fetch_tell_schemes_from_paths_alike():
    from digest import config, fetch

    assert not hasattr(fetch, "_URL_SCHEME") and fetch.URL_SCHEME is config.URL_SCHEME


# --- address settings: one mailbox, no control characters (digest.addresses) ---------------------

def delivery_config(tmp_path: Path, **values: str) -> Path:
    import json

    lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())  # a TOML basic string
    return write(tmp_path, f"[delivery]\n{lines}")


@pytest.mark.parametrize("sender, problem", [
    ("Digest\r\nBcc: victim@example.net <digest@example.org>", "control character U+000D"),
    ("Digest\nBcc: victim@example.net <digest@example.org>", "control character U+000A"),
    ("Digest <digest@example.org>\x00", "control character U+0000"),
    ("Digest\t<digest@example.org>", "control character U+0009"),
    ("Digest\x85<digest@example.org>", "control character U+0085"),
    ("Digest\u2028<digest@example.org>", "control character U+2028"),
    ("Digest \u202egro.elpmaxe <digest@example.org>", "control character U+202E"),
    ("a@x, b@y", "more than one address"),
    ("a@example.org, b@example.org", "more than one address"),
    ("a@example.org;b@example.org", "more than one address"),
    ("Digest <a@example.org>, <b@example.org>", "the name holds '<'"),
    ("Smith, John <john@example.org>", "the name holds ','"),
    ("victim@example.net <digest@example.org>", "the name holds '@'"),
    ("Digest <digest@example.org", "one pair of angle brackets"),
    ("Digest <not an address>", "'not an address' is not an address"),
    ("digest@localhost", "not a host name with a dot"),
    ("", "it is empty"),
])
def test_a_sender_that_is_not_one_mailbox_is_refused_at_load(tmp_path, sender, problem):
    with pytest.raises(ConfigError) as refused:
        load_settings(delivery_config(tmp_path, sender=sender))
    assert str(refused.value).startswith(f"'delivery.sender' is {sender!r}: ")
    assert problem in str(refused.value)


@pytest.mark.parametrize("sender", [
    "digest@example.org", "Europa Progressiva Digest <digest@example.org>", '"Digest, weekly" <digest@example.org>',
    '"Say \\"hi\\"" <digest@example.org>', "Zürich Digest <digest@example.org>", "Digest <news@bücher.example>",
    "  Digest <digest@example.org>  ", "Fondation Europa Progressiva <news@ep.example.net>", "<digest@example.org>",
])
def test_senders_that_are_one_mailbox_load(tmp_path, sender):
    assert load_settings(delivery_config(tmp_path, sender=sender)).delivery.sender == sender


@pytest.mark.parametrize("command", [["status"], ["send", "--issue", "1"]])
@pytest.mark.parametrize("sender", ["Digest\r\nBcc: victim@example.net <digest@example.org>", "a@x, b@y"])
def test_digest_exits_2_naming_the_key_for_a_bad_sender(tmp_path, command, sender):
    result = CliRunner().invoke(main, ["--config", str(delivery_config(tmp_path, sender=sender)), *command])
    assert result.exit_code == 2, result.output
    assert "'delivery.sender' is " in result.output and "Use one address" in result.output


@pytest.mark.parametrize("values, key", [
    ({"reply_to": "Press\r\nBcc: x@example.net <press@example.org>"}, "delivery.reply_to"),
    ({"reply_to": "press@example.org, other@example.org"}, "delivery.reply_to"),
    ({"unsubscribe_mailto": "leave@example.org\r\nBcc: x@example.org"}, "delivery.unsubscribe_mailto"),
    ({"unsubscribe_mailto": "Leave <leave@example.org>"}, "delivery.unsubscribe_mailto"),
    ({"unsubscribe_mailto": "mailto:leave@example.org"}, "delivery.unsubscribe_mailto"),
    ({"list_id": "Digest\r\nBcc: x@example.org <digest.example.org>"}, "delivery.list_id"),
])
def test_the_other_address_settings_are_checked_the_same_way(tmp_path, values, key):
    with pytest.raises(ConfigError, match=f"^'{key}' is "):
        load_settings(delivery_config(tmp_path, **values))


@pytest.mark.parametrize("staff", [["comms@example.org\r\nBcc: x@example.net"], ["a@example.org, b@example.org"],
                                   ["Comms, Press <comms@example.org>"], ["ok@example.org", "not an address"]])
def test_staff_addresses_are_single_mailboxes(tmp_path, staff):
    with pytest.raises(ConfigError, match=r"^'schedule\.staff\[\d\]' is "):
        settings_from_dict({"schedule": {"staff": staff}}, base_dir=tmp_path)


def test_address_settings_that_are_fine_load(tmp_path):
    settings = settings_from_dict({
        "delivery": {"reply_to": "Press Office <press@example.org>", "unsubscribe_mailto": "leave@example.org",
                     "list_id": "Europa Progressiva Digest <digest.example.org>"},
        "schedule": {"staff": ["comms@example.org", "Editor <ed@bücher.example>"]}}, base_dir=tmp_path)
    assert settings.delivery.reply_to == "Press Office <press@example.org>"
    assert settings_from_dict({}).delivery.reply_to == ""  # empty: left out of the messages
