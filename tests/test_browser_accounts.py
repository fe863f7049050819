"""Staff accounts in headless Chromium against uvicorn and aiosmtpd: the shared password becomes the first
admin account, the admin invites an editor, who follows the emailed link, chooses a password and signs
in; a reset asked for on the sign-in page works; disabling the editor ends their open session. axe-core
checks each page on the way."""

from __future__ import annotations

import re
import time

import pytest
from admin_fixtures import PASSWORD, PASSWORD_HASH, admin_store
from browser_checks import AXE, axe_problems
from conftest import free_port, make_settings, serving

from digest.pipeline import accounts, issues
from digest.store import open_store
from digest.web.app import create_app

pytestmark = pytest.mark.browser
EDITOR_PASSWORD = "the editor's passphrase"


@pytest.fixture
def served(tmp_path, sqlite_url, smtp_server, monkeypatch):
    """(base URL, settings, engine) of the app served by uvicorn, mailing via aiosmtpd."""
    monkeypatch.setenv("DIGEST_SECRET", "browser-accounts-secret")
    monkeypatch.delenv("DIGEST_ADMIN_PASSWORD_HASH", raising=False)
    port = free_port()
    settings = make_settings(tmp_path, sqlite_url, web={"base_url": f"http://127.0.0.1:{port}",
                                                        "admin_password_hash": PASSWORD_HASH},
                             delivery={"transport": "smtp", "smtp": {"host": smtp_server.host, "port": smtp_server.port}})
    engine = open_store(settings.store.url)
    with serving(create_app(settings, engine), port):
        yield settings.web.base_url, settings, engine
    engine.dispose()


def mail_link(smtp_server, address: str, count: int = 1) -> str:
    """The set-password link in the `count`-th email to `address`, once it arrived."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = smtp_server.for_recipient(address)
        if len(found) >= count:
            text = found[count - 1].get_body(("plain",)).get_content()
            return re.search(r"http://127\.0\.0\.1:\d+/admin/password/\S+", text).group(0)
        time.sleep(0.1)
    pytest.fail(f"no email number {count} for {address} reached the SMTP server")


def sign_in(page, base: str, email: str, password: str) -> None:
    page.goto(f"{base}/admin/login")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/admin/issues")


@pytest.mark.skipif(not AXE.exists(), reason="axe-core not installed (npm ci in tests/)")
def test_accounts_from_the_shared_password_to_an_invited_editor(browser, served, smtp_server, artefacts):
    base, settings, engine = served
    # axe is injected as a script, which the pages' CSP rightly forbids: bypass it for this test only.
    chief_context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    editor_context = browser.new_context(viewport={"width": 390, "height": 844}, bypass_csp=True)
    problems: dict[str, list] = {}
    try:
        chief = chief_context.new_page()
        # Today's sign-in: a name and the shared password.
        chief.goto(f"{base}/admin/login")
        chief.fill("#name", "Chief")
        chief.fill("#password", PASSWORD)
        chief.get_by_role("button", name="Sign in").click()
        chief.wait_for_url(f"{base}/admin/issues")
        chief.get_by_role("link", name="Accounts").click()
        problems["accounts (shared password)"] = axe_problems(chief)
        chief.get_by_label("Your email address").fill("chief@example.org")
        chief.get_by_role("button", name="Make my admin account").click()
        chief.get_by_text("Your account is made").wait_for()
        problems["login with accounts"] = axe_problems(chief)
        sign_in(chief, base, "chief@example.org", PASSWORD)

        # Invite an editor.
        chief.get_by_role("link", name="Accounts").click()
        chief.get_by_label("Email address").fill("eda@example.org")
        chief.get_by_label("Name (optional)").fill("Eda")
        chief.get_by_label("Role", exact=True).select_option("editor")
        chief.get_by_role("button", name="Send the invitation").click()
        chief.get_by_text("Invitation sent").wait_for()
        chief.reload()  # Post/Redirect/Get: a reload sends nothing again
        problems["accounts"] = axe_problems(chief)
        chief.screenshot(path=str(artefacts / "admin-accounts.png"), full_page=True)

        # The editor follows the emailed link, chooses a password, signs in (at phone width).
        editor = editor_context.new_page()
        editor.goto(mail_link(smtp_server, "eda@example.org"))
        problems["choose a password"] = axe_problems(editor)
        editor.get_by_label("New password").fill(EDITOR_PASSWORD)
        editor.get_by_label("The same password again").fill(EDITOR_PASSWORD)
        editor.get_by_role("button", name="Save the password").click()
        editor.get_by_text("Your password is saved").wait_for()
        sign_in(editor, base, "eda@example.org", EDITOR_PASSWORD)
        assert editor.get_by_role("link", name="Accounts").count() == 0
        assert len(smtp_server.for_recipient("eda@example.org")) == 1

        # A reset asked for on the sign-in page.
        editor.get_by_role("button", name="Sign out").click()
        editor.get_by_role("link", name="Forgot your password?").click()
        problems["forgot"] = axe_problems(editor)
        editor.get_by_label("Email address").fill("eda@example.org")
        editor.get_by_role("button", name="Email me a link").click()
        editor.get_by_text("If that address has an account").wait_for()
        editor.goto(mail_link(smtp_server, "eda@example.org", count=2))
        editor.get_by_label("New password").fill("the editor's new passphrase")
        editor.get_by_label("The same password again").fill("the editor's new passphrase")
        editor.get_by_role("button", name="Save the password").click()
        sign_in(editor, base, "eda@example.org", "the editor's new passphrase")

        # Disabling the editor ends the session open in the other browser.
        chief.get_by_role("button", name="Disable eda@example.org").click()
        chief.get_by_text("Account disabled").wait_for()
        editor.reload()
        editor.get_by_label("Email address").wait_for()
        assert "/admin/issues" in editor.url and editor.get_by_role("button", name="Sign in").is_visible()
        assert accounts.find_account(engine, "eda@example.org").disabled
    finally:
        chief_context.close()
        editor_context.close()
    assert {page: found for page, found in problems.items() if found} == {}


@pytest.fixture
def draft_served(tmp_path, sqlite_url, monkeypatch):
    """The admin with draft 1 built from the fixture feeds, an editor and an approver."""
    monkeypatch.setenv("DIGEST_SECRET", "browser-roles-secret")
    port = free_port()
    store = admin_store(tmp_path, sqlite_url, web={"base_url": f"http://127.0.0.1:{port}"})
    for email, role in (("ed@example.org", "editor"), ("ap@example.org", "approver")):
        accounts.add_account(store.settings, store.engine, email, role, password=EDITOR_PASSWORD)
    with serving(create_app(store.settings, store.engine), port):
        yield f"http://127.0.0.1:{port}", store


def test_an_editor_cannot_approve_and_an_approver_can(browser, draft_served, artefacts):
    base, store = draft_served
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=AXE.exists())
    try:
        page = context.new_page()
        sign_in(page, base, "ed@example.org", EDITOR_PASSWORD)
        page.goto(f"{base}/admin/issues/1")
        button = page.locator("#approve")
        assert button.is_disabled()
        assert page.locator("#approve-why").inner_text() == \
            "Only approvers and admins may approve; ed@example.org is an editor."
        if AXE.exists():
            assert axe_problems(page) == []
        # Forcing the form past the disabled button changes nothing.
        page.evaluate("document.querySelector('#approve').disabled = false")
        button.click()
        page.get_by_text("Only approvers and admins may approve").wait_for()
        assert issues.issue_summary(store.engine, 1).status.value == "draft"
        page.get_by_role("button", name="Sign out").click()

        sign_in(page, base, "ap@example.org", EDITOR_PASSWORD)
        page.goto(f"{base}/admin/issues/1")
        page.locator("#approve").click()
        page.get_by_text("Approved.").wait_for()
        assert issues.issue_summary(store.engine, 1).approved_by == "ap@example.org"
    finally:
        context.close()
