"""Double opt-in, rate limits and unsubscribing, over the store and subscribers.yaml."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Literal

from newsletter.config.edit import SubscriberFile
from newsletter.environment import Env
from newsletter.errors import ConcurrentEdit, DeliveryError, RateLimited
from newsletter.mail.message import seal
from newsletter.mail.transports import Transport
from newsletter.model.config import Subscriber
from newsletter.model.signup import Choice, Pending
from newsletter.storage.connection import is_url
from newsletter.storage.store import Store
from newsletter.subscriptions.mails import Mails
from newsletter.subscriptions.optin import add_pending

log = logging.getLogger("newsletter.subscriptions")


@dataclass(frozen=True)
class Limits:
    """How often one IP (an IPv6 /64) or one address may subscribe and be mailed a confirmation, per window, and how many
    such mails go out in all (NEWSLETTER_CONFIRMATIONS_PER_HOUR), so rotating addresses cannot mail a hundred strangers."""

    subscribe_per_ip: int = 10
    subscribe_per_address: int = 5
    subscribe_window: timedelta = timedelta(hours=1)
    mails_per_address: int = 3
    mails_per_ip: int = 20
    mail_window: timedelta = timedelta(hours=24)
    mails_in_all: int = 100
    mails_in_all_window: timedelta = timedelta(hours=1)

    @classmethod
    def of(cls, env: Env) -> Limits:
        """The defaults, with the global cap from the environment."""
        return cls(mails_in_all=env.confirmations_per_hour)


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
            transport.send(seal(msg))
        finally:
            transport.close()

    def subscribe(self, email: str, choice: Choice, ip: str | None = None, now: datetime | None = None) -> Literal["confirm", "already", "limited"]:
        """Start a double opt-in; the web app answers the same way whatever happens here (no enumeration).

        Returns which mail went out, for the operator's CLI: a confirmation link, an "already subscribed" note, or none
        ("limited": enough mails went to this address, this client or everyone lately)."""
        limits = self.limits
        if ip is not None and not self.store.allow("subscribe-ip", ip, limits.subscribe_per_ip, limits.subscribe_window, now):
            raise RateLimited(ip)
        if not self.store.allow("subscribe-address", email, limits.subscribe_per_address, limits.subscribe_window, now):
            raise RateLimited(email)
        config = self.file.load()
        if ip is not None and not self.store.allow("mail-ip", ip, self.limits.mails_per_ip, self.limits.mail_window, now):
            return "limited"
        if not self.store.allow("mail-address", email, self.limits.mails_per_address, self.limits.mail_window, now):
            return "limited"
        if not self.store.allow("mail-all", "", self.limits.mails_in_all, self.limits.mails_in_all_window, now):
            log.warning(
                "not mailing %s: %d confirmation mails went out within %s already (NEWSLETTER_CONFIRMATIONS_PER_HOUR)",
                email,
                limits.mails_in_all,
                limits.mails_in_all_window,
            )
            return "limited"
        if config.subscriber(email) is not None:
            self._send(self.mails.already(email, self.store.link_version(email)))
            return "already"
        pending = add_pending(self.store, email, choice, now)
        try:
            self._send(self.mails.confirm(config, pending))
        except DeliveryError:
            self.store.take_pending(pending)  # no link went out: leave no pending row behind
            raise
        return "confirm"

    def confirm(self, pending: Pending, now: datetime | None = None) -> Subscriber | None:
        """Add the subscriber to subscribers.yaml and send the welcome; None if this link was already used.

        The pending row is used up only once they are in the file, so a write that fails (after its retries on a
        file that kept changing) leaves them pending and the link working: nobody is told they are subscribed
        unless they are in the file. When the file is saved over on every attempt, the keeper adds them instead
        (one edit for every confirmation waiting, which a busy file cannot starve as fifty separate ones can) and
        this waits for it. For REASSERT afterwards the keeper puts them back should a save made on an older copy
        of the file drop them (it is waited for here too when that happens at once)."""
        try:
            self.file.add(pending.email, pending.choice)
        except ConcurrentEdit:  # saved over on every attempt: the keeper adds them with everyone else waiting, in one edit
            log.info("%s kept changing; handing %s to the keeper", self.config_path, pending.email)
        self.store.remember_confirmed(pending.email, pending.choice)  # from here on the keeper keeps them in the file
        k = keeper(self.config_path, self.store.location)
        config = self.file.load()
        subscriber = config.subscriber(pending.email)
        deadline = time.monotonic() + CONFIRM_WAIT
        while subscriber is None and time.monotonic() < deadline:  # a save of an older copy dropped them already
            k.wait(k.wake(), deadline - time.monotonic())
            config = self.file.load()
            subscriber = config.subscriber(pending.email)
        if subscriber is None:
            self.store.forget_confirmed(pending.email)
            raise ConcurrentEdit(f"{self.config_path} keeps being saved from an older copy; {pending.email} is still pending")
        if not self.store.take_pending(pending):
            return None
        if self.store.forget_unsubscribed(pending.email):
            # Links mailed during an earlier subscription stay dead. Leaving does not revoke: a one-click
            # unsubscribe a mail provider repeats must still succeed, and a preferences link of someone gone opens nothing.
            self.store.revoke_links(pending.email)
        k.wake()
        message, shown = self.mails.welcome(config, self.store, subscriber, now)
        try:
            self._send(message)
            self.store.record_sent(subscriber.email, shown, "welcome", now)  # the first digest does not repeat them
        except DeliveryError as exc:  # they are subscribed either way; the digest will reach them
            log.warning("welcome mail to %s not sent: %s", subscriber.email, exc.reply)
        return subscriber

    def unsubscribe(self, email: str, wait: float | None = None) -> bool:
        """Stop mailing them at once (the store: every send skips them), then remove them from subscribers.yaml.

        With `wait` None the file is written here (True if they were in it; a failed write raises, and they stay
        unsubscribed). Otherwise the removal is handed to the background keeper, which batches concurrent ones
        into one write and retries until it is done; this waits at most `wait` seconds for it and returns True."""
        with self.store.transaction():
            self.store.record_unsubscribed(email)
            self.store.forget_confirmed(email)
        if wait is None:
            return self.file.remove(email)
        k = keeper(self.config_path, self.store.location)
        k.wait(k.wake(), wait)
        return True


# keeping the app's changes in subscribers.yaml

REASSERT = timedelta(minutes=10)  # how long the app makes sure its confirmations and unsubscriptions stay in the file
CONFIRM_WAIT = 10.0  # seconds a confirmation waits for the keeper to put back a reader a stale save dropped
RETRY = 30.0  # seconds before a pass that failed is tried again on an unchanged file
POLL = 0.5  # seconds between looks at the file meanwhile (a digest of its bytes; it is parsed only when they changed)


class Keeper:
    """One thread per (subscribers.yaml, database) that writes queued unsubscriptions and keeps recent app changes in the file.

    Each pass reads who unsubscribed or confirmed within REASSERT and, if the file's bytes changed since the last
    pass that found it right, removes whoever unsubscribed and adds back whoever confirmed but is missing (a hand
    save made on an older copy), in one compare-and-swap edit. Concurrent one-click unsubscriptions thus become one
    write. Passes are counted, so a caller can wait for one that started after its change was stored.
    """

    def __init__(self, config_path: Path, db_path: Path | str) -> None:
        self.file = SubscriberFile(config_path)
        self.db_path = db_path
        self.cond = threading.Condition()
        self.requested = 0
        self.done = 0
        self.until = time.monotonic() + REASSERT.total_seconds()  # changes from before this process started are looked at too
        self.checked: bytes | None = None  # the file's digest when a pass last found nothing to do
        self.failed: bytes | None = None  # the digest a pass last failed on (logged once)
        self.retry_at = 0.0  # when a pass is tried again on that same content (a lock held for long may be gone)
        threading.Thread(target=self._run, name=f"newsletter-keeper:{config_path.name}", daemon=True).start()

    def wake(self) -> int:
        """Ask for a pass; the ticket `wait` takes."""
        with self.cond:
            self.requested += 1
            self.until = time.monotonic() + REASSERT.total_seconds()
            self.cond.notify_all()
            return self.requested

    def wait(self, ticket: int, timeout: float) -> bool:
        """Whether a pass that started after `ticket` was taken finished within `timeout` seconds."""
        with self.cond:
            return self.cond.wait_for(lambda: self.done >= ticket, timeout)

    def _run(self) -> None:
        while True:
            with self.cond:
                if self.requested == self.done:
                    self.cond.wait(POLL if time.monotonic() < self.until else None)
                ticket = self.requested
            if self.failed is not None and self._digest() == self.failed and time.monotonic() < self.retry_at:
                time.sleep(POLL)  # the file that refused the last pass is unchanged: wait for a save, or RETRY
                continue
            try:
                self.reconcile(forced=ticket > self.done)
            except Exception as exc:  # a broken hand edit, a lock held for long, a file being replaced: try again soon
                digest = self._digest()
                if digest != self.failed:
                    log.warning("subscribers.yaml: could not apply the app's changes yet (%s); retrying", exc)
                self.failed, self.retry_at = digest, time.monotonic() + RETRY
                time.sleep(POLL)
                continue
            self.failed = None
            with self.cond:
                self.done = max(self.done, ticket)
                self.cond.notify_all()

    def _digest(self) -> bytes | None:
        try:
            return self.file.snapshot().digest
        except (OSError, UnicodeDecodeError):
            return None

    def reconcile(self, forced: bool = False) -> None:
        """One pass: make the file reflect every unsubscription and confirmation of the last REASSERT."""
        digest = self._digest()
        if digest is not None and digest == self.checked and not forced:
            return
        since = datetime.now(UTC) - REASSERT
        with Store(self.db_path) as store:
            gone = store.unsubscribed_since(since)
            joined = store.confirmed_since(since)
        if not gone and not joined:
            self.checked = digest
            return
        config = self.file.load()
        missing = [(email, choice) for email, choice in joined if config.subscriber(email) is None]
        present = [email for email in gone if config.subscriber(email) is not None]
        if missing or present:
            added, _ = self.file.change(add=missing, remove=present)
            if added:
                log.warning("subscribers.yaml: put back %s, confirmed lately but no longer in the file (a save of an older copy?)", ", ".join(sorted(added)))
            self.checked = None  # look again next pass: the write may itself have raced with a save
        else:
            self.checked = digest


_keepers: dict[tuple[str, str], Keeper] = {}
_keepers_guard = threading.Lock()


def keeper(config_path: Path, db_path: Path | str) -> Keeper:
    """The keeper of this file and database (a file, or a postgresql:// URL) in this process, started on first use."""
    key = (str(config_path.resolve()), str(db_path) if is_url(db_path) else str(Path(db_path).resolve()))
    with _keepers_guard:
        found = _keepers.get(key)
        if found is None:
            found = _keepers[key] = Keeper(config_path, db_path)
        return found
