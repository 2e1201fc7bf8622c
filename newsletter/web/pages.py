"""The pages: the public listing, subscribe, confirm, preferences and unsubscribe, no JavaScript needed."""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import logging
import re
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import date
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, Signer
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.templating import Jinja2Templates

from newsletter.config.edit import SubscriberFile
from newsletter.environment import Env
from newsletter.errors import (
    ConcurrentEdit,
    ConfigError,
    DeliveryError,
    InvalidInput,
    NewsletterError,
    RateLimited,
)
from newsletter.mail import tokens
from newsletter.mail.render import Renderer
from newsletter.mail.templates import environment
from newsletter.mail.transports import Transport
from newsletter.model.config import FREQUENCIES, WEEKDAYS, Config
from newsletter.model.feedback import rules_shown
from newsletter.model.signup import Preferences
from newsletter.storage.store import Store
from newsletter.subscriptions.forms import (
    check_choice,
    check_preferences,
    check_send_at,
    normalise_email,
    timezones,
)
from newsletter.subscriptions.optin import find_pending
from newsletter.subscriptions.service import Limits, Service
from newsletter.web.clients import rate_key
from newsletter.web.public import Links, PublicSite

log = logging.getLogger("newsletter.web")
CSRF_COOKIE = "newsletter_csrf"
MAX_FIELDS = 500
UNSUBSCRIBE_WAIT = 2.0  # seconds an unsubscription waits for its line to leave subscribers.yaml before answering anyway
# The front page carries this visitor's CSRF token, so only their own browser may keep it; topic pages and feeds
# are the same for everyone. Short, so new papers show within minutes; an ETag makes asking again cheap.
FRONT_CACHE = "private, max-age=60"
PUBLIC_CACHE = "public, max-age=300"
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class Pages:
    """The request handlers; blocking work (SQLite, the YAML file, SMTP) runs in the thread pool."""

    def __init__(self, env: Env, config_path: Path, secret: str, limits: Limits, transport_factory: Callable[[], Transport]) -> None:
        self.env = env
        self.config_path = config_path
        self.secret = secret
        self.limits = limits
        self.transport_factory = transport_factory
        self.templates = Jinja2Templates(env=environment(env.templates))
        self.secure_cookie = env.base_url.startswith("https://")
        self.csrf_signer = Signer(secret, salt="newsletter.csrf")
        self.public = PublicSite(Renderer(env.base_url, env.templates))

    @contextmanager
    def service(self) -> Iterator[Service]:
        with Store(self.env.db, self.env.db_timeout) as store:
            yield Service(self.env, self.config_path, store, self.secret, self.transport_factory, self.limits)

    # rendering

    def page(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        """Render a page with a CSRF token for its forms, setting the cookie it is checked against.

        The cookie holds a random nonce; the form's token is that nonce signed with NEWSLETTER_SECRET_KEY, so a
        cookie and field pair made up elsewhere (a cookie planted from a sibling domain, say) is refused."""
        nonce, token = self.csrf(request)
        response = self.templates.TemplateResponse(request, f"web/{name}", {"csrf": token, **context}, status_code=status)
        self.csrf_cookie(response, nonce)
        return response

    def csrf(self, request: Request) -> tuple[str, str]:
        """The visitor's nonce (kept from their cookie, else new) and the form token made from it: the same visitor gets the same token."""
        nonce = request.cookies.get(CSRF_COOKIE) or ""
        if not (16 <= len(nonce) <= 64 and nonce.isascii() and all(c.isalnum() or c in "-_" for c in nonce)):
            nonce = secrets.token_urlsafe(24)
        return nonce, self.csrf_signer.sign(nonce).decode()

    def csrf_cookie(self, response: Response, nonce: str) -> None:
        response.set_cookie(CSRF_COOKIE, nonce, httponly=True, samesite="strict", secure=self.secure_cookie, path="/")

    def csrf_ok(self, request: Request, form: FormData) -> bool:
        """The form's token is our signature of the nonce in this visitor's cookie."""
        cookie = request.cookies.get(CSRF_COOKIE, "")
        try:
            nonce = self.csrf_signer.unsign(str(form.get("csrf", ""))).decode()
        except BadSignature:
            return False
        return bool(cookie) and secrets.compare_digest(cookie.encode(), nonce.encode())

    def message(self, request: Request, title: str, text: str, status: int = 200, **context: Any) -> Response:
        return self.page(request, "message.html", status, title=title, text=text, **context)

    def unavailable(self, request: Request, exc: Exception) -> Response:
        log.error("subscription change failed: %s", exc)
        return self.message(
            request, "Please try again later", "We could not complete that just now. Nothing was changed; please try again in a few minutes.", 503
        )

    def invalid_link(self, request: Request) -> Response:
        return self.message(
            request,
            "This link does not work",
            "It may have expired, been used already, or been cut off by your mail program. You can start again from the subscribe page.",
            400,
            home=True,
        )

    async def form(self, request: Request) -> FormData | None:
        """The posted form if its CSRF token matches the cookie and it comes from our own pages; else None."""
        origin = request.headers.get("origin")
        if origin and origin != "null" and origin.rstrip("/") not in (self.env.base_url, f"{request.url.scheme}://{request.url.netloc}"):
            return None
        form = await request.form(max_files=0, max_fields=MAX_FIELDS)
        return form if self.csrf_ok(request, form) else None

    def forbidden(self, request: Request) -> Response:
        return self.message(request, "Please try again", "The form had expired or did not come from this site. Reload the page and send it again.", 403)

    def not_found(self, request: Request, exc: Exception | None = None) -> Response:
        """The styled 404 (web/not_found.html), for a link to nothing and for any URL the app has no route for."""
        return self.page(request, "not_found.html", 404)

    # the public listing

    async def front(self, request: Request) -> Response:
        return await run_in_threadpool(self._front, request)

    def _front(self, request: Request) -> Response:
        """The subscribe form, then (unless settings.public_pages is false) the latest papers."""
        try:
            config = SubscriberFile(self.config_path).load()
        except ConfigError as exc:
            return self.unavailable(request, exc)
        if not config.settings.public_pages:
            return self._subscribe_page(request, {}, None, 200)
        nonce, token = self.csrf(request)
        with Store(self.env.db, self.env.db_timeout) as store:
            html = self.public.front(store, config, Links(), csrf=token, filled={}, error=None, **_signup(config))
        response = conditional(request, html.encode("utf-8"), "text/html; charset=utf-8", FRONT_CACHE, vary="Cookie")
        if response.status_code == 200:
            self.csrf_cookie(response, nonce)
        return response

    async def topic(self, request: Request) -> Response:
        return await run_in_threadpool(self._topic, request, request.path_params["topic"], request.path_params.get("day"))

    def _topic(self, request: Request, seg: str, day_text: str | None) -> Response:
        config = self._public_config(request)
        if isinstance(config, Response):
            return config
        topic = self.public.topic(config, seg)
        day = _day(day_text) if day_text is not None else None
        if topic is None or (day_text is not None and day is None):
            return self.not_found(request)
        with Store(self.env.db, self.env.db_timeout) as store:
            html = self.public.topic_page(store, config, topic, day, Links())
        if html is None:
            return self.not_found(request)
        return conditional(request, html.encode("utf-8"), "text/html; charset=utf-8", PUBLIC_CACHE)

    async def topic_feed(self, request: Request) -> Response:
        return await run_in_threadpool(self._topic_feed, request, request.path_params["topic"])

    def _topic_feed(self, request: Request, seg: str) -> Response:
        config = self._public_config(request)
        if isinstance(config, Response):
            return config
        topic = self.public.topic(config, seg)
        if topic is None:
            return self.not_found(request)
        with Store(self.env.db, self.env.db_timeout) as store:
            xml = self.public.feed(store, config, topic, Links(), self.env.base_url)
        return conditional(request, xml, "application/atom+xml; charset=utf-8", PUBLIC_CACHE)

    @asynccontextmanager
    async def lifespan(self, app: object) -> AsyncIterator[None]:
        """At start-up, in the background, build the public listing (a request that comes first waits for it), then
        read ahead what the first confirmation's edit starts from."""
        threading.Thread(target=self._warm, name="newsletter-listing", daemon=True).start()
        yield

    def _warm(self) -> None:
        try:
            file = SubscriberFile(self.config_path)
            config = file.load()
            if config.settings.public_pages:
                with Store(self.env.db, self.env.db_timeout) as store:
                    self.public.warm(store, config)
            file.warm()
            # The listing's and the list's tens of thousands of objects live as long as the app: out of the collector's sight, a
            # full collection no longer walks them, which held a request up to 100 ms every few hundred (garbage first, so none is kept).
            gc.collect()
            gc.freeze()
        except NewsletterError as exc:  # the first request meets it again and answers for it
            log.warning("the public listing could not be built at start-up: %s", exc)

    def _public_config(self, request: Request) -> Config | Response:
        """The config, or the answer when there is no public listing to show (turned off: 404; unreadable: 503)."""
        try:
            config = SubscriberFile(self.config_path).load()
        except ConfigError as exc:
            return self.unavailable(request, exc)
        return config if config.settings.public_pages else self.not_found(request)

    # subscribe

    def _subscribe_page(self, request: Request, filled: dict[str, Any], error: str | None, status: int) -> Response:
        try:
            config = SubscriberFile(self.config_path).load()
        except ConfigError as exc:
            return self.unavailable(request, exc)
        return self.page(request, "subscribe.html", status, filled=filled, error=error, **_signup(config))

    async def subscribe(self, request: Request) -> Response:
        form = await self.form(request)
        if form is None:
            return self.forbidden(request)
        return await run_in_threadpool(self._subscribe, request, form, rate_key(request))

    def _subscribe(self, request: Request, form: FormData, ip: str) -> Response:
        filled: dict[str, Any] = {
            "email": str(form.get("email", "")),
            "topics": [str(t) for t in form.getlist("topics")],
            "frequency": str(form.get("frequency", "daily")),
            "send_at": str(form.get("send_at", "")),
            "timezone": str(form.get("timezone", "")),
        }
        try:
            config = SubscriberFile(self.config_path).load()
            email = normalise_email(filled["email"])
            if filled["timezone"] and filled["timezone"] not in timezones(config.settings.timezone):
                raise InvalidInput("Pick a time zone from the list.")
            choice = check_choice(config, filled["topics"], filled["frequency"], **_unless_default(config, filled["send_at"], filled["timezone"]))
            with self.service() as service:
                service.subscribe(email, choice, ip)
        except InvalidInput as exc:
            return self._subscribe_page(request, filled, str(exc), 400)
        except RateLimited:
            return self.message(request, "Too many attempts", "Please wait an hour before trying again.", 429)
        except (ConfigError, DeliveryError) as exc:
            return self.unavailable(request, exc)
        return self.message(
            request,
            "Check your inbox",
            f"If {email} can receive the digest, a mail with a confirmation link is on its way. Open it and press the button to start your subscription.",
        )

    # links in mails

    def reader(self, purpose: str, token: str) -> str | None:
        """The address a link token opens for this purpose: valid, not aged out, and not revoked since it was mailed."""
        claim = tokens.verify(self.secret, purpose, token)
        if claim is None:
            return None
        with Store(self.env.db, self.env.db_timeout) as store:
            return claim.value if claim.version >= store.link_version(claim.value) else None

    def link(self, purpose: str, email: str) -> str:
        """A fresh token for one of this reader's links, at their current link version."""
        with Store(self.env.db, self.env.db_timeout) as store:
            return tokens.sign(self.secret, purpose, email, store.link_version(email))

    # confirm

    async def confirm_form(self, request: Request) -> Response:
        return await run_in_threadpool(self._confirm_form, request, request.path_params["token"])

    def _confirm_form(self, request: Request, token: str) -> Response:
        with self.service() as service:
            pending = find_pending(service.store, self.secret, token)
        if pending is None:
            return self.invalid_link(request)
        try:
            config = SubscriberFile(self.config_path).load()
        except ConfigError as exc:
            return self.unavailable(request, exc)
        titles = [config.topics[t].title for t in pending.choice.topics if t in config.topics]
        return self.page(request, "confirm.html", email=pending.email, topics=titles, frequency=pending.choice.frequency)

    async def confirm(self, request: Request) -> Response:
        form = await self.form(request)
        if form is None:
            return self.forbidden(request)
        return await run_in_threadpool(self._confirm, request, request.path_params["token"])

    def _confirm(self, request: Request, token: str) -> Response:
        try:
            with self.service() as service:
                pending = find_pending(service.store, self.secret, token)
                subscriber = service.confirm(pending) if pending else None
        except (ConfigError, DeliveryError, ConcurrentEdit, TimeoutError) as exc:
            return self.unavailable(request, exc)
        if subscriber is None:
            return self.invalid_link(request)
        preferences = f"/preferences/{self.link(tokens.PREFERENCES, subscriber.email)}"
        return self.message(
            request,
            "You are subscribed",
            f"Welcome! {subscriber.email} will get the paper digest. A welcome mail with recent papers is on its way.",
            link=(preferences, "Change your preferences"),
        )

    # preferences

    async def preferences_form(self, request: Request) -> Response:
        return await run_in_threadpool(self._preferences, request, request.path_params["token"], None)

    async def preferences(self, request: Request) -> Response:
        form = await self.form(request)
        if form is None:
            return self.forbidden(request)
        return await run_in_threadpool(self._preferences, request, request.path_params["token"], form)

    def _preferences(self, request: Request, token: str, form: FormData | None) -> Response:
        email = self.reader(tokens.PREFERENCES, token)
        if email is None:
            return self.invalid_link(request)
        file = SubscriberFile(self.config_path)
        try:
            config = file.load()
        except ConfigError as exc:
            return self.unavailable(request, exc)
        subscriber = config.subscriber(email)
        if subscriber is None:
            return self.message(request, "Not subscribed", f"{email} is not subscribed (any more).", 404, home=True)
        prefs, error, saved, status = Preferences.of(subscriber), None, False, 200
        typed: dict[str, str] | None = None  # after an error, the text fields as typed
        if form is not None:
            fields: dict[str, Any] = {k: form.get(k) for k in ("keywords", "frequency", "day", "send_at", "timezone", "paused")}
            fields["topics"] = form.getlist("topics")
            try:
                prefs = check_preferences(config, fields)
                file.update(email, prefs, config.settings)
                saved = True
            except InvalidInput as exc:
                error, status = str(exc), 400
                prefs, typed = _as_typed(prefs, config, fields), {k: str(fields.get(k) or "") for k in ("keywords", "send_at")}
            except (ConfigError, ConcurrentEdit, TimeoutError) as exc:
                return self.unavailable(request, exc)
        unsubscribe = f"/unsubscribe/{self.link(tokens.UNSUBSCRIBE, email)}"
        feed = f"{self.env.base_url}/feeds/{self.link(tokens.FEED, email)}.atom"
        return self.page(
            request,
            "preferences.html",
            status,
            email=subscriber.email,
            prefs=prefs,
            topics=config.topics,
            frequencies=FREQUENCIES,
            weekdays=WEEKDAYS,
            timezones=timezones(prefs.timezone),
            error=error,
            saved=saved,
            typed=typed,
            unsubscribe=unsubscribe,
            feed=feed,
            rules=rules_shown(prefs.keywords, subscriber.exclude),
            removed="removed" in request.query_params,
        )

    # unsubscribe

    async def unsubscribe_form(self, request: Request) -> Response:
        email = await run_in_threadpool(self.reader, tokens.UNSUBSCRIBE, request.path_params["token"])
        if email is None:
            return self.invalid_link(request)
        config = await run_in_threadpool(_load_or_none, self.config_path)
        subscribed = config is None or config.subscriber(email) is not None
        return self.page(request, "unsubscribe.html", email=email, subscribed=subscribed)

    async def unsubscribe(self, request: Request) -> Response:
        """The page's button (with CSRF) and RFC 8058 one-click POSTs from mail providers (no cookies) both land here."""
        token = request.path_params["token"]
        form = await request.form(max_files=0, max_fields=MAX_FIELDS)
        one_click = form.get("List-Unsubscribe") == "One-Click"
        if not one_click and not self.csrf_ok(request, form):
            return self.forbidden(request)
        email = await run_in_threadpool(self.reader, tokens.UNSUBSCRIBE, token)
        if email is None:
            return PlainTextResponse("invalid unsubscribe link\n", status_code=400) if one_click else self.invalid_link(request)
        try:
            await run_in_threadpool(self._unsubscribe, email)
        except (ConfigError, ConcurrentEdit, TimeoutError) as exc:
            if one_click:
                log.error("one-click unsubscribe of %s failed: %s", email, exc)
                return PlainTextResponse("please try again later\n", status_code=503)
            return self.unavailable(request, exc)
        if one_click:
            return PlainTextResponse("unsubscribed\n")
        return self.message(request, "You are unsubscribed", f"{email} will get no more digests. Sorry to see you go.", home=True)

    def _unsubscribe(self, email: str) -> None:
        """At once in the store (no more mail); the YAML line goes in the background, waited for a moment only."""
        with self.service() as service:
            service.unsubscribe(email, wait=UNSUBSCRIBE_WAIT)

    async def stylesheet(self, request: Request) -> Response:
        return Response(self.public.stylesheet(), media_type="text/css", headers={"cache-control": "public, max-age=3600"})

    async def zone_script(self, request: Request) -> Response:
        """The sign-up form's few lines that preselect the visitor's time zone (web/zone.js)."""
        return Response(self.public.source("web/zone.js"), media_type="text/javascript", headers={"cache-control": "public, max-age=3600"})


def conditional(request: Request, body: bytes, media_type: str, cache_control: str, vary: str | None = None) -> Response:
    """The body with a strong ETag (a digest of its bytes), or 304 Not Modified when the client already holds it."""
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = {"etag": etag, "cache-control": cache_control} | ({"vary": vary} if vary else {})
    if _etag_matches(request.headers.get("if-none-match", ""), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


def _etag_matches(header: str, etag: str) -> bool:
    """If-None-Match's weak comparison (RFC 9110 §13.1.2): `*`, or any listed tag equal to ours without its W/."""
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or etag in (t.removeprefix("W/") for t in tags)


def _day(text: str) -> date | None:
    if not _DAY.match(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _as_typed(stored: Preferences, config: Config, fields: dict[str, Any]) -> Preferences:
    """The form as the reader left it after an error: their choices where they are among the form's, else what is stored."""
    return dataclasses.replace(
        stored,
        topics=tuple(t for t in config.topics if t in set(fields["topics"])),
        frequency=fields["frequency"] if fields["frequency"] in FREQUENCIES else stored.frequency,
        day=fields["day"] if fields["day"] in WEEKDAYS else stored.day,
        timezone=fields["timezone"] if fields["timezone"] in timezones(stored.timezone) else stored.timezone,
        paused=bool(fields["paused"]),
    )


def _signup(config: Config) -> dict[str, Any]:
    """What the sign-up form offers: topics, frequencies, time zones (common ones first) and the installation's defaults."""
    return {
        "topics": config.topics,
        "frequencies": FREQUENCIES,
        "zones": timezones(config.settings.timezone),
        "zone_default": config.settings.timezone,
        "send_at_default": config.settings.send_at.strftime("%H:%M"),
    }


def _unless_default(config: Config, send_at: str, timezone: str) -> dict[str, str]:
    """The sign-up's time and zone for the entry, left out where they are the installation's defaults (the entry stays short)."""
    at = check_send_at(send_at) if send_at.strip() else config.settings.send_at
    return {"send_at": "" if at == config.settings.send_at else at.strftime("%H:%M"), "timezone": "" if timezone == config.settings.timezone else timezone}


def _load_or_none(path: Path) -> Any:
    try:
        return SubscriberFile(path).load()
    except ConfigError:
        return None
