"""The schedule and the branding from one source of truth, on SQLite and PostgreSQL: digest.toml's [schedule] /
[branding] (provisioned, read-only) or the store's (edited in the admin, versioned against lost edits).
Validation by field, conflicts, logo uploads (oversized, not an image, SVG), the public logo, the
masthead in the edition, `config export`, the admin forms (Post/Redirect/Get) and their refusals."""

from __future__ import annotations

import re
import struct
import subprocess
import tomllib
import zlib
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from admin_fixtures import admin_store, csrf_of, log_in
from conftest import make_settings
from render_fixtures import all_sections, demo_issue
from starlette.testclient import TestClient

from digest.branding import DARK_BACKGROUND, LIGHT_BACKGROUND, check_accent, contrast_ratio, read_logo
from digest.config import ScheduleSettings, settings_from_dict
from digest.pipeline import site_settings as use_cases
from digest.pipeline.audit import audit_trail
from digest.pipeline.managed import current_settings
from digest.render import THEME, render_edition
from digest.store import open_store
from digest.web.app import create_app

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)  # a Friday
WEEKLY = {"days": ["mon"], "build_time": "09:00", "send_time": "11:00", "fetch_every_hours": "4", "staff": ""}


def png(width: int = 40, height: int = 20) -> bytes:
    """A real PNG (grey pixels), small."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"\x80\x80\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00;"


def jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof + b"\xff\xd9"


def webp_lossless(width: int, height: int) -> bytes:
    bits = (width - 1) | ((height - 1) << 14)
    body = b"VP8L" + struct.pack("<I", 5) + b"\x2f" + bits.to_bytes(4, "little") + b"\x00"
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


@pytest.fixture
def store_managed(tmp_path, store_url):
    settings = make_settings(tmp_path, store_url)
    engine = open_store(settings.store.url)
    yield settings, engine
    engine.dispose()


@pytest.fixture
def provisioned_site(tmp_path, store_url):
    settings = make_settings(tmp_path, store_url, schedule={"cron": "0 8 * * tue", "send_cron": "30 10 * * tue"},
                             branding={"accent_color": "#0b6e4f", "footer_text": "From the file"})
    engine = open_store(settings.store.url)
    yield settings, engine
    engine.dispose()


# --- the rules, pure ---------------------------------------------------------------------------------

def test_the_contrast_rule_uses_the_editions_own_backgrounds():
    assert (LIGHT_BACKGROUND, DARK_BACKGROUND) == (THEME.light.card, THEME.dark.card)
    assert round(contrast_ratio("#000000", "#ffffff"), 1) == 21.0
    default = check_accent("#1a5fb4")
    assert default.ok and default.light_ratio > 6 and default.dark_ratio >= 4.5
    yellow = check_accent("#FFCC00")
    assert yellow.colour == "#ffcc00" and not yellow.ok and round(yellow.light_ratio, 2) == 1.51
    borderline = check_accent("#777777")  # 4.48:1 on white: just below AA
    assert not borderline.ok and check_accent("#767676").ok
    for colour in ("#000000", "#1a5fb4", "#7a0019", "#0b6e4f"):  # dark mode always gets a readable partner
        assert contrast_ratio(check_accent(colour).dark_colour, DARK_BACKGROUND) >= 4.5
    for bad in ("blue", "#12345", "#1234567", "#12345g", ""):
        with pytest.raises(ValueError, match="six hexadecimal digits"):
            check_accent(bad)


def test_logos_are_told_by_their_bytes():
    assert read_logo(png(40, 20)).content_type == "image/png"
    assert (read_logo(png(40, 20)).width, read_logo(png(40, 20)).height) == (40, 20)
    assert (read_logo(gif(300, 90)).kind, read_logo(gif(300, 90)).width) == ("gif", 300)
    assert (read_logo(jpeg(640, 200)).kind, read_logo(jpeg(640, 200)).height) == ("jpeg", 200)
    assert (read_logo(webp_lossless(120, 60)).kind, read_logo(webp_lossless(120, 60)).width) == ("webp", 120)
    refusals = {
        b"": "empty",
        png() + b"\x00" * (512 * 1024): "512 KiB at most",
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>': "SVG",
        b"  <svg onload='x'/>": "SVG",
        b"%PDF-1.7 not an image": "not a PNG, JPEG, GIF or WebP",
        b"\x89PNG\r\n\x1a\n truncated": "not a PNG",
        gif(0, 10): "4000 pixels",
        gif(20000, 10): "4000 pixels",
    }
    for data, why in refusals.items():
        with pytest.raises(use_cases.LogoRefused, match=why):
            read_logo(data)


# --- store-managed: read, save, conflict, audit ------------------------------------------------------

def test_the_schedule_is_saved_in_the_store_and_read_by_every_use_case(store_managed):
    settings, engine = store_managed
    view = use_cases.schedule_overview(settings, engine, NOW)
    assert (view.managed.source, view.managed.version, view.managed.read_only) == ("store", 0, False)
    assert view.form.days == ("mon",) and (view.form.build_time, view.form.send_time) == ("09:00", "11:00")
    assert dict(view.next_runs)["build"] == "Monday 7 December at 09:00 (Brussels time)"
    assert view.timezone_words == "Brussels time" and view.scheduler is None

    form = {**WEEKLY, "days": ["thu", "mon"], "build_time": "08:30", "send_time": "10:15", "skip_if_empty": "",
            "staff": "eda@example.org\nfrank@example.org", "auto_approve": "yes"}
    assert use_cases.save_schedule(settings, engine, form, 0, None, NOW) is True
    in_force = current_settings(settings, engine).schedule
    assert (in_force.cron, in_force.send_cron) == ("30 8 * * mon,thu", "15 10 * * mon,thu")
    assert in_force.staff == ["eda@example.org", "frank@example.org"] and in_force.auto_approve is True
    view = use_cases.schedule_overview(settings, engine, NOW)
    assert view.managed.version == 1 and view.form.skip_if_empty is False
    assert dict(view.next_runs)["build"] == "Monday 7 December at 08:30 (Brussels time)"
    assert dict(view.next_runs)["send"] == "Monday 7 December at 10:15 (Brussels time)"
    # Saving the same values again changes nothing: no new version, no audit entry.
    assert use_cases.save_schedule(settings, engine, form, 1, None, NOW) is False
    entries = [e for e in audit_trail(engine).entries if e.action == "settings.schedule"]
    assert len(entries) == 1 and entries[0].detail["changed"]["cron"] == ["0 9 * * mon", "30 8 * * mon,thu"]


def test_schedule_fields_are_checked_one_by_one(store_managed):
    settings, engine = store_managed
    with pytest.raises(use_cases.InvalidSettings) as refused:
        use_cases.save_schedule(settings, engine, {"days": ["someday"], "build_time": "9", "send_time": "25:00",
                                                   "fetch_every_hours": "0", "staff": "not an address"}, 0, None, NOW)
    problems = refused.value.problems
    assert set(problems) == {"days", "build_time", "send_time", "fetch_every_hours", "staff"}
    assert "HH:MM" in problems["build_time"] and "weekday" in problems["days"]
    with pytest.raises(use_cases.InvalidSettings) as refused:
        use_cases.save_schedule(settings, engine, {**WEEKLY, "send_time": "09:00"}, 0, None, NOW)
    assert refused.value.problems == {"send_time": "the send time (09:00) must be after the build time (09:00) on "
                                                   "the same day, so the draft can be approved in between"}
    assert use_cases.schedule_overview(settings, engine, NOW).managed.version == 0  # nothing half-saved


def test_two_staff_saving_at_once_the_second_gets_a_conflict(store_managed):
    settings, engine = store_managed
    first = use_cases.schedule_overview(settings, engine, NOW).managed.version
    use_cases.save_schedule(settings, engine, {**WEEKLY, "build_time": "07:00"}, first, None, NOW)
    with pytest.raises(use_cases.StaleSettings, match=r"changed by command line .*version 0, the current one is 1"):
        use_cases.save_schedule(settings, engine, {**WEEKLY, "build_time": "08:00"}, first, None, NOW)
    assert current_settings(settings, engine).schedule.cron == "0 7 * * mon"
    use_cases.save_branding(settings, engine, {"accent_color": "#0b6e4f"}, 0, None, NOW)
    with pytest.raises(use_cases.StaleSettings):
        use_cases.save_branding(settings, engine, {"accent_color": "#7a0019"}, 0, None, NOW)
    assert current_settings(settings, engine).branding.accent_color == "#0b6e4f"


def test_branding_is_checked_saved_and_shown_in_the_masthead(store_managed):
    settings, engine = store_managed
    view = use_cases.branding_overview(settings, engine)
    assert view.managed.source == "store" and view.accent.colour == "#1a5fb4"
    assert view.sender_name == "Europa Progressiva Digest" and view.postal_address == settings.site.postal_address
    with pytest.raises(use_cases.InvalidSettings) as refused:
        use_cases.save_branding(settings, engine, {"accent_color": "#ffcc00", "logo_url": "http://x.example.org/l.png",
                                                   "sender_name": "Evil <x@example.org>", "footer_text": "a\x00b"},
                                0, None, NOW)
    problems = refused.value.problems
    assert "1.51:1 on the white background" in problems["accent_color"] and "4.5:1" in problems["accent_color"]
    assert "https://" in problems["logo_url"] and "sender_name" in problems and "footer_text" in problems
    saved = {"accent_color": "#0B6E4F", "logo_url": "https://cdn.example.org/logo.png", "logo_alt": "EPF",
             "footer_text": "Sent on Mondays.", "sender_name": "EPF Digest", "postal_address": "Rue Neuve 2, Brussels"}
    assert use_cases.save_branding(settings, engine, saved, 0, None, NOW) is True
    branding = current_settings(settings, engine).branding
    assert branding.accent_color == "#0b6e4f" and branding.sender_name == "EPF Digest"
    assert use_cases.sender_display_name(current_settings(settings, engine)) == "EPF Digest"
    html = render_edition(demo_issue(), all_sections(demo_issue(), "en"), current_settings(settings, engine)).html
    assert 'alt="EPF"' in html and "https://cdn.example.org/logo.png" in html
    assert "border-top:4px solid #0b6e4f" in html and 'class="brand" style="text-decoration:none;color:#0b6e4f"' in html
    assert "Sent on Mondays." in html and "Rue Neuve 2, Brussels" in html
    assert f"a.brand {{ color: {check_accent('#0b6e4f').dark_colour} !important; }}" in html
    assert [e.action for e in audit_trail(engine).entries] == ["settings.branding"]


def test_a_bad_accent_never_reaches_an_edition(tmp_path):
    """Even when set behind the checks' back (a script, an old row), the masthead keeps the default accent."""
    settings = make_settings(tmp_path)
    settings = replace(settings, branding=replace(settings.branding, accent_color="#ffee00"))
    html = render_edition(demo_issue(), all_sections(demo_issue(), "en"), settings).html
    assert "#ffee00" not in html and "border-top:4px solid #1a5fb4" in html


def test_a_logo_upload_is_kept_by_content_and_served_immutable(store_managed):
    settings, engine = store_managed
    data = png(60, 30)
    path = use_cases.upload_logo(settings, engine, data, "Our logo", 0, None, NOW)
    assert re.fullmatch(r"/branding/logo-[0-9a-f]{8}\.png", path)
    branding = current_settings(settings, engine).branding
    assert branding.logo_url == settings.web.base_url + path and branding.logo_alt == "Our logo"
    assert use_cases.branding_overview(settings, engine).uploaded
    # The page's form then carries that address (http on this install's base_url): saving it again is fine,
    # the same path on another host is not.
    form = {"logo_url": branding.logo_url, "logo_alt": "Our logo", "accent_color": "#1a5fb4"}
    assert use_cases.save_branding(settings, engine, form, 1, None, NOW) is False
    with pytest.raises(use_cases.InvalidSettings, match="https://"):
        use_cases.save_branding(settings, engine, {**form, "logo_url": "http://elsewhere.example" + path}, 1, None, NOW)
    with TestClient(create_app(settings, engine)) as client:
        served = client.get(path)
        assert served.status_code == 200 and served.content == data
        assert served.headers["content-type"] == "image/png" and "immutable" in served.headers["cache-control"]
        assert served.headers["x-content-type-options"] == "nosniff"
        assert client.get("/branding/logo-00000000.png").status_code == 404
        assert client.get("/branding/..%2Fdigest.db").status_code == 404
    # A second logo: the first stays served, for the emails that show it.
    second = use_cases.upload_logo(settings, engine, gif(100, 40), "Our logo", 1, None, NOW)
    assert second != path and use_cases.logo_file(engine, path.rsplit("/", 1)[1]) is not None
    for data, why in ((b"<svg/>", "SVG"), (b"x" * (600 * 1024), "512 KiB"), (b"GIF8", "not a PNG")):
        with pytest.raises(use_cases.LogoRefused, match=why):
            use_cases.upload_logo(settings, engine, data, "", 2, None, NOW)
    assert current_settings(settings, engine).branding.logo_url.endswith(second)  # refusals changed nothing


def test_config_export_writes_tables_digest_toml_accepts(store_managed):
    settings, engine = store_managed
    use_cases.save_schedule(settings, engine, {**WEEKLY, "days": ["wed"], "staff": "eda@example.org"}, 0, None, NOW)
    use_cases.save_branding(settings, engine, {"accent_color": "#7a0019", "footer_text": 'Say "hi" \\ bye'}, 0, None, NOW)
    text = use_cases.settings_as_toml(settings, engine)
    parsed = tomllib.loads(text)
    assert parsed["schedule"]["cron"] == "0 9 * * wed" and parsed["branding"]["footer_text"] == 'Say "hi" \\ bye'
    assert set(parsed["schedule"]) <= {f for f in ScheduleSettings.__dataclass_fields__}
    assert "version 1" in text
    loaded = settings_from_dict(parsed)  # digest.toml takes it as it is: the sections become provisioned
    assert loaded.provisioned == {"schedule", "branding"} and loaded.branding.accent_color == "#7a0019"
    assert loaded.schedule.staff == ["eda@example.org"]


# --- provisioned: read-only, refused -------------------------------------------------------------------

def test_a_provisioned_site_is_read_only_and_ignores_the_store(provisioned_site):
    settings, engine = provisioned_site
    view = use_cases.schedule_overview(settings, engine, NOW)
    assert view.managed.read_only and view.form.days == ("tue",) and view.form.send_time == "10:30"
    assert use_cases.branding_overview(settings, engine).managed.read_only
    with pytest.raises(use_cases.SettingsProvisioned, match=r"managed in digest.toml \(\[schedule\] table\)"):
        use_cases.save_schedule(settings, engine, WEEKLY, 0, None, NOW)
    with pytest.raises(use_cases.SettingsProvisioned, match=r"\[branding\]"):
        use_cases.save_branding(settings, engine, {"accent_color": "#000000"}, 0, None, NOW)
    with pytest.raises(use_cases.SettingsProvisioned):
        use_cases.upload_logo(settings, engine, png(), "", 0, None, NOW)
    assert use_cases.settings_as_toml(settings, engine) == ""
    assert audit_trail(engine).entries == []


# --- the admin pages over HTTP ------------------------------------------------------------------------

@pytest.fixture
def admin_for(tmp_path, store_url, monkeypatch):
    monkeypatch.delenv("DIGEST_ADMIN_PASSWORD_HASH", raising=False)

    def make(**sections):
        store = admin_store(tmp_path, store_url, **sections)
        client = TestClient(create_app(store.settings, store.engine), base_url="https://testserver")
        assert log_in(client).status_code == 303
        return store, client

    return make


def test_the_admin_pages_save_with_post_redirect_get(admin_for):
    store, client = admin_for()
    with client:
        page = client.get("/admin/schedule")
        assert page.status_code == 200 and "Next build:" in page.text and "Brussels time" in page.text
        assert "change <code>timezone</code> in digest.toml" in page.text
        form = {"csrf_token": csrf_of(page.text), "version": "0", "days": ["tue"], "build_time": "06:00",
                "send_time": "07:30", "fetch_every_hours": "6", "staff": ""}
        saved = client.post("/admin/schedule", data=form, follow_redirects=False)
        assert saved.status_code == 303 and saved.headers["location"] == "/admin/schedule?done=schedule-saved"
        assert "at 06:00 (Brussels time)" in client.get(saved.headers["location"]).text
        # The same form again (a stale page): a conflict, nothing changes.
        again = client.post("/admin/schedule", data={**form, "build_time": "05:00"})
        assert again.status_code == 409 and "changed by Anna since this page was shown" in again.text
        bad = client.post("/admin/schedule", data={**form, "version": "1", "send_time": "5pm"})
        assert bad.status_code == 400 and 'aria-invalid="true" aria-describedby="send_time-problem"' in bad.text
        assert 'value="5pm"' in bad.text  # what was typed stays on the page
        assert current_settings(store.settings, store.engine).schedule.cron == "0 6 * * tue"

        page = client.get("/admin/branding")
        assert page.status_code == 200 and 'src="/admin/branding/preview"' in page.text
        csrf = csrf_of(page.text)
        refused = client.post("/admin/branding", data={"csrf_token": csrf, "version": "0", "accent_color": "#ffcc00"})
        assert refused.status_code == 400 and "1.51:1 on the white background" in refused.text
        preview = client.post("/admin/branding/preview", data={"csrf_token": csrf, "accent_color": "#7a0019",
                                                               "footer_text": "Preview only"})
        assert preview.status_code == 200 and "Preview only" in preview.text and "#7a0019" in preview.text
        assert "default-src 'none'" in preview.headers["content-security-policy"]
        assert use_cases.branding_overview(store.settings, store.engine).managed.version == 0  # previews save nothing
        saved = client.post("/admin/branding", data={"csrf_token": csrf, "version": "0", "accent_color": "#7a0019",
                                                     "footer_text": "Kept"}, follow_redirects=False)
        assert saved.status_code == 303
        assert "Kept" in client.get("/admin/branding/preview").text
        upload = client.post("/admin/branding/logo", data={"csrf_token": csrf, "version": "1", "logo_alt": "Logo"},
                             files={"logo": ("logo.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml")})
        assert upload.status_code == 400 and "SVG logos are not accepted" in upload.text
        big = client.post("/admin/branding/logo", data={"csrf_token": csrf, "version": "1"},
                          files={"logo": ("big.png", b"\x89PNG" + b"0" * 700_000, "image/png")})
        assert big.status_code == 413 and "512 KiB at most" in big.text
        forged = client.post("/admin/branding/logo", data={"csrf_token": "nope", "version": "1"},
                             files={"logo": ("l.png", png(), "image/png")})
        assert forged.status_code == 403
        good = client.post("/admin/branding/logo", data={"csrf_token": csrf, "version": "1", "logo_alt": "Logo"},
                           files={"logo": ("l.png", png(), "image/png")}, follow_redirects=False)
        assert good.status_code == 303 and good.headers["location"] == "/admin/branding?done=logo-saved"
        logo = current_settings(store.settings, store.engine).branding.logo_url
        assert client.get(logo.split("testserver", 1)[-1].replace(store.settings.web.base_url, "")).content == png()
    store.engine.dispose()


def test_the_admin_pages_of_a_provisioned_site_are_read_only(admin_for):
    store, client = admin_for(schedule={"cron": "0 8 * * tue"}, branding={"accent_color": "#0b6e4f"})
    with client:
        page = client.get("/admin/schedule")
        assert "Managed in digest.toml" in page.text and 'action="/admin/schedule"' not in page.text
        branding = client.get("/admin/branding")
        assert "managed in digest.toml" in branding.text and 'action="/admin/branding"' not in branding.text
        refused = client.post("/admin/schedule", data={"csrf_token": csrf_of(page.text), "version": "0", **WEEKLY})
        assert refused.status_code == 409 and "managed in digest.toml" in refused.text
    assert current_settings(store.settings, store.engine).schedule.cron == "0 8 * * tue"
    store.engine.dispose()


# --- a branded edition keeps the size, validity and accessibility bars ----------------------------------

HTML_VALIDATE = Path(__file__).resolve().parent / "node_modules" / ".bin" / "html-validate"
AXE = Path(__file__).resolve().parent / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture(scope="module")
def branded_html(tmp_path_factory) -> str:
    settings = make_settings(tmp_path_factory.mktemp("branded"))
    settings = replace(settings, branding=replace(
        settings.branding, logo_url="https://www.example.org/logo.png", logo_alt="Europa Progressiva logo",
        accent_color="#7a0019", footer_text="Written in Brussels, every Monday.", postal_address="Rue Neuve 2"))
    issue = demo_issue()
    return render_edition(issue, all_sections(issue, "fr"), settings).html


def test_a_branded_edition_is_valid_html_under_90_kib(branded_html, tmp_path):
    if not HTML_VALIDATE.exists():
        pytest.skip(f"{HTML_VALIDATE} missing: run `make test` (npm install in tests/)")
    assert len(branded_html.encode()) <= 90 * 1024
    path = tmp_path / "branded.html"
    path.write_text(branded_html, encoding="utf-8")
    result = subprocess.run([str(HTML_VALIDATE), "--config", str(Path(__file__).resolve().parent / "htmlvalidate.json"),
                             str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.browser
def test_a_branded_edition_passes_axe_light_and_dark(branded_html, browser):
    if not AXE.exists():
        pytest.skip(f"{AXE} missing: run `make test` (npm install in tests/)")
    problems = []
    for scheme in ("light", "dark"):
        context = browser.new_context(color_scheme=scheme, viewport={"width": 600, "height": 900})
        page = context.new_page()
        page.route("**/*", lambda route: route.abort())  # no network: the logo simply fails to load
        page.set_content(branded_html, wait_until="domcontentloaded")
        page.add_script_tag(path=str(AXE))
        for width in (600, 375):
            page.set_viewport_size({"width": width, "height": 900})
            found = page.evaluate("axe.run(document, {resultTypes: ['violations']})")["violations"]
            problems += [(scheme, width, v["id"]) for v in found if v["impact"] in ("serious", "critical")]
        brand = page.evaluate("getComputedStyle(document.querySelector('a.brand')).color")
        assert brand == ("rgb(122, 0, 25)" if scheme == "light" else _rgb(check_accent("#7a0019").dark_colour))
        context.close()
    assert problems == []


def _rgb(colour: str) -> str:
    return "rgb({}, {}, {})".format(*(int(colour[i:i + 2], 16) for i in (1, 3, 5)))
