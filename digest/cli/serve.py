"""`digest serve`: the web app (public pages, admin, archive) under uvicorn."""

from __future__ import annotations

from urllib.parse import urlsplit

import click

from .base import handle_errors, main, state


@main.command()
@click.option("--host", default=None, help="Interface to listen on (default: the host of web.base_url if it is "
              "127.0.0.1/localhost, else 127.0.0.1; use 0.0.0.0 for every interface).")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Port (default: the port of web.base_url, else 8080).")
@handle_errors
def serve(host: str | None, port: int | None) -> None:
    """Serve the web app: subscribe, preferences, unsubscribe, archive and /admin."""
    import logging

    import uvicorn

    from ..web.app import create_app
    from ..web.security import RedactTokensFilter

    settings = state().settings
    app = create_app(settings, state().engine)
    base = urlsplit(settings.web.base_url)
    host = host or (base.hostname if base.hostname in ("127.0.0.1", "localhost", "::1") else "127.0.0.1")
    port = port or base.port or 8080
    click.echo(f"digest web app on http://{host}:{port}/subscribe (links in emails use {settings.web.base_url})",
               err=True)
    logging.getLogger("uvicorn.access").addFilter(RedactTokensFilter())
    uvicorn.run(app, host=host, port=port, proxy_headers=bool(settings.web.forwarded_allow_ips),
                forwarded_allow_ips=settings.web.forwarded_allow_ips or None, server_header=False,
                log_level="info")
