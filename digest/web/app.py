"""The one ASGI app: public pages, /admin and the archive, behind shared security middleware.

`create_app(settings)` is what `digest serve` runs with uvicorn; tests call it in-process with their
own engine (and, if they like, a transport factory for the confirmation emails). `digest serve`
also adds `RedactTokensFilter` to uvicorn's access log, so signed links never reach the logs.
"""

from __future__ import annotations

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from ..config import Settings
from ..signing import derived_keys
from ..sns import CertificateLoader
from ..store import open_store
from . import admin, api, archive, branding, clicks, embed, errors, home, public, webhooks
from .pages import STATIC
from .public import TransportFactory
from .security import CsrfMiddleware, PathGuardMiddleware, RedactTokensFilter, SecurityHeadersMiddleware

# What `digest serve` (the launch) takes from the web app besides the app itself.
__all__ = ["RedactTokensFilter", "create_app"]


def create_app(settings: Settings, engine: Engine | None = None,
               transport_factory: TransportFactory | None = None,
               sns_certificates: CertificateLoader | None = None) -> Starlette:
    """The web app for `settings`; opens (and migrates) the store unless `engine` is given.

    `transport_factory` makes the transport confirmation emails go through (default:
    digest.deliver.transports.transport_from_settings(settings)); `sns_certificates` fetches the
    SNS signing certificates of /webhooks/ses (default: downloads them). Raises ConfigError when a
    configured webhook's secret variable is empty.
    """
    engine = engine or open_store(settings.store.url)
    routes = [
        *home.routes(settings, engine),
        *public.routes(settings, engine, transport_factory),
        *admin.routes(settings, engine),
        *archive.routes(settings, engine),
        *branding.routes(settings, engine),
        *clicks.routes(settings, engine),
        *webhooks.routes(settings, engine, sns_certificates),
        *embed.routes(settings, engine, transport_factory),  # before the API's: its catch-all would answer
        *api.routes(settings, engine),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [
        Middleware(PathGuardMiddleware),
        Middleware(CsrfMiddleware, keys=derived_keys(settings, "csrf"),
                   secure=settings.web.base_url.startswith("https://")),
    ]
    app = _App(routes=routes, middleware=middleware, exception_handlers=errors.handlers(settings))
    app.state.settings = settings
    app.state.engine = engine
    return app


class _App(Starlette):
    """Starlette with the security headers outermost: around its 500 page too, not only its routes' answers."""

    def build_middleware_stack(self) -> ASGIApp:
        """Starlette's stack (error page, user middleware, routes) inside SecurityHeadersMiddleware."""
        return SecurityHeadersMiddleware(super().build_middleware_stack())
