"""The guards of a move in flight (DESIGN section 9), owned by one object: `Guards`
makes them (the replicate step, before replication starts), moves the write fence
(inside the cutover's pause, and when recovery settles an interrupted one), removes
them (a full rollback, `complete`) and renders each of those for `plan` and the dry
run. migrator.postgres.guards holds their SQL.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from migrator.playbook import Playbook, TableName
from migrator.postgres import guards
from migrator.postgres.connection import Side
from migrator.postgres.statement import Statement, owns


@dataclass(frozen=True)
class Guards:
    playbook: Playbook

    # -- made and removed ----------------------------------------------------------

    def install(self, relations: list[TableName], indexes: list[TableName], *,
                ddl_guard: dict[str, bool] | None = None) -> list[Statement]:
        """The guards, made before replication starts, each statement in a transaction of
        its own (guards.ONE_BY_ONE): the target's copy fenced (the source serves), the
        source's fence passing, the DDL guard on both. `ddl_guard`: per side, whether
        the role may make event triggers."""
        out = []
        # A trigger on each relation, dropped again by name: its owner's privileges.
        owners = tuple(owns("TABLE", r.qualified, "role.table_owner") for r in relations)
        for side, serving in ((Side.TARGET, False), (Side.SOURCE, True)):
            on = (ddl_guard or {}).get(str(side), True)
            out += [Statement(str(side), q, guards.ONE_BY_ONE, needs=owners if i == 0 else ())
                    for i, q in enumerate(guards.install_statements(
                        self.playbook, self.playbook.name, relations, indexes, serving=serving,
                        serving_side=str(Side.SOURCE), ddl_guard=on))]
        return out

    def remove(self) -> list[Statement]:
        """Every guard object on both sides, by name: the DDL guard, then the fence's
        trigger on each group table that has one (as found when it runs: the group's
        tables and their partitions)."""
        return [Statement(str(side), q, guards.ONE_BY_ONE) for side in (Side.TARGET, Side.SOURCE)
                for q in guards.remove_statements(self.playbook, self.playbook.tables)]

    def run(self, statements: list[Statement], conns: dict[str, psycopg.Connection], *,
            ddl_guard: dict[str, bool], log, note, hold) -> None:
        """Make the guards `install` described on both sides: the target first (it must
        refuse before the subscription exists), each statement committed alone and
        retried for its locks."""
        for side in (Side.TARGET, Side.SOURCE):
            if not ddl_guard.get(str(side), True):
                log(f"no DDL guard on the {side}: only a superuser may create an event trigger")
                note(f"no DDL guard on the {side}: the playbook's role there is not a superuser")
            guards.run_each(conns[str(side)], [q.sql for q in statements if q.on == str(side)],
                            lambda q, side=side: log(f"guard on the {side}", q))
            hold(f"guarded-{side}")

    def run_remove(self, conn: psycopg.Connection, side: Side, log) -> None:
        """Remove this side's guards, the fence from every relation that carries it now."""
        statements = guards.remove_statements(self.playbook, guards.fenced_relations(conn, self.playbook))
        guards.run_each(conn, statements, lambda q: log(f"guard removed on the {side}", q))

    def remove_ddl_guard(self, conn: psycopg.Connection, log) -> None:
        guards.run_each(conn, guards.remove_ddl_guard_statements(self.playbook), lambda q: log("DDL guard removed", q))

    def remove_fence(self, conn: psycopg.Connection, log) -> None:
        """The fence's triggers (each relation that carries one now) and its function."""
        statements = guards.remove_fence_statements(self.playbook, guards.fenced_relations(conn, self.playbook))
        guards.run_each(conn, statements, lambda q: log("write fence removed", q))

    def lift_fence(self) -> Statement:
        """The fence's function and, with it, every trigger of it: one statement."""
        return Statement("source", guards.lift_fence_statement(self.playbook))

    def keep_fenced(self, conn: psycopg.Connection, side: Side, *, hint: str, log) -> None:
        """A copy that serves no more keeps refusing writes, with `hint` in its error
        (`complete` leaves the old copy so)."""
        statement = guards.fence_function_statement(self.playbook, self.playbook.name, serving=False,
                                                    serving_side="target" if side == Side.SOURCE else "source",
                                                    hint=hint)
        guards.run_each(conn, [statement], lambda q: log(f"the {side}'s copy stays fenced", q))

    def refresh_ddl_guard(self, conns: dict[str, psycopg.Connection], relations: list[TableName],
                          indexes: list[TableName]) -> None:
        """The DDL guard knows the group's relations and indexes by name: after a schema
        change it learns them again, on each side that has it, in one transaction (no
        moment without a guard)."""
        refresh = guards.ddl_guard_statements(self.playbook, self.playbook.name, relations, indexes)
        for conn in conns.values():
            if guards.read_state(conn, self.playbook).ddl_guard:
                with conn.transaction():
                    for statement in refresh:
                        conn.execute(statement)

    def state(self, conn: psycopg.Connection) -> guards.GuardState:
        return guards.read_state(conn, self.playbook)

    # -- the write fence's position --------------------------------------------------

    def fence(self, side: Side, *, serving: Side) -> Statement:
        """The fence's function on `side` while `serving` serves the group: passing on the
        serving side, refusing on the other. One statement, no lock on any table."""
        return Statement(str(side), guards.fence_function_statement(
            self.playbook, self.playbook.name, serving=side == serving, serving_side=str(serving)))

    def settle(self, serving: Side) -> list[Statement]:
        """Both sides' fences as they stand while `serving` serves: lifted there, up on the other."""
        other = Side.TARGET if serving == Side.SOURCE else Side.SOURCE
        return [self.fence(serving, serving=serving), self.fence(other, serving=serving)]

    def unfenced(self, conn: psycopg.Connection, relations: list[TableName]) -> tuple[list[TableName], bool]:
        """(the relations, of those given, without an enabled fence trigger on this side;
        whether the fence's function is there)."""
        present = guards.read_state(conn, self.playbook).fence is not None
        return sorted(set(relations) - set(guards.fenced_relations(conn, self.playbook, enabled=True))), present
