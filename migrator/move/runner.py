"""The runner: the only thing that orders steps and writes their status.

A step is marked running (durably) before its side effects and done after them; a
failure is recorded with its one-line cause. `execute` runs every step that is not
done, so after a crash it resumes with the step that was running, whose `do` is
idempotent. `rollback` undoes, in reverse, every step that did anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from migrator import waiting
from migrator.errors import MigratorError, OperationFailed, ServerUnreachable
from migrator.move.context import Step, UndoPlan
from migrator.move.samples import SampleRecorder
from migrator.move.state import StateStore
from migrator.move.statuses import MoveStatus, StepStatus
from migrator.move.steps import (
    STEP_NAMES,
    STEPS,
    MoveContext,
    Reporter,
    describe_failure,
)
from migrator.playbook import Playbook
from migrator.postgres.connection import (
    Side,
    answers,
    connection_lost,
    describe,
    first_line,
    same_server,
    server_hint,
    side_of,
)
from migrator.testhooks import hold


@dataclass
class RunResult:
    move: str
    ran: list[tuple[str, float, str | None]]
    stopped_before: str | None = None

    def to_dict(self) -> dict:
        return {
            "move": self.move,
            "steps": [{"step": s, "seconds": round(t, 3), "summary": m} for s, t, m in self.ran],
            "stopped_before": self.stopped_before,
        }


def _check_step(name: str | None, option: str) -> None:
    if name is not None and name not in STEP_NAMES:
        raise OperationFailed(f"{option} {name!r} is not a step; steps are: {', '.join(STEP_NAMES)}")


def execute(playbook: Playbook, store: StateStore, *, checks: Callable[[Playbook], list],
            until: str | None = None, reporter: Reporter | None = None) -> RunResult:
    """Run or resume the move, stopping before `until` if given. `checks`: the plan's
    checks, which the preflight step runs again (migrator.plan.build.preflight_checks)."""
    _check_step(until, "--until")
    ctx = MoveContext(playbook, store, SampleRecorder(reporter or Reporter(), store, playbook.name), checks=checks)
    result = RunResult(playbook.name, [])
    with store.lock(playbook.name, "execute"):
        if store.move_status(playbook.name) == MoveStatus.COMPLETED:
            raise OperationFailed(f"move {playbook.name!r} is already completed")
        store.ensure_move(playbook.name)
        store.log(playbook.name, "run", "execute started" + (f" (until {until})" if until else ""))
        records = store.steps(playbook.name)
        for step in STEPS:
            if step.name == until:
                result.stopped_before = until
                break
            record = records.get(step.name)
            if record and record.status == StepStatus.DONE:
                continue
            summary, seconds = _run(ctx, step.name, step.do, StepStatus.RUNNING, StepStatus.DONE, step.title)
            result.ran.append((step.name, seconds, summary))
        store.log(playbook.name, "run", "execute finished" if not result.stopped_before
                  else f"execute stopped before {result.stopped_before}")
    return result


def rollback(playbook: Playbook, store: StateStore, *, to: str | None = None, keep_target: bool = False,
             reporter: Reporter | None = None) -> RunResult:
    """Undo completed steps in reverse; with `to`, stop once that step is the last one done."""
    _check_step(to, "--to")
    ctx = MoveContext(playbook, store, SampleRecorder(reporter or Reporter(), store, playbook.name),
                      keep_target=keep_target)
    result = RunResult(playbook.name, [])
    with store.lock(playbook.name, "rollback"):
        status = store.move_status(playbook.name)
        if status == MoveStatus.COMPLETED:
            raise OperationFailed(
                f"move {playbook.name!r} was completed: reverse replication and the tool's objects are gone, "
                "so there is nothing to roll back to",
                hint="to move the group back, write a playbook with source and target swapped and execute it")
        if status is None:
            raise OperationFailed(f"move {playbook.name!r} has no recorded run to roll back",
                                  hint="check --state / MIGRATOR_STATE")
        undoing = _undoing(ctx, to)
        store.log(playbook.name, "run", "rollback started" + (f" (to {to})" if to else ""))
        for step in undoing:
            summary, seconds = _run(ctx, step.name, step.undo, StepStatus.UNDOING, StepStatus.UNDONE,
                                    f"undo: {step.title}")
            result.ran.append((step.name, seconds, summary))
        store.log(playbook.name, "run", "rollback finished")
    return result


def _undoing(ctx: MoveContext, to: str | None) -> list[Step]:
    """The steps a rollback undoes, in its order; tells ctx whether the tables go."""
    records = ctx.store.steps(ctx.playbook.name)
    undoing = [s for s in reversed(STEPS) if records.get(s.name) and records[s.name].status in (
        StepStatus.DONE, StepStatus.RUNNING, StepStatus.FAILED, StepStatus.UNDOING)]
    if to is not None:
        keep = STEP_NAMES[: STEP_NAMES.index(to) + 1]
        undoing = [s for s in undoing if s.name not in keep]
    ctx.tables_will_be_dropped = any(s.name == "schema" for s in undoing) and not ctx.keep_target
    return undoing


@dataclass
class RollbackPlan:
    """What `rollback` would run from where the move stands (`rollback --dry-run`),
    from the same step objects that run it."""

    move: str
    steps: list[tuple[Step, UndoPlan]]

    def to_dict(self) -> dict:
        return {
            "move": self.move,
            "dry_run": True,
            "steps": [{"name": step.name, "title": f"undo: {step.title}",
                       "statements": [q.to_dict() for q in plan.statements], "notes": list(plan.notes)}
                      for step, plan in self.steps],
        }


def rollback_plan(playbook: Playbook, store: StateStore, *, to: str | None = None,
                  keep_target: bool = False) -> RollbackPlan:
    """Read-only: the undo of each step a rollback would undo now, in order."""
    _check_step(to, "--to")
    status = store.move_status(playbook.name)
    if status == MoveStatus.COMPLETED:
        raise OperationFailed(f"move {playbook.name!r} was completed: there is nothing to roll back to")
    if status is None:
        return RollbackPlan(playbook.name, [])
    ctx = MoveContext(playbook, store, Reporter(), keep_target=keep_target)
    return RollbackPlan(playbook.name, [(step, step.undo_statements(ctx)) for step in _undoing(ctx, to)])


def _run(ctx: MoveContext, name: str, action, during: StepStatus, after: StepStatus,
         title: str) -> tuple[str | None, float]:
    store, move = ctx.store, ctx.playbook.name
    store.set_step(move, name, during, started=True)
    store.log(move, "step", f"{during.value} {name}", step=name)
    ctx.reporter.step_started(name, title)
    undo = "undo-" if during == StepStatus.UNDOING else ""
    hold(name, f"{undo}start")
    started = time.monotonic()
    try:
        summary = _riding_out_restarts(ctx, name, action)
        hold(name, f"{undo}end")
    except (MigratorError, Exception) as exc:
        seconds = time.monotonic() - started
        if isinstance(exc, psycopg.Error):
            failure = _server_error(ctx, exc, undo=bool(undo))
        elif isinstance(exc, ServerUnreachable):
            failure = _unreachable(ctx, exc, undo=bool(undo))
        else:
            failure = exc
        store.set_step(move, name, StepStatus.FAILED if during == StepStatus.RUNNING else StepStatus.UNDOING,
                       error=describe_failure(failure), finished=True)
        store.log(move, "error", f"{name} failed: {describe_failure(failure)}", step=name, seconds=seconds)
        if failure is not exc:
            raise failure from exc
        raise
    seconds = time.monotonic() - started
    store.set_step(move, name, after, finished=True)
    store.log(move, "step", f"{after.value} {name}" + (f": {summary}" if summary else ""),
              step=name, seconds=seconds)
    ctx.reporter.step_finished(name, seconds, summary)
    return summary, seconds


def _riding_out_restarts(ctx: MoveContext, name: str, action):
    """The step, done again from its start (every step is idempotent) when a server or a
    PgBouncer it lost answers again within restarts.wait: a restart, a failover, a
    network blip; saying what it waits for. A cutover that aborted is not retried: an
    abort is an answer, and the person decides when to try again."""
    def lost(exc: BaseException) -> str | None:
        if not connection_lost(exc):
            return None
        if isinstance(exc, ServerUnreachable):
            for label, dsn in ((Side.SOURCE, ctx.playbook.source.dsn), (Side.TARGET, ctx.playbook.target.dsn)):
                if describe(dsn) in exc.message.split(": ", 1)[0]:
                    return f"the {label} ({describe(dsn)})"
            return exc.message.split(": ", 1)[0].removeprefix("cannot connect to ")
        return _lost_server(ctx, exc)

    def say(message: str) -> None:
        ctx.log(name, message)
        ctx.reporter.note(f"{name}: {message}")

    return waiting.ride_out(lambda: action(ctx), bound=ctx.playbook.restarts.wait, lost=lost,
                            back=lambda _: _everything_answers(ctx.playbook), say=say)


def _everything_answers(playbook: Playbook) -> bool:
    """Do both servers and every PgBouncer's console take a connection now?"""
    from migrator.pgbouncer.console import PgBouncerConsole

    if not (answers(playbook.source.dsn) and answers(playbook.target.dsn)):
        return False
    for bouncer in playbook.pgbouncers:
        try:
            PgBouncerConsole(bouncer.admin_dsn, connect_timeout=2).close()
        except ServerUnreachable:
            return False
    return True


def _server_error(ctx: MoveContext, exc: psycopg.Error, *, undo: bool) -> OperationFailed:
    """A driver error mid-step (a server restarted, a connection dropped, a statement
    refused) as one line that names the server, with the server's DETAIL and HINT; every
    step is safe to run again. "Lost" only when the server or the connection went away."""
    verb = "rollback" if undo else "execute"
    lost = connection_lost(exc)
    again = f"run `migrator {verb}` again: it resumes from this step"
    if not lost:
        told = server_hint(exc)
        hint = (f"the server says: {told}; " if told else "") + "fix the cause, then " + again
        return OperationFailed(describe_failure(exc), hint=hint)  # "on the target: ..."
    return OperationFailed(f"lost {_lost_server(ctx, exc)}: {first_line(exc)}", hint="once it is reachable again, "
                           + again)


def _lost_server(ctx: MoveContext, exc: psycopg.Error) -> str:
    sides = ((Side.SOURCE, ctx.playbook.source.dsn), (Side.TARGET, ctx.playbook.target.dsn))
    side = side_of(exc)
    if side is not None:
        return f"the {side} ({describe(dict(sides)[side])})"
    pgconn = getattr(exc, "pgconn", None)
    if pgconn is not None and pgconn.host:
        host, port = pgconn.host.decode(), pgconn.port.decode()
        for label, dsn in sides:
            if same_server(f"host={host} port={port}", dsn):   # a DSN listing several hosts: any
                return f"the {label} ({describe(dsn)})"
        return f"{host}:{port}"
    # A connection that broke no longer says where it went: ask both sides.
    down = [(label, dsn) for label, dsn in sides if not answers(dsn)]
    if len(down) == 1:
        return f"the {down[0][0]} ({describe(down[0][1])})"
    if not down:
        return "a connection (source and target both answer now)"
    return "a server"


def _unreachable(ctx: MoveContext, exc: ServerUnreachable, *, undo: bool) -> ServerUnreachable:
    """A step that could not (re)connect: name the side, and say how to go on."""
    message = exc.message
    for label, dsn in ((Side.SOURCE, ctx.playbook.source.dsn), (Side.TARGET, ctx.playbook.target.dsn)):
        if f"cannot connect to {describe(dsn)}" in message:
            message = message.replace(f"cannot connect to {describe(dsn)}",
                                      f"cannot connect to the {label} ({describe(dsn)})", 1)
            break
    verb = "rollback" if undo else "execute"
    first = f"{exc.hint}; then " if exc.hint else "once it is reachable again, "
    return ServerUnreachable(message, hint=f"{first}run `migrator {verb}` again: it resumes from this step")


