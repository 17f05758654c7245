"""What every step gets: the playbook, the checkpoint store, a reporter, and
connections to both sides; and the Step itself, data plus `do` and `undo`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from migrator.move.state import StateStore
from migrator.playbook import Playbook, TableName
from migrator.postgres.connection import Side, SideConnection, connect
from migrator.postgres.statement import Statement


class Reporter:
    """What steps tell a person while they run; output.py implements the real one."""

    def step_started(self, step: str, title: str) -> None: ...
    def step_finished(self, step: str, seconds: float, summary: str | None) -> None: ...
    def progress(self, step: str, done: int, total: int, detail: str = "",
                 tables: dict[str, list[int]] | None = None) -> None: ...
    def note(self, text: str) -> None: ...


@dataclass
class MoveContext:
    playbook: Playbook
    store: StateStore
    reporter: Reporter = field(default_factory=Reporter)
    # Set by rollback when the schema step's undo will drop the target's tables:
    # then recreating or re-dropping indexes on them is wasted work.
    tables_will_be_dropped: bool = False
    keep_target: bool = False

    @property
    def move(self) -> str:
        return self.playbook.name

    @property
    def tables(self) -> list[TableName]:
        return list(self.playbook.tables)

    # A step's purpose ("schema", "index-build <move>", ...) is not in the connection
    # module's TIMEOUTS: its row is "step", no statement or lock limit (copies and index
    # builds run long and queue behind the application's locks on purpose).
    def source(self, purpose: str = "") -> SideConnection:
        return connect(self.playbook.source.dsn, side=Side.SOURCE, purpose=purpose)

    def target(self, purpose: str = "") -> SideConnection:
        return connect(self.playbook.target.dsn, side=Side.TARGET, purpose=purpose)

    def data(self, step: str) -> dict:
        return self.store.step(self.move, step).data

    def save(self, step: str, **data) -> dict:
        return self.store.update_data(self.move, step, **data)

    def log(self, step: str, message: str, statement: sql.Composable | str | None = None) -> None:
        """An event; with a statement, its text exactly as `plan` and `--dry-run` show it."""
        text = Statement("", statement).text if statement is not None else None
        self.store.log(self.move, "sql" if text else "info", message, step=step, sql=text)

    def run(self, conn: psycopg.Connection, statements: list[Statement], step: str, what: str = "ran", *,
            transaction: bool = False) -> None:
        """Run a step's statements in order (in one transaction if asked), each recorded
        in the event log once it has run."""
        if transaction:
            with conn.transaction():
                for statement in statements:
                    conn.execute(statement.sql)
        else:
            for statement in statements:
                conn.execute(statement.sql)
                self.log(step, what, statement.sql)
            return
        for statement in statements:
            self.log(step, what, statement.sql)


@dataclass(frozen=True)
class UndoPlan:
    """What a step's undo runs from where the move stands: `rollback --dry-run` prints
    it and the undo runs it."""

    statements: list[Statement]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    do: Callable[[MoveContext], str | None]
    undo: Callable[[MoveContext], str | None]
    undo_statements: Callable[[MoveContext], UndoPlan]
