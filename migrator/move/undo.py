"""The undo log: what undoes the actions a cutover has begun, and the one way it runs.

Before the cutover's first PAUSE, the inverse of every action of the pause (RESUME for
PAUSE, the old side's fence lifted for its fence raised, replication enabled again for
its stop, the new slot dropped for its creation, ...) is written to the checkpoint in
one durable write, with the phase (`CutoverData.undo`); the watchdog gets the same
records in its orders. Every record is safe to run whether or not its action ran (a
RESUME of an entry not paused, a slot dropped that is not there, a fence function
replaced by itself), so whoever gives the traffic back runs the whole log:

- the tool itself, when the pause aborts before its point of no return;
- the watchdog process, when the tool dies or hangs inside the pause;
- the next run (`reconcile`), when a crash interrupted the cutover before its point of
  no return.

A record is plain data another process can run: SQL on a side (named, never a DSN),
an admin command on a PgBouncer (its index in the playbook), a file to remove.
They run in reverse order with the traffic first (`in_undo_order`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from migrator.move.actions import OPS
from migrator.pgbouncer.console import PgBouncerConsole, already_resumed
from migrator.pgbouncer.fleet import run_all
from migrator.postgres.connection import describe, describe_error


def in_undo_order(log: list[dict], old_side: str) -> list[dict]:
    """Reverse order, but the traffic first: the old side's statements (its fence lifted,
    the app's privileges back), then the PgBouncers (RESUME), then the rest (the new
    side fenced again, replication as it was, files removed). A new side that does not
    answer must not keep the clients paused."""
    back = list(reversed(log))
    first = [r for r in back if r["kind"] == "sql" and r["on"] == old_side]
    consoles = [r for r in back if r["kind"] == "console"]
    rest = [r for r in back if not (r["kind"] == "console" or (r["kind"] == "sql" and r["on"] == old_side))]
    return first + consoles + rest


def run_sql(conn: psycopg.Connection, record: dict) -> None:
    """One SQL record: its named operation, or its statements committed together."""
    if record.get("op"):
        name, *args = record["op"]
        OPS[name](conn, *args)
        return
    with conn.transaction():
        conn.execute("; ".join(record["sql"]))


def describe_record(record: dict) -> str:
    if record["kind"] == "sql":
        return f"on the {record['on']}: {'; '.join(record['sql'])}"
    if record["kind"] == "console":
        return f"pgbouncers[{record['bouncer']}]: {record['command']}"
    return f"remove {record.get('path')}"


@dataclass
class UndoOutcome:
    problems: list[str] = field(default_factory=list)
    unresumed: list[int] = field(default_factory=list)    # PgBouncers (by index) not resumed


def run_undo(log: list[dict], *, old_side: str, connection: Callable[[str], psycopg.Connection],
             consoles: Callable[[list[dict]], dict[int, str]],
             ran: Callable[[dict, str | None], None] = lambda record, error: None) -> UndoOutcome:
    """Run an undo log in undo order. `connection(side)` gives a connection to a side;
    `consoles(records)` runs the PgBouncer records and returns {index: error} of those
    it could not. One record's failure does not stop the others: each is reported."""
    outcome = UndoOutcome()
    ordered = in_undo_order(log, old_side)
    console_records = [r for r in ordered if r["kind"] == "console"]
    done_consoles = False
    for record in ordered:
        if record["kind"] == "console":
            if not done_consoles:
                done_consoles = True
                for index, error in consoles(console_records).items():
                    outcome.unresumed.append(index)
                    outcome.problems.append(f"pgbouncers[{index}]: {error}")
                for r in console_records:
                    ran(r, None if r["bouncer"] not in outcome.unresumed else "not answered")
            continue
        try:
            if record["kind"] == "sql":
                run_sql(connection(record["on"]), record)
            elif record["kind"] == "discard":
                Path(record["path"]).unlink(missing_ok=True)
            ran(record, None)
        except Exception as exc:  # noqa: BLE001 - every record gets its chance; the next run reconciles
            outcome.problems.append(f"{describe_record(record)}: {describe_error(exc)}")
            ran(record, describe_error(exc))
    return outcome


def resume_with_fresh_consoles(admin_dsns: list[str], timeout: float | None = None,
                               connect_timeout: int = 3) -> Callable[[list[dict]], dict[int, str]]:
    """Run console records on consoles of their own (the one that issued a PAUSE may
    still wait for it), every PgBouncer at once; {index: why} of those that did not
    answer within `timeout`."""
    def run(records: list[dict]) -> dict[int, str]:
        per_bouncer: dict[int, list[str]] = {}
        for r in records:
            per_bouncer.setdefault(r["bouncer"], []).append(r["command"])
        order = sorted(per_bouncer)

        def one(index: int) -> None:
            with PgBouncerConsole(admin_dsns[index], connect_timeout=connect_timeout) as console:
                for command in per_bouncer[index]:
                    try:
                        console.command(command)
                    except Exception as exc:  # noqa: BLE001
                        if not already_resumed(exc):
                            raise

        outcomes = run_all([lambda i=i: one(i) for i in order], timeout=timeout)
        return {i: ("no answer" if o.late else describe_error(o.error)) + f" ({describe(admin_dsns[i])})"
                for i, o in zip(order, outcomes, strict=True) if not o.ok}
    return run
