"""`digest serve`: the web app (public pages, admin, archive) under uvicorn."""

from __future__ import annotations

import errno
import logging
import signal
import socket
import sys
from urllib.parse import urlsplit

import click
import uvicorn

from ..pipeline.sending import check_signing
from ..web.app import RedactTokensFilter, create_app
from .base import EXIT_FAILED, EXIT_OK, fail, handle_errors, main, state

UVICORN_STARTUP_FAILURE = 3  # uvicorn's sys.exit code when it cannot start (e.g. cannot bind)


@main.command()
@click.option("--host", default=None, help="Interface to listen on (default: the host of web.base_url if it is "
              "127.0.0.1/localhost, else 127.0.0.1; use 0.0.0.0 for every interface).")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Port (default: the port of web.base_url, else 8080).")
@handle_errors
def serve(host: str | None, port: int | None) -> None:
    """Serve the web app: subscribe, preferences, unsubscribe, archive and /admin."""
    settings = state().settings
    base = urlsplit(settings.web.base_url)
    host = host or (base.hostname if base.hostname in ("127.0.0.1", "localhost", "::1") else "127.0.0.1")
    port = port or base.port or 8080
    check_signing(settings)
    _check_can_listen(host, port)
    app = create_app(settings, state().engine)
    click.echo(f"digest web app on http://{host}:{port}/subscribe (links in emails use {settings.web.base_url})",
               err=True)
    logging.getLogger("uvicorn.access").addFilter(RedactTokensFilter())
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it: a stop asked for is a success (exit 0).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(EXIT_OK))
    try:
        uvicorn.run(app, host=host, port=port, proxy_headers=bool(settings.web.forwarded_allow_ips),
                    forwarded_allow_ips=settings.web.forwarded_allow_ips or None, server_header=False,
                    log_level="info")
    except SystemExit as exc:
        if exc.code == UVICORN_STARTUP_FAILURE:
            fail(f"the web app could not start on {host}:{port} (see the message above)", EXIT_FAILED)
        raise


def _check_can_listen(host: str, port: int) -> None:
    """Fail with a clear message (exit 1) when host:port is taken or not an address of this machine.

    uvicorn would start the app first, then print a log line and exit 3.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror}; check --host", EXIT_FAILED)
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind(address)
        except OSError as exc:
            hint = ("another program (or `digest serve`) is listening there: stop it or pick another --port"
                    if exc.errno == errno.EADDRINUSE else "check --host and --port")
            fail(f"cannot listen on {host}:{port}: {exc.strerror}; {hint}", EXIT_FAILED)
