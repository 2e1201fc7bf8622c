"""The `newsletter` command: a thin layer that loads settings, calls the pipeline and prints what happened."""

from __future__ import annotations

import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from . import config as config_mod
from . import environment, pipeline, tokens
from .config import Config, ConfigError
from .environment import Env, EnvError
from .mailer import transport as make_transport
from .render import Reader, Renderer, RenderError
from .store import Store
from .digest import all_topics
from .topics import Matcher


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="subscribers.yaml to use (default: $NEWSLETTER_CONFIG or ./subscribers.yaml).")
@click.option("-v", "--verbose", is_flag=True, help="Log debugging detail.")
@click.version_option(package_name="newsletter")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: bool) -> None:
    """Research papers from feeds to a topic-aware daily email digest."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr)
    ctx.obj = {"config_path": config_path}


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _env() -> Env:
    try:
        return environment.load()
    except EnvError as exc:
        _fail(f".env or environment: {exc}")


def _config(ctx: click.Context, env: Env) -> Config:
    path = config_mod.default_path(ctx.obj["config_path"], {"NEWSLETTER_CONFIG": env.config or ""})
    try:
        return config_mod.load(path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(f"{len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''} in {path}; nothing was fetched or sent.", err=True)
        sys.exit(1)


def _ready(ctx: click.Context, need_smtp_settings: bool = True) -> tuple[Env, Config]:
    """Settings and config, refusing to go on when either is broken."""
    env = _env()
    config = _config(ctx, env)
    if need_smtp_settings:
        issues = environment.problems(env)
        if issues:
            _fail("; ".join(issues))
    return env, config


def _print_fetch(results: list[pipeline.SourceResult]) -> None:
    for r in results:
        if r.error:
            click.echo(f"  {r.name}: FAILED — {r.error}")
        elif r.not_modified and not r.papers:
            click.echo(f"  {r.name}: not modified")
        else:
            click.echo(f"  {r.name}: {r.papers} papers, {r.new} new")


@cli.command()
@click.option("--dry-run", is_flag=True, help="Render and report without sending or recording deliveries.")
@click.option("--to", "only", metavar="EMAIL", help="Only this subscriber.")
@click.pass_context
def send(ctx: click.Context, dry_run: bool, only: str | None) -> None:
    """One cycle now: fetch all sources, then send every active subscriber their digest."""
    env, config = _ready(ctx)
    if only and config.subscriber(only) is None:
        _fail(f"{only} is not a subscriber in {config.path}")
    transport = make_transport(env)
    with Store(env.db) as store:
        click.echo(f"Fetching {len(config.sources)} sources…")
        fetched = pipeline.fetch(config, env, store)
        _print_fetch(fetched)
        try:
            report = pipeline.send(config, env, store, transport, dry_run=dry_run, only=only, renderer=_renderer(env))
        except RenderError as exc:
            _fail(str(exc))
    report.fetched = fetched
    if report.uncertain:
        click.echo(f"  {report.uncertain} digests were interrupted mid-send by an earlier run; sent once more (a reader may get one twice)")
    for o in report.outcomes:
        if o.status != "sent" or len(report.outcomes) <= 50:
            click.echo(f"  {o.status:8} {o.email}: {o.papers} papers{' — ' + o.detail if o.status != 'sent' else ''}")
    for p in report.paused:
        click.echo(f"  paused   {p.subscriber} after {p.failures} hard refusals in a row; last: {p.last_failure} (newsletter status --resume {p.subscriber})")
    if report.error:
        click.echo(f"Stopped: {report.error}", err=True)
    summary = ", ".join(f"{report.count(s)} {s}" for s in ("sent", "deferred", "failed", "dry-run") if report.count(s))
    click.echo(f"Digests: {summary or 'none (nothing new for anyone)'}")
    if report.count("sent") and not env.smtp_host:
        click.echo(f"Messages are in {env.outbox.resolve()}")
    sys.exit(report.exit_code)


@cli.command()
@click.pass_context
def fetch(ctx: click.Context) -> None:
    """Fetch and store papers from every source, sending nothing."""
    env, config = _ready(ctx, need_smtp_settings=False)
    with Store(env.db) as store:
        results = pipeline.fetch(config, env, store)
    _print_fetch(results)
    click.echo(f"{sum(r.new for r in results)} new papers from {sum(1 for r in results if not r.error)}/{len(results)} sources")


@cli.command()
@click.argument("email")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write the HTML here instead of standard output.")
@click.option("--text", is_flag=True, help="Show the plain-text part instead of the HTML.")
@click.pass_context
def preview(ctx: click.Context, email: str, output: str | None, text: bool) -> None:
    """That subscriber's next digest from stored papers, sending and recording nothing."""
    env, config = _ready(ctx, need_smtp_settings=False)
    subscriber = config.subscriber(email)
    if subscriber is None:
        _fail(f"{email} is not a subscriber in {config.path}")
    with Store(env.db) as store:
        digest = pipeline.Planner(config, store, pipeline.utcnow()).next_digest(subscriber)
        secret = pipeline.secret_key(env, store)
    if digest is None:
        click.echo(f"Nothing new for {email} among stored papers (run `newsletter fetch` first?).", err=True)
        return
    renderer = _renderer(env)
    try:
        rendered = renderer.render(digest)
    except RenderError as exc:
        _fail(str(exc))
    reader = Reader(subscriber.email, subscriber.name, tokens.sign(secret, tokens.UNSUBSCRIBE, email), tokens.sign(secret, tokens.PREFERENCES, email))
    html, plain = renderer.personalise(rendered, reader)
    body = plain if text else html
    if output:
        Path(output).write_text(body, encoding="utf-8")
        click.echo(f"{rendered.subject} → {output}", err=True)
    else:
        click.echo(body)


@cli.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Validate subscribers.yaml, the environment and the templates; exit 1 listing every problem."""
    env, config = _ready(ctx)
    renderer = _renderer(env)
    for name in ("digest.html", "digest.txt"):
        try:
            renderer.template(name)
        except RenderError as exc:
            _fail(str(exc))
    delivery = f"SMTP {env.smtp_host}:{env.smtp_port} ({env.smtp_security})" if env.smtp_host else f"outbox {env.outbox}"
    click.echo(f"{config.path}: ok — {len(config.sources)} sources, {len(config.topics)} topics, {len(config.subscribers)} subscribers; delivery: {delivery}")


@cli.command()
@click.pass_context
def sources(ctx: click.Context) -> None:
    """Each source's health: last success, last error, papers seen."""
    env, config = _ready(ctx, need_smtp_settings=False)
    with Store(env.db) as store:
        health = store.source_health()
    for source in config.sources:
        h = health.get(source.name)
        if h is None:
            click.echo(f"{source.name} ({source.type}): never fetched")
            continue
        state = "ok" if h.consecutive_failures == 0 else f"FAILING ({h.consecutive_failures} in a row)"
        click.echo(f"{source.name} ({source.type}): {state}; last success {_when(h.last_success)}; papers seen {h.papers_seen}")
        if h.last_error:
            click.echo(f"    last error {_when(h.last_error_at)}: {h.last_error}")


@cli.command()
@click.option("--resume", "resume", metavar="EMAIL", help="Lift the pause on a subscriber whose mail was refused (after fixing the address).")
@click.pass_context
def status(ctx: click.Context, resume: str | None) -> None:
    """Deliveries waiting, deferred, failed or uncertain, paused subscribers, and the last sends."""
    env, config = _ready(ctx, need_smtp_settings=False)
    with Store(env.db) as store:
        if resume:
            if not store.resume(resume):
                _fail(f"{resume} is not paused")
            click.echo(f"Resumed {resume}: the next send mails them again.")
        rows = store.deliveries()
        paused = store.paused()
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    uncertain = [r for r in rows if r["uncertain"]]
    click.echo("Deliveries: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none yet"))
    click.echo(
        f"Uncertain: {counts.get('sending', 0)} left in `sending` now (the server may have them; the next run sends each once more); "
        f"{len(uncertain)} interrupted earlier and sent again (a reader may have two copies)"
    )
    for row in rows:
        if row["status"] == "sending":
            click.echo(f"  sending  {row['subscriber']} ({row['edition']}): interrupted, or a send is running now; the next run sends it once more")
        elif row["status"] != "sent":
            click.echo(f"  {row['status']:8} {row['subscriber']} ({row['edition']}, {row['attempts']} attempts): {row['last_reply'] or ''}")
    for row in uncertain:
        if row["status"] == "sent":
            click.echo(f"  uncertain {row['subscriber']} ({row['edition']}): re-sent after an interruption; may have arrived twice")
    click.echo(f"Paused subscribers: {len(paused)}")
    for p in paused.values():
        click.echo(f"  paused   {p.subscriber} since {_when(p.paused_at)} after {p.failures} hard refusals in a row; last: {p.last_failure}")
    last = [r for r in rows if r["status"] == "sent"][-5:]
    for row in last:
        click.echo(f"  sent     {row['subscriber']} at {row['updated']}")


@cli.group()
def topics() -> None:
    """Help writing topic rules."""


@topics.command("explain")
@click.argument("paper_id")
@click.pass_context
def topics_explain(ctx: click.Context, paper_id: str) -> None:
    """Which topic rules match a stored paper, and why."""
    env, config = _ready(ctx.parent, need_smtp_settings=False)  # type: ignore[arg-type]
    with Store(env.db) as store:
        paper = store.paper(paper_id)
    if paper is None:
        _fail(f"no stored paper with id {paper_id!r}")
    click.echo(f"{paper.id}: {paper.title}")
    for explanation in Matcher(all_topics(config)).explain(paper):
        click.echo(str(explanation))


def _renderer(env: Env) -> Renderer:
    return Renderer(env.base_url, env.templates)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "never"


def main() -> Any:
    """Console-script entry point."""
    return cli(prog_name="newsletter")

