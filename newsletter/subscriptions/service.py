"""Double opt-in, rate limits and unsubscribing, over the store and subscribers.yaml."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Literal

from newsletter.config.edit import SubscriberFile
from newsletter.environment import Env
from newsletter.errors import DeliveryError, RateLimited
from newsletter.mail.message import seal
from newsletter.mail.signing import Signer
from newsletter.mail.transports import Transport
from newsletter.model.config import Subscriber
from newsletter.model.signup import Choice, Pending
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
            transport.send(seal(msg, Signer.from_settings(self.env.dkim)))
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

        The YAML is written before the pending row is used up, so a failed write leaves the link working."""
        self.file.add(pending.email, pending.choice)
        if not self.store.take_pending(pending):
            return None
        if self.store.forget_unsubscribed(pending.email):
            # Links mailed during an earlier subscription stay dead. Leaving does not revoke: a one-click
            # unsubscribe a mail provider repeats must still succeed, and a preferences link of someone gone opens nothing.
            self.store.revoke_links(pending.email)
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
        self.store.record_unsubscribed(email)
        return removed
