"""Self-service subscriptions: pending double opt-ins and rate limits in SQLite, confirmed subscribers edited into subscribers.yaml."""

from __future__ import annotations

import io
import logging
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import jinja2
from email_validator import EmailNotValidError, validate_email
from filelock import FileLock
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from . import config as config_mod
from . import tokens
from .config import FREQUENCIES, WEEKDAYS, Config, Subscriber
from .environment import Env
from .mailer import DeliveryError, Headers, Signer, Transport, build_message, seal
from .pipeline import Planner
from .render import BUNDLED
from .store import Store, utcnow
from .topics import keyword_error

log = logging.getLogger("newsletter.subscriptions")

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
CONFIRM = "confirm"  # token purpose of the double opt-in link
CONFIRM_MAX_AGE = timedelta(hours=48)
WELCOME_PAPERS = 5
MAX_KEYWORDS = 10
MAX_KEYWORD_CHARS = 60
LOCK_TIMEOUT = 10.0  # seconds to wait for a hand edit (or another writer) to finish


class InvalidInput(ValueError):
    """What a person typed cannot be used; the message is safe to show them."""


class RateLimited(Exception):
    """Too many subscribe attempts from one IP or for one address; try again later."""


@dataclass(frozen=True)
class Limits:
    """How often one IP or one address may subscribe and be mailed a confirmation, per window."""

    subscribe_per_ip: int = 10
    subscribe_per_address: int = 5
    subscribe_window: timedelta = timedelta(hours=1)
    mails_per_address: int = 3
    mails_per_ip: int = 20
    mail_window: timedelta = timedelta(hours=24)


@dataclass(frozen=True)
class Choice:
    """What someone picked on the subscribe form, kept with the pending subscription until they confirm."""

    topics: tuple[str, ...]
    frequency: str = "daily"


@dataclass(frozen=True)
class Preferences:
    """Everything a subscriber may change about themselves from the preferences page."""

    topics: tuple[str, ...]
    keywords: tuple[str, ...] = ()
    frequency: str = "daily"
    day: str = "monday"
    send_at: time = time(7, 0)
    timezone: str = "UTC"
    paused: bool = False

    @classmethod
    def of(cls, s: Subscriber) -> Preferences:
        return cls(s.topics, s.keywords, s.frequency, s.day, s.send_at, s.timezone, s.paused)


@dataclass(frozen=True)
class Pending:
    """An unconfirmed subscription."""

    email: str
    nonce: str
    choice: Choice
    created: datetime


# input checks


def normalise_email(raw: str) -> str:
    """A syntactically valid address (no DNS lookups), domain lowercased; raises InvalidInput."""
    try:
        return validate_email(raw.strip(), check_deliverability=False, allow_smtputf8=False).normalized
    except EmailNotValidError as exc:
        raise InvalidInput(f"That does not look like an email address: {exc}") from exc


def check_choice(config: Config, topics: list[str], frequency: str) -> Choice:
    """Only known topics and frequencies get through."""
    chosen = tuple(t for t in config.topics if t in set(topics))
    if not chosen:
        raise InvalidInput("Pick at least one topic.")
    if frequency not in FREQUENCIES:
        raise InvalidInput("Pick how often you want mail.")
    return Choice(chosen, frequency)


def check_preferences(config: Config, form: dict[str, Any]) -> Preferences:
    """Turn the preferences form into Preferences, refusing anything the config would not accept."""
    keywords = tuple(dict.fromkeys(k.strip() for k in str(form.get("keywords", "")).replace("\n", ",").split(",") if k.strip()))
    if len(keywords) > MAX_KEYWORDS:
        raise InvalidInput(f"At most {MAX_KEYWORDS} keywords, please.")
    for word in keywords:
        if len(word) > MAX_KEYWORD_CHARS or word.startswith("/") or any(ord(c) < 32 for c in word):
            raise InvalidInput(f"Keywords are words or short phrases of at most {MAX_KEYWORD_CHARS} characters (no regular expressions).")
        if keyword_error(word):
            raise InvalidInput("One of the keywords cannot be used: " + str(keyword_error(word)))
    topics = tuple(t for t in config.topics if t in set(form.get("topics", [])))
    if not topics and not keywords:
        raise InvalidInput("Pick at least one topic or keyword, or unsubscribe instead.")
    frequency = str(form.get("frequency", "daily"))
    day = str(form.get("day", "monday"))
    if frequency not in FREQUENCIES or day not in WEEKDAYS:
        raise InvalidInput("Pick how often you want mail.")
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", str(form.get("send_at", "")).strip())
    if not match:
        raise InvalidInput("The send time should look like 07:30.")
    zone = str(form.get("timezone", "")).strip()
    if zone not in timezones():
        raise InvalidInput("Pick a timezone from the list.")
    return Preferences(topics, keywords, frequency, day, time(int(match[1]), int(match[2])), zone, bool(form.get("paused")))


def timezones() -> list[str]:
    """IANA zone names to choose from, UTC first."""
    from zoneinfo import available_timezones

    return ["UTC"] + sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/", "posix/", "right/")))


# rate limits


def allow(store: Store, kind: str, key: str, limit: int, window: timedelta, now: datetime | None = None) -> bool:
    """Count one event against (kind, key) unless `limit` were already counted within `window`."""
    now = now or utcnow()
    with store.transaction() as db:
        since = (now - window).isoformat()
        db.execute("DELETE FROM rate_events WHERE kind = ? AND at < ?", (kind, since))
        used = db.execute("SELECT COUNT(*) FROM rate_events WHERE kind = ? AND key = ? AND at >= ?", (kind, key.lower(), since)).fetchone()[0]
        if used >= limit:
            return False
        db.execute("INSERT INTO rate_events (kind, key, at) VALUES (?, ?, ?)", (kind, key.lower(), now.isoformat()))
        return True


# pending subscriptions


def add_pending(store: Store, email: str, choice: Choice, now: datetime | None = None) -> Pending:
    """Record (or replace) an unconfirmed subscription; a new nonce voids every earlier confirmation link."""
    now = now or utcnow()
    pending = Pending(email, secrets.token_hex(8), choice, now)
    with store.transaction() as db:
        db.execute("DELETE FROM pending_subscriptions WHERE created < ?", ((now - CONFIRM_MAX_AGE).isoformat(),))
        db.execute(
            "INSERT INTO pending_subscriptions (email, nonce, topics, frequency, created) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(email) DO UPDATE SET nonce = excluded.nonce, topics = excluded.topics, frequency = excluded.frequency, created = excluded.created",
            (email.lower(), pending.nonce, ",".join(choice.topics), choice.frequency, now.isoformat()),
        )
    return pending


def confirm_token(secret: str, pending: Pending) -> str:
    """The confirmation link's token: address and nonce only; the choice stays in the database."""
    return tokens.sign(secret, CONFIRM, f"{pending.email} {pending.nonce}")


def find_pending(store: Store, secret: str, token: str, now: datetime | None = None) -> Pending | None:
    """The pending subscription a confirmation token points at, if the token is valid, fresh and the latest one."""
    payload = tokens.verify(secret, CONFIRM, token, max_age=int(CONFIRM_MAX_AGE.total_seconds()))
    if payload is None or payload.count(" ") != 1:
        return None
    email, nonce = payload.split(" ")
    row = store.db.execute("SELECT * FROM pending_subscriptions WHERE email = ? AND nonce = ?", (email.lower(), nonce)).fetchone()
    if row is None:
        return None
    created = datetime.fromisoformat(row["created"])
    if (now or utcnow()) - created > CONFIRM_MAX_AGE:
        return None
    return Pending(email, nonce, Choice(tuple(t for t in row["topics"].split(",") if t), row["frequency"]), created)


def take_pending(store: Store, pending: Pending) -> bool:
    """Remove a pending subscription once; False if someone else confirmed it first."""
    with store.transaction() as db:
        return db.execute("DELETE FROM pending_subscriptions WHERE email = ? AND nonce = ?", (pending.email.lower(), pending.nonce)).rowcount == 1


def record_unsubscribed(store: Store, email: str, now: datetime | None = None) -> None:
    """Remember who left and when, so an operator can see it was their own wish."""
    with store.transaction() as db:
        db.execute(
            "INSERT INTO unsubscribed (email, at) VALUES (?, ?) ON CONFLICT(email) DO UPDATE SET at = excluded.at",
            (email.lower(), (now or utcnow()).isoformat()),
        )


def forget_unsubscribed(store: Store, email: str) -> None:
    with store.transaction() as db:
        db.execute("DELETE FROM unsubscribed WHERE email = ?", (email.lower(),))


# subscribers.yaml


class SubscriberFile:
    """subscribers.yaml edited in place: comments and layout kept, writes locked, validated and atomic."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT)

    def load(self) -> Config:
        return config_mod.load(self.path)

    @contextmanager
    def edit(self) -> Iterator[CommentedSeq]:
        """Yield the `subscribers:` list to change; on exit the file is re-validated and replaced in one rename."""
        with self.lock:
            before = self.path.read_text(encoding="utf-8")
            config_mod.parse(before, str(self.path))  # a broken hand edit is reported, not edited further
            yaml = YAML(typ="rt")
            yaml.preserve_quotes = True
            yaml.width = 4096
            mapping, offset = _guess_indent(before)
            yaml.indent(mapping=mapping, sequence=offset + 2, offset=offset)
            data = yaml.load(before) or CommentedMap()
            if data.get("subscribers") is None:
                data["subscribers"] = CommentedSeq()
            yield data["subscribers"]
            if data["subscribers"]:
                data["subscribers"].fa.set_block_style()
            else:  # ruamel would write the list's leading comment and then `[]` on a line of its own: invalid YAML
                data["subscribers"] = _flow(())
            out = io.StringIO()
            yaml.dump(data, out)
            text = out.getvalue()
            config_mod.parse(text, str(self.path))  # never write a file the pipeline would refuse
            if self.path.read_text(encoding="utf-8") != before:
                raise RuntimeError(f"{self.path} changed while it was being edited without taking {self.lock.lock_file}; try again")
            _atomic_write(self.path, text)

    def add(self, email: str, choice: Choice) -> bool:
        """Add a confirmed subscriber; False (and no change) when the address is already there."""
        with self.edit() as subscribers:
            if _index(subscribers, email) is not None:
                return False
            entry = CommentedMap(email=email)
            entry["topics"] = _flow(choice.topics)
            if choice.frequency != "daily":
                entry["frequency"] = choice.frequency
            subscribers.append(entry)
        return True

    def remove(self, email: str) -> bool:
        """Remove a subscriber; False when they were not there (unsubscribing twice is fine)."""
        with self.edit() as subscribers:
            i = _index(subscribers, email)
            if i is None:
                return False
            del subscribers[i]
        return True

    def update(self, email: str, prefs: Preferences, defaults: config_mod.Settings) -> bool:
        """Write a subscriber's preferences: unchanged keys keep their formatting, keys back at their default go."""
        with self.edit() as subscribers:
            i = _index(subscribers, email)
            if i is None:
                return False
            entry = subscribers[i]
            wanted: dict[str, tuple[Any, Any]] = {  # key: (new value, default when absent)
                "topics": (prefs.topics, ()),
                "keywords": (prefs.keywords, ()),
                "frequency": (prefs.frequency, "daily"),
                "day": (prefs.day, "monday"),
                "send_at": (prefs.send_at.strftime("%H:%M"), defaults.send_at.strftime("%H:%M")),
                "timezone": (prefs.timezone, defaults.timezone),
                "paused": (prefs.paused, False),
            }
            for key, (value, default) in wanted.items():
                if _plain(entry.get(key, default)) == value:
                    continue
                if value == default:
                    entry.pop(key, None)
                else:
                    entry[key] = _flow(value) if isinstance(value, tuple) else value
        return True


def _plain(value: Any) -> Any:
    """A YAML value as the Preferences field it corresponds to, for comparing."""
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    if isinstance(value, str):
        return value.lower() if value.lower() in WEEKDAYS else value
    return value


def _guess_indent(text: str) -> tuple[int, int]:
    """How this file indents mappings and list dashes under a top-level key, so a rewrite keeps its layout."""
    mapping: int | None = None
    offset: int | None = None
    under_top_key = False
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        depth = len(line) - len(stripped)
        if under_top_key and stripped.startswith("-"):
            offset = depth if offset is None else offset
        elif under_top_key and depth > 0:
            mapping = depth if mapping is None else mapping
        under_top_key = depth == 0 and re.match(r"^[^#\s-][^#]*:\s*(#.*)?$", stripped) is not None
    return mapping or 2, 2 if offset is None else offset


def _index(subscribers: CommentedSeq, email: str) -> int | None:
    wanted = email.strip().lower()
    for i, item in enumerate(subscribers):
        if isinstance(item, CommentedMap) and str(item.get("email", "")).strip().lower() == wanted:
            return i
    return None


def _flow(items: tuple[str, ...]) -> CommentedSeq:
    seq = CommentedSeq(items)
    seq.fa.set_flow_style()
    return seq


def _atomic_write(path: Path, text: str) -> None:
    """Write beside the file and rename over it, so a reader sees the old or the new file, never half."""
    mode = path.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# mails


@dataclass
class Mails:
    """Builds the service's own mails (confirm, already subscribed, welcome) from templates/web/*.txt."""

    env: Env
    secret: str
    jinja: jinja2.Environment = field(init=False)

    def __post_init__(self) -> None:
        folders = ([self.env.templates] if self.env.templates else []) + [p for p in BUNDLED if p.is_dir()]
        self.jinja = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(p) for p in folders]),
            autoescape=jinja2.select_autoescape(["html"]),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def links(self, email: str) -> dict[str, str]:
        return {
            "preferences_url": f"{self.env.base_url}/preferences/{tokens.sign(self.secret, tokens.PREFERENCES, email)}",
            "unsubscribe_url": f"{self.env.base_url}/unsubscribe/{tokens.sign(self.secret, tokens.UNSUBSCRIBE, email)}",
        }

    def _message(self, to: str, subject: str, template: str, context: dict[str, Any]) -> EmailMessage:
        sender = self.env.from_address
        msg = EmailMessage()
        msg["From"] = sender
        msg["To"] = _address(to)
        msg["Subject"] = subject
        msg["Date"] = format_datetime(utcnow())
        msg["Message-ID"] = make_msgid(domain=sender.domain or "localhost")
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(self.jinja.get_template(template).render(context).strip() + "\n")
        return msg

    def confirm(self, config: Config, pending: Pending) -> EmailMessage:
        """The double opt-in mail: only the address it goes to, topic titles from the config, and the link."""
        url = f"{self.env.base_url}/confirm/{confirm_token(self.secret, pending)}"
        topics = [config.topics[t].title for t in pending.choice.topics if t in config.topics]
        return self._message(pending.email, "Confirm your paper digest subscription", "web/mail_confirm.txt", {"url": url, "topics": topics, "hours": int(CONFIRM_MAX_AGE.total_seconds() // 3600), "base_url": self.env.base_url})

    def already(self, email: str) -> EmailMessage:
        """Someone asked to subscribe an address that already is: tell its owner, and change nothing."""
        return self._message(email, "You are already subscribed to the paper digest", "web/mail_already.txt", {**self.links(email), "base_url": self.env.base_url})

    def welcome(self, config: Config, store: Store, subscriber: Subscriber, now: datetime | None = None) -> tuple[EmailMessage, list[str]]:
        """Sent on confirmation: the most recent papers for their topics, as a taste of the digest; and their ids."""
        digest = Planner(config, store, now or utcnow()).next_digest(subscriber)
        papers = sorted(digest.papers, key=lambda p: p.published or _EPOCH, reverse=True)[:WELCOME_PAPERS] if digest else []
        links = self.links(subscriber.email)
        context = {"papers": papers, "topics": [config.topics[t].title for t in subscriber.topics if t in config.topics], "subscriber": subscriber, **links}
        text = self.jinja.get_template("web/mail_welcome.txt").render(context)
        html = self.jinja.get_template("web/mail_welcome.html").render(context)
        headers = Headers(to=_address(subscriber.email), subject="Welcome to the paper digest", unsubscribe_url=links["unsubscribe_url"], list_id=self.env.list_id)
        return build_message(self.env.from_address, headers, text.strip() + "\n", html), [p.id for p in papers]


def _address(email: str) -> Address:
    local, _, domain = email.rpartition("@")
    return Address(username=local, domain=domain)


# the flows, shared by the web app and the CLI


@dataclass
class Service:
    """One place for subscribe / confirm / unsubscribe / preferences, so the web app and the CLI behave alike."""

    env: Env
    config_path: Path
    store: Store
    secret: str
    transport_factory: Callable[[], Transport]
    limits: Limits = field(default_factory=Limits)

    @property
    def file(self) -> SubscriberFile:
        return SubscriberFile(self.config_path)

    @property
    def mails(self) -> Mails:
        return Mails(self.env, self.secret)

    def _send(self, msg: EmailMessage) -> None:
        transport = self.transport_factory()
        try:
            transport.send(seal(msg, Signer.from_env(self.env)))
        finally:
            transport.close()

    def subscribe(self, email: str, choice: Choice, ip: str | None = None, now: datetime | None = None) -> None:
        """Start a double opt-in; the caller answers the same way whatever happens here (no enumeration)."""
        limits = self.limits
        if ip is not None and not allow(self.store, "subscribe-ip", ip, limits.subscribe_per_ip, limits.subscribe_window, now):
            raise RateLimited(ip)
        if not allow(self.store, "subscribe-address", email, limits.subscribe_per_address, limits.subscribe_window, now):
            raise RateLimited(email)
        config = self.file.load()
        if ip is not None and not allow(self.store, "mail-ip", ip, self.limits.mails_per_ip, self.limits.mail_window, now):
            return
        if not allow(self.store, "mail-address", email, self.limits.mails_per_address, self.limits.mail_window, now):
            return
        if config.subscriber(email) is not None:
            self._send(self.mails.already(email))
            return
        pending = add_pending(self.store, email, choice, now)
        self._send(self.mails.confirm(config, pending))

    def confirm(self, pending: Pending, now: datetime | None = None) -> Subscriber | None:
        """Add the subscriber to subscribers.yaml and send the welcome; None if this link was already used.

        The YAML is written before the pending row is used up, so a failed write leaves the link working."""
        self.file.add(pending.email, pending.choice)
        if not take_pending(self.store, pending):
            return None
        forget_unsubscribed(self.store, pending.email)
        config = self.file.load()
        subscriber = config.subscriber(pending.email)
        assert subscriber is not None
        message, shown = self.mails.welcome(config, self.store, subscriber, now)
        try:
            self._send(message)
            self.store.record_sent(subscriber.email, shown, "welcome", now)  # the first digest does not repeat them
        except DeliveryError as exc:  # they are subscribed either way; the digest will reach them
            log.warning("welcome mail to %s not sent: %s", subscriber.email, exc.reply)
        return subscriber

    def unsubscribe(self, email: str) -> bool:
        """Remove them from subscribers.yaml at once; True if they were there."""
        removed = self.file.remove(email)
        record_unsubscribed(self.store, email)
        return removed
