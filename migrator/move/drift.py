"""Drift while a move is in flight: the group's tables read on both sides and compared
(`migrator.postgres.catalog.drift`), for `status`.

From the moment the schema step has made the group on the target until a full rollback
(or `complete`), both copies must keep the same columns and constraints, or replication
breaks (a column the target lacks) or the sides silently disagree (a constraint one side
does not check). Read-only and tolerant, as `status` is: a side that cannot be read is
said, not raised.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from migrator.errors import OperationFailed
from migrator.move.state import StepRecord
from migrator.move.statuses import MoveStatus, StepStatus
from migrator.playbook import Playbook, TableName
from migrator.postgres.catalog import TableFacts, tree_facts
from migrator.postgres.catalog.drift import Difference, compare
from migrator.postgres.connection import Side, connect, first_line

__all__ = ["DriftReading", "in_flight", "read_drift", "report_drift"]


@dataclass(frozen=True)
class DriftReading:
    differences: tuple[Difference, ...] = ()
    error: str | None = None          # a side could not be read: nothing was compared


def in_flight(schema: StepRecord | None, move_status: MoveStatus | str | None) -> bool:
    """Is the group on the target because of this move, and still the move's? The schema
    step made it (and has not been undone); `complete` ends the move's hold on it."""
    return (schema is not None and schema.status == StepStatus.DONE
            and move_status != MoveStatus.COMPLETED)


def side_facts(dsn: str, side: Side, tables: list[TableName]) -> dict[TableName, TableFacts]:
    """The group's tables and their partitions on one side, in one read-only snapshot."""
    with connect(dsn, side=side, purpose="status drift") as conn:
        conn.read_only = True
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction(force_rollback=True):
            return tree_facts(conn, tables)


def read_drift(playbook: Playbook) -> DriftReading:
    """Both sides read and compared; an unreadable side is named in `error`."""
    facts: dict[Side, dict[TableName, TableFacts]] = {}
    for side, dsn in ((Side.SOURCE, playbook.source.dsn), (Side.TARGET, playbook.target.dsn)):
        try:
            facts[side] = side_facts(dsn, side, list(playbook.tables))
        except OperationFailed as exc:     # the message names the side
            return DriftReading(error=exc.message)
        except Exception as exc:  # noqa: BLE001 - status reports, it does not fail
            return DriftReading(error=f"cannot read the {side}: {first_line(exc)}")
    return DriftReading(tuple(compare(facts[Side.SOURCE], facts[Side.TARGET])))


def report_drift(playbook: Playbook, schema: StepRecord | None,
                 move_status: MoveStatus | str | None) -> tuple[list[dict] | None, str | None]:
    """What `status` shows: (the differences as dicts, None) while the move is in flight,
    (None, why) when a side cannot be read, (None, None) when there is nothing to compare."""
    if not in_flight(schema, move_status):
        return None, None
    reading = read_drift(playbook)
    if reading.error is not None:
        return None, reading.error
    return [d.to_dict() for d in reading.differences], None
