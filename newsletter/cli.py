"""The `newsletter` command: a thin layer that loads settings, calls the pipeline and prints what happened."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

import click

from newsletter import config as config_mod
from newsletter import environment, inbound, pipeline, scheduler, subscriptions
from newsletter.config.edit import SubscriberFile
from newsletter.environment import Env
from newsletter.errors import ConfigError, DeliveryError, EnvError, InvalidInput, NewsletterError, RateLimited, RenderError, SendInProgress, StorageError
from newsletter.mail.pool import transport as make_transport
from newsletter.mail.render import TEMPLATES, Renderer
from newsletter.mail.transports import connection
from newsletter.model.config import FREQUENCIES, Config, Subscriber
from newsletter.model.digest import count_phrase, cut_as, topic_labels
from newsletter.model.wording import counted
from newsletter.pipeline import status as report_mod
from newsletter.pipeline import trial
from newsletter.pipeline.stopping import stop_on_signals
from newsletter.storage.connection import redacted
from newsletter.storage.database import utcnow
from newsletter.storage.ledger import UNCERTAIN_LIMIT
from newsletter.storage.store import Store

# Exit codes beyond the contract's 0-3: 4, another send holds the database (nothing sent); 5, a signal stopped
# the send after the messages in flight (what was sent is recorded; the next send goes on from there);
# 6, the state database failed before anything was sent; 7, it failed after some digests were sent and recorded.
EXIT_CODES: dict[type[NewsletterError], int] = {SendInProgress: 4, StorageError: 6}
EXIT_STOPPED = 5
EXIT_STORAGE_AFTER_SENDING = 7
CLOCKED = "run.clocked"  # meta key: this database began under `run --clock`, so more clocked runs may send on it


def _remember_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(dict)["config_path"] = value


def _remember_verbose(_ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        logging.getLogger().setLevel(logging.DEBUG)


def _global_options() -> list[click.Parameter]:
    """`--config` and `-v` once more on every subcommand, so `newsletter send --config FILE` works as typed."""
    return [
        click.Option(
            ["--config"],
            type=click.Path(dir_okay=False),
            expose_value=False,
            callback=_remember_config,
            help="subscribers.yaml to use (as before the command).",
        ),
        click.Option(["-v", "--verbose"], is_flag=True, expose_value=False, callback=_remember_verbose, help="Log debugging detail."),
    ]


class _Commands(click.Group):
    """Every error of the package ends a command as one line and its exit code, never a traceback.

    Every subcommand (a subgroup's too: they are of this class) also takes the global options, after its name."""

    group_class = type

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        cmd.params.extend(_global_options())
        super().add_command(cmd, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StorageError as exc:
            if not exc.sent:
                click.echo(f"error: {exc}; nothing was sent", err=True)
                ctx.exit(EXIT_CODES[StorageError])
            click.echo(
                f"error: {exc}; {exc.sent} digests were sent and recorded before it, "
                "and the next `newsletter send` goes on from there (a message in flight at the failure is sent once more, counted uncertain)",
                err=True,
            )
            ctx.exit(EXIT_STORAGE_AFTER_SENDING)
        except NewsletterError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(next((code for kind, code in EXIT_CODES.items() if isinstance(exc, kind)), 1))


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
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


def _env(ctx: click.Context) -> Env:
    """Settings from the environment and the `.env` beside the config file named by --config or $NEWSLETTER_CONFIG (else ./.env)."""
    named = ctx.obj["config_path"] or os.environ.get("NEWSLETTER_CONFIG", "").strip()
    dotenv = (Path(named).expanduser().parent if named else Path()) / ".env"
    try:
        return environment.load(dotenv=dotenv)
    except EnvError as exc:
        _fail(f"{dotenv if dotenv.is_file() else 'environment'}: {exc}")


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
    env = _env(ctx)
    config = _config(ctx, env)
    if need_smtp_settings:
        issues = environment.problems(env)
        if issues:
            _fail("; ".join(issues))
    return env, config


def _due_today(config: Config, store: Store, only: str | None) -> dict[str, datetime | None]:
    """Who `send` mails a new digest (lower-case address → today's slot, None when `--to` forces a reader on another day);
    says how many are not due."""
    now = utcnow()
    if only:
        chosen = config.subscriber(only)
        assert chosen is not None
        return {only.lower(): scheduler.slot_on(chosen, now.astimezone(ZoneInfo(chosen.timezone)).date())}
    handled = store.handled_slots()
    slots: dict[str, datetime | None] = {}
    for s in config.subscribers:
        last = handled.get(s.email.lower())
        if (slot := scheduler.due_today(s, now, last[0] if last else None)) is not None:
            slots[s.email.lower()] = slot
    waiting = sum(1 for s in config.subscribers if not s.paused and s.email.lower() not in slots)
    if waiting:
        click.echo(f"{counted(waiting, 'subscriber')} not due today (their frequency or day, or already mailed today; `--to EMAIL` sends one anyway)")
    return slots


def _print_fetch(results: list[pipeline.SourceResult]) -> None:
    for r in results:
        if r.error:
            click.echo(f"  {r.name}: FAILED — {r.error}")
        elif r.not_modified and not r.papers:
            click.echo(f"  {r.name}: not modified")
        else:
            click.echo(f"  {r.name}: {counted(r.papers, 'paper')}, {r.new} new" + (f" — warning: {r.warning}" if r.warning else ""))
    failed = sum(1 for r in results if r.error)
    if failed:
        click.echo(f"{failed} of {counted(len(results), 'source')} failed (exit code 3); the others were fetched", err=True)


@cli.command()
@click.option("--dry-run", is_flag=True, help="Render and report without sending or recording deliveries.")
@click.option("--to", "only", metavar="EMAIL", help="Only this subscriber, whether or not they are due today.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    metavar="N",
    help="Spread the messages over N processes, each with SMTP_CONNECTIONS connections (default: NEWSLETTER_SEND_WORKERS, else 1).",
)
@click.pass_context
def send(ctx: click.Context, dry_run: bool, only: str | None, workers: int | None) -> None:
    """One cycle now: fetch all sources, then send every subscriber due today (by frequency and day) their digest."""
    env, config = _ready(ctx)
    if only:
        chosen = config.subscriber(only)
        if chosen is None:
            _fail(f"{only} is not a subscriber in {config.path}")
        only = chosen.email  # as it is mailed: user@bücher.de is user@xn--bcher-kva.de
    transport = make_transport(env.smtp, env.outbox, env.pool, env.dkim)
    stopping = threading.Event()
    with Store(env.db, env.db_timeout) as store, stop_on_signals(stopping):
        click.echo(f"Fetching {len(config.sources)} sources…")
        fetched = pipeline.fetch(config, env, store)
        _print_fetch(fetched)
        slots = _due_today(config, store, only)
        try:
            report = pipeline.send(
                config,
                env,
                store,
                transport,
                dry_run=dry_run,
                only=only,
                due=set(slots),
                renderer=_renderer(env),
                should_stop=stopping.is_set,
                on_outcome=_progress(),
                workers=workers or env.send_workers,
            )
        except RenderError as exc:
            _fail(str(exc))
        finally:
            if sys.stderr.isatty():
                click.echo("", err=True)
        for o in report.outcomes if not dry_run else ():
            if o.status != "failed" and (slot := slots.get(o.email.lower())) is not None:  # failed: never delivered, the next run tries again
                store.record_slot(o.email, slot, o.status)  # today's digest is theirs: the next send (or the daemon) skips them until their next day
        if not dry_run:
            store.set_meta(report_mod.RUNS["manual_fetch"], f"{_when(utcnow())}: {_fetch_summary(fetched)}")
            store.set_meta(report_mod.RUNS["manual_send"], f"{_when(utcnow())}: {_send_summary(report)}")
    report.fetched = fetched
    if report.uncertain:
        click.echo(f"  {report.uncertain} digests were interrupted mid-send by an earlier run; sent once more (a reader may get one twice)")
    for o in report.outcomes:
        if o.status != "sent" or len(report.outcomes) <= 50:
            click.echo(f"  {o.status:8} {o.email}: {o.counts}{' — ' + o.detail if o.status != 'sent' else ''}")
    for p in report.paused:
        why = p.reason or f"after {p.failures} hard refusals in a row; last: {p.last_failure}"
        click.echo(f"  paused   {p.subscriber}: {why} (newsletter status --resume {p.subscriber})")
    if report.error:
        click.echo(f"Stopped: {report.error}", err=True)
    click.echo(f"Digests: {_send_summary(report)}")
    if report.count("sent") and not env.smtp_host:
        click.echo(f"Messages are in {env.outbox.resolve()}")
    if stopping.is_set():
        click.echo("Stopped by a signal after the messages in flight; the next `newsletter send` sends the rest.", err=True)
        sys.exit(EXIT_STOPPED)
    sys.exit(report.exit_code)


def _fetch_summary(results: list[pipeline.SourceResult]) -> str:
    return f"{counted(sum(r.new for r in results), 'new paper')} from {sum(1 for r in results if not r.error)}/{len(results)} sources"


def _send_summary(sent: pipeline.SendReport) -> str:
    said = ", ".join(f"{sent.count(s)} {s}" for s in ("sent", "deferred", "failed", "dry-run") if sent.count(s))
    return said or "none (nothing new for anyone due today)"


@cli.command()
@click.pass_context
def fetch(ctx: click.Context) -> None:
    """Fetch and store papers from every source, sending nothing."""
    env, config = _ready(ctx, need_smtp_settings=False)
    with Store(env.db, env.db_timeout) as store:
        results = pipeline.fetch(config, env, store)
        store.set_meta(report_mod.RUNS["manual_fetch"], f"{_when(utcnow())}: {_fetch_summary(results)}")
    _print_fetch(results)
    click.echo(_fetch_summary(results))
    sys.exit(pipeline.fetch_exit_code(results))


@cli.command()
@click.option("--dry-run", is_flag=True, help="Count what would be removed, removing nothing.")
@click.pass_context
def prune(ctx: click.Context, dry_run: bool) -> None:
    """Remove state no guarantee needs any more: old finished deliveries and their edition pages, old papers' bodies, stale caches."""
    env, config = _ready(ctx, need_smtp_settings=False)
    started = time.monotonic()
    with Store(env.db, env.db_timeout) as store:
        kept, pruned = pipeline.prune(config, env, store, dry_run=dry_run)
    took = time.monotonic() - started
    click.echo(f"{'Would remove' if dry_run else 'Removed'} ({took:.1f} s): " + ", ".join(f"{n:,} {PRUNED_LABELS[kind]}" for kind, n in pruned.items()))
    click.echo(
        f"Kept: finished deliveries and their edition pages since {kept.deliveries:%Y-%m-%d}, papers' bodies since {kept.papers:%Y-%m-%d} "
        "(and any a kept edition holds), every paper's id, every unfinished delivery"
    )


PRUNED_LABELS = {
    "deliveries": "finished deliveries",
    "layouts": "edition layouts",
    "sent_lists": "lists of papers mailed outside the ledger",
    "paper_bodies": "paper bodies",
    "snapshots": "popularity snapshots",
    "http_cache": "HTTP cache entries",
}


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
    with Store(env.db, env.db_timeout) as store:
        digest = pipeline.Planner(config, store, utcnow(), readers=[subscriber]).next_digest(subscriber)
        secret = pipeline.secret_key(env, store)
        link_version = store.link_version(subscriber.email)
    if digest is None:
        click.echo(f"Nothing new for {email} among stored papers (run `newsletter fetch` first?).", err=True)
        return
    renderer = _renderer(env)
    try:
        rendered = renderer.render(digest)
    except RenderError as exc:
        _fail(str(exc))
    layout = cut_as(digest, rendered.digest).layout
    html, plain = renderer.personalise(rendered, trial.preview_reader(subscriber, secret, link_version, layout))
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
    for name in TEMPLATES:
        try:
            renderer.template(name)
        except RenderError as exc:
            _fail(str(exc))
    if isinstance(env.db, Path) and (problem := _database_problem(env.db)):  # a server is checked by opening it
        _fail(problem)
    for warning in config.warnings:
        click.echo(str(warning), err=True)
    delivery = f"SMTP {env.smtp_host}:{env.smtp_port} ({env.smtp_security})" if env.smtp_host else f".eml files in {env.outbox.resolve()} (SMTP_HOST unset)"
    counts = ", ".join(
        counted(n, word) for n, word in ((len(config.sources), "source"), (len(config.topics), "topic"), (len(config.subscribers), "subscriber"))
    )
    click.echo(f"{config.path}: ok — {counts}; state in {_where(env.db)}; mail goes to {delivery}")


@contextmanager
def _reading(env: Env, quiet: bool = False) -> Iterator[Store]:
    """The store a report reads, first saying which it is, so one opened from the wrong folder is seen at once (on stderr for --json)."""
    fresh = isinstance(env.db, Path) and not env.db.is_file()
    with Store(env.db, env.db_timeout) as store:
        said = " (did not exist: created now, empty — is NEWSLETTER_DB or --config the one you meant?)" if fresh else ""
        click.echo(f"State database: {_where(env.db)}{said}", err=quiet)
        yield store


def _where(db: Path | str) -> str:
    """The state database as messages name it: the file's full path, or the server's URL without its password."""
    return str(db.resolve()) if isinstance(db, Path) else redacted(db)


def _database_problem(db: Path) -> str | None:
    """Why NEWSLETTER_DB could not be used, found without creating it; None when it looks usable."""
    if db.is_dir():
        return f"NEWSLETTER_DB={db} is a folder, not a file: point it at a file such as {db / 'newsletter.db'}"
    if db.exists():
        return None if os.access(db, os.R_OK | os.W_OK) else f"NEWSLETTER_DB={db} cannot be read and written by this user"
    folder = next((p for p in db.resolve().parents if p.exists()), Path("/"))
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        return f"NEWSLETTER_DB={db} cannot be created: {folder} is not a folder this user may write in"
    return None


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="A JSON list, one object per source (keys in the README).")
@click.pass_context
def sources(ctx: click.Context, as_json: bool) -> None:
    """Each source's health: last success, last error, papers seen."""
    env, config = _ready(ctx, need_smtp_settings=False)
    with _reading(env, quiet=as_json) as store:
        health = store.source_health()
    if as_json:
        click.echo(json.dumps([report_mod.source_json(s.name, s.type, health.get(s.name)) for s in config.sources], ensure_ascii=False, indent=2))
        return
    for source in config.sources:
        h = health.get(source.name)
        if h is None:
            click.echo(f"{source.name} ({source.type}): never fetched")
            continue
        state = "ok" if h.consecutive_failures == 0 else f"FAILING ({h.consecutive_failures} in a row)"
        click.echo(f"{source.name} ({source.type}): {state}; last success {_when(h.last_success)}; papers seen {h.papers_seen}")
        if h.last_warning and h.consecutive_failures == 0:
            click.echo(f"    warning at the last fetch: {h.last_warning}")
        if h.last_error and report_mod.recovered(h):
            click.echo(f"    an old error, recovered since (fetched fine at {_when(h.last_success)}): {_when(h.last_error_at)}: {h.last_error}")
        elif h.last_error:
            click.echo(f"    last error {_when(h.last_error_at)}: {h.last_error}")


@cli.command()
@click.option("--resume", "resume", metavar="EMAIL", help="Lift the pause on a subscriber whose mail was refused (after fixing the address).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (keys in the README) instead of the report.")
@click.pass_context
def status(ctx: click.Context, resume: str | None, as_json: bool) -> None:
    """Deliveries waiting, deferred, failed or uncertain, paused subscribers, the next sends and the last runs."""
    env, config = _ready(ctx, need_smtp_settings=False)
    with _reading(env, quiet=as_json) as store:
        if resume:
            if not store.resume(resume):
                _fail(f"{resume} is not paused")
            click.echo(f"Resumed {resume}: the next send mails them again.", err=as_json)
        found = report_mod.gather(config, store, str(env.db), scheduler.next_sends(config, store, utcnow()))
    if as_json:
        click.echo(json.dumps(found.as_json(), ensure_ascii=False, indent=2))
        return
    _print_deliveries(found)
    click.echo(f"Paused after hard failures (mail refused or bounced): {len(found.held)}")
    for p in found.held:
        why = p.reason or f"after {p.failures} hard refusals in a row; last: {p.last_failure}"
        click.echo(f"  paused   {p.subscriber} since {_when(p.paused_at)}: {why} (newsletter status --resume {p.subscriber})")
    if found.by_choice:
        more = len(found.by_choice) - report_mod.LISTED
        named = ", ".join(found.by_choice[: report_mod.LISTED]) + (f" and {more} more (status --json lists each)" if more > 0 else "")
        click.echo(f"Paused by their own choice (paused: true, from the preferences page or the file): {named}")
    if any(found.came_back.values()):
        click.echo("Mail that came back: " + ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in sorted(found.came_back.items())))
    if found.last_sent:
        click.echo("Last sends:")
    for row in found.last_sent:
        held = count_phrase(row.layout.shown, row.layout.total) if row.layout else counted(len(row.paper_ids), "paper")
        click.echo(f"  sent     {row.subscriber} at {_when(row.updated)}: {held}")
    _print_schedule(found)


def _print_deliveries(found: report_mod.Status) -> None:
    """The ledger's counts; the uncertain paragraph only when something is uncertain; each unfinished row."""
    counts = found.counts
    click.echo("Deliveries: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.by_status.items())) or "none yet"))
    sending = counts.by_status.get("sending", 0)
    if sending or counts.resent:
        click.echo(
            f"Uncertain: {sending} left in `sending` now (the server may have them; the next run sends each once more); "
            f"{counts.resent} interrupted earlier and sent again (a reader may have two copies)"
            + (f"; {counts.given_up} of them given up after {UNCERTAIN_LIMIT} (failed, listed below)" if counts.given_up else "")
        )
    for row in found.unfinished:
        tries = counted(row.attempts, "attempt") if row.attempts else "never handed to the server"
        if row.status == "sending":
            click.echo(f"  sending  {row.subscriber} ({row.edition}): interrupted, or a send is running now; the next run sends it once more")
        elif row.status == "failed" and row.uncertain:
            click.echo(
                f"  failed   {row.subscriber} ({row.edition}, {tries}, uncertain {row.uncertain} times): {row.last_reply or ''}; "
                "not sent again and its papers count as sent (the reader may have it up to that many times)"
            )
        else:
            click.echo(f"  {row.status:8} {row.subscriber} ({row.edition}, {tries}): {row.last_reply or ''}")
    unfinished = sum(n for s, n in counts.by_status.items() if s != "sent")
    if unfinished > len(found.unfinished):
        click.echo(f"  … and {unfinished - len(found.unfinished)} older unfinished rows (status --json lists the newest {report_mod.LISTED})")
    for row in found.resent:
        click.echo(f"  uncertain {row.subscriber} ({row.edition}): re-sent after an interruption; may have arrived twice")


def _print_schedule(found: report_mod.Status) -> None:
    """The daemon's side of `status`: next send per subscriber, last fetch per source, the last runs (the daemon's and by hand)."""
    if len(found.next_sends) > report_mod.LISTED:
        _print_slot_groups(found)
    else:
        _print_next_sends(found)
    click.echo("Last fetch per source:")
    for name, h in found.sources:
        state = "never" if h is None else f"{_when(h.last_attempt)} ({'ok' if h.consecutive_failures == 0 else 'failed: ' + (h.last_error or '')})"
        click.echo(f"  {name}: {state}")
    runs = found.runs
    click.echo(f"Daemon (`newsletter run`): last fetch run {runs['daemon_fetch'] or 'never'}; last send run {runs['daemon_send'] or 'never'}")
    click.echo(f"By hand or cron: last `newsletter fetch` {runs['manual_fetch'] or 'never'}; last `newsletter send` {runs['manual_send'] or 'never'}")


def _print_next_sends(found: report_mod.Status) -> None:
    """Each subscriber's next send, in their zone and in UTC when that differs, and their last slot."""
    click.echo("Next sends:")
    for n in found.next_sends:
        s = n.subscriber
        if n.upcoming is None:
            when = "paused by their own choice"
        else:
            local, utc = _when(n.upcoming, ZoneInfo(s.timezone)), _when(n.upcoming)
            when = local if local == utc else f"{local} ({utc})"
            if n.held:
                when += ", held: paused after hard failures"
        handled = f"; last slot {_when(n.last[0])}: {n.last[1]}" if n.last else ""
        click.echo(f"  {s.email} [{s.frequency}]: {when}{handled}")


def _print_slot_groups(found: report_mod.Status) -> None:
    """More readers than LISTED: the next sends counted per instant (`status --json` still names each reader)."""
    groups = found.slot_groups()
    click.echo(f"Next sends: {counted(len(found.next_sends), 'reader')} on {counted(len(groups), 'slot')} (`status --json` lists each reader):")
    for g in groups[: report_mod.LISTED]:
        kinds = ", ".join(f"{n} {f}" for f, n in sorted(g.frequencies.items()))
        held = f"; {g.held} held: paused after hard failures" if g.held else ""
        click.echo(f"  {_when(g.upcoming)}: {counted(g.readers, 'reader')} ({kinds}){held}")
    if len(groups) > report_mod.LISTED:
        click.echo(f"  … and {len(groups) - report_mod.LISTED} later slots")
    if chose := len(found.next_sends) - sum(g.readers for g in groups):
        click.echo(f"  {counted(chose, 'reader')} paused by their own choice")


@cli.command()
@click.option("--tick", type=click.FloatRange(min=0.1), default=20.0, show_default=True, help="Seconds between checks for subscribers due.")
@click.option(
    "--clock",
    "clock_start",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"]),
    help="Start the daemon's clock at this instant (UTC unless an offset is given); it then runs at normal speed. "
    "With --dry-run, to rehearse a schedule; without it only on a database that has sent nothing yet (or only with --clock).",
)
@click.option("--dry-run", is_flag=True, help="Rehearse: log each slot's digests as they fall due, sending and recording nothing.")
@click.pass_context
def run(ctx: click.Context, tick: float, clock_start: datetime | None, dry_run: bool) -> None:
    """The daemon: fetches and sends on schedule until SIGTERM or Ctrl-C."""
    env, config = _ready(ctx)
    logging.getLogger("newsletter.scheduler").setLevel(logging.INFO)
    if clock_start is not None and clock_start.tzinfo is None:
        clock_start = clock_start.replace(tzinfo=UTC)
    with Store(env.db, env.db_timeout) as store:  # a database that cannot be used is one line now, not a traceback at every tick
        if clock_start is not None and not dry_run:
            used = bool(store.handled_slots() or store.deliveries())
            if used and store.meta(CLOCKED) is None:
                _fail(
                    f"{_where(env.db)} holds real deliveries and send slots; `run --clock` would send real mail and use up the "
                    "slots it passes. Rehearse with `run --clock ... --dry-run` (nothing sent or recorded), or point NEWSLETTER_DB at a copy."
                )
            if not used:
                store.set_meta(CLOCKED, f"{utcnow():%Y-%m-%d %H:%M:%S} UTC: first used by `run --clock`")
    sys.exit(scheduler.Daemon(config, env, scheduler.Clock(clock_start), tick=tick, dry_run=dry_run).run())


@cli.group()
def topics() -> None:
    """Help writing topic rules."""


@topics.command("explain")
@click.argument("paper_id")
@click.option("--for", "reader", metavar="EMAIL", help="Only this subscriber's topics and own rules, then whether the paper is in their digest and why.")
@click.pass_context
def topics_explain(ctx: click.Context, paper_id: str, reader: str | None) -> None:
    """Which topic rules match a stored paper and why, and for each that does, its score's parts and rank."""
    env, config = _ready(ctx.parent, need_smtp_settings=False)  # type: ignore[arg-type]
    subscriber = config.subscriber(reader) if reader else None
    if reader and subscriber is None:
        _fail(f"no subscriber {reader!r} in {config.path}")
    with Store(env.db, env.db_timeout) as store:
        paper = store.paper(paper_id)
        if paper is None:
            _fail(f"no stored paper with id {paper_id!r}")
        planner = pipeline.Planner(config, store, utcnow())
        scores = trial.explain_scores(planner, paper)
    click.echo(f"{paper.id}: {paper.title}")
    explanations = planner.matcher.explain(paper, topic_labels(config))
    if subscriber is not None:
        explanations = trial.for_reader(config, subscriber, explanations)
    for explanation in explanations:
        click.echo(str(explanation))
        for line in scores.get(explanation.topic, ()):
            click.echo(line)
    if subscriber is not None:
        click.echo(trial.reader_verdict(config, subscriber, paper, explanations))


@cli.command()
@click.argument("email")
@click.option("--topics", "topic_list", metavar="A,B", help="Comma-separated topic names (default: every topic).")
@click.option("--frequency", type=click.Choice(FREQUENCIES), default="daily", show_default=True)
@click.option("--name", default="", help="The reader's name, as the digest greets them.")
@click.option("--keywords", "keyword_list", metavar="A,B", default="", help="Comma-separated keywords of their own (a section of the digest).")
@click.option("--send-at", "send_at", metavar="HH:MM", default="", help="Local send time, 24-hour (default: settings.send_at).")
@click.option("--timezone", metavar="ZONE", default="", help="IANA time zone such as America/Los_Angeles (default: settings.timezone).")
@click.option("--confirmed", is_flag=True, help="Add to subscribers.yaml directly instead of mailing a confirmation link.")
@click.pass_context
def subscribe(
    ctx: click.Context, email: str, topic_list: str | None, frequency: str, name: str, keyword_list: str, send_at: str, timezone: str, confirmed: bool
) -> None:
    """Mail EMAIL a confirmation link (or, with --confirmed, add them at once)."""
    env, config = _ready(ctx, need_smtp_settings=False)
    try:
        address = subscriptions.normalise_email(email)
        wanted = [t.strip() for t in topic_list.split(",") if t.strip()] if topic_list else list(config.topics)
        unknown = [t for t in wanted if t not in config.topics]
        if unknown:
            raise InvalidInput("; ".join(config_mod.unknown("topic", t, list(config.topics)) for t in unknown))
        choice = subscriptions.check_choice(config, wanted, frequency, name=name, keywords=keyword_list, send_at=send_at, timezone=timezone)
    except InvalidInput as exc:
        _fail(str(exc))
    if confirmed:
        with Store(env.db) as store:  # opened first: a database that cannot be used leaves the file as it was
            added = SubscriberFile(config.path).add(address, choice)
            store.forget_unsubscribed(address)  # the operator's word lifts an earlier unsubscription, which sends honour
        click.echo(f"{address} {'added to' if added else 'is already in'} {config.path}")
        return
    if not env.secret_key:
        _fail("NEWSLETTER_SECRET_KEY is required to mail a confirmation link (`serve` checks it with the same key); or use --confirmed")
    with Store(env.db, env.db_timeout) as store:
        service = subscriptions.Service(
            env, config.path, store, env.secret_key, lambda: connection(env.smtp, env.outbox, env.dkim), subscriptions.Limits.of(env)
        )
        try:
            sent = service.subscribe(address, choice)
        except RateLimited:
            _fail(f"too many confirmation mails to {address} lately; try again later or use --confirmed")
        except DeliveryError as exc:
            _fail(f"the confirmation mail to {address} was not sent: {exc.reply}")
    where = f"SMTP {env.smtp_host}" if env.smtp_host else f"the outbox {env.outbox.resolve()}"
    if sent == "limited":
        _fail(f"no mail sent: enough confirmation mails went to {address} (or to everyone) lately; try again later or use --confirmed")
    if sent == "already":
        click.echo(f"{address} is already subscribed; a note saying so, with their preferences link, was handed to {where}.")
        return
    click.echo(f"Confirmation mail for {address} handed to {where}; they are added once they confirm.")


@cli.command()
@click.argument("email")
@click.pass_context
def unsubscribe(ctx: click.Context, email: str) -> None:
    """Remove EMAIL from subscribers.yaml now."""
    env, config = _ready(ctx, need_smtp_settings=False)
    with Store(env.db, env.db_timeout) as store:
        service = subscriptions.Service(env, config.path, store, "", lambda: connection(env.smtp, env.outbox, env.dkim))
        removed = service.unsubscribe(email)
    if not removed:
        _fail(f"{email} is not a subscriber in {config.path}")
    click.echo(f"{email} removed from {config.path}")


@cli.command("inbound")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message: source, kind, recipients, action.")
@click.argument("paths", nargs=-1, type=click.Path(allow_dash=True))
@click.pass_context
def inbound_command(ctx: click.Context, as_json: bool, paths: tuple[str, ...]) -> None:
    """Read mail that comes back (bounces, complaints, unsubscribe mails, commands): .eml files, Maildir folders, mbox files, or one message on stdin."""
    env, config = _ready(ctx, need_smtp_settings=False)
    unreadable = 0
    with Store(env.db, env.db_timeout) as store:
        handler = subscriptions.inbound_handler(env, config, store)
        for item in inbound.read(paths or ["-"], sys.stdin.buffer):
            if item.data is None:
                unreadable += 1
                click.echo(f"error: {item.error}", err=True)
                continue
            outcome = handler.handle(item.source, item.data)
            if as_json:
                click.echo(json.dumps(outcome.as_json(), ensure_ascii=False))
            else:
                click.echo(f"{outcome.source}: {outcome.kind} {', '.join(outcome.recipients) or '-'}: {outcome.action}")
    sys.exit(2 if unreadable else 0)


@cli.command()
@click.option("--revoke-links", "revoke", metavar="EMAIL", help="Void every unsubscribe and preferences link mailed to EMAIL so far.")
@click.option("--json", "as_json", is_flag=True, help="A JSON list, one object per subscriber (keys in the README).")
@click.pass_context
def subscribers(ctx: click.Context, revoke: str | None, as_json: bool) -> None:
    """List subscribers with their names, topics and schedule."""
    env, config = _ready(ctx, need_smtp_settings=False)
    if revoke:
        with Store(env.db, env.db_timeout) as store:
            version = store.revoke_links(revoke)
        click.echo(f"Links mailed to {revoke} before now open nothing any more (link version {version}); the next digest carries new ones.")
        return
    if as_json:
        click.echo(json.dumps([_subscriber_json(s) for s in config.subscribers], ensure_ascii=False, indent=2))
        return
    for s in config.subscribers:
        when = s.frequency + (f" ({s.day})" if s.frequency == "weekly" else "") + f" at {s.send_at.strftime('%H:%M')} {s.timezone}"
        extra = f"; keywords: {', '.join(s.keywords)}" if s.keywords else ""
        named = f"{s.name} <{s.email}>" if s.name else s.email
        click.echo(f"{named}{' [paused]' if s.paused else ''}: {', '.join(s.topics) or '-'}{extra}; {when}")
    click.echo(f"{len(config.subscribers)} subscriber{'s' if len(config.subscribers) != 1 else ''} in {config.path}")


def _subscriber_json(s: Subscriber) -> dict[str, Any]:
    """One subscriber for `subscribers --json`: the keys of their entry, defaults filled in."""
    return {
        "email": s.email,
        "name": s.name,
        "topics": list(s.topics),
        "keywords": list(s.keywords),
        "frequency": s.frequency,
        "day": s.day,
        "send_at": s.send_at.strftime("%H:%M"),
        "timezone": s.timezone,
        "paused": s.paused,
    }


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.pass_context
def serve(ctx: click.Context, host: str, port: int) -> None:
    """The web app: subscribe, confirm, preferences and one-click unsubscribe."""
    import uvicorn

    from newsletter.web.app import create_app

    env, config = _ready(ctx, need_smtp_settings=False)
    if not env.secret_key:
        _fail("NEWSLETTER_SECRET_KEY is required for `serve` (it signs the links in mails)")
    issues = environment.problems(env)
    if issues:
        _fail("; ".join(issues))
    with Store(env.db, env.db_timeout):  # a database that cannot be used is one line now, not an error on every page
        pass
    click.echo(f"Serving {config.path} on http://{host}:{port} (links in mails point at {env.base_url})")
    uvicorn.run(
        create_app(env, config.path), host=host, port=port, proxy_headers=False, server_header=False
    )  # the app reads them, from NEWSLETTER_TRUSTED_PROXIES only


@cli.command()
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Folder to write into (made if missing).")
@click.option("--base-url", metavar="URL", help="Where the folder will be served from, for the feeds' links (default: NEWSLETTER_BASE_URL).")
@click.pass_context
def archive(ctx: click.Context, out: Path, base_url: str | None) -> None:
    """Write the public pages and topic feeds as static files, for hosting without the app."""
    from newsletter.web.archive import write_archive

    env, config = _ready(ctx, need_smtp_settings=False)
    done = write_archive(env, config, out, base_url or env.base_url)
    gone = f"; removed {counted(done.removed, 'file')} of days and topics no longer listed" if done.removed else ""
    click.echo(f"Wrote {done.pages} pages and {done.feeds} feeds to {done.folder}{gone}")


@topics.command("try")
@click.argument("topic", required=False)
@click.option("--days", type=click.IntRange(min=1), help="Papers first seen in the last N days (default: settings.horizon_days).")
@click.option("--limit", type=click.IntRange(min=1), default=trial.LIMIT, show_default=True, help="Matches listed per topic, best first.")
@click.option("--all", "everything", is_flag=True, help="List every match (and every paper no topic takes).")
@click.pass_context
def topics_try(ctx: click.Context, topic: str | None, days: int | None, limit: int, everything: bool) -> None:
    """Run the topic rules over stored papers: per topic its count and its matches in digest order, with score and matched words."""
    env, config = _ready(ctx.parent, need_smtp_settings=False)  # type: ignore[arg-type]
    labels = topic_labels(config)
    if topic is not None and topic not in labels:
        _fail(f"no topic {topic!r} in {config.path} (topics: {', '.join(config.topics) or 'none'})")
    days = days or config.settings.horizon_days
    with Store(env.db, env.db_timeout) as store:
        planner = pipeline.Planner(config, store, utcnow(), days)
    result = trial.run_trial(planner, labels, only=topic, limit=None if everything else limit)
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None  # a terminal: one line per paper
    for line in trial.format_trial(result, planner.matcher, days, width):
        click.echo(line)


def _progress() -> Callable[[pipeline.Outcome], None] | None:
    """A running count on one terminal line; nothing when output goes to a log (the summary says it all)."""
    if not sys.stderr.isatty():
        return None
    counts: dict[str, int] = {}

    def show(outcome: pipeline.Outcome) -> None:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
        click.echo("\r  " + " · ".join(f"{n} {status}" for status, n in counts.items()) + "\033[K", err=True, nl=False)

    return show


def _renderer(env: Env) -> Renderer:
    return Renderer(env.base_url, env.templates)


def _when(value: datetime | None, zone: ZoneInfo | None = None) -> str:
    """The one time format of every report: minutes and the zone's name (UTC unless a reader's zone is given)."""
    return value.astimezone(zone or UTC).strftime("%Y-%m-%d %H:%M %Z") if value else "never"


def main() -> Any:
    """Console-script entry point."""
    return cli(prog_name="newsletter")
