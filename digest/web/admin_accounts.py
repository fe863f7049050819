"""Admin pages for staff accounts: the accounts page (admins), set-password links, "forgot my password".

URLs: GET /admin/accounts · POST /admin/accounts/invite · POST /admin/accounts/adopt (the first
admin account, from the shared password) · POST /admin/accounts/{action} (role,
disable, enable, remove, reset; the account's email in the form) · GET/POST /admin/password/TOKEN
(an invite or reset link: no session needed, the token is the proof) · GET/POST /admin/forgot.
Every form answers with a redirect (Post/Redirect/Get), so a reload changes nothing. Who may do
what is pipeline.accounts' rule; this module only shows its answer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..pipeline import accounts, tokens
from ..pipeline.accounts import AccountError, AccountExists, NotAllowed
from .admin import Admin, AdminSession, Handler, message, page, redirect_to
from .security import RateLimiter, client_ip, read_form

CHANGES = {"role": "role-changed", "disable": "disabled", "enable": "enabled", "remove": "removed", "reset": "reset"}
# "Forgot my password" sends email: a few per client and minute, whatever the address.
FORGOT_RATE_PER_MINUTE, FORGOT_BURST = 2.0, 3


def routes(admin: Admin, get: Callable[[Handler], Callable], post: Callable[[Handler], Callable]) -> list[BaseRoute]:
    """The account routes, wrapped like every other admin route (session, CSRF) where they need one."""
    forgot_limit = RateLimiter(FORGOT_RATE_PER_MINUTE, FORGOT_BURST)
    return [
        Route("/admin/accounts", get(accounts_page, action="accounts")),
        Route("/admin/accounts/invite", post(post_invite, action="accounts"), methods=["POST"]),
        Route("/admin/accounts/adopt", post(post_adopt, action="accounts"), methods=["POST"]),
        Route("/admin/accounts/token", post(post_token, action="tokens"), methods=["POST"]),
        Route("/admin/accounts/revoke-token", post(post_revoke_token, action="tokens"), methods=["POST"]),
        Route("/admin/accounts/{action:str}", post(post_change, action="accounts"), methods=["POST"]),
        Route("/admin/password/{token:str}", functools.partial(password_page, admin), methods=["GET"]),
        Route("/admin/password/{token:str}", functools.partial(post_password, admin), methods=["POST"]),
        Route("/admin/forgot", functools.partial(forgot_page, admin), methods=["GET"]),
        Route("/admin/forgot", functools.partial(post_forgot, admin, forgot_limit), methods=["POST"]),
    ]


def _sentence(exc: Exception) -> str:
    """A use case's message as a sentence (str.capitalize would lower-case "API" and names)."""
    text = str(exc)
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _refused(admin: Admin, request: Request, session: AdminSession, exc: Exception) -> Response:
    return message(admin, request, session, 403, "Not allowed", _sentence(exc), back="/admin/issues")


async def accounts_page(admin: Admin, request: Request, session: AdminSession, error: str = "",
                        status_code: int = 200, new_token: tokens.NewToken | None = None) -> Response:
    """The accounts, their roles and states, the invite form and the API tokens (admins only: the route says so)."""
    found = await run_in_threadpool(accounts.list_accounts, admin.engine)
    api_tokens = await run_in_threadpool(tokens.list_tokens, admin.engine)
    return page(admin, request, "admin/accounts.html", {"accounts": found, "active": "accounts", "tokens": api_tokens,
                                                        "new_token": new_token,
                                                        "roles": ("editor", "approver", "admin")},
                session, status_code, notices=[("error", error)] if error else None)


async def post_token(admin: Admin, request: Request, session: AdminSession) -> Response:
    """Make an API token and show it this once (the answer is the page itself: nothing keeps the secret)."""
    form = request.state.form
    try:
        made = await run_in_threadpool(tokens.issue_token, admin.engine, str(form.get("email", "")),
                                       str(form.get("name", "")), session.account)
    except NotAllowed as exc:
        return _refused(admin, request, session, exc)
    except AccountError as exc:
        return await accounts_page(admin, request, session, str(exc), 400)
    return await accounts_page(admin, request, session, new_token=made, status_code=201)


async def post_revoke_token(admin: Admin, request: Request, session: AdminSession) -> Response:
    raw = str(request.state.form.get("token", ""))
    try:
        await run_in_threadpool(tokens.revoke_token, admin.engine, int(raw) if raw.isdigit() else -1, session.account)
    except NotAllowed as exc:
        return _refused(admin, request, session, exc)
    except AccountError as exc:
        return await accounts_page(admin, request, session, str(exc), 400)
    return redirect_to("/admin/accounts", "token-revoked")


async def post_invite(admin: Admin, request: Request, session: AdminSession) -> Response:
    form = request.state.form
    try:
        await run_in_threadpool(accounts.invite_account, admin.settings, admin.engine, session.account,
                                str(form.get("email", "")), str(form.get("role", "")), str(form.get("name", "")))
    except NotAllowed as exc:
        return _refused(admin, request, session, exc)
    except (AccountError, AccountExists) as exc:
        return await accounts_page(admin, request, session, str(exc), 400)
    return redirect_to("/admin/accounts", "invited")


async def post_adopt(admin: Admin, request: Request, session: AdminSession) -> Response:
    """Make the first admin account from the shared password; the shared sign-in ends with it."""
    form = request.state.form
    try:
        await run_in_threadpool(accounts.adopt_shared_password, admin.settings, admin.engine, session.account,
                                str(form.get("email", "")), str(form.get("name", "")))
    except NotAllowed as exc:
        return _refused(admin, request, session, exc)
    except (AccountError, AccountExists) as exc:
        return await accounts_page(admin, request, session, str(exc), 400)
    return redirect_to("/admin/login", "adopted")


async def post_change(admin: Admin, request: Request, session: AdminSession) -> Response:
    action = request.path_params["action"]
    if action not in CHANGES:
        return message(admin, request, session, 404, "Not found", "There is no such page.", back="/admin/accounts")
    form = request.state.form
    email = str(form.get("email", ""))
    calls = {
        "role": functools.partial(accounts.change_role, admin.engine, email, str(form.get("role", "")),
                                  actor=session.account),
        "disable": functools.partial(accounts.disable_account, admin.engine, email, actor=session.account),
        "enable": functools.partial(accounts.enable_account, admin.engine, email, actor=session.account),
        "remove": functools.partial(accounts.remove_account, admin.engine, email, actor=session.account),
        "reset": functools.partial(accounts.email_password_link, admin.settings, admin.engine, email,
                                   actor=session.account),
    }
    try:
        done = await run_in_threadpool(calls[action])
    except NotAllowed as exc:
        return _refused(admin, request, session, exc)
    except AccountError as exc:
        return await accounts_page(admin, request, session, str(exc), 400)
    if done is False:  # a reset email that could not go (a disabled account, the mail server)
        return await accounts_page(admin, request, session, f"No reset email went to {email}: the account is "
                                   "disabled, or the mail server refused it (see the log).", 502)
    return redirect_to("/admin/accounts", CHANGES[action])


# --- pages without a session --------------------------------------------------------------------------
# Their forms carry the sign-in form's double-submit token (a cookie and a field that must match), as
# there is no session to bind a CSRF token to.

def _signed_out_page(admin: Admin, request: Request, name: str, context: dict, status_code: int = 200,
                     error: str = "") -> Response:
    cookie = Response()
    token = admin.auth.login_token(request, cookie)
    rendered = page(admin, request, name, {**context, "login_token": token}, None, status_code,
                    notices=[("error", error)] if error else None)
    rendered.raw_headers.extend((k, v) for k, v in cookie.raw_headers if k == b"set-cookie")
    return rendered


def _form_expired(admin: Admin, request: Request, back: str) -> Response:
    return message(admin, request, None, 403, "Form expired", "The form expired or came from another site: nothing "
                   "was changed. Reload the page and try again.", back=back)


async def password_page(admin: Admin, request: Request, error: str = "", status_code: int = 200) -> Response:
    """GET /admin/password/TOKEN: choose a password, if the link still works."""
    account = await run_in_threadpool(accounts.read_password_link, admin.settings, admin.engine,
                                      request.path_params["token"])
    if account is None:
        return message(admin, request, None, 404, "This link does not work any more",
                       "Set-password links work once, for 72 hours, and a newer link replaces an older one. "
                       "Ask an admin for a new invitation, or use “Forgot your password?” on the sign-in page.",
                       back="/admin/login")
    return _signed_out_page(admin, request, "admin/password.html",
                            {"account": account, "action": request.url.path, "minimum": accounts.MIN_PASSWORD_LENGTH},
                            status_code, error)


async def post_password(admin: Admin, request: Request) -> Response:
    form = await read_form(request)
    if not admin.auth.same_origin(request) or not admin.auth.login_token_ok(request, form.get("login_token")):
        return _form_expired(admin, request, request.url.path)
    password, again = str(form.get("password", "")), str(form.get("again", ""))
    if password != again:
        return await password_page(admin, request, "The two passwords differ: type the same one twice.", 400)
    try:
        await run_in_threadpool(accounts.set_password_by_link, admin.settings, admin.engine,
                                request.path_params["token"], password)
    except AccountError as exc:
        return await password_page(admin, request, _sentence(exc), 400)
    return redirect_to("/admin/login", "password-set")


async def forgot_page(admin: Admin, request: Request) -> Response:
    return _signed_out_page(admin, request, "admin/forgot.html", {})


async def post_forgot(admin: Admin, limiter: RateLimiter, request: Request) -> Response:
    """Email a reset link if the address has an enabled account; the answer is the same either way."""
    if limiter.retry_after(client_ip(request)):
        return message(admin, request, None, 429, "Too many requests", "Wait a minute, then try again.",
                       back="/admin/forgot")
    form = await read_form(request)
    if not admin.auth.same_origin(request) or not admin.auth.login_token_ok(request, form.get("login_token")):
        return _form_expired(admin, request, "/admin/forgot")
    await run_in_threadpool(accounts.email_password_link, admin.settings, admin.engine, str(form.get("email", "")))
    return redirect_to("/admin/login", "reset-asked")
