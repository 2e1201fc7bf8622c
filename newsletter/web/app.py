"""The Starlette app: routes, security headers, and what it is built from."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from newsletter import subscriptions as subs
from newsletter.environment import Env
from newsletter.errors import EnvError
from newsletter.mail.transports import Transport, connection
from newsletter.web.clients import behind_proxies
from newsletter.web.editions import Editions
from newsletter.web.feedback import Feedback
from newsletter.web.pages import Pages

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),  # the tokens in our URLs must not leak to other sites
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


class SecurityHeaders:
    """ASGI middleware adding the same defensive headers to every response."""

    def __init__(self, app: ASGIApp, https: bool) -> None:
        self.app = app
        self.extra = SECURITY_HEADERS + ([(b"strict-transport-security", b"max-age=31536000")] if https else [])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [h for h in self.extra if h[0] not in present]
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(
    env: Env,
    config_path: Path,
    *,
    limits: subs.Limits | None = None,
    transport_factory: Callable[[], Transport] | None = None,
) -> Starlette:
    """The app; NEWSLETTER_SECRET_KEY is required because every link it hands out is signed with it."""
    if not env.secret_key:
        raise EnvError("NEWSLETTER_SECRET_KEY is required for `serve` (it signs confirmation, preferences and unsubscribe links)")
    editions = Editions(env, config_path, env.secret_key)
    pages = Pages(env, config_path, env.secret_key, limits or subs.Limits.of(env), transport_factory or (lambda: connection(env.smtp, env.outbox, env.dkim)))
    feedback = Feedback(pages)
    routes = [
        Route("/", pages.front, methods=["GET"]),
        Route("/", pages.subscribe, methods=["POST"]),
        Route("/confirm/{token}", pages.confirm_form, methods=["GET"]),
        Route("/confirm/{token}", pages.confirm, methods=["POST"]),
        Route("/preferences/{token}", pages.preferences_form, methods=["GET"]),
        Route("/preferences/{token}", pages.preferences, methods=["POST"]),
        Route("/preferences/{token}/rules", feedback.remove, methods=["POST"]),
        Route("/feedback/{token}", feedback.form, methods=["GET"]),
        Route("/feedback/{token}/{action}", feedback.act, methods=["POST"]),
        Route("/unsubscribe/{token}", pages.unsubscribe_form, methods=["GET"]),
        Route("/unsubscribe/{token}", pages.unsubscribe, methods=["POST"]),
        Route("/topics/{topic}.atom", pages.topic_feed, methods=["GET"]),
        Route("/topics/{topic}", pages.topic, methods=["GET"]),
        Route("/topics/{topic}/{day}", pages.topic, methods=["GET"]),
        Route("/editions/{token}", editions.page, methods=["GET"]),
        Route("/feeds/{token}.atom", editions.feed, methods=["GET"]),
        Route("/style.css", pages.stylesheet, methods=["GET"]),
        Route("/zone.js", pages.zone_script, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=pages.lifespan, exception_handlers={404: pages.not_found})
    # Starlette would answer /style.css/ with a redirect built from the client's Host header (to any site it names);
    # every link we hand out is exact, so there is nothing to redirect.
    app.router.redirect_slashes = False
    app.add_middleware(SecurityHeaders, https=env.base_url.startswith("https://"))
    app.add_middleware(behind_proxies, env=env)
    return app
