"""The vocabulary the steps and the cutover are written in (DESIGN section 10).

An action says where it acts, what it does, what undoes it (where something does)
and the privilege it needs there:

- `Statement` (migrator.postgres.statement): SQL on a side, in a transaction of its
  own or as part of a `Transaction`; a few run through a named operation (`OPS`) that
  looks at the catalogs first, so they are safe to run again;
- `Transaction`: statements on one side committed together, in one round trip;
- `ConsoleCommand`: PAUSE, RESUME, RELOAD or SHOW DATABASES on a PgBouncer's console;
- `RouteChange`: a PgBouncer's group entry, prepared beside its config before the
  pause, made live at the reroute, or written outright (recovery, the watchdog).

Executors read the same actions: `render` gives the statements `plan`, `plan --sql`
and `rollback --dry-run` print; the cutover's live run (migrator.move.cutover) and the
steps (`MoveContext.run`) run them and record each in the event log exactly as
rendered; `records` turns inverses into the undo log (migrator.move.undo) that the
abort, the watchdog and recovery run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg
from psycopg import sql

from migrator.postgres import replication
from migrator.postgres.statement import Privilege, Statement

__all__ = ["OPS", "Action", "ConsoleCommand", "Privilege", "RouteChange", "Statement", "Transaction",
           "inverse_records", "record", "render", "run_statement"]


@dataclass(frozen=True)
class Transaction:
    """Statements on one side committed together, sent in one round trip (a simple-query
    batch is one transaction); rendered statement by statement."""

    on: str
    statements: tuple[Statement, ...]
    note: str = ""
    inverse: Transaction | None = None

    @property
    def sql(self) -> sql.Composable:
        return sql.SQL("; ").join(s.sql for s in self.statements)

    def rendered(self) -> list[Statement]:
        out = list(self.statements)
        if out and self.note:
            out[0] = replace(out[0], note="; ".join(n for n in (self.note, out[0].note) if n))
        return out


@dataclass(frozen=True)
class ConsoleCommand:
    """One admin command on one PgBouncer of the playbook (by its index)."""

    bouncer: int
    command: str               # 'PAUSE app_files', 'RESUME app_files', 'RELOAD', 'SHOW DATABASES'
    where: str                 # 'pgbouncers[0] pgbouncer@127.0.0.1:6432/pgbouncer'
    note: str = ""
    inverse: ConsoleCommand | None = None

    def rendered(self) -> list[Statement]:
        return [Statement(self.where, self.command, self.note)]


@dataclass(frozen=True)
class RouteChange:
    """A PgBouncer's [databases] group entry given a new value (`how`: 'prepare' before
    the pause, 'commit' at the reroute, 'write' outright)."""

    bouncer: int
    entry: str
    value: str
    where: str                 # the file rewritten, or which command
    how: str = "write"
    note: str = ""

    def rendered(self) -> list[Statement]:
        return [Statement(self.where, f"[databases] {self.entry} = {self.value}", self.note)]


Action = Statement | Transaction | ConsoleCommand | RouteChange


def rendered(action: Action) -> list[Statement]:
    return [action] if isinstance(action, Statement) else action.rendered()


def render(actions: Iterable[Action]) -> list[Statement]:
    """The statements a person reads for these actions, in order (plan, dry run)."""
    return [s for a in actions for s in rendered(a)]


def needs(actions: Iterable[Action]) -> list[tuple[str, Privilege]]:
    """(side, privilege) that the actions need, forward and inverse, in order, once each."""
    seen: dict[tuple[str, Privilege], None] = {}

    def walk(action: Action | None) -> None:
        if action is None:
            return
        if isinstance(action, Statement):
            for p in action.needs:
                seen.setdefault((action.on, p))
        elif isinstance(action, Transaction):
            for s in action.statements:
                walk(s)
        walk(getattr(action, "inverse", None))

    for a in actions:
        walk(a)
    return list(seen)


# --------------------------------------------------------------------------- named operations


def _disable(conn: psycopg.Connection, name: str) -> None:
    replication.set_subscription_enabled(conn, name, False)


def _enable(conn: psycopg.Connection, name: str) -> None:
    replication.set_subscription_enabled(conn, name, True)


OPS: dict[str, Callable[..., Any]] = {
    "create_slot": replication.create_slot,
    "drop_slot": replication.drop_slot,
    "disable_subscription": _disable,
    "enable_subscription": _enable,
}


def run_statement(conn: psycopg.Connection, statement: Statement) -> None:
    """Run one statement: through its named operation if it has one, else as SQL."""
    if statement.op:
        name, *args = statement.op
        OPS[name](conn, *args)
    else:
        conn.execute(statement.sql)


# --------------------------------------------------------------------------- the undo log's records


def record(action: Action) -> dict:
    """An action as the undo log keeps it: plain data another process can run (DSNs are
    not in it: a side is named, a PgBouncer is its index in the playbook)."""
    if isinstance(action, Statement):
        return {"kind": "sql", "on": action.on, "sql": [action.raw_text], "op": list(action.op)}
    if isinstance(action, Transaction):
        return {"kind": "sql", "on": action.on, "sql": [s.raw_text for s in action.statements], "op": []}
    if isinstance(action, ConsoleCommand):
        return {"kind": "console", "bouncer": action.bouncer, "command": action.command}
    raise TypeError(f"{type(action).__name__} has no record")


def inverse_records(actions: Iterable[Action]) -> list[dict]:
    """The undo log of these actions: each one's inverse, in the actions' order."""
    return [record(a.inverse) for a in actions if getattr(a, "inverse", None) is not None]


@dataclass
class Recorded:
    """What the live run did with one action, for the event log (in sequence order)."""

    action: Action
    seconds: float | None = None
    outcome: str = "ran"             # 'ran' | 'skipped: why' | 'failed: why'
    detail: str = ""
    statements: list[Statement] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.statements:
            self.statements = rendered(self.action)
