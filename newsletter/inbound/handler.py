"""Acting on mail that comes back: pause, count, unsubscribe, answer commands; one message at a time."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any, Literal, Protocol

from newsletter.environment import Env
from newsletter.errors import DeliveryError, InvalidInput, RateLimited
from newsletter.inbound.attribution import Attribution, attribute
from newsletter.inbound.classify import Kind, Report, classify, parse
from newsletter.inbound.commands import command
from newsletter.inbound.senders import answerable, authenticated, sender
from newsletter.mail import tokens
from newsletter.mail.message import seal
from newsletter.mail.templates import environment
from newsletter.mail.transports import Transport
from newsletter.model.config import Config
from newsletter.model.signup import Choice
from newsletter.storage.database import utcnow
from newsletter.storage.store import Store

log = logging.getLogger("newsletter.inbound")
REPLIES_PER_ADDRESS = 3  # answers one address gets from the command and unsubscribe addresses per REPLY_WINDOW
REPLY_WINDOW = timedelta(hours=24)


class Subscriptions(Protocol):
    """The double opt-in and unsubscribing the web app uses (subscriptions.Service)."""

    def subscribe(self, email: str, choice: Choice, ip: str | None = None, now: datetime | None = None) -> Literal["confirm", "already", "limited"]: ...

    def unsubscribe(self, email: str, wait: float | None = None) -> bool: ...


@dataclass(frozen=True)
class Outcome:
    """What one message was and what was done about it: a line of `newsletter inbound --json`."""

    source: str
    kind: Kind
    recipients: tuple[str, ...]
    action: str

    def as_json(self) -> dict[str, Any]:
        return {"source": self.source, "kind": self.kind, "recipients": list(self.recipients), "action": self.action}


@dataclass
class Handler:
    """Classifies each message, ties reports to our deliveries, and acts; everything it changes goes through the store and the service."""

    env: Env
    config: Config
    store: Store
    secret: str
    service: Subscriptions
    transport_factory: Callable[[], Transport]

    def handle(self, source: str, data: bytes, now: datetime | None = None) -> Outcome:
        now = now or utcnow()
        report = classify(data)
        outcome = Outcome(source, report.kind, report.recipients, "")
        if report.kind in ("hard_bounce", "soft_bounce", "complaint"):
            found = attribute(report, self.store, self.secret, self.env.bounce_address)
            if found is None:
                total = self.store.count_unattributed()
                log.warning("%s: %s about %s ties to no mail we sent; nothing changed (%d such so far)", source, report.kind, _list(report.recipients), total)
                return replace(outcome, action="unattributed: names no mail we sent; logged, nothing changed")
            return replace(outcome, action=self._report(report, found, now))
        if report.kind == "auto_reply":
            return replace(outcome, action="ignored: auto-reply")
        if report.kind == "other":
            msg = parse(data)
            if self.env.unsubscribe_mailto and _is_for(report, self.env.unsubscribe_mailto):
                who = sender(msg)
                return Outcome(source, "unsubscribe", (who,) if who else (), self._unsubscribe(msg, who, now))
            if self.env.command_address and _is_for(report, self.env.command_address):
                who = sender(msg)
                return Outcome(source, "command", (who,) if who else (), self._command(msg, who, now))
        return replace(outcome, action="ignored")

    # reports on our deliveries

    def _report(self, report: Report, found: Attribution, now: datetime) -> str:
        who, kind = found.subscriber, report.kind
        if kind == "hard_bounce" and report.recipients and who not in report.recipients:
            kind = "soft_bounce"  # about another address (a forward?): it says nothing certain about this reader's
        new = self.store.record_bounce(found.edition, who, kind, report.reason or kind, now)
        where = f"{found.edition} to {who} (by {found.via})"
        if kind == "complaint":
            self.service.unsubscribe(who)
            log.warning("complaint about %s: unsubscribed", where)
            return f"unsubscribed {who}: complaint about {found.edition}"
        if kind == "hard_bounce":
            if self.store.pause(who, f"hard bounce of {found.edition}: {report.reason or 'address refused'}"[:500], now):
                log.warning("hard bounce of %s: paused (newsletter status --resume %s)", where, who)
                return f"paused {who}: hard bounce of {found.edition}"
            return f"{who} already paused"
        in_a_row = self.store.soft_bounces_in_a_row(who, now - timedelta(days=self.env.soft_bounce_days))
        limit = self.env.pause_after_failures
        if in_a_row >= limit and self.store.pause(who, f"{in_a_row} digests in a row soft-bounced; last {found.edition}: {report.reason}"[:500], now):
            log.warning("soft bounce of %s: paused after %d in a row", where, in_a_row)
            return f"paused {who}: {in_a_row} soft bounces in a row"
        return f"counted soft bounce for {who}: {in_a_row} of {limit} in a row" + ("" if new else " (this report was seen before)")

    # mail from readers

    def _unsubscribe(self, msg: EmailMessage, who: str | None, now: datetime) -> str:
        """Authenticated: unsubscribed at once (nothing is sent, so automatic mail may do it too); else answered with a link."""
        if who is None:
            return "ignored: no single sender"
        if self.config.subscriber(who) is None:
            return f"ignored: {who} is not a subscriber"
        if authenticated(msg, self.env.authserv_id, who):
            self.service.unsubscribe(who)
            return f"unsubscribed {who}: authenticated mail"
        if not answerable(msg):
            return "ignored: not authenticated, and automatic mail is never answered (no loop)"
        if not self._may_reply(who, now):
            return f"not answered: {who} had {REPLIES_PER_ADDRESS} replies within {REPLY_WINDOW}"
        url = f"{self.env.base_url}/unsubscribe/{tokens.sign(self.secret, tokens.UNSUBSCRIBE, who, self.store.link_version(who))}"
        self._send(msg, who, "Unsubscribe from the paper digest", "web/mail_unsubscribe_confirm.txt", {"unsubscribe_url": url})
        return f"replied to {who} with a one-click unsubscribe link: not authenticated"

    def _command(self, msg: EmailMessage, who: str | None, now: datetime) -> str:
        asked = command(msg)
        if asked.name == "unsubscribe":
            return self._unsubscribe(msg, who, now)
        if who is None or not answerable(msg):
            return "ignored: automatic mail or no single sender (no reply, no loop)"
        if asked.name == "subscribe":
            return self._subscribe(msg, who, asked.args, now)
        if not self._may_reply(who, now):
            return f"not answered: {who} had {REPLIES_PER_ADDRESS} replies within {REPLY_WINDOW}"
        subject = "Topics of the paper digest" if asked.name == "topics" else "How to use the paper digest by mail"
        self._help(msg, who, subject, "" if asked.name else "That mail held no command we know.")
        return f"replied to {who} with {'the topics' if asked.name == 'topics' else 'help'}"

    def _subscribe(self, msg: EmailMessage, who: str, wanted: tuple[str, ...], now: datetime) -> str:
        unknown = [t for t in wanted if t not in self.config.topics]
        if unknown:
            if not self._may_reply(who, now):
                return f"not answered: {who} had {REPLIES_PER_ADDRESS} replies within {REPLY_WINDOW}"
            self._help(msg, who, "How to use the paper digest by mail", f"There is no topic {', '.join(unknown)}; nothing changed.")
            return f"replied to {who}: unknown topic {', '.join(unknown)}"
        try:
            choice = Choice(tuple(t for t in self.config.topics if not wanted or t in wanted))
            sent = self.service.subscribe(who, choice, now=now)
        except RateLimited:
            return f"not answered: too many subscribe requests for {who} lately"
        except (InvalidInput, DeliveryError) as exc:
            return f"not subscribed: {exc}"
        return {
            "confirm": f"confirmation link mailed to {who}: nothing changes until they confirm",
            "already": f"{who} is already subscribed: told so",
            "limited": f"not answered: enough confirmation mails went to {who} (or to everyone) lately",
        }[sent]

    def _help(self, msg: EmailMessage, who: str, subject: str, problem: str) -> None:
        topics = [(name, topic.title) for name, topic in self.config.topics.items()]
        self._send(msg, who, subject, "web/mail_commands.txt", {"problem": problem, "topics": topics, "command_address": self.env.command_address})

    def _may_reply(self, who: str, now: datetime) -> bool:
        return self.store.allow("inbound-reply", who, REPLIES_PER_ADDRESS, REPLY_WINDOW, now)

    def _send(self, original: EmailMessage, to: str, subject: str, template: str, context: dict[str, Any]) -> None:
        """An answer (RFC 3834: Auto-Submitted: auto-replied, In-Reply-To) that echoes nothing the mail said."""
        reply = EmailMessage()
        sender_address = self.env.from_address
        reply["From"] = Address(sender_address.display_name, addr_spec=_reply_from(self.env, template))
        reply["To"] = Address(addr_spec=to)
        reply["Subject"] = subject
        reply["Date"] = format_datetime(utcnow())
        reply["Message-ID"] = make_msgid(domain=sender_address.domain or "localhost")
        reply["Auto-Submitted"] = "auto-replied"
        original_id = str(original.get("Message-ID", "")).strip()
        if original_id.startswith("<") and original_id.endswith(">") and " " not in original_id:
            reply["In-Reply-To"] = original_id
        body = environment(self.env.templates).get_template(template).render({**context, "base_url": self.env.base_url})
        reply.set_content(body.strip() + "\n")
        transport = self.transport_factory()
        try:
            transport.send(seal(reply))
        finally:
            transport.close()


def _reply_from(env: Env, template: str) -> str:
    """Answers come from the address that was written to, so a reader's "reply" reaches it again."""
    if template == "web/mail_commands.txt" and env.command_address:
        return env.command_address
    return env.from_address.addr_spec


def _is_for(report: Report, address: str) -> bool:
    """Whether the message was delivered to `address` (or `address` with a +extension)."""
    local, _, domain = address.lower().rpartition("@")
    for got in report.addressed_to:
        got_local, _, got_domain = got.rpartition("@")
        if got_domain == domain and (got_local == local or got_local.startswith(local + "+")):
            return True
    return False


def _list(addresses: tuple[str, ...]) -> str:
    return ", ".join(addresses) or "no address"
