"""Delivery settings from `.env`: defaults that are safe, and a clear message naming the variable when a value is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter import environment
from newsletter.errors import EnvError
from newsletter.mail.pool import PoolSettings
from newsletter.mail.signing import DkimSettings
from newsletter.mail.transports import SmtpSettings

NO_DOTENV = Path("/nonexistent")


def load(**values: str) -> environment.Env:
    return environment.load(values, dotenv=NO_DOTENV)


def test_defaults_verify_tls_and_send_over_a_few_connections_without_a_rate_cap() -> None:
    env = load()
    assert env.smtp_tls_verify is True
    assert (env.smtp_connections, env.smtp_rate, env.smtp_max_attempts, env.pause_after_failures) == (4, None, 5, 3)
    assert env.unsubscribe_mailto is None and env.dkim_selector is None


def test_delivery_settings_are_parsed() -> None:
    env = load(SMTP_TLS_VERIFY="false", SMTP_CONNECTIONS="8", SMTP_RATE="12.5", NEWSLETTER_UNSUBSCRIBE_MAILTO="mailto:leave@example.org")
    assert (env.smtp_tls_verify, env.smtp_connections, env.smtp_rate, env.unsubscribe_mailto) == (False, 8, 12.5, "leave@example.org")
    assert load(NEWSLETTER_SEND_WORKERS="3").send_workers == 3 and load().send_workers == 1, "one process unless asked"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SMTP_TLS_VERIFY", "maybe", "SMTP_TLS_VERIFY must be true or false"),
        ("SMTP_CONNECTIONS", "0", "SMTP_CONNECTIONS must be at least 1"),
        ("NEWSLETTER_SEND_WORKERS", "0", "NEWSLETTER_SEND_WORKERS must be at least 1"),
        ("SMTP_RATE", "fast", "SMTP_RATE must be a number"),
        ("NEWSLETTER_UNSUBSCRIBE_MAILTO", "a@b.org\r\nBcc: x@y.org", "NEWSLETTER_UNSUBSCRIBE_MAILTO must be one address"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(EnvError, match=message):
        load(**{name: value})


def test_dkim_settings_go_together_and_the_key_must_exist(tmp_path: Path) -> None:
    assert any("DKIM_SELECTOR, DKIM_DOMAIN and DKIM_PRIVATE_KEY_PATH go together" in p for p in environment.problems(load(DKIM_SELECTOR="news")))
    missing = load(DKIM_SELECTOR="news", DKIM_DOMAIN="example.org", DKIM_PRIVATE_KEY_PATH=str(tmp_path / "none.pem"))
    assert any("is not a readable file" in p for p in environment.problems(missing))


def test_the_mail_layer_gets_its_own_settings_objects() -> None:
    assert load().smtp is None, "no SMTP_HOST: mail goes to the outbox"
    env = load(SMTP_HOST="mail.example.org", SMTP_SECURITY="ssl", SMTP_USERNAME="u", SMTP_PASSWORD="p", SMTP_TLS_VERIFY="false")
    assert env.smtp == SmtpSettings("mail.example.org", 465, "ssl", "u", "p", 30.0, tls_verify=False), "the port follows SMTP_SECURITY"
    assert load(SMTP_HOST="mail.example.org", SMTP_PORT="2525").smtp == SmtpSettings("mail.example.org", 2525, "starttls")
    assert load(SMTP_CONNECTIONS="8", SMTP_RATE="12.5").pool == PoolSettings(8, 12.5) and load().pool == PoolSettings(4, None)
    assert load(DKIM_SELECTOR="news", DKIM_DOMAIN="example.org").dkim is None, "all three or no signing"
    dkim = load(DKIM_SELECTOR="news", DKIM_DOMAIN="example.org", DKIM_PRIVATE_KEY_PATH="/keys/dkim.pem").dkim
    assert dkim == DkimSettings("news", "example.org", Path("/keys/dkim.pem"))


SMTP = {"SMTP_HOST": "mail.example.org", "NEWSLETTER_FROM": "Paper Digest <digest@example.org>", "NEWSLETTER_SECRET_KEY": "k"}


@pytest.mark.parametrize("url", ["http://localhost:8000", "http://127.0.0.1:8000", "http://127.0.0.2", "http://[::1]:8000", "https://news.example.org"])
def test_a_real_send_accepts_https_or_a_loopback_base_url(url: str) -> None:
    assert environment.problems(load(**SMTP, NEWSLETTER_BASE_URL=url)) == []


@pytest.mark.parametrize("url", ["http://news.example.org", "http://192.168.1.5:8000", "http://localhost.example.org"])
def test_a_real_send_refuses_a_plain_http_base_url_for_readers(url: str) -> None:
    (problem,) = environment.problems(load(**SMTP, NEWSLETTER_BASE_URL=url))
    assert problem.startswith(f"NEWSLETTER_BASE_URL={url} is not https")


def test_the_outbox_demo_keeps_the_default_localhost_url() -> None:
    env = load()
    assert env.base_url == "http://localhost:8000" and environment.problems(env) == []
    assert environment.problems(load(NEWSLETTER_BASE_URL="http://news.example.org")) == [], "no SMTP_HOST: nothing reaches a reader"


def test_dkim_domain_must_align_with_the_from_domain(tmp_path: Path) -> None:
    key = tmp_path / "dkim.pem"
    key.write_text("not checked here", encoding="utf-8")

    def problems(domain: str, sender: str = "Paper Digest <digest@example.org>") -> list[str]:
        return environment.problems(load(**{**SMTP, "NEWSLETTER_FROM": sender}, DKIM_SELECTOR="news", DKIM_DOMAIN=domain, DKIM_PRIVATE_KEY_PATH=str(key)))

    assert problems("example.org") == problems("Example.ORG") == problems("mail.example.org") == []
    assert problems("example.org", "digest@lists.example.org") == []
    (problem,) = problems("example.com")
    assert problem.startswith("DKIM_DOMAIN=example.com does not align with the From domain example.org (NEWSLETTER_FROM)")
    assert problems("badexample.org"), "a dot-suffix, not any suffix"


def test_check_refuses_a_dead_unsubscribe_link(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from newsletter.cli import cli

    config = tmp_path / "subscribers.yaml"
    config.write_text("topics:\n  a:\n    any: [x]\n", encoding="utf-8")
    env = {**SMTP, "NEWSLETTER_BASE_URL": "http://news.example.org", "NEWSLETTER_DB": str(tmp_path / "s.db")}
    for command in (["check"], ["send"], ["serve"], ["run"]):
        result = CliRunner().invoke(cli, ["--config", str(config), *command], env=env)
        assert result.exit_code == 1, (command, result.output)
        assert "NEWSLETTER_BASE_URL=http://news.example.org is not https" in result.output


def test_mail_that_comes_back_settings_are_parsed_with_safe_defaults() -> None:
    env = load()
    assert (env.bounce_address, env.command_address, env.authserv_id, env.imap_host) == (None, None, None, None)
    assert (env.imap_port, env.imap_tls, env.imap_folder, env.imap_done_folder, env.poll_seconds, env.soft_bounce_days) == (
        993,
        True,
        "INBOX",
        "newsletter-processed",
        60.0,
        30,
    )
    env = load(NEWSLETTER_BOUNCE_ADDRESS="bounces@example.org", NEWSLETTER_COMMAND_ADDRESS="mailto:digest-request@example.org", INBOUND_IMAP_TLS="false")
    assert (env.bounce_address, env.command_address, env.imap_port) == ("bounces@example.org", "digest-request@example.org", 143)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("NEWSLETTER_BOUNCE_ADDRESS", "bounces+x@example.org", "must be a plain address (the newsletter adds +TAG itself)"),
        ("NEWSLETTER_BOUNCE_ADDRESS", "not-an-address", "NEWSLETTER_BOUNCE_ADDRESS must be one address"),
        ("NEWSLETTER_COMMAND_ADDRESS", "a@b.org\nBcc: c@d.org", "NEWSLETTER_COMMAND_ADDRESS must be one address"),
        ("INBOUND_POLL_SECONDS", "0", "INBOUND_POLL_SECONDS must be at least 1"),
    ],
)
def test_bad_inbound_settings_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(EnvError, match=message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        load(**{name: value})


def test_a_mailbox_needs_its_login_and_tls_off_loopback() -> None:
    assert environment.problems(load(INBOUND_IMAP_HOST="imap.example.org")) == [
        "INBOUND_IMAP_USER and INBOUND_IMAP_PASSWORD are required with INBOUND_IMAP_HOST"
    ]
    plain = load(INBOUND_IMAP_HOST="imap.example.org", INBOUND_IMAP_USER="u", INBOUND_IMAP_PASSWORD="p", INBOUND_IMAP_TLS="false")
    assert environment.problems(plain) == [
        "INBOUND_IMAP_TLS=false would send the mailbox password to imap.example.org in plaintext; only a loopback server may go without TLS"
    ]
    assert environment.problems(load(INBOUND_IMAP_HOST="127.0.0.1", INBOUND_IMAP_USER="u", INBOUND_IMAP_PASSWORD="p", INBOUND_IMAP_TLS="false")) == []


def test_a_postgresql_url_is_kept_as_a_url_and_a_path_stays_a_file() -> None:
    url = "postgresql://newsletter:secret@db.example.org:5432/newsletter"
    assert load(NEWSLETTER_DB=url).db == url, "not a file name relative to the config's folder"
    assert load(NEWSLETTER_DB="postgres://db/newsletter").db == "postgres://db/newsletter"
    db = load(NEWSLETTER_DB="state/postgresql.db").db
    assert isinstance(db, Path) and db.is_absolute() and db.name == "postgresql.db"
