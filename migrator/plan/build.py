"""The plan: the promise the tool makes before it touches anything.

`make_plan` inspects (read-only), judges and builds; `build_plan` turns a snapshot and
its findings into the ordered steps of DESIGN section 3, each with the SQL it will
run and where, and an estimate of the copy. `Plan.to_dict` is the `plan --json`
document; its keys are a published contract (README "Plan", pinned by a test).

The SQL is composed with psycopg.sql like the statements the steps run, and rendered
without a connection. Object definitions (column types, defaults, index and trigger
definitions) are the server's own text from pg_get_*def and format_type, read with
an empty search_path so every name in them is schema-qualified.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from migrator import names
from migrator.move.cutover import cutover_notes
from migrator.move.group import in_flight, resolve_group
from migrator.move.statuses import StepStatus
from migrator.move.steps import STEP_NAMES
from migrator.plan.document import (
    objects_created,
    objects_dict,
    pgbouncer_dict,
    playbook_dict,
    server_dict,
    table_dict,
    why_kept,
)
from migrator.plan.findings import BLOCK, Finding, blocking, check
from migrator.plan.inspection import (
    LONG_TRANSACTION_AFTER,
    Snapshot,
    TableFacts,
    inspect_move,
)
from migrator.playbook import (
    Playbook,
    format_size,
    parse_size,
)
from migrator.postgres.statement import Statement

if TYPE_CHECKING:
    from migrator.move.state import StateStore

__all__ = [
    "DEFAULT_COPY_RATE",
    "STEP_NAMES",
    "Estimate",
    "Plan",
    "PlannedStep",
    "Statement",
    "build_plan",
    "make_plan",
    "parse_rate",
    "preflight_checks",
]

# A conservative rate for one table-sync worker's COPY over a network on modest
# hardware; the real rate depends on disks, network and row width (--copy-rate).
DEFAULT_COPY_RATE = 100 * 1024**2


def parse_rate(text: str | int) -> int:
    """Bytes per second in '100MB/s', '100MB' or 1048576; must be positive."""
    if isinstance(text, str) and text.strip().endswith("/s"):
        text = text.strip()[:-2]
    rate = parse_size(text)
    if rate <= 0:
        raise ValueError(f"the rate must be greater than 0, got {format_size(rate)}/s")
    return rate


@dataclass(frozen=True)
class PlannedStep:
    name: str
    title: str
    statements: tuple[Statement, ...]
    notes: tuple[str, ...] = ()

    @property
    def sql(self) -> tuple[str, ...]:
        return tuple(s.text for s in self.statements)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "title": self.title,
            "statements": [s.to_dict() for s in self.statements], "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Estimate:
    tables: int
    estimated_rows: int | None       # None when a table was never analyzed
    bytes_to_copy: int
    index_bytes_to_rebuild: int
    copy_rate_bytes_per_s: int
    copy_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "tables": self.tables,
            "estimated_rows": self.estimated_rows,
            "bytes_to_copy": self.bytes_to_copy,
            "index_bytes_to_rebuild": self.index_bytes_to_rebuild,
            "copy_rate_bytes_per_s": self.copy_rate_bytes_per_s,
            "copy_seconds": round(self.copy_seconds, 3),
        }


@dataclass(frozen=True)
class Plan:
    playbook: Playbook
    snapshot: Snapshot
    findings: tuple[Finding, ...]
    steps: tuple[PlannedStep, ...]
    estimate: Estimate

    @property
    def blocking(self) -> list[Finding]:
        return blocking(self.findings)

    @property
    def ok(self) -> bool:
        return not self.blocking

    def step(self, name: str) -> PlannedStep:
        return next(s for s in self.steps if s.name == name)

    def to_dict(self) -> dict[str, Any]:
        """The `plan --json` document (README "Plan"). Keys are only ever added."""
        return {
            "ok": self.ok,
            "playbook": playbook_dict(self.playbook),
            "source": server_dict(self.snapshot.source),
            "target": server_dict(self.snapshot.target),
            "findings": [f.to_dict() for f in self.findings],
            "blocking": [f.to_dict() for f in self.blocking],
            "tables": [table_dict(t) for t in self.snapshot.tables.values()],
            "pgbouncers": [pgbouncer_dict(b) for b in self.snapshot.pgbouncers],
            "steps": [s.to_dict() for s in self.steps],
            "estimate": self.estimate.to_dict(),
            "objects": objects_dict(self.snapshot),
            "inspected_at": self.snapshot.taken_at.isoformat(),
        }


def make_plan(
    playbook: Playbook,
    *,
    copy_rate_bytes_per_s: int = DEFAULT_COPY_RATE,
    expected_objects: Iterable[str] = frozenset(),
    long_transaction_after: float = LONG_TRANSACTION_AFTER,
    observe: float | None = None,
    store: StateStore | None = None,
) -> Plan:
    """Inspect both servers and every PgBouncer (read-only), judge, and plan the move.

    observe: also watch the live traffic for that many seconds (`migrator analyze`)
    and add its routing and isolation findings. store: the checkpoint store, to say
    where this move stands when it is under way."""
    playbook = resolve_group(playbook, store)
    steps_done: tuple[str, ...] = ()
    if store is not None and in_flight(store, playbook.name):
        done = store.steps(playbook.name)
        steps_done = tuple(s for s in STEP_NAMES if s in done and done[s].status == StepStatus.DONE)
    snapshot = inspect_move(playbook, long_transaction_after=long_transaction_after, steps_done=steps_done)
    if snapshot.in_flight:
        expected_objects = {*expected_objects, *names.all_objects(playbook), *(str(t) for t in playbook.tables)}
    findings = check(snapshot, playbook, expected_objects=expected_objects)
    if observe:
        from migrator.analyze.observe import analyze_playbook

        findings += analyze_playbook(playbook, duration=observe, purpose="analyze plan").findings
    return build_plan(playbook, snapshot, findings, copy_rate_bytes_per_s=copy_rate_bytes_per_s)


def preflight_checks(playbook: Playbook) -> list[Finding]:
    """The plan's checks, as the preflight step runs them again right before a move."""
    return check(inspect_move(playbook), playbook, expected_objects=names.all_objects(playbook))


def build_plan(
    playbook: Playbook,
    snapshot: Snapshot,
    findings: Iterable[Finding],
    *,
    copy_rate_bytes_per_s: int = DEFAULT_COPY_RATE,
) -> Plan:
    findings = tuple(findings)
    tables = [t for t in snapshot.tables.values() if t.exists]
    facts, described = snapshot.facts, snapshot.described
    steps = (
        _preflight(findings),
        _schema(playbook, snapshot, described["schema"]),
        _defer_indexes(playbook, snapshot, tables, described["defer-indexes"]),
        _replicate(playbook, described["replicate"]),
        _rebuild_indexes(playbook, described["rebuild-indexes"]),
        _prepare_reverse(described["prepare-reverse"]),
        PlannedStep("cutover", "Pause, catch up, switch replication, reroute, resume", described["cutover"],
                    tuple(cutover_notes(playbook, facts.cutover)
                          + ["`migrator rollback` afterwards moves traffic back with the same protocol"])),
    )
    assert tuple(s.name for s in steps) == STEP_NAMES
    return Plan(
        playbook=playbook, snapshot=snapshot, findings=findings, steps=steps,
        # A partitioned table's rows are in its partitions.
        estimate=_estimate(playbook, snapshot.catalog.relations if snapshot.catalog else tables,
                           copy_rate_bytes_per_s),
    )


# --------------------------------------------------------------------------- estimate


def _estimate(playbook: Playbook, tables: list[TableFacts], rate: int) -> Estimate:
    copy = sum(t.copy_bytes for t in tables)
    secondary = sum(i.size_bytes for t in tables for i in t.secondary_indexes)
    if not playbook.indexes.defer:
        # Every index is maintained row by row during the copy: count it as copied.
        copy += sum(t.index_bytes for t in tables)
        secondary = 0
    rows = [t.estimated_rows for t in tables]
    return Estimate(
        tables=len(tables),
        estimated_rows=None if any(r is None for r in rows) else sum(r or 0 for r in rows),
        bytes_to_copy=copy,
        index_bytes_to_rebuild=secondary,
        copy_rate_bytes_per_s=rate,
        copy_seconds=copy / rate,
    )


def _preflight(findings: tuple[Finding, ...]) -> PlannedStep:
    blocked = sum(1 for f in findings if f.level == BLOCK)
    return PlannedStep(
        "preflight", "Check again, right before starting",
        (),
        (
            "runs the checks of this plan again (read-only) and refuses to start on any blocking "
            "finding" + (f" — {blocked} now" if blocked else ""),
        ),
    )


def _schema(playbook: Playbook, snapshot: Snapshot, statements: tuple[Statement, ...]) -> PlannedStep:
    group = snapshot.schema
    notes = [
        "creates the group's tables on the target like the source's, in one transaction: "
        "schemas, types, sequences, functions, columns, constraints, indexes, foreign keys, "
        "triggers, grants, comments",
        f"and the tool's own schema {names.SCHEMA} with this move's sync marker table "
        f"{'.'.join(names.sync_marker(playbook))} on both servers",
    ]
    if group is None:
        notes.append("the definitions could not be read: " + (snapshot.schema_error or "no table exists"))
    else:
        notes += _objects_notes(snapshot)
    if playbook.app_roles:
        notes.append(f"the app roles ({', '.join(playbook.app_roles)}) are granted on the target "
                     "only at the cutover")
    return PlannedStep("schema", "Create the group's schema on the target", statements, tuple(notes))


def _defer_indexes(playbook: Playbook, snapshot: Snapshot, tables: list[TableFacts],
                   statements: tuple[Statement, ...]) -> PlannedStep:
    title = "Drop secondary indexes on the target for the bulk copy"
    if not playbook.indexes.defer:
        return PlannedStep("defer-indexes", title, (),
                           ("indexes.defer is false: every index stays during the copy",))
    kept = [i for t in tables for i in t.indexes if not i.secondary]
    notes = [f"records each definition in the checkpoint first ({_count(len(statements), 'index', 'indexes')})"]
    if kept:
        notes.append("kept (the apply worker or a constraint needs them): "
                     + ", ".join(f"{i.name} ({why_kept(i)})" for i in kept))
    return PlannedStep("defer-indexes", title, statements, tuple(notes))


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _replicate(playbook: Playbook, statements: tuple[Statement, ...]) -> PlannedStep:
    return PlannedStep(
        "replicate", "Guard the group, then replicate it from the source to the target", statements,
        (
            f"first the guards, on both servers until `complete` or a full rollback: the write fence "
            f"(trigger {names.fence(playbook)} on every table of the group) refuses writes on the "
            "target's copy, which does not serve yet; the DDL guard (event triggers "
            f"{names.ddl_guard(playbook)}, {names.drop_guard(playbook)}) refuses schema changes to the "
            "group outside `migrator ddl`",
            f"the subscription creates replication slot {names.slot(playbook)} on the source, "
            "which waits for the transactions open at that moment",
            "then waits until every table is ready ('r' in pg_subscription_rel), showing bytes "
            "copied and the time left",
        ),
    )


def _rebuild_indexes(playbook: Playbook, statements: tuple[Statement, ...]) -> PlannedStep:
    title = "Rebuild the deferred indexes, then wait for the lag"
    wait = (f"then waits until the replication lag (slot {names.slot(playbook)}) is under "
            f"cutover.max_lag ({format_size(playbook.cutover.max_lag)})")
    notes = ("the recorded definitions, up to 4 at a time; ANALYZE of each table", wait)
    if not playbook.indexes.defer:
        notes = ("indexes.defer is false: nothing to rebuild; ANALYZE of each table", wait)
    return PlannedStep("rebuild-indexes", title, statements, notes)


def _prepare_reverse(statements: tuple[Statement, ...]) -> PlannedStep:
    return PlannedStep(
        "prepare-reverse", "Publish the group on the target, for replication back", statements,
        ("so that the reverse subscription can be created in milliseconds during the cutover",),
    )


def _objects_notes(snapshot: Snapshot) -> list[str]:
    # The kinds are plural nouns: one of them drops the final s.
    created = [f"{len(names)} {kind if len(names) != 1 else kind[:-1]}: {_short_list(names)}"
               for kind, names in objects_created(snapshot).items() if names]
    notes = ["besides the tables it creates " + "; ".join(created)] if created else []
    catalog = snapshot.catalog
    if catalog is not None and catalog.left_behind:
        notes.append("left on the source (plan --json lists each): "
                     + _short_list([f"{name} ({why})" for name, why in catalog.left_behind], limit=8))
    return notes


def _short_list(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


