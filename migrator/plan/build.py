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
from typing import Any

from psycopg import sql

from migrator import names
from migrator.move.cutover import Direction, fence_switch
from migrator.move.group import in_flight, resolve_group
from migrator.move.guarding import guard_statements
from migrator.move.state import StateStore, StepStatus
from migrator.move.steps import (
    STEP_NAMES,
    defer_statements,
    prepare_reverse_statements,
    rebuild_statements,
    replicate_statements,
    schema_statements,
)
from migrator.pgbouncer.config import entry_for
from migrator.pgbouncer.route import route_for
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
    TableName,
    format_duration,
    format_size,
    parse_size,
)
from migrator.postgres import replication
from migrator.postgres.connection import describe
from migrator.postgres.ddl import DeferredIndex
from migrator.postgres.grants import inside_and_outside_the_pause, switch_statements
from migrator.postgres.statement import Statement

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


def build_plan(
    playbook: Playbook,
    snapshot: Snapshot,
    findings: Iterable[Finding],
    *,
    copy_rate_bytes_per_s: int = DEFAULT_COPY_RATE,
) -> Plan:
    findings = tuple(findings)
    tables = [t for t in snapshot.tables.values() if t.exists]
    steps = (
        _preflight(findings),
        _schema(playbook, snapshot, tables),
        _defer_indexes(playbook, snapshot, tables),
        _replicate(playbook, snapshot),
        _rebuild_indexes(playbook, snapshot),
        _prepare_reverse(playbook, snapshot),
        _cutover(playbook, snapshot, tables),
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


# --------------------------------------------------------------------------- SQL helpers


def _ident(name: TableName | tuple[str, ...] | str) -> sql.Identifier:
    if isinstance(name, TableName):
        return name.identifier
    if isinstance(name, tuple):
        return sql.Identifier(*name)
    return sql.Identifier(name)


def _marker(playbook: Playbook) -> tuple[str, str]:
    return names.sync_marker(playbook)


def _stmt(on: str, composed: sql.Composable | str, note: str = "") -> Statement:
    return Statement(on=on, sql=composed, note=note)


# --------------------------------------------------------------------------- steps


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


def _schema(playbook: Playbook, snapshot: Snapshot, tables: list[TableFacts]) -> PlannedStep:
    group = snapshot.schema
    statements = schema_statements(group, playbook) if group is not None else []
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
    return PlannedStep("schema", "Create the group's schema on the target", tuple(statements), tuple(notes))


def _via_root(snapshot: Snapshot) -> bool:
    return snapshot.catalog is not None and snapshot.catalog.partitioned


def _deferred(snapshot: Snapshot) -> list[DeferredIndex]:
    return list(snapshot.schema.secondary_indexes) if snapshot.schema is not None else []


def _defer_indexes(playbook: Playbook, snapshot: Snapshot, tables: list[TableFacts]) -> PlannedStep:
    title = "Drop secondary indexes on the target for the bulk copy"
    if not playbook.indexes.defer:
        return PlannedStep("defer-indexes", title, (),
                           ("indexes.defer is false: every index stays during the copy",))
    secondary = _deferred(snapshot)
    kept = [i for t in tables for i in t.indexes if not i.secondary]
    notes = [f"records each definition in the checkpoint first ({_count(len(secondary), 'index', 'indexes')})"]
    if kept:
        notes.append("kept (the apply worker or a constraint needs them): "
                     + ", ".join(f"{i.name} ({why_kept(i)})" for i in kept))
    return PlannedStep("defer-indexes", title, tuple(defer_statements(playbook, secondary)), tuple(notes))


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _guarded(snapshot: Snapshot) -> tuple[list[TableName], list[TableName]]:
    """What the guards protect, from the catalog model: as guarded_objects reads it."""
    relations = snapshot.catalog.relations if snapshot.catalog is not None else []
    return ([t.name for t in relations],
            sorted({TableName(t.name.schema, i.name) for t in relations for i in t.indexes}))


def _replicate(playbook: Playbook, snapshot: Snapshot) -> PlannedStep:
    relations, indexes = _guarded(snapshot)
    guarded = guard_statements(playbook, relations, indexes)
    return PlannedStep(
        "replicate", "Guard the group, then replicate it from the source to the target",
        tuple([*guarded, *replicate_statements(playbook, via_root=_via_root(snapshot),
                                               target_version=snapshot.target.version_num)]),
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


def _rebuild_indexes(playbook: Playbook, snapshot: Snapshot) -> PlannedStep:
    title = "Rebuild the deferred indexes, then wait for the lag"
    wait = (f"then waits until the replication lag (slot {names.slot(playbook)}) is under "
            f"cutover.max_lag ({format_size(playbook.cutover.max_lag)})")
    notes = ("the recorded definitions, up to 4 at a time; ANALYZE of each table", wait)
    if not playbook.indexes.defer:
        notes = ("indexes.defer is false: nothing to rebuild; ANALYZE of each table", wait)
    views = [v.name for v in snapshot.schema.views if v.materialized] if snapshot.schema is not None else []
    return PlannedStep("rebuild-indexes", title, tuple(rebuild_statements(playbook, _deferred(snapshot), views)),
                       notes)


def _prepare_reverse(playbook: Playbook, snapshot: Snapshot) -> PlannedStep:
    return PlannedStep(
        "prepare-reverse", "Publish the group on the target, for replication back",
        tuple(prepare_reverse_statements(playbook, via_root=_via_root(snapshot))),
        ("so that the reverse subscription can be created in milliseconds during the cutover",),
    )


def _subscription(name: str, dsn: str, publication: str, slot: str, *, copy_data: bool,
                  create_slot: bool = True, subscriber_version: int = 0) -> sql.Composable:
    return replication.subscription_statement(name, dsn, publication, slot, copy_data=copy_data,
                                              create_slot=create_slot,
                                              run_as_owner=replication.runs_as_owner(subscriber_version))


def _cutover(playbook: Playbook, snapshot: Snapshot, tables: list[TableFacts]) -> PlannedStep:
    """The statements of cutover.Cutover, in its order (keep the two in step)."""
    bouncers = [(f"pgbouncers[{i}] {describe(b.admin_dsn)}", b) for i, b in enumerate(playbook.pgbouncers)]
    privileges = snapshot.schema.app_privileges if snapshot.schema is not None else []
    inside, outside = inside_and_outside_the_pause(privileges)
    marker = _ident(_marker(playbook))
    s: list[Statement] = [
        _stmt("source", sql.SQL("INSERT INTO {} (token, direction) VALUES (...)").format(marker),
              "before the pause, until the target applies it quickly"),
    ]
    for _, bouncer in bouncers:
        s.append(_stmt(route_for(bouncer).where,
                       f"[databases] {bouncer.database} = "
                       f"{_entry_value(_current_entry(snapshot, bouncer), playbook.target.dsn)}",
                       "written beside the file before the pause, put in place at the reroute"))
    s += [_stmt("target", q, "before the pause: the target's write fence refuses the app's writes "
                             "until the pause lifts it")
          for q in switch_statements(outside, grant=True)]
    s += [_stmt(on, f"PAUSE {b.database}") for on, b in bouncers]
    fence_old, _, _, unfence_new = fence_switch(playbook, Direction.forward(playbook))
    if playbook.app_roles:
        s.append(_stmt("source", sql.SQL(
            "SELECT pg_catalog.pg_cancel_backend(a.pid) FROM pg_catalog.pg_stat_activity a "
            "WHERE a.usename = ANY({}) AND ..."
        ).format(sql.Literal(list(playbook.app_roles))), "after grace: their queries on the group"))
    s.append(_stmt("source", "SET LOCAL lock_timeout = ...", "what is left of max_pause; one round trip, "
                                                           "one transaction to the marker's commit"))
    s += [_stmt("source", q) for q in switch_statements(inside, grant=False)]
    s.append(_stmt("source", fence_old, "the write fence moves to the source"))
    s.append(_stmt("source", "SET LOCAL synchronous_commit = on"))
    s.append(_stmt("source", sql.SQL("INSERT INTO {} (token, direction) VALUES (...)").format(marker),
                   "the sync marker, in the fence's commit: no write on the group commits after it"))
    s += [_stmt("target", q, "on a connection of its own, while the marker is awaited; the point of no "
                             "return waits for it")
          for q in [*switch_statements(inside, grant=True), unfence_new]]
    s.append(_stmt("target", sql.SQL("SELECT 1 FROM {} WHERE token = ...").format(marker),
                   "until the marker has arrived"))
    sequences = snapshot.distinct_sequences
    if sequences:
        listed = sql.SQL("ARRAY[{}]").format(sql.SQL(", ").join(sql.Literal(_ident(q).as_string(None))
                                                                for q in sequences))
        s.append(_stmt("source", replication.read_sequences_statement(listed),
                       "one statement for every sequence, while the marker is awaited "
                       "(those never used: their last_value read directly)"))
        s.append(_stmt("target", replication.write_sequences_statement(
            listed, sql.SQL("<last_values>"), sql.SQL("<is_called>")),
            "the values just read on the source; once before the pause for all of them, inside it "
            "for those that moved since"))
    s.append(_stmt("target", sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(_ident(names.subscription(playbook)))))
    s.append(_stmt("target", sql.SQL("SELECT pg_catalog.pg_create_logical_replication_slot({}, 'pgoutput')").format(
        sql.Literal(names.reverse_slot(playbook))), "from here on the target keeps its changes for the source"))
    for on, _ in bouncers:
        s.append(_stmt(on, "RELOAD", "after the config file is put in place: the point of no return is passed"))
    s += [_stmt(on, f"RESUME {b.database}") for on, b in bouncers]
    s += [_stmt(on, "SHOW DATABASES", "checks that the entry routes to the target") for on, _ in bouncers]
    s += [_stmt("source", q, "after RESUME") for q in switch_statements(outside, grant=False)]
    s.append(_stmt("source", _subscription(
        names.reverse_subscription(playbook), playbook.target.dsn, names.reverse_publication(playbook),
        names.reverse_slot(playbook), copy_data=False, create_slot=False,
        subscriber_version=snapshot.source.version_num), "after RESUME"))
    s.append(_stmt("target", sql.SQL("DROP SUBSCRIPTION {}").format(_ident(names.subscription(playbook))),
                   "after RESUME; drops its slot on the source too"))
    cut = playbook.cutover
    notes = (
        f"starts only when the lag is under max_lag ({format_size(cut.max_lag)}) and a marker "
        "row crosses quickly",
        f"the application sees one pause, at most max_pause ({format_duration(cut.max_pause)}); "
        f"the app roles' queries still running after grace ({format_duration(cut.grace)}) are cancelled",
        f"{_count(len(sequences), 'sequence', 'sequences')} copied during the pause",
        "the point of no return is the reroute: before it any failure or a pause past max_pause "
        "aborts (privileges restored, RESUME on the source, replication as it was); after it the "
        "move finishes forward",
        "a watchdog process resumes PgBouncer if the tool dies or hangs during the pause",
        "`migrator rollback` afterwards moves traffic back with the same protocol",
    )
    return PlannedStep("cutover", "Pause, catch up, switch replication, reroute, resume", tuple(s), notes)


def _current_entry(snapshot: Snapshot, bouncer: Any) -> str | None:
    for facts in snapshot.pgbouncers:
        if str(facts.config_file) == route_for(bouncer).where and facts.database == bouncer.database:
            return facts.config_entry
    return None


def _entry_value(current: str | None, dsn: str) -> str:
    from migrator.pgbouncer.config import entry_value

    if current is None:
        return entry_for(dsn)
    try:
        return entry_value(current, dsn)
    except ValueError:  # an entry shlex cannot split; the cutover would say so
        return entry_for(dsn)


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


