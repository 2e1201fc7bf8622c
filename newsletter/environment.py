"""Deployment settings and secrets from the process environment and `.env`, with real variables winning."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass
from email.headerregistry import Address
from email.utils import parseaddr
from functools import cached_property
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from dotenv import dotenv_values

from newsletter.errors import EnvError
from newsletter.mail.pool import PoolSettings
from newsletter.mail.signing import DkimSettings
from newsletter.mail.transports import SECURITY_PORTS, SmtpSettings
from newsletter.storage.connection import is_url

N = TypeVar("N", int, float)
DEFAULT_FROM = "Paper Digest <digest@localhost>"


@dataclass(frozen=True)
class Env:
    """Everything `.env.example` documents, parsed once."""

    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_security: str = "starttls"
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_timeout: float = 30.0
    smtp_tls_verify: bool = True  # SMTP_TLS_VERIFY=false only for a self-signed test server
    smtp_connections: int = 4
    smtp_rate: float | None = None  # messages per second over all connections; None = as fast as the server takes them
    smtp_max_attempts: int = 5  # tries per delivery over all runs before a temporary refusal becomes `failed`
    smtp_retry_delay: float = 5.0  # first in-run backoff after a temporary refusal, doubled each time
    pause_after_failures: int = 3  # consecutive hard refusals before a subscriber is paused
    send_workers: int = 1  # NEWSLETTER_SEND_WORKERS: processes a send spreads its messages over (`send --workers`)
    unsubscribe_mailto: str | None = None  # NEWSLETTER_UNSUBSCRIBE_MAILTO
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    dkim_private_key_path: Path | None = None
    sender: str | None = None  # NEWSLETTER_FROM
    outbox: Path = Path("outbox")
    db: Path | str = Path("newsletter.db")  # an SQLite file, or a postgresql:// URL (kept as text)
    db_timeout: float = 30.0  # NEWSLETTER_DB_TIMEOUT: seconds to wait for a lock another process holds on the database
    base_url: str = "http://localhost:8000"
    secret_key: str | None = None
    templates: Path | None = None
    config: str | None = None  # NEWSLETTER_CONFIG
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()  # NEWSLETTER_TRUSTED_PROXIES; () = trust none
    confirmations_per_hour: int = 100  # NEWSLETTER_CONFIRMATIONS_PER_HOUR: confirmation mails the web form may cause, over everyone
    bounce_address: str | None = None  # NEWSLETTER_BOUNCE_ADDRESS: base of the per-message VERP envelope senders
    command_address: str | None = None  # NEWSLETTER_COMMAND_ADDRESS: takes subscribe, unsubscribe, topics, help by mail
    authserv_id: str | None = None  # INBOUND_AUTHSERV_ID: the receiving MTA whose Authentication-Results are believed
    soft_bounce_days: int = 30  # INBOUND_SOFT_BOUNCE_DAYS: soft bounces count toward a pause only within this many days
    imap_host: str | None = None
    imap_port: int = 993
    imap_user: str | None = None
    imap_password: str | None = None
    imap_folder: str = "INBOX"
    imap_done_folder: str = "newsletter-processed"  # INBOUND_IMAP_DONE_FOLDER: where read messages are moved (never deleted)
    imap_tls: bool = True  # INBOUND_IMAP_TLS=false only for a loopback test server
    imap_tls_verify: bool = True
    poll_seconds: float = 60.0  # INBOUND_POLL_SECONDS
    keep_editions_days: int | None = None  # NEWSLETTER_KEEP_EDITIONS_DAYS: finished deliveries kept by `prune`; None = as long as an edition's link opens
    keep_papers_days: int = 365  # NEWSLETTER_KEEP_PAPERS_DAYS: papers' bodies kept by `prune` (the public pages' archive reaches this far back)

    @property
    def smtp(self) -> SmtpSettings | None:
        """How to reach the SMTP server; None when SMTP_HOST is unset and mail goes to the outbox folder."""
        if not self.smtp_host:
            return None
        return SmtpSettings(
            host=self.smtp_host,
            port=self.smtp_port,
            security=self.smtp_security,
            username=self.smtp_username,
            password=self.smtp_password,
            timeout=self.smtp_timeout,
            tls_verify=self.smtp_tls_verify,
        )

    @property
    def pool(self) -> PoolSettings:
        """How many SMTP connections send at once, and at what overall rate."""
        return PoolSettings(connections=self.smtp_connections, rate=self.smtp_rate)

    @property
    def dkim(self) -> DkimSettings | None:
        """The DKIM key and where it is published; None unless DKIM_SELECTOR, DKIM_DOMAIN and DKIM_PRIVATE_KEY_PATH are all set."""
        if not (self.dkim_selector and self.dkim_domain and self.dkim_private_key_path):
            return None
        return DkimSettings(self.dkim_selector, self.dkim_domain, self.dkim_private_key_path)

    @cached_property
    def from_address(self) -> Address:
        """The From header as an Address (parsed once: every mail of a send asks); a placeholder on the local outbox when unset."""
        name, addr = parseaddr(self.sender or DEFAULT_FROM)
        return Address(display_name=name, addr_spec=addr)

    @cached_property
    def list_id(self) -> str:
        """The List-Id of every mail this installation sends, on the From domain."""
        return f"Paper digest <digest.{self.from_address.domain or 'localhost'}>"


def load(environ: dict[str, str] | None = None, dotenv: Path = Path(".env")) -> Env:
    """Merge `.env` under the real environment and parse it; raise EnvError naming the variable.

    Relative paths (the database, outbox, templates, DKIM key, and their defaults) are taken from the folder the
    `.env` is looked for in, which the CLI makes the config file's: a command run from elsewhere uses the same files."""
    values = {k: v for k, v in dotenv_values(dotenv).items() if v is not None} if dotenv.is_file() else {}
    values.update(os.environ if environ is None else environ)

    def get(name: str) -> str | None:
        value = values.get(name, "").strip()
        return value or None

    def path(name: str, default: Path | None = None) -> Path | None:
        value = get(name)
        given = Path(value).expanduser() if value else default
        return None if given is None else (dotenv.parent / given).absolute()  # absolute: messages name the very file

    security = (get("SMTP_SECURITY") or "starttls").lower()
    if security not in SECURITY_PORTS:
        raise EnvError(f"SMTP_SECURITY must be one of {', '.join(SECURITY_PORTS)}, got {security!r}")
    port = get("SMTP_PORT")
    if port is not None and not port.isdigit():
        raise EnvError(f"SMTP_PORT must be a port number, got {port!r}")
    sender = get("NEWSLETTER_FROM")
    if sender is not None:
        _, addr = parseaddr(sender)
        if "@" not in addr or any(c in sender for c in "\r\n"):
            raise EnvError(f"NEWSLETTER_FROM must be an address like 'Paper Digest <digest@example.org>', got {sender!r}")
    base_url = get("NEWSLETTER_BASE_URL") or Env.base_url
    if not base_url.startswith(("http://", "https://")):
        raise EnvError(f"NEWSLETTER_BASE_URL must start with http:// or https://, got {base_url!r}")
    mailto, bounce_address, command_address = (
        _address(get, name) for name in ("NEWSLETTER_UNSUBSCRIBE_MAILTO", "NEWSLETTER_BOUNCE_ADDRESS", "NEWSLETTER_COMMAND_ADDRESS")
    )
    if bounce_address is not None and "+" in bounce_address.partition("@")[0]:
        raise EnvError(f"NEWSLETTER_BOUNCE_ADDRESS must be a plain address (the newsletter adds +TAG itself), got {bounce_address!r}")
    imap_tls = _flag(get, "INBOUND_IMAP_TLS", True)
    proxies = []
    for item in (get("NEWSLETTER_TRUSTED_PROXIES") or "").split(","):
        if item.strip():
            try:
                proxies.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise EnvError(f"NEWSLETTER_TRUSTED_PROXIES must be IP addresses or networks like 10.0.0.0/8, comma-separated; got {item.strip()!r}") from None
    return Env(
        smtp_host=get("SMTP_HOST"),
        smtp_port=int(port) if port else SECURITY_PORTS[security],
        smtp_security=security,
        smtp_username=get("SMTP_USERNAME"),
        smtp_password=get("SMTP_PASSWORD"),
        sender=sender,
        outbox=path("NEWSLETTER_OUTBOX", Env.outbox) or Env.outbox,
        db=db_url if is_url(db_url := get("NEWSLETTER_DB") or "") else path("NEWSLETTER_DB", Path("newsletter.db")) or Path("newsletter.db"),
        db_timeout=_number(get, "NEWSLETTER_DB_TIMEOUT", float, 30.0, minimum=0),
        base_url=base_url.rstrip("/"),
        secret_key=get("NEWSLETTER_SECRET_KEY"),
        templates=path("NEWSLETTER_TEMPLATES"),
        config=get("NEWSLETTER_CONFIG"),
        smtp_tls_verify=_flag(get, "SMTP_TLS_VERIFY", True),
        smtp_connections=_number(get, "SMTP_CONNECTIONS", int, 4, minimum=1),
        smtp_rate=_number(get, "SMTP_RATE", float, 0.0, minimum=0) or None,
        smtp_max_attempts=_number(get, "SMTP_MAX_ATTEMPTS", int, 5, minimum=1),
        smtp_retry_delay=_number(get, "SMTP_RETRY_DELAY", float, 5.0, minimum=0),
        pause_after_failures=_number(get, "NEWSLETTER_PAUSE_AFTER_FAILURES", int, 3, minimum=1),
        send_workers=_number(get, "NEWSLETTER_SEND_WORKERS", int, 1, minimum=1),
        unsubscribe_mailto=mailto,
        dkim_selector=get("DKIM_SELECTOR"),
        dkim_domain=get("DKIM_DOMAIN"),
        dkim_private_key_path=path("DKIM_PRIVATE_KEY_PATH"),
        trusted_proxies=tuple(proxies),
        confirmations_per_hour=_number(get, "NEWSLETTER_CONFIRMATIONS_PER_HOUR", int, 100, minimum=1),
        bounce_address=bounce_address,
        command_address=command_address,
        authserv_id=get("INBOUND_AUTHSERV_ID"),
        soft_bounce_days=_number(get, "INBOUND_SOFT_BOUNCE_DAYS", int, 30, minimum=1),
        imap_host=get("INBOUND_IMAP_HOST"),
        imap_port=_number(get, "INBOUND_IMAP_PORT", int, 993 if imap_tls else 143, minimum=1),
        imap_user=get("INBOUND_IMAP_USER"),
        imap_password=get("INBOUND_IMAP_PASSWORD"),
        imap_folder=get("INBOUND_IMAP_FOLDER") or Env.imap_folder,
        imap_done_folder=get("INBOUND_IMAP_DONE_FOLDER") or Env.imap_done_folder,
        imap_tls=imap_tls,
        imap_tls_verify=_flag(get, "INBOUND_IMAP_TLS_VERIFY", True),
        poll_seconds=_number(get, "INBOUND_POLL_SECONDS", float, 60.0, minimum=1),
        keep_editions_days=_number(get, "NEWSLETTER_KEEP_EDITIONS_DAYS", int, 0, minimum=1) or None,
        keep_papers_days=_number(get, "NEWSLETTER_KEEP_PAPERS_DAYS", int, 365, minimum=1),
    )


def _address(get: Callable[[str], str | None], name: str) -> str | None:
    """One plain address (`mailto:` allowed in front), or None when unset."""
    value = get(name)
    if value is None:
        return None
    value = value.removeprefix("mailto:")
    if value.count("@") != 1 or any(c in value for c in "\r\n<>, ") or not all(value.partition("@")[::2]):
        raise EnvError(f"{name} must be one address like 'someone@example.org', got {value!r}")
    return value


def _flag(get: Callable[[str], str | None], name: str, default: bool) -> bool:
    value = get(name)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise EnvError(f"{name} must be true or false, got {value!r}")


def _number(get: Callable[[str], str | None], name: str, kind: Callable[[str], N], default: N, minimum: float) -> N:
    value = get(name)
    if value is None:
        return default
    try:
        number = kind(value)
    except ValueError:
        raise EnvError(f"{name} must be a number, got {value!r}") from None
    if number < minimum:
        raise EnvError(f"{name} must be at least {minimum}, got {value!r}")
    return number


def problems(env: Env) -> list[str]:
    """What stops a real (SMTP) send, as messages naming the variable."""
    found = []
    if env.smtp_host:
        if not env.sender:
            found.append("NEWSLETTER_FROM is required when SMTP_HOST is set")
        if not env.secret_key:
            found.append("NEWSLETTER_SECRET_KEY is required when SMTP_HOST is set (it signs unsubscribe links)")
        if bool(env.smtp_username) != bool(env.smtp_password):
            found.append("SMTP_USERNAME and SMTP_PASSWORD go together: set both or neither")
        if not env.base_url.startswith("https://") and not is_loopback(urlsplit(env.base_url).hostname or ""):
            found.append(
                f"NEWSLETTER_BASE_URL={env.base_url} is not https: the confirmation, preferences and unsubscribe links in mails "
                "would not work (or not safely) for readers; set it to the public https:// address of `newsletter serve` "
                "(plain http only for localhost, 127.0.0.1 or ::1)"
            )
    dkim = (env.dkim_selector, env.dkim_domain, env.dkim_private_key_path)
    if any(dkim) and not all(dkim):
        found.append("DKIM_SELECTOR, DKIM_DOMAIN and DKIM_PRIVATE_KEY_PATH go together: set all three or none")
    if env.dkim_domain and env.sender and not aligned(env.dkim_domain, env.from_address.domain):
        found.append(
            f"DKIM_DOMAIN={env.dkim_domain} does not align with the From domain {env.from_address.domain} (NEWSLETTER_FROM): "
            "receivers would not count the signature for DMARC; use the From domain or a parent or subdomain of it"
        )
    if env.dkim_private_key_path and not env.dkim_private_key_path.is_file():
        found.append(f"DKIM_PRIVATE_KEY_PATH={env.dkim_private_key_path} is not a readable file")
    if env.imap_host:
        if not (env.imap_user and env.imap_password):
            found.append("INBOUND_IMAP_USER and INBOUND_IMAP_PASSWORD are required with INBOUND_IMAP_HOST")
        if not env.imap_tls and not is_loopback(env.imap_host):
            found.append(f"INBOUND_IMAP_TLS=false would send the mailbox password to {env.imap_host} in plaintext; only a loopback server may go without TLS")
    if env.templates and not env.templates.is_dir():
        found.append(f"NEWSLETTER_TEMPLATES={env.templates} is not a folder")
    return found


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1: links only this machine can follow."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def aligned(dkim_domain: str, from_domain: str) -> bool:
    """Relaxed DMARC alignment, simplified: the same domain, or one a dot-suffix of the other (mail.example.org and example.org).

    Real DMARC compares organisational domains via the Public Suffix List; the simple rule differs only when one side
    is itself a public suffix (co.uk), where nobody can publish a DKIM key, so it needs no list to ship and update."""
    a, b = dkim_domain.lower().rstrip("."), from_domain.lower().rstrip(".")
    return bool(a and b) and (a == b or a.endswith("." + b) or b.endswith("." + a))
