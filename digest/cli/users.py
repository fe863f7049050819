"""`digest users …`: staff accounts from the server's command line (no sign-in needed: whoever can
run it can read the store anyway, so an install is never locked out)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import click

from ..pipeline.accounts import (
    AccountError,
    AccountExists,
    add_account,
    change_role,
    disable_account,
    enable_account,
    list_accounts,
    password_link,
    remove_account,
    set_password,
)
from ..pipeline.tokens import issue_token, list_tokens, revoke_token
from .base import EXIT_USAGE, fail, handle_errors, main, print_json, state

P = ParamSpec("P")
R = TypeVar("R")
ROLES = click.Choice(["editor", "approver", "admin"], case_sensitive=False)


@main.group("users")
def users_group() -> None:
    """Staff accounts: who signs in to the admin, and their role (editor, approver, admin)."""


def _account_errors(func: Callable[P, R]) -> Callable[P, R]:
    """An account change that cannot be made: its message and exit 2, nothing changed."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (AccountError, AccountExists) as exc:
            fail(str(exc), EXIT_USAGE)

    return wrapper


def _stdin_password() -> str:
    return sys.stdin.readline().rstrip("\r\n")


@users_group.command("add")
@click.argument("email")
@click.option("--role", type=ROLES, required=True, help="editor, approver or admin.")
@click.option("--name", default="", help="Display name (shown with approvals and in the audit trail).")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
@click.option("--from-admin-password", is_flag=True,
              help="Give the account the shared admin password (web.admin_password_hash): the one-step upgrade.")
@handle_errors
@_account_errors
def add_command(email: str, role: str, name: str, password_stdin: bool, from_admin_password: bool) -> None:
    """Make an account; prints a one-time link to set its password unless one is given."""
    if password_stdin and from_admin_password:
        fail("use --password-stdin or --from-admin-password, not both", EXIT_USAGE)
    settings, engine = state().settings, state().engine
    made = add_account(settings, engine, email, role, name=name,
                       password=_stdin_password() if password_stdin else None, from_admin_password=from_admin_password)
    click.echo(f"Added {made.account.email} as {made.account.role.value}.")
    if made.link:
        click.echo(f"Set-password link (works once, for 72 hours): {made.link}")
    if from_admin_password:
        click.echo("The shared admin password now signs in only as this account: sign in with its email address.")


@users_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def list_command(as_json: bool) -> None:
    """List the accounts and their roles."""
    found = list_accounts(state().engine)
    if as_json:
        print_json([{"email": a.email, "name": a.name, "role": a.role.value, "disabled": a.disabled,
                     "password_set": a.has_password} for a in found])
        return
    if not found:
        click.echo("No accounts: the shared admin password signs in. `digest users add EMAIL --role admin` makes one.")
    for a in found:
        state_ = "disabled" if a.disabled else ("active" if a.has_password else "invited (no password yet)")
        click.echo(f"{a.email}\t{a.role.value}\t{state_}\t{a.name}")


@users_group.command("role")
@click.argument("email")
@click.argument("role", type=ROLES)
@handle_errors
@_account_errors
def role_command(email: str, role: str) -> None:
    """Change an account's role (its sessions end)."""
    account = change_role(state().engine, email, role)
    click.echo(f"{account.email} is now {account.role.value}.")


@users_group.command("disable")
@click.argument("email")
@handle_errors
@_account_errors
def disable_command(email: str) -> None:
    """Disable an account: it signs in nowhere and its open sessions end."""
    click.echo(f"{disable_account(state().engine, email).email} is disabled.")


@users_group.command("enable")
@click.argument("email")
@handle_errors
@_account_errors
def enable_command(email: str) -> None:
    """Enable a disabled account again."""
    click.echo(f"{enable_account(state().engine, email).email} is enabled.")


@users_group.command("remove")
@click.argument("email")
@handle_errors
@_account_errors
def remove_command(email: str) -> None:
    """Delete an account (what it approved keeps its name)."""
    click.echo(f"{remove_account(state().engine, email).email} is removed.")


@users_group.command("password")
@click.argument("email")
@click.option("--password-stdin", is_flag=True, help="Read the new password from standard input instead of "
                                                     "printing a set-password link.")
@handle_errors
@_account_errors
def password_command(email: str, password_stdin: bool) -> None:
    """Print a new one-time set-password link (a reset), or set the password from stdin; sessions end."""
    settings, engine = state().settings, state().engine
    if password_stdin:
        click.echo(f"Password set for {set_password(engine, email, _stdin_password()).email}.")
    else:
        click.echo(f"Set-password link (works once, for 72 hours): {password_link(settings, engine, email)}")


@users_group.command("token")
@click.argument("email")
@click.option("--name", default="", help="What the token is for, e.g. \"website\" (shown in listings).")
@handle_errors
@_account_errors
def token_command(email: str, name: str) -> None:
    """Make an API token for an account; it is printed this once (only its hash is kept)."""
    made = issue_token(state().engine, email, name)
    click.echo(f"Token {made.id} for {made.account.email} ({made.account.role.value}); it is shown only now:")
    click.echo(made.secret)


@users_group.command("tokens")
@click.argument("email", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def tokens_command(email: str | None, as_json: bool) -> None:
    """List API tokens (all, or one account's): id, account, name, when made, used and revoked."""
    found = list_tokens(state().engine, email)
    rows = [{"id": t.id, "account": t.account_email, "name": t.name, "created_at": t.created_at.isoformat(),
             "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
             "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None} for t in found]
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("No API tokens. `digest users token EMAIL` makes one.")
    for r in rows:
        state_ = f"revoked {r['revoked_at'][:16]}" if r["revoked_at"] else "live"
        click.echo(f"{r['id']}\t{r['account']}\t{state_}\t{r['name']}")


@users_group.command("revoke-token")
@click.argument("token_id", type=int)
@handle_errors
@_account_errors
def revoke_token_command(token_id: int) -> None:
    """Revoke an API token at once (see `digest users tokens` for ids)."""
    found = revoke_token(state().engine, token_id)
    click.echo(f"Token {found.id} of {found.account_email} is revoked.")
