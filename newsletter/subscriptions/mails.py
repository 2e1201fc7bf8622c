"""The service's own mails: confirm, already subscribed, welcome."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

import jinja2

from newsletter.environment import Env
from newsletter.mail import tokens
from newsletter.mail.message import Headers, build_message
from newsletter.mail.templates import environment
from newsletter.model.config import Config, Subscriber
from newsletter.model.signup import Pending
from newsletter.pipeline.planning import Planner
from newsletter.storage.database import utcnow
from newsletter.storage.store import Store
from newsletter.subscriptions.optin import CONFIRM_MAX_AGE, confirm_token

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WELCOME_PAPERS = 5


# mails


@dataclass
class Mails:
    """Builds the service's own mails (confirm, already subscribed, welcome) from templates/web/*.txt."""

    env: Env
    secret: str
    jinja: jinja2.Environment = field(init=False)

    def __post_init__(self) -> None:
        self.jinja = environment(self.env.templates)

    def links(self, email: str, link_version: int) -> dict[str, str]:
        return {
            "preferences_url": f"{self.env.base_url}/preferences/{tokens.sign(self.secret, tokens.PREFERENCES, email, link_version)}",
            "unsubscribe_url": f"{self.env.base_url}/unsubscribe/{tokens.sign(self.secret, tokens.UNSUBSCRIBE, email, link_version)}",
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
        return self._message(
            pending.email,
            "Confirm your paper digest subscription",
            "web/mail_confirm.txt",
            {"url": url, "topics": topics, "hours": int(CONFIRM_MAX_AGE.total_seconds() // 3600), "base_url": self.env.base_url},
        )

    def already(self, email: str, link_version: int) -> EmailMessage:
        """Someone asked to subscribe an address that already is: tell its owner, and change nothing."""
        context = {**self.links(email, link_version), "base_url": self.env.base_url}
        return self._message(email, "You are already subscribed to the paper digest", "web/mail_already.txt", context)

    def welcome(self, config: Config, store: Store, subscriber: Subscriber, now: datetime | None = None) -> tuple[EmailMessage, list[str]]:
        """Sent on confirmation: the most recent papers for their topics, as a taste of the digest; and their ids."""
        digest = Planner(config, store, now or utcnow(), readers=[subscriber]).next_digest(subscriber)
        papers = sorted(digest.papers, key=lambda p: p.published or _EPOCH, reverse=True)[:WELCOME_PAPERS] if digest else []
        links = self.links(subscriber.email, store.link_version(subscriber.email))
        context = {"papers": papers, "topics": [config.topics[t].title for t in subscriber.topics if t in config.topics], "subscriber": subscriber, **links}
        text = self.jinja.get_template("web/mail_welcome.txt").render(context)
        html = self.jinja.get_template("web/mail_welcome.html").render(context)
        headers = Headers(
            to=_address(subscriber.email), subject="Welcome to the paper digest", unsubscribe_url=links["unsubscribe_url"], list_id=self.env.list_id
        )
        return build_message(self.env.from_address, headers, text.strip() + "\n", html), [p.id for p in papers]


def _address(email: str) -> Address:
    local, _, domain = email.rpartition("@")
    return Address(username=local, domain=domain)
