"""Recovery of a cutover a crash interrupted: `reconcile` reads the checkpoint's phase
and finishes the cutover or reverts it, whatever the watchdog already did.

Before the point of no return (PAUSING, WATCHDOG_REVERTED) it reverts: privileges back
on the old side, RESUME there, replication as before. From POINT_OF_NO_RETURN on it
finishes: route to the new side, RESUME, the reverse subscription on the slot made in
the pause, the old one dropped. Each action checks first, so running it again (or
after the watchdog) converges.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from migrator.move.context import MoveContext
from migrator.move.cutover import (
    CutoverPhase,
    Direction,
    DirectionName,
    finish_switch,
)
from migrator.pgbouncer.config import entry_for_side
from migrator.pgbouncer.console import PgBouncerConsole
from migrator.pgbouncer.fleet import all_or_raise
from migrator.pgbouncer.route import original_entries, route_for
from migrator.postgres import guards, replication
from migrator.postgres.connection import Side, SideConnection, connect
from migrator.postgres.grants import switch_statements


@contextmanager
def _both_sides(d: Direction) -> Iterator[tuple[SideConnection, SideConnection]]:
    with connect(d.old_dsn, side=d.old_label, purpose="reconcile") as old, \
            connect(d.new_dsn, side=d.new_label, purpose="reconcile") as new:
        yield old, new


def _restore_replication(d: Direction, old, new) -> None:
    """Back to how it was before the pause: the old subscription streams again."""
    replication.drop_subscription(old, d.new_subscription, new)
    replication.drop_slot(new, d.new_slot)
    replication.set_subscription_enabled(new, d.old_subscription, True)


def _fences(ctx: MoveContext, serving: Side, serving_conn, other_conn) -> None:
    """The write fence where the traffic is: lifted on the serving side, up on the other."""
    other = Side.TARGET if serving == Side.SOURCE else Side.SOURCE
    for conn, passes in ((serving_conn, True), (other_conn, False)):
        conn.execute(guards.fence_function_statement(ctx.playbook, ctx.playbook.name, serving=passes,
                                                     serving_side=str(serving)))
    ctx.log("cutover", f"write fence: the {other} refuses writes, the {serving} serves")


def reconcile(ctx: MoveContext) -> Side:
    """Finish or revert a cutover that a crash interrupted; returns the serving side."""
    data = ctx.data("cutover")
    name = data.get("direction", DirectionName.FORWARD)
    d = Direction.named(name, ctx.playbook)
    serving_now = Side(data.get("serving", Side.SOURCE))
    if data.get("phase") is None:
        return serving_now
    phase = CutoverPhase(data["phase"])
    if phase == CutoverPhase.ABORTED:
        # The abort put replication back as it was, unless its own connections failed
        # (it then logged "abort left work for the next run"): this is that run.
        with _both_sides(d) as (old, new):
            _restore_replication(d, old, new)
            _fences(ctx, d.old_label, old, new)
        return serving_now
    if phase == CutoverPhase.RESUMED:
        with _both_sides(d) as (old, new):
            # What the cutover does after RESUME: revoke on the old side, subscribe it.
            with old.transaction():
                for stmt in switch_statements(ctx.data("schema").get("app_privileges", []), grant=False):
                    old.execute(stmt)
            finish_switch(d, old, new)
            _fences(ctx, d.new_label, new, old)
        ctx.save("cutover", phase=None, serving=d.new_label)
        return d.new_label
    originals = ctx.data("preflight").get("original_entries") or original_entries(ctx.playbook)
    privileges = ctx.data("schema").get("app_privileges", [])
    finished = phase == CutoverPhase.POINT_OF_NO_RETURN
    with _both_sides(d) as (old, new):
        serving_conn, other_conn = (new, old) if finished else (old, new)
        with serving_conn.transaction():
            for stmt in switch_statements(privileges, grant=True):
                serving_conn.execute(stmt)
        with other_conn.transaction():
            for stmt in switch_statements(privileges, grant=False):
                other_conn.execute(stmt)
        serving = d.new_label if finished else d.old_label
        _fences(ctx, serving, serving_conn, other_conn)

        def put_back(bouncer) -> None:
            route_for(bouncer).write(entry_for_side(originals[bouncer.route_key], ctx.playbook, serving))
            with PgBouncerConsole(bouncer.admin_dsn) as console:
                console.reload()
                console.resume(bouncer.database)

        all_or_raise([lambda b=b: put_back(b) for b in ctx.playbook.pgbouncers])
        if finished:
            finish_switch(d, old, new)
        else:
            _restore_replication(d, old, new)
    verdict = "finished" if finished else "reverted"
    ctx.log("cutover", f"an interrupted {name} cutover (phase {phase}) was {verdict}; traffic on the {serving}")
    ctx.reporter.note(f"an interrupted {name} cutover was {verdict}: traffic is on the {serving}")
    ctx.save("cutover", phase=None, serving=serving)
    return serving
