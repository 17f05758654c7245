"""Recovery of a cutover a crash interrupted: `reconcile` reads the checkpoint's phase
and finishes the cutover or reverts it, whatever the watchdog already did, from the
cutover's own sequence.

Before the point of no return (PAUSING, WATCHDOG_REVERTED) it reverts: the attempt's
undo log runs (migrator.move.undo), the same records the abort and the watchdog run:
the old side's fence lifted and privileges back, RESUME there, the new side fenced
again, replication as before. After an abort (ABORTED) the same log runs again, the
PgBouncers left out (the abort or the watchdog resumed them): it redoes what the
abort's own connections could not. From POINT_OF_NO_RETURN on it finishes: the
sequence's actions after the point of no return (each route written, RELOAD, RESUME,
the app's remaining privileges revoked on the old side, the reverse subscription on
the slot made in the pause, the old one dropped). Every record and action is safe to
run again, so running it after the watchdog, or twice, converges.
"""

from __future__ import annotations

import enum
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from migrator import waiting
from migrator.errors import OperationFailed

from migrator.move.actions import Recorded
from migrator.move.context import MoveContext
from migrator.move.cutover import (
    CutoverSequence,
    Direction,
    cutover_facts,
    cutover_sequence,
    finish_switch,
    record_action,
)
from migrator.move.phases import CutoverPhase
from migrator.move.undo import resume_with_fresh_consoles, run_undo
from migrator.move.watchdog import RESUME_RETRY_WINDOW
from migrator.pgbouncer.console import PgBouncerConsole
from migrator.pgbouncer.fleet import all_or_raise
from migrator.pgbouncer.route import route_for
from migrator.postgres.connection import Side, SideConnection, connect


@contextmanager
def _both_sides(d: Direction) -> Iterator[tuple[SideConnection, SideConnection]]:
    with connect(d.old_dsn, side=d.old_label, purpose="reconcile") as old, \
            connect(d.new_dsn, side=d.new_label, purpose="reconcile") as new:
        yield old, new


class Recovery(str, enum.Enum):
    """What the next run does with a cutover interrupted in a phase."""

    NOTHING = "nothing"        # no cutover in flight
    REVERT = "revert"          # before the point of no return: the undo log, PgBouncers included
    REDO_UNDO = "redo undo"    # aborted: the undo log again, for what the abort's connections could not
    FINISH = "finish"          # past the point of no return: route, RELOAD, RESUME, then after RESUME
    AFTER_RESUME = "after resume"   # resumed on the new side: the reverse subscription, the old one dropped


def recovery_for(phase: CutoverPhase | str | None) -> Recovery:
    """The abort-or-finish decision. Only a recorded point of no return (or later) goes
    forward; any phase before it, or one an older version recorded, goes back."""
    if phase is None:
        return Recovery.NOTHING
    if phase == CutoverPhase.POINT_OF_NO_RETURN:
        return Recovery.FINISH
    if phase == CutoverPhase.RESUMED:
        return Recovery.AFTER_RESUME
    if phase == CutoverPhase.ABORTED:
        return Recovery.REDO_UNDO
    return Recovery.REVERT


def reconcile(ctx: MoveContext, facts=None) -> Side:
    """Finish or revert a cutover that a crash interrupted; returns the serving side."""
    data = ctx.data("cutover")
    recovery = recovery_for(data.phase)
    if recovery == Recovery.NOTHING:
        return data.serving
    phase, name = data.phase, data.direction
    d = Direction.named(name, ctx.playbook)
    _wait_for_the_watchdog(ctx, data.watchdog)
    facts = facts or cutover_facts(ctx, fenced=data.fenced if data.fenced is not None else True)
    seq = cutover_sequence(ctx.playbook, d, facts)
    record = record_action(ctx, d, "recovery")
    finished = recovery in (Recovery.FINISH, Recovery.AFTER_RESUME)
    with _both_sides(d) as (old, new):
        if recovery == Recovery.FINISH:
            _reroute(ctx, seq, record)
        if finished:
            _after_resume(seq, old, new, record)
        else:
            sides = {str(d.old_label): old, str(d.new_label): new}
            log = data.undo or seq.undo_log()
            if recovery == Recovery.REDO_UNDO:
                log = [r for r in log if r["kind"] != "console"]
            undone = run_undo(log, old_side=str(d.old_label), connection=lambda side: sides[side],
                              consoles=resume_with_fresh_consoles([b.admin_dsn for b in ctx.playbook.pgbouncers]))
            if undone.problems:
                raise OperationFailed(f"could not revert the interrupted {name} cutover: {undone.problems[0]}",
                                      hint=f"fix the cause, then run `migrator {d.verb}` again")
    serving = d.new_label if finished else d.old_label
    if recovery in (Recovery.FINISH, Recovery.REVERT):
        verdict = "finished" if finished else "reverted"
        ctx.log("cutover", f"an interrupted {name} cutover (phase {phase}) was {verdict}; traffic on the {serving}")
        ctx.reporter.note(f"an interrupted {name} cutover was {verdict}: traffic is on the {serving}")
    ctx.save("cutover", phase=None, serving=serving, undo=[])
    return serving


# The watchdog keeps retrying a PgBouncer that does not answer for RESUME_RETRY_WINDOW;
# past that and some, it is not finishing anything.
WATCHDOG_WAIT = RESUME_RETRY_WINDOW + 15


def _wait_for_the_watchdog(ctx: MoveContext, watchdog: dict | None) -> None:
    """A watchdog of the interrupted attempt may still be at work (retrying a PgBouncer
    that came back late): running the same records at the same time would collide on the
    same catalog rows. Wait for it to be done (on this host: elsewhere a pid says nothing)."""
    from migrator.move.state import process_alive  # the store's module: `plan` never needs it

    if not watchdog or watchdog.get("host") != socket.gethostname() or not process_alive(watchdog["pid"]):
        return
    ctx.reporter.note(f"waiting for the watchdog (pid {watchdog['pid']}) of the interrupted cutover to finish")
    waiting.poll(lambda: True if not process_alive(watchdog["pid"]) else None, every=0.2,
                 deadline=time.monotonic() + WATCHDOG_WAIT, timed_out=lambda: OperationFailed(
                     f"the watchdog (pid {watchdog['pid']}) of the interrupted cutover is still running after "
                     f"{WATCHDOG_WAIT:.0f}s", hint="run the command again once it has exited"))


def _reroute(ctx: MoveContext, seq: CutoverSequence, record) -> None:
    """Each PgBouncer routed to the new side (written outright), RELOADed and RESUMEd."""
    def put(change, reload, resume) -> None:
        started = time.monotonic()
        route_for(ctx.playbook.pgbouncers[change.bouncer]).write(change.value)
        with PgBouncerConsole(ctx.playbook.pgbouncers[change.bouncer].admin_dsn) as console:
            console.reload()
            console.resume(ctx.playbook.pgbouncers[change.bouncer].database)
        for action in (change, reload, resume):
            record(Recorded(action, time.monotonic() - started))

    all_or_raise([lambda c=c, r=r, u=u: put(c, r, u) for c, r, u in zip(seq.reroute, seq.reload, seq.resume,
                                                                        strict=True)])


def _after_resume(seq: CutoverSequence, old, new, record) -> None:
    if seq.late_revokes is not None:
        started = time.monotonic()
        with old.transaction():
            old.execute(seq.late_revokes.sql)
        record(Recorded(seq.late_revokes, time.monotonic() - started))
    finish_switch(seq, old, new, did=lambda action, seconds, **_: record(Recorded(action, seconds)))
