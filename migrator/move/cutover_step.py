"""The cutover step: run the cutover in either direction, and `reconcile`, which
finishes or reverts a cutover that a crash interrupted."""

from __future__ import annotations

from migrator.move.context import MoveContext
from migrator.move.cutover import (
    Cutover,
    CutoverAborted,
    Direction,
    finish_switch,
    original_entries,
)
from migrator.pgbouncer.config import entry_for_side, read_entry, rewrite_entry
from migrator.pgbouncer.console import PgBouncerConsole
from migrator.postgres import replication
from migrator.postgres.connection import connect
from migrator.postgres.ddl import privilege_statements
from migrator.testhooks import hold


def _direction(ctx: MoveContext, name: str) -> Direction:
    return Direction.forward(ctx.playbook) if name == "forward" else Direction.reverse(ctx.playbook)


def _run_cutover(ctx: MoveContext, direction: Direction) -> str:
    schema = ctx.data("schema")

    def checkpoint(**data) -> None:
        event = f"{direction.name} cutover: {data['phase']}" if "phase" in data else None
        if data.get("phase") == "point_of_no_return":
            # Only from "pausing": the watchdog records going back with the same
            # compare-and-set, so exactly one of them decides.
            if not ctx.store.update_data_if(ctx.move, "cutover", phase_in=("pausing",), event=event, **data):
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


def reconcile(ctx: MoveContext) -> str:
    """Finish or revert a cutover that a crash interrupted; returns the serving side.

    Before the point of no return it is reverted (privileges back on the old side,
    RESUME there, replication as before); after it, finished (route to the new side,
    RESUME, reverse subscription on the slot made in the pause, old one dropped).
    Each action checks first, so this is safe whatever the watchdog already did."""
    data = ctx.data("cutover")
    phase, name = data.get("phase"), data.get("direction", "forward")
    d = _direction(ctx, name)
    if phase is None:
        return data.get("serving", "source")
    if phase == "aborted":
        # The abort put replication back as it was, unless its own connections failed
        # (it then logged "abort left work for the next run"): this is that run.
        with connect(d.old_dsn, purpose="reconcile") as old, connect(d.new_dsn, purpose="reconcile") as new:
            replication.drop_subscription(old, d.new_subscription, new)
            replication.drop_slot(new, d.new_slot)
            replication.set_subscription_enabled(new, d.old_subscription, True)
        return data.get("serving", "source")
    if phase == "resumed":
        with connect(d.old_dsn, purpose="reconcile") as old, connect(d.new_dsn, purpose="reconcile") as new:
            finish_switch(d, old, new)
        ctx.save("cutover", phase=None, serving=d.new_label)
        return d.new_label
    originals = ctx.data("preflight").get("original_entries") or original_entries(ctx.playbook)
    privileges = ctx.data("schema").get("app_privileges", [])
    finished = phase == "point_of_no_return"
    with connect(d.old_dsn, purpose="reconcile") as old, connect(d.new_dsn, purpose="reconcile") as new:
        serving_conn, other_conn = (new, old) if finished else (old, new)
        with serving_conn.transaction():
            for stmt in privilege_statements(privileges, grant=True):
                serving_conn.execute(stmt)
        with other_conn.transaction():
            for stmt in privilege_statements(privileges, grant=False):
                other_conn.execute(stmt)
        side = d.new_label if finished else d.old_label
        for bouncer in ctx.playbook.pgbouncers:
            value = entry_for_side(originals[str(bouncer.config_file)], ctx.playbook, side)
            changed = read_entry(bouncer.config_file, bouncer.database) != value
            if changed:
                rewrite_entry(bouncer.config_file, bouncer.database, value)
            with PgBouncerConsole(bouncer.admin_dsn) as console:
                console.reload()
                console.resume(bouncer.database)
        if finished:
            finish_switch(d, old, new)
            serving = d.new_label
        else:
            # Back to how it was before the pause: the old subscription streams again.
            replication.drop_subscription(old, d.new_subscription, new)
            replication.drop_slot(new, d.new_slot)
            replication.set_subscription_enabled(new, d.old_subscription, True)
            serving = d.old_label
    verdict = "finished" if finished else "reverted"
    ctx.log("cutover", f"an interrupted {name} cutover (phase {phase}) was {verdict}; traffic on the {serving}")
    ctx.reporter.note(f"an interrupted {name} cutover was {verdict}: traffic is on the {serving}")
    ctx.save("cutover", phase=None, serving=serving)
    return serving


def cutover_do(ctx: MoveContext) -> str:
    if reconcile(ctx) == "target":
        return "traffic already on the target"
    return _run_cutover(ctx, Direction.forward(ctx.playbook))


def cutover_undo(ctx: MoveContext) -> str:
    if reconcile(ctx) == "source":
        return "traffic already on the source"
    return _run_cutover(ctx, Direction.reverse(ctx.playbook))
