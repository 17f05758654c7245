"""The cutover step: run the cutover in either direction, after `reconcile`
(migrator.move.recovery) has finished or reverted one a crash interrupted."""

from __future__ import annotations

from psycopg import sql

from migrator.move.context import MoveContext, UndoPlan
from migrator.move.cutover import (
    Cutover,
    CutoverAborted,
    CutoverPhase,
    Direction,
    fence_switch,
)
from migrator.move.recovery import reconcile
from migrator.pgbouncer.route import original_entries, route_for
from migrator.playbook import format_duration
from migrator.postgres import replication
from migrator.postgres.connection import Side, describe
from migrator.postgres.grants import inside_and_outside_the_pause, switch_statements
from migrator.postgres.statement import Statement
from migrator.testhooks import hold

__all__ = ["cutover_do", "cutover_undo", "reconcile"]


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


def cutover_do(ctx: MoveContext) -> str:
    if reconcile(ctx) == Side.TARGET:
        return "traffic already on the target"
    return _run_cutover(ctx, Direction.forward(ctx.playbook))


def cutover_undo(ctx: MoveContext) -> str:
    if reconcile(ctx) == Side.SOURCE:
        return "traffic already on the source"
    return _run_cutover(ctx, Direction.reverse(ctx.playbook))


def cutover_undo_statements(ctx: MoveContext) -> UndoPlan:
    """The reverse cutover, in its order: the same protocol with the sides swapped."""
    d = Direction.reverse(ctx.playbook)
    privileges = ctx.data("schema").get("app_privileges", [])
    bouncers = [(f"pgbouncers[{i}] {describe(b.admin_dsn)}", b) for i, b in enumerate(ctx.playbook.pgbouncers)]
    inside, outside = inside_and_outside_the_pause(privileges)
    out = [Statement(d.new_label, q, "before the pause") for q in switch_statements(outside, grant=True)]
    out += [Statement(on, f"PAUSE {b.database}") for on, b in bouncers]
    fence_old, _, _, unfence_new = fence_switch(ctx.playbook, d)
    out += [Statement(d.old_label, q) for q in [*switch_statements(inside, grant=False), fence_old]]
    out.append(Statement(d.old_label, sql.SQL("INSERT INTO {} (token, direction) VALUES (...)").format(
        replication.marker_table(ctx.playbook)), "the sync marker, in the fence's commit; then the sequences' "
                                                 "values are copied to the source"))
    out += [Statement(d.new_label, q, "while the marker is awaited")
            for q in [*switch_statements(inside, grant=True), unfence_new]]
    out.append(Statement(d.new_label, sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(
        sql.Identifier(d.old_subscription))))
    out.append(Statement(d.new_label, replication.create_slot_statement(d.new_slot),
                         f"with failover => true when the {d.new_label} runs PostgreSQL 17 or newer"))
    out += [Statement(route_for(b).where, f"[databases] {b.database} = <the entry as it was before the move>",
                      "the point of no return") for _, b in bouncers]
    out += [Statement(on, "RELOAD") for on, _ in bouncers]
    out += [Statement(on, f"RESUME {b.database}") for on, b in bouncers]
    out += [Statement(d.old_label, q, "after RESUME") for q in switch_statements(outside, grant=False)]
    out.append(Statement(d.old_label, replication.subscription_statement(
        d.new_subscription, d.new_dsn, d.new_publication, d.new_slot, copy_data=False, create_slot=False),
        "after RESUME"))
    out.append(Statement(d.new_label, replication.drop_subscription_statement(d.old_subscription),
                         "after RESUME; drops its slot too"))
    return UndoPlan(out, [f"one pause of at most max_pause ({format_duration(ctx.playbook.cutover.max_pause)}), "
                          "the same protocol as the forward cutover"])
