"""What every step gets: the playbook, the checkpoint store, a reporter, and
connections to both sides; and the Step itself, data plus `do` and `undo`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from migrator.playbook import Playbook, TableName
from migrator.postgres.connection import Side, SideConnection, connect
from migrator.postgres.statement import Statement

if TYPE_CHECKING:
    from migrator.move.state import StateStore  # SQLAlchemy: plan imports it only when a store exists


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
    # The plan's checks, run again by the preflight step (the caller gives them: the
    # move does not depend on the planner, which renders the move's steps).
    checks: Callable[[Playbook], list] | None = None

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

    def data(self, step: str) -> Any:
        """The step's checkpoint data, as its model (migrator.move.checkpoint)."""
        return self.store.step(self.move, step).data

    def save(self, step: str, **data) -> None:
        """Fields of the step's checkpoint data, durably (checked by its model)."""
        self.store.update_data(self.move, step, **data)

    def log(self, step: str, message: str, statement: sql.Composable | str | None = None, *,
            seconds: float | None = None) -> None:
        """An event; with a statement, its text exactly as `plan` and `--dry-run` show it."""
        text = Statement("", statement).text if statement is not None else None
        self.store.log(self.move, "sql" if text else "info", message, step=step, sql=text, seconds=seconds)

    def run(self, conn: psycopg.Connection, statements: list[Statement], step: str, what: str = "ran", *,
            transaction: bool = False) -> None:
        """The live executor of a step's statements: each run in order (all in one
        transaction if asked) and recorded in the event log, with its time, once it has
        run (in a transaction: once it has committed)."""
        from migrator.move.actions import run_statement

        ran: list[tuple[Statement, float]] = []
        with conn.transaction() if transaction else contextlib.nullcontext():
            for statement in statements:
                started = time.monotonic()
                run_statement(conn, statement)
                ran.append((statement, time.monotonic() - started))
                if not transaction:
                    self.log(step, what, statement.sql, seconds=ran[-1][1])
        if transaction:
            for statement, seconds in ran:
                self.log(step, what, statement.sql, seconds=seconds)


@dataclass(frozen=True)
class UndoPlan:
    """What a step's undo runs from where the move stands: `rollback --dry-run` prints
    it and the undo runs it."""

    statements: list[Statement]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Step:
    """A step: its work (`do`), its undo, what the undo runs from where the move stands
    (`rollback --dry-run`), and what it runs given the facts (`plan`)."""

    name: str
    title: str
    do: Callable[[MoveContext], str | None]
    undo: Callable[[MoveContext], str | None]
    undo_statements: Callable[[MoveContext], UndoPlan]
    describe: Callable[[Playbook, Any], list[Statement]]
