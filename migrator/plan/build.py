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
from migrator.plan.findings import BLOCK, Finding, blocking, check
from migrator.plan.inspection import (
    LONG_TRANSACTION_AFTER,
    ServerFacts,
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
            "playbook": _playbook_dict(self.playbook),
            "source": _server_dict(self.snapshot.source),
            "target": _server_dict(self.snapshot.target),
            "findings": [f.to_dict() for f in self.findings],
            "blocking": [f.to_dict() for f in self.blocking],
            "tables": [_table_dict(t) for t in self.snapshot.tables.values()],
            "pgbouncers": [_pgbouncer_dict(b) for b in self.snapshot.pgbouncers],
            "steps": [s.to_dict() for s in self.steps],
            "estimate": self.estimate.to_dict(),
            "inspected_at": self.snapshot.taken_at.isoformat(),
        }


def make_plan(
    playbook: Playbook,
    *,
    copy_rate_bytes_per_s: int = DEFAULT_COPY_RATE,
    expected_objects: Iterable[str] = frozenset(),
    long_transaction_after: float = LONG_TRANSACTION_AFTER,
) -> Plan:
    """Inspect both servers and every PgBouncer (read-only), judge, and plan the move."""
    snapshot = inspect_move(playbook, long_transaction_after=long_transaction_after)
    findings = check(snapshot, playbook, expected_objects=expected_objects)
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
        _replicate(playbook, tables),
        _rebuild_indexes(playbook, snapshot),
        _prepare_reverse(playbook, tables),
        _cutover(playbook, snapshot, tables),
    )
    assert tuple(s.name for s in steps) == STEP_NAMES
    return Plan(
        playbook=playbook, snapshot=snapshot, findings=findings, steps=steps,
        estimate=_estimate(playbook, tables, copy_rate_bytes_per_s),
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


def _text(composed: sql.Composable) -> str:
    return composed.as_string(None)


def _ident(name: TableName | tuple[str, ...] | str) -> sql.Identifier:
    if isinstance(name, TableName):
        return name.identifier
    if isinstance(name, tuple):
        return sql.Identifier(*name)
    return sql.Identifier(name)


def _table_list(tables: Iterable[TableName | tuple[str, str]]) -> sql.Composable:
    return sql.SQL(", ").join(_ident(t) for t in tables)


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
    if playbook.app_roles:
        notes.append(f"the app roles ({', '.join(playbook.app_roles)}) are granted on the target "
                     "only at the cutover")
    return PlannedStep("schema", "Create the group's schema on the target", tuple(statements), tuple(notes))


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
                     + ", ".join(f"{i.name} ({_why_kept(i)})" for i in kept))
    return PlannedStep("defer-indexes", title, tuple(defer_statements(playbook, secondary)), tuple(notes))


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _why_kept(index: Any) -> str:
    if index.is_primary:
        return "primary key"
    if index.is_replica_identity:
        return "replica identity"
    return "constraint " + ", ".join(index.constraints)


def _replicate(playbook: Playbook, tables: list[TableFacts]) -> PlannedStep:
    return PlannedStep(
        "replicate", "Replicate the group from the source to the target",
        tuple(replicate_statements(playbook)),
        (
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
    return PlannedStep("rebuild-indexes", title, tuple(rebuild_statements(playbook, _deferred(snapshot))), notes)


def _prepare_reverse(playbook: Playbook, tables: list[TableFacts]) -> PlannedStep:
    return PlannedStep(
        "prepare-reverse", "Publish the group on the target, for replication back",
        tuple(prepare_reverse_statements(playbook)),
        ("so that the reverse subscription can be created in milliseconds during the cutover",),
    )


def _subscription(name: str, dsn: str, publication: str, slot: str, *, copy_data: bool,
                  create_slot: bool = True) -> sql.Composable:
    return replication.subscription_statement(name, dsn, publication, slot, copy_data=copy_data,
                                              create_slot=create_slot)


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
    s += [_stmt("target", q, "before the pause: a sequence privilege draws numbers, it writes no row")
          for q in switch_statements(outside, grant=True)]
    s += [_stmt(on, f"PAUSE {b.database}") for on, b in bouncers]
    s += [_stmt("target", q, "while PAUSE waits for the transactions in flight")
          for q in switch_statements(inside, grant=True)]
    if playbook.app_roles:
        s.append(_stmt("source", sql.SQL(
            "SELECT pg_catalog.pg_cancel_backend(a.pid) FROM pg_catalog.pg_stat_activity a "
            "WHERE a.usename = ANY({}) AND ..."
        ).format(sql.Literal(list(playbook.app_roles))), "after grace: their queries on the group"))
    revoke = switch_statements(inside, grant=False)
    if revoke:
        s.append(_stmt("source", "SET LOCAL lock_timeout = ...", "what is left of max_pause"))
    s += [_stmt("source", q) for q in revoke]
    s.append(_stmt("source", sql.SQL("INSERT INTO {} (token, direction) VALUES (...)").format(marker),
                   "the sync marker"))
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
        names.reverse_slot(playbook), copy_data=False, create_slot=False), "after RESUME"))
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


# --------------------------------------------------------------------------- JSON


def _playbook_dict(playbook: Playbook) -> dict[str, Any]:
    return {
        "name": playbook.name,
        "path": str(playbook.path) if playbook.path else None,
        "source": playbook.source.display,
        "target": playbook.target.display,
        "tables": [str(t) for t in playbook.tables],
        "app_roles": list(playbook.app_roles),
        "pgbouncers": [
            {"admin": describe(b.admin_dsn), "database": b.database, "config_file": route_for(b).where}
            for b in playbook.pgbouncers
        ],
        "cutover": {
            "max_pause_s": playbook.cutover.max_pause,
            "grace_s": playbook.cutover.grace,
            "max_lag_bytes": playbook.cutover.max_lag,
        },
        "indexes": {"defer": playbook.indexes.defer},
        "objects": {
            "publication": names.publication(playbook),
            "subscription": names.subscription(playbook),
            "slot": names.slot(playbook),
            "reverse_publication": names.reverse_publication(playbook),
            "reverse_subscription": names.reverse_subscription(playbook),
            "reverse_slot": names.reverse_slot(playbook),
        },
    }


def _server_dict(server: ServerFacts) -> dict[str, Any]:
    rights = server.rights
    return {
        "display": server.display,
        "version": server.version,
        "major": server.major,
        "wal_level": server.wal_level,
        "settings": dict(server.settings),
        "in_use": dict(server.in_use),
        "role": {
            "name": rights.name, "superuser": rights.superuser, "replication": rights.replication,
            "create_on_database": rights.create_on_database,
            "create_subscription": rights.create_subscription,
            "signal_backend": rights.signal_backend,
        },
        "app_roles": dict(server.app_roles),
        "leftovers": [
            {"kind": o.kind, "name": o.name, "detail": o.detail, "retained_wal_bytes": o.retained_wal_bytes}
            for o in server.leftovers
        ],
        "long_transactions": [
            {"pid": t.pid, "user": t.user, "application_name": t.application_name, "state": t.state,
             "seconds": round(t.seconds, 1), "has_xid": t.has_xid}
            for t in server.long_transactions
        ],
        "extensions": dict(server.extensions),
    }


def _table_dict(table: TableFacts) -> dict[str, Any]:
    return {
        "name": str(table.name),
        "exists": table.exists,
        "kind": table.kind,
        "size": {
            "heap_bytes": table.heap_bytes, "toast_bytes": table.toast_bytes,
            "index_bytes": table.index_bytes, "copy_bytes": table.copy_bytes,
        },
        "estimated_rows": table.estimated_rows,
        "replica_identity": table.replica_identity,
        "primary_key": table.primary_key.name if table.primary_key else None,
        "on_target": table.on_target,
        "columns": [c.name for c in table.columns],
        "indexes": [
            {"name": i.name, "definition": i.definition, "secondary": i.secondary,
             "kept_for": None if i.secondary else _why_kept(i), "size_bytes": i.size_bytes}
            for i in table.indexes
        ],
        "sequences": [
            {"sequence": str(u.sequence), "column": u.column, "owned": u.owned,
             "identity": u.identity, "in_default": u.in_default}
            for u in table.sequences
        ],
        "foreign_keys": [
            {"name": fk.name, "table": str(fk.table), "columns": list(fk.columns),
             "references": str(fk.references), "referenced_columns": list(fk.referenced_columns),
             "crosses_group": fk.crosses_group}
            for fk in table.foreign_keys
        ],
        "triggers": [t.name for t in table.triggers],
        "generated_columns": [c.name for c in table.generated_columns],
        "types": [t.qualified for t in table.types],
        "extensions": list(table.extensions),
    }


def _pgbouncer_dict(bouncer: Any) -> dict[str, Any]:
    entry = bouncer.entry
    return {
        "admin": bouncer.display,
        "database": bouncer.database,
        "reachable": bouncer.reachable,
        "error": bouncer.error,
        "version": bouncer.version,
        "routes_to": f"{entry.host}:{entry.port}/{entry.database}" if entry else None,
        "paused": entry.paused if entry else None,
        "points_at_source": bouncer.entry_points_at_source,
        "config_file": str(bouncer.config_file),
        "config_writable": bouncer.config_readable and bouncer.config_writable,
        "config_entry": bouncer.config_entry,
    }

