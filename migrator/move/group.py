"""The group a move works on, in whole-database mode (`schemas:` in the playbook).

A major-version upgrade moves a whole database: the playbook names its schemas
(`schemas: [public, billing]`, or `schemas: all`) instead of (or besides) tables. The
tables are those the schemas hold on the source; they are read once, when the move
starts, and kept in the checkpoint store for the move's lifetime, so that every later
command (`status`, the cutover, `rollback`, `complete`) works on the same tables even
if one is created in those schemas meanwhile. Until then (`plan`), they are read from
the source each time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from migrator.errors import PlaybookError
from migrator.move.statuses import MoveStatus, StepStatus
from migrator.playbook import Playbook, TableName
from migrator.playbook.model import ALL_SCHEMAS
from migrator.postgres.catalog import schema_tables, user_schemas
from migrator.postgres.connection import connect

if TYPE_CHECKING:
    from migrator.move.state import StateStore

_STARTED = (StepStatus.RUNNING, StepStatus.DONE, StepStatus.FAILED, StepStatus.UNDOING)


def in_flight(store: StateStore, move: str) -> bool:
    """Has this move done something that a full rollback or `complete` has not ended?
    (The preflight changes nothing on the servers: a move stopped there has not started.)"""
    if store.move_status(move) != MoveStatus.ACTIVE:
        return False
    return any(record.status in _STARTED for step, record in store.steps(move).items() if step != "preflight")


def resolve_group(playbook: Playbook, store: StateStore | None = None, *, pin: bool = False) -> Playbook:
    """The playbook with its whole-database group filled in: the one the move in flight
    recorded, else the schemas' tables on the source now (recorded when `pin`)."""
    if not playbook.whole_database or playbook.group_read:
        return playbook
    if store is not None and in_flight(store, playbook.name):
        pinned = store.move_data(playbook.name).get("group")
        if pinned:
            return playbook.with_group([TableName(*t) for t in pinned["tables"]], pinned["schemas"])
    resolved = read_schemas(playbook)
    if pin and store is not None:
        store.update_move_data(playbook.name, group={
            "tables": [[t.schema, t.name] for t in resolved.tables], "schemas": list(resolved.schema_names)})
    return resolved


def read_schemas(playbook: Playbook) -> Playbook:
    """The schemas' tables as the source holds them now (a read-only look)."""
    with connect(playbook.source.dsn, autocommit=True, purpose="plan") as conn:
        present = user_schemas(conn)
        if playbook.schemas == ALL_SCHEMAS:
            schemas = present
        else:
            schemas = list(playbook.schema_names)
            missing = [f"schemas[{i}]: schema {name} does not exist on the source {playbook.source.display}"
                       for i, name in enumerate(schemas) if name not in present]
            if missing:
                raise PlaybookError(missing, source=str(playbook.path) if playbook.path else None)
        tables = schema_tables(conn, schemas)
    return playbook.with_group(tables, schemas)
