"""Use case: accounts. Who may use the admin and the command line's approvals, with which role.

Rules that live here and nowhere else:
- roles: an editor builds, edits, previews, sends tests and reads reports; an approver also
  approves, schedules, sends and cancels; an admin also manages accounts, settings, subscriber
  erasure and API tokens (`ROLE_NEEDED`, checked by `require`);
- the shared admin password ($DIGEST_ADMIN_PASSWORD_HASH, else `web.admin_password_hash`) signs
  in, as an admin, only while the store holds no account; `digest users add EMAIL --role admin
  --from-admin-password` turns it into the first admin account in one step;
- no install is locked out: the last enabled admin who has a password cannot be disabled, demoted
  or removed, and `digest users add` on the server needs no sign-in;
- disabling an account, changing its role or its password ends its sessions everywhere;
- a set-password link (invite or reset) is signed, expires after PASSWORD_LINK_HOURS and works
  once: using it, or making a new one, retires the old;
- a signed-out session stays refused until its cookie would have expired, on every process.
"""

from __future__ import annotations

import functools
import logging
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import parseaddr

from sqlalchemy import Engine

from ..addresses import address_problem
from ..config import Settings
from ..deliver.dkim import DkimError
from ..deliver.message import HeaderError
from ..deliver.notes import account_link_message
from ..deliver.outbox import TransportFactory, deliver_now
from ..deliver.transport import TransportError
from ..models import Account, Role
from ..passwords import PasswordHashError, configured_hash, hash_password, verify_password
from ..signing import SET_PASSWORD, TokenSigner
from ..store import accounts as account_store
from ..store import sessions as session_store
from ..store.accounts import AccountExists
from .audit import record

log = logging.getLogger(__name__)

__all__ = ["AccountError", "AccountExists", "NotAllowed", "PasswordHashError", "ROLE_NEEDED", "add_account",
           "admin_password_hash", "change_role", "check_admin_password", "hash_password", "password_link",
           "require", "revoke_session", "session_revoked", "sign_in"]

PASSWORD_LINK_HOURS = 72
MIN_PASSWORD_LENGTH = 8
_RANK = {Role.EDITOR: 0, Role.APPROVER: 1, Role.ADMIN: 2}
# What each action needs at least. Front doors name the action; the rule is here.
ROLE_NEEDED = {
    "build": Role.EDITOR, "edit": Role.EDITOR, "preview": Role.EDITOR, "test_send": Role.EDITOR,
    "read_reports": Role.EDITOR,
    "approve": Role.APPROVER, "schedule": Role.APPROVER, "send": Role.APPROVER, "cancel": Role.APPROVER,
    "accounts": Role.ADMIN, "settings": Role.ADMIN, "erase": Role.ADMIN, "tokens": Role.ADMIN,
}
_DOING = {"test_send": "send tests", "read_reports": "read reports", "accounts": "manage accounts",
          "settings": "change settings", "erase": "erase subscribers", "tokens": "manage API tokens"}
_ARTICLE = {Role.EDITOR: "an editor", Role.APPROVER: "an approver", Role.ADMIN: "an admin"}
_WHO = {Role.EDITOR: "staff", Role.APPROVER: "approvers and admins", Role.ADMIN: "admins"}
# The shared password's session has no account row: it acts as an admin until accounts exist.
SHARED_PASSWORD_EMAIL = ""


class AccountError(ValueError):
    """An account change that cannot be made; the message says why and what to do."""


class NotAllowed(PermissionError):
    """The account's role does not allow the action; the message names the role needed."""


def parse_role(value: str) -> Role:
    """A role from its name; AccountError naming the roles otherwise."""
    try:
        return Role(value.strip().lower())
    except ValueError:
        raise AccountError(f"{value!r} is not a role: use editor, approver or admin") from None


def may(actor: Account, action: str) -> bool:
    """Whether the actor's role allows `action` (a key of ROLE_NEEDED); a disabled account may nothing."""
    return not actor.disabled and _RANK[actor.role] >= _RANK[ROLE_NEEDED[action]]


def test_recipients_allowed(settings: Settings, actor: Account, recipients: list[str]) -> None:
    """A staff account sends tests to itself or the staff list (`schedule.staff`); NotAllowed otherwise.

    Tests carry a draft before anyone approved it: they go to the team, never to an outside address.
    """
    allowed = {actor.email.lower()} | {parseaddr(entry)[1].lower() for entry in settings.schedule.staff}
    for address in recipients:
        if address.strip().lower() not in allowed:
            raise NotAllowed(f"a test goes to your own address ({actor.email}) or the staff list (schedule.staff); "
                             f"{address.strip()} is neither")


def why_not(actor: Account, action: str) -> str:
    """Why the actor may not do `action`, as a sentence for a page; '' when they may."""
    try:
        require(actor, action)
    except NotAllowed as exc:
        text = str(exc)
        return text[:1].upper() + text[1:] + "."
    return ""


def require(actor: Account, action: str) -> None:
    """NotAllowed unless the actor may do `action`, saying who may and what the actor is."""
    if not may(actor, action):
        needed = ROLE_NEEDED[action]
        raise NotAllowed(f"only {_WHO[needed]} may {_DOING.get(action, action)}; "
                         f"{actor.label or 'this account'} is {_ARTICLE[actor.role]}")


# --- accounts -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NewAccount:
    """An account just made, and its set-password link ('' when a password was given)."""

    account: Account
    link: str = ""


def add_account(settings: Settings, engine: Engine, email: str, role: Role | str, name: str = "",
                password: str | None = None, from_admin_password: bool = False,
                now: datetime | None = None, actor: Account | None = None) -> NewAccount:
    """Make a staff account: with a password, the shared admin password's hash, or a set-password link.

    AccountError for a bad address, role or password; AccountExists when the address has one.
    """
    now = now or datetime.now(UTC)
    email = _checked_email(email)
    role = parse_role(role) if isinstance(role, str) else role
    name = _checked_name(name)
    nonce, encoded = "", ""
    if from_admin_password:
        encoded = admin_password_hash(settings)
        if not encoded:
            raise AccountError("no shared admin password is set (web.admin_password_hash or "
                               "$DIGEST_ADMIN_PASSWORD_HASH): give the account a password or a link instead")
    elif password is not None:
        encoded = hash_password(_checked_password(password))
    else:
        nonce = secrets.token_urlsafe(24)
    account = account_store.add_account(engine, email, name, role, encoded, nonce, now)
    how = "shared admin password" if from_admin_password else ("password" if encoded else "set-password link")
    record(engine, actor, "account.add", target=account.email, detail={"role": role.value, "with": how}, now=now)
    return NewAccount(account, _link(settings, account.id, nonce) if nonce else "")


def list_accounts(engine: Engine) -> list[Account]:
    return account_store.list_accounts(engine)


def find_account(engine: Engine, email: str) -> Account | None:
    return account_store.get_account(engine, email.strip().lower())


def accounts_in_use(engine: Engine) -> bool:
    """Whether staff sign in with accounts (else with the shared admin password)."""
    return account_store.count_accounts(engine) > 0


def change_role(engine: Engine, email: str, role: Role | str, now: datetime | None = None,
                actor: Account | None = None) -> Account:
    """Give an account another role; its sessions end. AccountError for the last admin.

    `actor`: who asks (the admin pages); None is the server's command line. NotAllowed unless an admin.
    """
    _require_admin(actor)
    account = _existing(engine, email)
    role = parse_role(role) if isinstance(role, str) else role
    if role == account.role:
        return account
    _keep_an_admin(engine, account)
    account_store.update_account(engine, account.id, now or datetime.now(UTC), True, role=role.value)
    record(engine, actor, "account.role", target=account.email, detail={"from": account.role.value, "to": role.value})
    return replace(account, role=role)


def disable_account(engine: Engine, email: str, now: datetime | None = None, actor: Account | None = None) -> Account:
    """Disable an account (it signs in nowhere; its sessions end). AccountError for the last admin."""
    _require_admin(actor)
    account = _existing(engine, email)
    now = now or datetime.now(UTC)
    if not account.disabled:
        _keep_an_admin(engine, account)
        account_store.update_account(engine, account.id, now, True, disabled_at=now)
        record(engine, actor, "account.disable", target=account.email, now=now)
    return replace(account, disabled=True)


def enable_account(engine: Engine, email: str, now: datetime | None = None, actor: Account | None = None) -> Account:
    """Enable a disabled account again (it signs in with the password it had)."""
    _require_admin(actor)
    account = _existing(engine, email)
    if account.disabled:
        account_store.update_account(engine, account.id, now or datetime.now(UTC), True, disabled_at=None)
        record(engine, actor, "account.enable", target=account.email)
    return replace(account, disabled=False)


def remove_account(engine: Engine, email: str, actor: Account | None = None) -> Account:
    """Delete an account; what it approved keeps its name. AccountError for the last admin."""
    _require_admin(actor)
    account = _existing(engine, email)
    _keep_an_admin(engine, account)
    account_store.remove_account(engine, account.id)
    record(engine, actor, "account.remove", target=account.email, detail={"role": account.role.value})
    return account


def set_password(engine: Engine, email: str, password: str, now: datetime | None = None) -> Account:
    """Set an account's password directly (the command line); its sessions and links end."""
    account = _existing(engine, email)
    account_store.update_account(engine, account.id, now or datetime.now(UTC), True,
                                 password_hash=hash_password(_checked_password(password)), password_nonce="")
    record(engine, None, "account.password", target=account.email, detail={"how": "command line"})
    return replace(account, has_password=True)


def adopt_shared_password(settings: Settings, engine: Engine, actor: Account, email: str, name: str = "",
                          now: datetime | None = None) -> Account:
    """Turn the shared admin password into the first admin account (the one-step upgrade, from the admin).

    Only the shared password's own session may, and only while no account exists; afterwards that
    password signs in only as this account, with its email address.
    """
    require(actor, "accounts")
    if actor.id is not None or accounts_in_use(engine):
        raise AccountError("accounts are in use already: invite people from the accounts page")
    return add_account(settings, engine, email, Role.ADMIN, name=name, from_admin_password=True, now=now,
                       actor=actor).account


def invite_account(settings: Settings, engine: Engine, actor: Account, email: str, role: Role | str, name: str = "",
                   make_transport: TransportFactory | None = None, now: datetime | None = None) -> Account:
    """Make an account and email it a set-password link, through the one message builder.

    NotAllowed unless `actor` is an admin; AccountError when the email could not be sent (the
    account is then not kept, so the invitation can simply be tried again).
    """
    require(actor, "accounts")
    if not accounts_in_use(engine):
        # The shared password stops signing in once an account exists: the first one must be made from it.
        raise AccountError("make the first admin account from the shared password first (above), then invite people")
    made = add_account(settings, engine, email, role, name=name, now=now, actor=actor)
    problem = _send_link(settings, made.account.email, made.link, True, make_transport)
    if problem:
        account_store.remove_account(engine, made.account.id)
        record(engine, actor, "account.remove", target=made.account.email, detail={"why": "invitation not sent"})
        raise AccountError(f"the invitation to {made.account.email} could not be sent ({problem}); "
                           "no account was made: check the mail settings and try again")
    return made.account


def email_password_link(settings: Settings, engine: Engine, email: str,
                        make_transport: TransportFactory | None = None, actor: Account | None = None) -> bool:
    """Email a reset link to an enabled account; False when there is none or the email failed.

    Without `actor` this is "forgot my password" on the sign-in page, whose answer must be the same
    either way (it never tells whether an address has an account). With one, only an admin may.
    """
    if actor is not None:
        require(actor, "accounts")
    account = find_account(engine, email)
    if account is None or account.disabled:
        return False
    link = password_link(settings, engine, account.email, actor=actor or account)
    problem = _send_link(settings, account.email, link, False, make_transport)
    if problem:
        log.warning("the password reset email to %s could not be sent: %s", account.email, problem)
    return not problem


def _send_link(settings: Settings, to: str, link: str, invite: bool, make_transport: TransportFactory | None) -> str:
    """'' once the link's email is accepted, else why not."""
    try:
        message = account_link_message(settings, to, link, PASSWORD_LINK_HOURS, invite)
        (result,) = deliver_now(settings, [message], make_transport)
    except (HeaderError, DkimError, TransportError, OSError) as exc:
        return str(exc)
    return "" if result.ok else result.error


def _require_admin(actor: Account | None) -> None:
    if actor is not None:
        require(actor, "accounts")


# --- set-password links -----------------------------------------------------------------------------

def password_link(settings: Settings, engine: Engine, email: str, now: datetime | None = None,
                  actor: Account | None = None) -> str:
    """A new set-password link for an enabled account (a reset); any older link stops working."""
    account = _existing(engine, email)
    if account.disabled:
        raise AccountError(f"{account.email} is disabled: `digest users enable {account.email}` first")
    nonce = secrets.token_urlsafe(24)
    account_store.update_account(engine, account.id, now or datetime.now(UTC), False, password_nonce=nonce)
    record(engine, actor, "account.reset_link", target=account.email)
    return _link(settings, account.id, nonce)


def read_password_link(settings: Settings, engine: Engine, token: str) -> Account | None:
    """The account a set-password link is for; None if forged, expired, used, replaced or disabled."""
    found = _link_payload(settings, token)
    if found is None:
        return None
    account = account_store.get_account(engine, found[0])
    if account is None or account.disabled:
        return None
    stored = account_store.password_nonce_of(engine, account.id)
    return account if stored and secrets.compare_digest(stored, found[1]) else None


def set_password_by_link(settings: Settings, engine: Engine, token: str, password: str,
                         now: datetime | None = None) -> Account:
    """Set the password a link allows, once; AccountError for a bad password or a dead link."""
    checked = _checked_password(password)
    found = _link_payload(settings, token)
    account = read_password_link(settings, engine, token)
    if found is None or account is None or not account_store.use_password_nonce(
            engine, account.id, found[1], hash_password(checked), now or datetime.now(UTC)):
        raise AccountError("this link is not valid any more (used, replaced or expired): ask an admin for a new one")
    record(engine, account, "account.password", target=account.email, detail={"how": "link"})
    return replace(account, has_password=True)


def _link(settings: Settings, account_id: int, nonce: str) -> str:
    return TokenSigner(settings).url(SET_PASSWORD, {"a": account_id, "n": nonce})


def _link_payload(settings: Settings, token: str) -> tuple[int, str] | None:
    data = TokenSigner(settings).load(SET_PASSWORD, token, max_age=PASSWORD_LINK_HOURS * 3600)
    if not isinstance(data, dict) or type(data.get("a")) is not int or not isinstance(data.get("n"), str):
        return None
    return data["a"], data["n"]


def command_line_actor(engine: Engine, as_email: str | None, by: str) -> Account:
    """Who a command run on the server acts as: the account `--as` names (checked against the store).

    Once a site has accounts, a command that records a person (`digest approve`) must name an
    enabled account: AccountError otherwise. Before that, `by` (a name, the login) is recorded, as
    with the shared password.
    """
    if as_email:
        account = find_account(engine, as_email)
        if account is None or account.disabled:
            raise AccountError(f"there is no enabled account {as_email.strip()!r}; `digest users list` shows them")
        return account
    if accounts_in_use(engine):
        raise AccountError("this site has staff accounts: say whose approval this is with --as EMAIL")
    return Account(email="", role=Role.ADMIN, name=by)


# --- signing in -------------------------------------------------------------------------------------

def sign_in(settings: Settings, engine: Engine, email: str, password: str) -> Account | None:
    """The account these credentials open, or None; PasswordHashError for a malformed shared hash.

    While no account exists the shared admin password opens an admin session named by `email`
    (today's free-text name); once one exists, only accounts do.
    """
    if not accounts_in_use(engine):
        if check_admin_password(settings, password):
            return Account(email=SHARED_PASSWORD_EMAIL, role=Role.ADMIN, name=email.strip()[:100] or "admin")
        return None
    account = account_store.get_account(engine, email.strip().lower())
    encoded = account_store.password_hash_of(engine, account.id) if account else ""
    # An unknown address costs the same scrypt as a wrong password: the answer's time tells nothing.
    ok = verify_password(password, encoded or _dummy_hash())
    return account if ok and account is not None and encoded and not account.disabled else None


def session_account(engine: Engine, account_id: int, signed_at: datetime) -> Account | None:
    """The account behind a session cookie signed at `signed_at`, or None once its sessions ended."""
    after = account_store.sessions_after(engine, account_id)
    if after is None or signed_at < after:
        return None
    return account_store.get_account(engine, account_id)


def admin_password_hash(settings: Settings) -> str:
    """The shared admin password's hash in force ('' when none is set)."""
    return configured_hash(settings.web.admin_password_hash)


def check_admin_password(settings: Settings, password: str) -> bool:
    """True if `password` is the shared one; False when no hash is set; PasswordHashError for a malformed hash."""
    encoded = admin_password_hash(settings)
    return bool(encoded) and verify_password(password, encoded)


def revoke_session(engine: Engine, session_id: str, expires_at: datetime, now: datetime | None = None) -> None:
    """Sign a session out everywhere until `expires_at` (when its cookie expires anyway); idempotent."""
    session_store.revoke_session(engine, session_id, expires_at, now or datetime.now(UTC))


def session_revoked(engine: Engine, session_id: str) -> bool:
    """Whether the session was signed out."""
    return session_store.session_revoked(engine, session_id)


# --- checks -------------------------------------------------------------------------------------------

def _existing(engine: Engine, email: str) -> Account:
    account = find_account(engine, email)
    if account is None:
        raise AccountError(f"there is no account {email.strip()!r}; `digest users list` shows them")
    return account


def _keep_an_admin(engine: Engine, account: Account) -> None:
    # Counting before the change: this one is among them when it is an enabled admin with a password.
    if account.role == Role.ADMIN and not account.disabled and account.has_password \
            and account_store.count_active_admins(engine) <= 1:
        raise AccountError(f"{account.email} is the last admin who can sign in: make another admin first, "
                           "so that someone can still manage accounts")


def _checked_email(email: str) -> str:
    email = email.strip().lower()
    if problem := address_problem(email):
        raise AccountError(f"{email!r} is not an email address: {problem}")
    return email


def _checked_name(name: str) -> str:
    name = " ".join(name.split())
    if len(name) > 100 or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise AccountError("the name must be one line of at most 100 characters")
    return name


def _checked_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > 1024:
        raise AccountError("the password must have at most 1024 characters")
    return password


@functools.cache
def _dummy_hash() -> str:
    """A hash no password matches, made once (scrypt costs as much as a real check)."""
    return hash_password(secrets.token_urlsafe(16))
