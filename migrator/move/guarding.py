"""The guards' part of the steps (DESIGN section 9): made on both sides by the replicate
step before replication starts, removed by its undo, each statement in a transaction
of its own (migrator.postgres.guards holds their SQL; the cutover moves the fence)."""

from __future__ import annotations

import psycopg

from migrator.move.context import MoveContext
from migrator.playbook import Playbook, TableName
from migrator.postgres import guards
from migrator.postgres.catalog import guarded_objects
from migrator.postgres.statement import Statement
from migrator.testhooks import hold


def guard_statements(playbook: Playbook, relations: list[TableName], indexes: list[TableName], *,
                     ddl_guard: dict[str, bool] | None = None) -> list[Statement]:
    """The guards (DESIGN section 9), made before replication starts, each statement in a
    transaction of its own (guards.ONE_BY_ONE): the target's copy fenced (the source
    serves), the source's fence passing, the DDL guard on both. `ddl_guard`: per side,
    whether the role may make event triggers."""
    out = []
    for side, serving in (("target", False), ("source", True)):
        on = (ddl_guard or {}).get(side, True)
        out += [Statement(side, q, guards.ONE_BY_ONE) for q in guards.install_statements(
            playbook, playbook.name, relations, indexes, serving=serving, serving_side="source", ddl_guard=on)]
    return out


def install_guards(ctx: MoveContext, src: psycopg.Connection, dst: psycopg.Connection) -> None:
    relations, indexes = guarded_objects(src, ctx.tables)
    allowed = {"source": guards.can_make_event_triggers(src), "target": guards.can_make_event_triggers(dst)}
    statements = guard_statements(ctx.playbook, relations, indexes, ddl_guard=allowed)
    for side, conn in (("target", dst), ("source", src)):
        if not allowed[side]:
            ctx.log("replicate", f"no DDL guard on the {side}: only a superuser may create an event trigger")
            ctx.reporter.note(f"no DDL guard on the {side}: the playbook's role there is not a superuser")
        guards.run_each(conn, [q.sql for q in statements if q.on == side],
                        lambda q, side=side: ctx.log("replicate", f"guard on the {side}", q))
        hold("replicate", f"guarded-{side}")


def remove_guards_statements(playbook: Playbook) -> list[Statement]:
    """The guards go, on both sides, by name: the DDL guard, then the fence's trigger on
    each table that has one (as found then: the group's tables and their partitions)."""
    return [Statement(side, q, guards.ONE_BY_ONE) for side in ("target", "source")
            for q in guards.remove_statements(playbook, playbook.tables)]


def remove_guards(ctx: MoveContext, conn: psycopg.Connection, side: str, step: str) -> None:
    statements = guards.remove_statements(ctx.playbook, guards.fenced_relations(conn, ctx.playbook))
    guards.run_each(conn, statements, lambda q: ctx.log(step, f"guard removed on the {side}", q))
