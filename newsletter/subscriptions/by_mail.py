"""Mail that comes back, wired to this service: the one inbound handler `newsletter inbound` and the daemon use."""

from __future__ import annotations

from newsletter.environment import Env
from newsletter.inbound import Handler
from newsletter.inbound.imap import ImapSettings
from newsletter.mail.transports import connection
from newsletter.model.config import Config
from newsletter.pipeline.planning import secret_key
from newsletter.storage.store import Store
from newsletter.subscriptions.service import Limits, Service


def inbound_handler(env: Env, config: Config, store: Store) -> Handler:
    """Unsubscribing and double opt-in through the Service, answers through the same transport as its mails."""
    secret = secret_key(env, store)
    service = Service(env, config.path, store, secret, lambda: connection(env.smtp, env.outbox, env.dkim), Limits.of(env))
    return Handler(env, config, store, secret, service, service.transport_factory)


def imap_settings(env: Env) -> ImapSettings | None:
    """The mailbox the daemon reads (INBOUND_IMAP_*), or None when INBOUND_IMAP_HOST is unset."""
    if not env.imap_host:
        return None
    return ImapSettings(
        env.imap_host, env.imap_port, env.imap_user or "", env.imap_password or "", env.imap_folder, env.imap_done_folder, env.imap_tls, env.imap_tls_verify
    )
