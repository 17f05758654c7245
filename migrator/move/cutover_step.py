"""The cutover step: run the cutover in either direction, and `reconcile`, which
finishes or reverts a cutover that a crash interrupted."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from migrator.move.context import MoveContext
from migrator.move.cutover import (
    Cutover,
    CutoverAborted,
    CutoverPhase,
    Direction,
    DirectionName,
    finish_switch,
    original_entries,
)
from migrator.pgbouncer.config import entry_for_side, read_entry, rewrite_entry
from migrator.pgbouncer.console import PgBouncerConsole
from migrator.postgres import replication
from migrator.postgres.connection import Side, SideConnection, connect
from migrator.postgres.ddl import privilege_statements
from migrator.testhooks import hold


def _run_cutover(ctx: MoveContext, direction: Direction) -> str:
    schema = ctx.data("schema")

    def checkpoint(**data) -> None:
        event = f"{direction.name} cutover: {data['phase']}" if "phase" in data else None
        if data.get("phase") == CutoverPhase.POINT_OF_NO_RETURN:
            # Only from PAUSING: the watchdog records going back with the same
            # compare-and-set, so exactly one of them decides.
            if not ctx.store.update_data_if(ctx.move, "cutover", phase_in=(CutoverPhase.PAUSING,),
                                            event=event, **data):
                raise CutoverAborted("the watchdog gave traffic back to the "
                                     f"{direction.old_label} before the point of no return")
        else:
            ctx.store.update_data(ctx.move, "cutover", event=event, direction=direction.name, **data)
        if "phase" in data:
            hold("cutover", f"{direction.name}-{data['phase']}")

    cutover = Cutover(
        ctx.playbook, direction,
        app_privileges=schema.get("app_privileges", []),
        sequences=[tuple(s) for s in schema.get("sequences", [])],
        original_entries=ctx.data("preflight").get("original_entries") or original_entries(ctx.playbook),
        checkpoint=checkpoint,
        log=lambda message, _sql: (ctx.log("cutover", message), ctx.reporter.note(message)),
        state_url=ctx.store.url,
    )
    try:
        window = cutover.run()
    finally:
        history = ctx.data("cutover").get("history", [])
        ctx.save("cutover", history=[*history, cutover.window.to_dict()][-20:])
    ctx.save("cutover", serving=direction.new_label)
    parts = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in window.parts.items())
    return f"pause window {window.total * 1000:.0f} ms ({parts})"


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
        return serving_now
    if phase == CutoverPhase.RESUMED:
        with _both_sides(d) as (old, new):
            finish_switch(d, old, new)
        ctx.save("cutover", phase=None, serving=d.new_label)
        return d.new_label
    originals = ctx.data("preflight").get("original_entries") or original_entries(ctx.playbook)
    privileges = ctx.data("schema").get("app_privileges", [])
    finished = phase == CutoverPhase.POINT_OF_NO_RETURN
    with _both_sides(d) as (old, new):
        serving_conn, other_conn = (new, old) if finished else (old, new)
        with serving_conn.transaction():
            for stmt in privilege_statements(privileges, grant=True):
                serving_conn.execute(stmt)
        with other_conn.transaction():
            for stmt in privilege_statements(privileges, grant=False):
                other_conn.execute(stmt)
        serving = d.new_label if finished else d.old_label
        for bouncer in ctx.playbook.pgbouncers:
            value = entry_for_side(originals[str(bouncer.config_file)], ctx.playbook, serving)
            if read_entry(bouncer.config_file, bouncer.database) != value:
                rewrite_entry(bouncer.config_file, bouncer.database, value)
            with PgBouncerConsole(bouncer.admin_dsn) as console:
                console.reload()
                console.resume(bouncer.database)
        if finished:
            finish_switch(d, old, new)
        else:
            _restore_replication(d, old, new)
    verdict = "finished" if finished else "reverted"
    ctx.log("cutover", f"an interrupted {name} cutover (phase {phase}) was {verdict}; traffic on the {serving}")
    ctx.reporter.note(f"an interrupted {name} cutover was {verdict}: traffic is on the {serving}")
    ctx.save("cutover", phase=None, serving=serving)
    return serving


def cutover_do(ctx: MoveContext) -> str:
    if reconcile(ctx) == Side.TARGET:
        return "traffic already on the target"
    return _run_cutover(ctx, Direction.forward(ctx.playbook))


def cutover_undo(ctx: MoveContext) -> str:
    if reconcile(ctx) == Side.SOURCE:
        return "traffic already on the source"
    return _run_cutover(ctx, Direction.reverse(ctx.playbook))
