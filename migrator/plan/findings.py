"""Findings: what the snapshot means for the move, each ok, warn or block with a fix.

`check(snapshot, playbook)` runs one small function per concern, in the order a
person fixes things (servers, rights, tables, PgBouncer, leftovers). A `code` names
the condition and never changes once published, so scripts may match on it; the
message names the object, the hint says what to do.

A blocking finding stops `plan` (exit 3) and `execute`'s preflight. A warning is
something the tool handles but a person should know before the move starts.

The checks live by subject in server_checks, table_checks and object_checks; this module only orders
them (CHECKS) and is the one place callers import from.
"""

from __future__ import annotations

from collections.abc import Iterable

from migrator.plan import object_checks, server_checks, table_checks
from migrator.plan.finding import BLOCK, OK, WARN, Check, Finding, Level
from migrator.plan.inspection import Snapshot
from migrator.playbook import Playbook

__all__ = ["BLOCK", "CHECKS", "CODES", "Finding", "Level", "OK", "WARN", "blocking", "check"]

CHECKS: tuple[Check, ...] = (
    # First: a move in flight whose replication broke explains the findings that follow.
    server_checks.slots_lost,
    server_checks.versions,
    server_checks.wal_level,
    server_checks.headroom,
    server_checks.standbys,
    server_checks.privileges,
    server_checks.ddl_guard,
    server_checks.app_roles,
    table_checks.tables,
    table_checks.replica_identity,
    table_checks.foreign_keys,
    table_checks.table_contents,
    table_checks.sequences,
    table_checks.indexes,
    table_checks.target_tables,
    table_checks.schema,
    table_checks.drift,
    object_checks.dependents,
    server_checks.leftovers,
    server_checks.long_transactions,
    server_checks.pgbouncers,
)

# code -> one line on what it checks; the README's list is tested against this.
CODES: dict[str, str] = {code: meaning for function in CHECKS for code, meaning in function.codes}


def blocking(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.level == BLOCK]


def check(
    snapshot: Snapshot, playbook: Playbook, *, expected_objects: Iterable[str] = frozenset()
) -> list[Finding]:
    """Judge a snapshot. expected_objects: what the run's checkpoint says it created
    (publication, subscription and slot names; qualified table names on the target), so
    the preflight of a resumed run does not block on its own work."""
    expected = frozenset(expected_objects)
    return [finding for function in CHECKS for finding in function(snapshot, playbook, expected)]
