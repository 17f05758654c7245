"""The command line: thin click commands over the library, one clean line per error.

Exit codes (DESIGN section 1): 0 success; 1 operation failed; 2 usage or invalid
playbook; 3 `plan` found a blocking problem.
"""

from __future__ import annotations

import functools
import gc
import sys
from pathlib import Path

import click

from migrator import __version__
from migrator.errors import MigratorError
from migrator.output import Output


class MigratorGroup(click.Group):
    """Turns every error into one line and the right exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MigratorError as exc:
            out: Output = ctx.obj or Output()
            out.error(exc.message, exc.hint)
            if _debug(ctx):
                out.traceback()
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            Output().error("interrupted")
            ctx.exit(130)
        except Exception as exc:  # noqa: BLE001 - the user gets one line, --debug the rest
            out = ctx.obj or Output()
            out.error(f"internal error: {type(exc).__name__}: {exc}",
                      "run again with --debug for the traceback, and report it")
            if _debug(ctx):
                out.traceback()
            ctx.exit(1)


def _debug(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool(root.params.get("debug"))


def json_option(func):
    """--json: print one JSON document instead of the human report."""

    @click.option("--json", "json_mode", is_flag=True, help="Print one JSON document instead of text.")
    @click.pass_context
    @functools.wraps(func)
    def wrapper(ctx: click.Context, *args, json_mode: bool, **kwargs):
        ctx.obj = Output(json_mode=json_mode)
        ctx.find_root().obj = ctx.obj
        return ctx.invoke(func, ctx.obj, *args, **kwargs)

    return wrapper


@click.group(cls=MigratorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="migrator")
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
def cli(debug: bool) -> None:
    """Move a group of PostgreSQL tables to another server while the application runs.

    \b
    Example:
      migrator sandbox up --dir ./sandbox
      migrator plan ./sandbox/playbook.yaml
    """


# --------------------------------------------------------------------------- sandbox


@cli.group()
def sandbox() -> None:
    """A local topology: two Postgres clusters, PgBouncer and demo data.

    \b
    Example:
      migrator sandbox up --dir ./sandbox --scale 10
    """


_dir_option = click.option(
    "--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
    default=Path("sandbox"), show_default=True, help="Directory that holds the sandbox.",
)


@sandbox.command("up")
@_dir_option
@click.option("--scale", type=click.IntRange(min=0), default=10, show_default=True,
              help="Demo data size, in thousands of files (each with 3 versions and a comment).")
@json_option
def sandbox_up_cmd(out: Output, directory: Path, scale: int) -> None:
    """Start the sandbox and write DIR/playbook.yaml; harmless when it is already up.

    \b
    Example:
      migrator sandbox up --dir ./sandbox --scale 100
    """
    from migrator.lab.sandbox import sandbox_up

    with out.status("starting the sandbox (two clusters, PgBouncer, demo data)"):
        info = sandbox_up(directory, scale=scale)
    out.sandbox_info(info, verb="up")


@sandbox.command("down")
@_dir_option
@json_option
def sandbox_down_cmd(out: Output, directory: Path) -> None:
    """Stop every sandbox process and remove DIR.

    \b
    Example:
      migrator sandbox down --dir ./sandbox
    """
    from migrator.lab.sandbox import sandbox_down

    left = sandbox_down(directory)
    out.sandbox_down(directory.absolute(), left)


@sandbox.command("status")
@_dir_option
@json_option
def sandbox_status_cmd(out: Output, directory: Path) -> None:
    """Show the sandbox's servers, ports and processes.

    \b
    Example:
      migrator sandbox status --dir ./sandbox --json
    """
    from migrator.lab.sandbox import sandbox_status

    out.sandbox_info(sandbox_status(directory), verb="status")


_state_option = click.option(
    "--state", "state_url", envvar="MIGRATOR_STATE", default=None, metavar="URL",
    help="SQLAlchemy URL of the checkpoint store [env MIGRATOR_STATE; default: "
    "a SQLite file .migrator/state.db beside the playbook].",
)


# --------------------------------------------------------------------------- plan


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    from migrator.playbook import parse_duration

    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if seconds <= 0:
        raise click.BadParameter("must be more than 0")
    return seconds


def _copy_rate(ctx: click.Context, param: click.Parameter, value: str) -> int:
    from migrator.plan.build import parse_rate

    try:
        return parse_rate(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@cli.command("plan")
@click.argument("playbook", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--copy-rate", default="100MB/s", show_default=True, metavar="RATE", callback=_copy_rate,
              help="Initial-copy throughput assumed by the time estimate, e.g. 50MB/s or 1GB/s.")
@click.option("--observe", metavar="DURATION", default=None, callback=_duration,
              help="Also watch the live traffic this long (as `analyze` does) and add its findings.")
@click.option("--sql", "show_sql", is_flag=True,
              help="Print every statement of every step, with its notes (--json always has them).")
@_state_option
@json_option
def plan_cmd(out: Output, playbook: Path, copy_rate: int, observe: float | None, show_sql: bool,
             state_url: str | None) -> None:
    """Inspect both servers and every PgBouncer, then print the verdict, the findings
    by code and the steps (with --sql, every statement each will run). Read-only:
    changes nothing anywhere.

    Exit 0 when the move can run, 3 when a finding blocks it, 2 for an invalid
    playbook, 1 when a server cannot be inspected.

    \b
    Example:
      migrator plan ./sandbox/playbook.yaml
      migrator plan playbook.yaml --sql | less
      migrator plan playbook.yaml --copy-rate 50MB/s --json | jq '.blocking'
      migrator plan playbook.yaml --observe 60s
    """
    from migrator.errors import PlanBlocked
    from migrator.move.group import resolve_group
    from migrator.plan.build import make_plan
    from migrator.playbook import load_playbook

    book = load_playbook(playbook)
    store = _existing_store(playbook, state_url)
    with out.status("inspecting the source, the target and PgBouncer (read-only)"
                    + (", watching the traffic" if observe else "")):
        book = resolve_group(book, store)
        result = make_plan(book, copy_rate_bytes_per_s=copy_rate, observe=observe, store=store)
    out.plan(result, sql=show_sql)
    if result.blocking:
        if out.json_mode:
            # The document already lists what blocks; a second one would break parsers.
            click.get_current_context().exit(PlanBlocked.exit_code)
        first = result.blocking[0]
        more = f" (and {len(result.blocking) - 1} more above)" if len(result.blocking) > 1 else ""
        raise PlanBlocked(f"the move is blocked: {first.message}{more}", hint=first.hint)


# --------------------------------------------------------------------------- analyze


@cli.command("analyze")
@click.argument("playbook", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--source", "source_dsn", metavar="DSN", default=None,
              help="Without a playbook: watch this database and suggest groups.")
@click.option("--pgbouncer", "pgbouncers", metavar="ADMIN_DSN", multiple=True,
              help="With --source: a PgBouncer admin console whose entries to map (repeatable).")
@click.option("--duration", default="60s", show_default=True, metavar="DURATION", callback=_duration,
              help="How long to watch, e.g. 30s or 5m.")
@click.option("--interval", default="10ms", show_default=True, metavar="DURATION", callback=_duration,
              help="Time between two samples of pg_stat_activity and pg_locks.")
@click.option("--graph", "graph_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the co-access graph to FILE: SVG with Graphviz, else DOT.")
@json_option
def analyze_cmd(out: Output, playbook: Path | None, source_dsn: str | None, pgbouncers: tuple[str, ...],
                duration: float, interval: float, graph_file: Path | None) -> None:
    """Watch the source's live traffic (read-only): the impact of each table, the
    transactions that cross the group's boundary, and traffic that reaches the group
    by the wrong route. With --source and no playbook, suggest groups.

    Exit 0 when nothing observed would break at the cutover, 3 when something
    would, 2 for an invalid playbook or option, 1 when a server cannot be read.

    \b
    Example:
      migrator analyze ./sandbox/playbook.yaml --duration 30s
      migrator analyze --source postgresql://me@db-main/app --graph tables.svg
    """
    from migrator.analyze.observe import analyze_playbook, analyze_source
    from migrator.errors import PlanBlocked, PlaybookError
    from migrator.playbook import load_playbook

    if (playbook is None) == (source_dsn is None):
        raise PlaybookError("give a PLAYBOOK or --source DSN (one of them)")
    if pgbouncers and playbook is not None:
        raise PlaybookError("--pgbouncer goes with --source; a playbook lists its PgBouncers")
    with out.analyze_progress() as progress:
        if playbook is not None:
            from migrator.move.group import resolve_group

            book = resolve_group(load_playbook(playbook))
            report = analyze_playbook(book, duration=duration, interval=interval, progress=progress)
        else:
            report = analyze_source(source_dsn, pgbouncers=pgbouncers, duration=duration,
                                    interval=interval, progress=progress)
    picture = None
    if graph_file is not None:
        from migrator.analyze.picture import write_picture

        picture = write_picture(report, graph_file)
    out.analyze_report(report, picture=picture)
    if report.blocking:
        if out.json_mode:
            click.get_current_context().exit(PlanBlocked.exit_code)
        first = report.blocking[0]
        more = f" (and {len(report.blocking) - 1} more above)" if len(report.blocking) > 1 else ""
        raise PlanBlocked(f"the traffic would break at the cutover: {first.message}{more}", hint=first.hint)


# --------------------------------------------------------------------------- the move

_playbook_argument = click.argument("playbook", type=click.Path(dir_okay=False, path_type=Path))


def _open(playbook_path: Path, state_url: str | None, *, pin: bool = False, read_group: bool = True):
    """The playbook and its checkpoint store; in whole-database mode with the group's
    tables read (the move's recorded ones once it runs; `pin` records them)."""
    from migrator.move.group import resolve_group
    from migrator.move.state import StateStore
    from migrator.move.statuses import default_url
    from migrator.playbook import load_playbook

    playbook = load_playbook(playbook_path)
    store = StateStore(state_url or default_url(playbook_path))
    return (resolve_group(playbook, store, pin=pin) if read_group else playbook), store


def _existing_store(playbook_path: Path, state_url: str | None):
    """The checkpoint store if there is one (a read-only command does not make one)."""
    from migrator.move.statuses import default_url

    url = state_url or default_url(playbook_path)
    if state_url is None and url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None
    from migrator.move.state import StateStore

    return StateStore(url)


@cli.command()
@_playbook_argument
@click.option("--until", "until", metavar="STEP", default=None,
              help="Stop before this step (e.g. cutover, so a person picks the moment).")
@_state_option
@json_option
def execute(out: Output, playbook: Path, until: str | None, state_url: str | None) -> None:
    """Run the move, or resume it from the last checkpoint.

    Steps: preflight, schema, defer-indexes, replicate, rebuild-indexes,
    prepare-reverse, cutover. Never prompts.

    \b
    Example:
      migrator execute playbook.yaml --until cutover
      migrator execute playbook.yaml
    """
    from migrator.move.runner import execute as run_execute
    from migrator.plan.build import preflight_checks
    from migrator.move.status import move_report

    book, store = _open(playbook, state_url, pin=True)
    result = run_execute(book, store, checks=preflight_checks, until=until, reporter=out.step_reporter())
    out.run_result(result, verb="execute", report=move_report(book, store))


@cli.command()
@_playbook_argument
@click.option("--to", "to", metavar="STEP", default=None,
              help="Stop once this step is the last one done (undo only the steps after it).")
@click.option("--keep-target", is_flag=True, help="Keep the group's tables on the target.")
@click.option("--dry-run", is_flag=True,
              help="Print what the rollback would run from where the move stands; change nothing.")
@_state_option
@json_option
def rollback(out: Output, playbook: Path, to: str | None, keep_target: bool, dry_run: bool,
             state_url: str | None) -> None:
    """Undo the completed steps in reverse, from wherever the run stands.

    After the cutover this is a reverse cutover with the same pause protocol.

    \b
    Example:
      migrator rollback playbook.yaml --dry-run
      migrator rollback playbook.yaml
      migrator rollback playbook.yaml --to replicate
    """
    from migrator.move.runner import rollback as run_rollback
    from migrator.move.runner import rollback_plan
    from migrator.move.status import move_report

    book, store = _open(playbook, state_url)
    if dry_run:
        out.rollback_plan(rollback_plan(book, store, to=to, keep_target=keep_target))
        return
    result = run_rollback(book, store, to=to, keep_target=keep_target, reporter=out.step_reporter())
    out.run_result(result, verb="rollback", report=move_report(book, store))


@cli.command()
@_playbook_argument
@click.option("--watch", is_flag=True,
              help="Keep watching (every second) from another terminal: the step, the copy per table "
              "with rate and ETA, the lag, the pause window. Ctrl-C stops.")
@_state_option
@json_option
def status(out: Output, playbook: Path, watch: bool, state_url: str | None) -> None:
    """Step states, replication lag, where traffic points, the last pause window.

    \b
    Example:
      migrator status playbook.yaml --json
      migrator status playbook.yaml --watch
    """
    from migrator.move.status import Outages, live_view, move_report

    book, store = _open(playbook, state_url)
    if watch:
        outages = Outages(book.restarts.wait)   # a server that restarts is waited for, saying so
        out.watch(lambda: live_view(book, store, outages=outages))
        return
    out.move_report(move_report(book, store))


@cli.command()
@_playbook_argument
@click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the record as one self-contained HTML page (opens offline).")
@_state_option
@json_option
def report(out: Output, playbook: Path, html_file: Path | None, state_url: str | None) -> None:
    """The move's record for a change ticket or a postmortem: the steps on a timeline,
    every pause window to scale with its parts, lag and copy over time, verify results,
    the findings at execute time and the event log. Reads only the state store.

    \b
    Example:
      migrator report playbook.yaml --html move-report.html
      migrator report playbook.yaml --json | jq '.pause_windows[].total'
    """
    from migrator.move.record import move_record

    book, store = _open(playbook, state_url, read_group=False)
    out.move_record(move_record(book, store), html_file=html_file)


# --------------------------------------------------------------------------- verify


@cli.command("verify")
@click.argument("playbook", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--chunk-rows", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Rows per key range checksummed at once (the unit a difference is narrowed to).")
@_state_option
@json_option
def verify_cmd(out: Output, playbook: Path, chunk_rows: int, state_url: str | None) -> None:
    """Compare the group's tables on source and target: row counts and checksums
    over key ranges, computed on the servers. Read-only; safe while replication runs
    (a difference still in flight is re-checked once replication has caught up).

    Exit 0 when both sides are identical, 1 when they differ (the report shows the
    table, the key range and sample keys), 2 for an invalid playbook.

    \b
    Example:
      migrator verify ./sandbox/playbook.yaml
      migrator verify playbook.yaml --json | jq '.tables[] | select(.identical | not)'
    """
    from migrator.move.group import resolve_group
    from migrator.playbook import load_playbook
    from migrator.verify.compare import verify

    book = resolve_group(load_playbook(playbook), _existing_store(playbook, state_url))
    with out.verify_progress() as progress:
        report = verify(book, chunk_rows=chunk_rows, progress=progress, waiting=out.waiting)
    _record_verify(book, playbook, state_url, report)
    out.verify_report(report)
    if not report.identical:
        click.get_current_context().exit(1)


def _record_verify(book, playbook: Path, state_url: str | None, report) -> None:
    """The result goes to the move's record (for `report`) when the move has one."""
    from migrator.move.state import StateStore
    from migrator.move.statuses import SampleKind, default_url

    url = state_url or default_url(playbook)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return  # verify before any execute: no record to add to, and none to create
    store = StateStore(url)
    try:
        if store.move_status(book.name) is not None:
            store.record_sample(book.name, SampleKind.VERIFY, {
                "identical": report.identical, "seconds": round(report.seconds, 3), "bytes": report.bytes,
                "tables": [{"table": t.table, "identical": t.identical, "source_rows": t.source_rows,
                            "target_rows": t.target_rows, "problem": t.problem} for t in report.tables]},
                step="verify")
    finally:
        store.close()


@cli.command()
@_playbook_argument
@click.option("--drop-source", is_flag=True,
              help="Also drop the group's old tables on the source (the last way back).")
@click.option("--yes", is_flag=True, help="Do not ask for the typed confirmation of --drop-source.")
@_state_option
@json_option
def complete(out: Output, playbook: Path, drop_source: bool, yes: bool, state_url: str | None) -> None:
    """End a finished move: stop reverse replication and remove the tool's objects.

    Afterwards `rollback` is refused. The source's old copy stays unless
    --drop-source is given and confirmed by typing the move's name (or --yes).

    \b
    Example:
      migrator complete playbook.yaml
      migrator complete playbook.yaml --drop-source --yes
    """
    from migrator.errors import PlaybookError
    from migrator.move.complete import check_completable
    from migrator.move.complete import complete as run_complete

    book, store = _open(playbook, state_url)
    check_completable(book, store)
    if drop_source and not yes:
        if not sys.stdin.isatty():
            raise PlaybookError("--drop-source needs a typed confirmation: run it in a terminal or add --yes")
        typed = click.prompt(
            f"This drops {', '.join(t.qualified for t in book.tables)} on the source for good.\n"
            f"Type the move's name ({book.name}) to confirm", default="", show_default=False)
        if typed.strip() != book.name:
            raise PlaybookError("confirmation did not match the move's name; nothing was changed")
    out.complete_result(run_complete(book, store, drop_source=drop_source))


@cli.command("ddl")
@_playbook_argument
@click.argument("statement", metavar="SQL")
@click.option("--dry-run", is_flag=True, help="Say in which order it would run, and change nothing.")
@_state_option
@json_option
def ddl_cmd(out: Output, playbook: Path, statement: str, dry_run: bool, state_url: str | None) -> None:
    """Change a group table on both sides while the move is in flight.

    One ALTER TABLE, CREATE INDEX, DROP INDEX or COMMENT, applied in the order
    that keeps replication running (an added column on the subscribing side
    first, a dropped one on the publishing side first); what cannot be ordered
    safely is refused with the reason. It is tried on both sides first and rolled
    back, so a change that would fail anywhere changes nothing.

    \b
    Example:
      migrator ddl playbook.yaml "ALTER TABLE public.files ADD COLUMN note text"
    """
    from migrator.move.schema_change import apply_change

    book, store = _open(playbook, state_url)
    try:
        out.schema_change_result(apply_change(book, store, statement, dry_run=dry_run), dry_run=dry_run)
    finally:
        store.close()


@cli.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to put the sandbox [default: a new temporary directory].")
@click.option("--scale", type=click.IntRange(min=1), default=20, show_default=True,
              help="Demo data size, in thousands of files.")
@click.option("--keep", is_flag=True, help="Leave the sandbox up afterwards.")
@json_option
def demo(out: Output, directory: Path | None, scale: int, keep: bool) -> None:
    """Show the whole story on a fresh local sandbox, under a write load.

    Sandbox up, a load through PgBouncer, then plan, execute, verify, rollback,
    execute again, verify, complete, and the figures (pause windows, failed
    client transactions, rows compared). The sandbox goes away unless --keep.

    \b
    Example:
      migrator demo
      migrator demo --scale 100 --keep --dir ./sandbox
    """
    from migrator.errors import OperationFailed
    from migrator.lab.demo import run_demo

    figures = run_demo(out, directory=directory, scale=scale, keep=keep)
    if not figures.ok:
        raise OperationFailed("the demo finished but found a problem (see the figures above)")


def main() -> None:
    # A plan of a thousand tables makes millions of small objects, none of them in a
    # cycle: at the default threshold (700) the collector ran often enough to cost a
    # tenth of `plan`'s time. It still runs, less often, for the long commands' sake.
    gc.set_threshold(50_000, 20, 100)
    cli(prog_name="migrator")


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
