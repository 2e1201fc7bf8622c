"""Which delivery a report is about, so that only reports on mail this installation sent change anything."""

from __future__ import annotations

from dataclasses import dataclass

from newsletter.inbound.classify import Report
from newsletter.mail import verp
from newsletter.storage.store import Store


@dataclass(frozen=True)
class Attribution:
    """The delivery a report refers to, and how we know."""

    edition: str
    subscriber: str
    via: str  # "VERP" or "Message-ID"


def attribute(report: Report, store: Store, secret: str, bounce_address: str | None) -> Attribution | None:
    """A signed VERP tag in the address the report came to (or the quoted original's Return-Path), else the quoted
    original's Message-ID found in the ledger; None when the report names no mail we sent."""
    if bounce_address:
        for candidate in report.addressed_to + report.quoted_senders:
            tag = verp.tag_of(bounce_address, candidate)
            if tag is None:
                continue
            found = verp.resolve(secret, tag, store.sent_editions(), store.sent_to)
            if found is not None:
                return Attribution(found[0], found[1], "VERP")
    for message_id in report.message_ids:
        delivery = store.delivery_by_message_id(message_id)
        if delivery is not None:
            return Attribution(delivery.edition, delivery.subscriber, "Message-ID")
    return None
