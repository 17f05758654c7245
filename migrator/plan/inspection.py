"""Inspection: one read-only snapshot of everything a move depends on.

`inspect_move` reads both servers and every PgBouncer and returns an immutable
`Snapshot`; `findings.check` judges it and `plan.build_plan` turns it into steps.
Nothing here writes: each server is read inside one REPEATABLE READ, READ ONLY
transaction (so all catalog reads see the same moment, and a slip could not change
anything), and PgBouncer only gets SHOW commands.

The group itself is read by the catalog model (`migrator.postgres.catalog`), the
same reader the execute steps use; this module adds the servers' settings and rights,
objects left by earlier runs, and every PgBouncer.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from migrator import names
from migrator.errors import OperationFailed, PlaybookError, ServerUnreachable
from migrator.move.cutover import CutoverFacts
from migrator.move.steps import STEPS, MoveFacts
from migrator.postgres.statement import Statement
from migrator.pgbouncer.config import EntryError, EntryRoute, read_entry
from migrator.pgbouncer.console import DatabaseEntry, PgBouncerConsole
from migrator.pgbouncer.route import include_problem, route_for
from migrator.playbook import PgBouncerEntry, Playbook, TableName
from migrator.postgres.catalog import (
    ExistingObjects,
    GroupCatalog,
    SequenceUse,
    TableFacts,
    TypeFacts,
    existing_objects,
    guarded_objects,
    read_group,
    target_tables,
    tree_facts,
)
from migrator.postgres.catalog.drift import Difference, compare
from migrator.postgres.connection import connect, describe, first_line
from migrator.plan.privileges import Gap, needs_of, read_gaps
from migrator.postgres.ddl import GroupSchema, group_schema

__all__ = [
    "FailoverFacts",
    "LeftoverObject",
    "LongTransaction",
    "PgBouncerFacts",
    "RoleRights",
    "ServerFacts",
    "Snapshot",
    "StandbyFacts",
    "inspect_move",
    "pgbouncer_facts",
    "server_facts",
]

# Slot creation waits for every transaction that holds an xid to finish; one open for
# this long is worth a person's attention before a move starts.
LONG_TRANSACTION_AFTER = 60.0

# The settings that bound what a move can create; all need a restart to change.
CAPACITY_SETTINGS = (
    "max_replication_slots",
    "max_wal_senders",
    "max_logical_replication_workers",
    "max_worker_processes",
    "max_sync_workers_per_subscription",
)


@dataclass(frozen=True)
class RoleRights:
    """What the playbook's DSN role may do on one server."""

    name: str
    superuser: bool
    replication: bool              # REPLICATION attribute (subscriptions connect as it)
    create_on_database: bool       # CREATE on the database (publications, schemas)
    create_subscription: bool      # superuser, or pg_create_subscription (PostgreSQL 16+)
    signal_backend: bool           # may cancel other roles' queries (pg_signal_backend)
    bypass_rls: bool = False       # BYPASSRLS: row security does not apply to it


@dataclass(frozen=True)
class LongTransaction:
    pid: int
    user: str | None
    application_name: str | None
    state: str | None
    seconds: float
    has_xid: bool                  # an xid: logical slot creation waits for it to end


@dataclass(frozen=True)
class LeftoverObject:
    """A publication, subscription or slot with one of this move's names."""

    server: str                    # 'source' | 'target'
    kind: str                      # 'publication' | 'subscription' | 'slot'
    name: str
    detail: str = ""
    retained_wal_bytes: int | None = None
    slot: str | None = None        # a subscription's slot on its publisher (None: detached)


@dataclass(frozen=True)
class StandbyFacts:
    """A physical standby streaming from a server (a walsender in pg_stat_replication)."""

    name: str                      # its application_name (cluster_name, or walreceiver)
    address: str | None
    state: str | None              # streaming, catchup, ...; None: not allowed to see it
    slot: str | None               # the physical slot it streams from (its primary_slot_name)
    holds_xmin: bool               # its slot or walsender holds an xmin: hot_standby_feedback is on


@dataclass(frozen=True)
class FailoverFacts:
    """What a server's standbys do with logical slots (PostgreSQL 17+: failover slots)."""

    standbys: tuple[StandbyFacts, ...] = ()
    physical_slots: tuple[str, ...] = ()
    # synchronized_standby_slots on this server (17+; None before): the physical slots whose
    # standbys must have a change before a logical walsender sends it.
    synchronized_standby_slots: tuple[str, ...] | None = None
    # Connections of standbys' slot sync workers here now (see _FAILOVER for how they are told).
    slotsync_workers: int = 0
    readable: bool = True          # superuser or pg_read_all_stats: pg_stat_replication's details


@dataclass(frozen=True)
class ServerFacts:
    side: str                      # 'source' | 'target'
    display: str                   # user@host:port/dbname, never a password
    version: str
    version_num: int
    system_identifier: str | None
    wal_level: str
    settings: Mapping[str, int]    # CAPACITY_SETTINGS
    in_use: Mapping[str, int]      # replication_slots, wal_senders, logical_workers, worker_processes
    rights: RoleRights
    app_roles: Mapping[str, bool]  # app role -> exists
    leftovers: tuple[LeftoverObject, ...] = ()
    long_transactions: tuple[LongTransaction, ...] = ()
    extensions: Mapping[str, str] = field(default_factory=dict)  # installed: name -> version
    available_extensions: frozenset[str] = frozenset()
    large_objects: int = 0
    failover: FailoverFacts = field(default_factory=FailoverFacts)

    @property
    def major(self) -> int:
        return self.version_num // 10000

    def free(self, setting: str) -> int:
        """Headroom under a capacity setting, given what runs now."""
        used_by = {
            "max_replication_slots": "replication_slots",
            "max_wal_senders": "wal_senders",
            "max_logical_replication_workers": "logical_workers",
            "max_worker_processes": "worker_processes",
        }
        return self.settings[setting] - self.in_use.get(used_by[setting], 0)


@dataclass(frozen=True)
class PgBouncerFacts:
    index: int
    display: str
    database: str
    config_file: Path | str                # the file rewritten, or which command reroutes
    reachable: bool
    error: str | None = None
    version: str | None = None
    entry: DatabaseEntry | None = None
    entry_points_at_source: bool = False
    entry_points_at_target: bool = False
    config_exists: bool = False
    config_readable: bool = False
    config_writable: bool = False
    config_problem: str | None = None      # why it is not readable/writable, in words
    config_entry: str | None = None        # the entry's connection string in the file
    config_points_at_source: bool = False
    config_points_at_target: bool = False  # (a move in flight past its reroute)
    include_problem: str | None = None     # include_file: the main config does not %include it
    # How the entry pools its clients' server connections (session / transaction /
    # statement) for the users that reach it (the app roles, the clients connected now, or
    # the entry's own `user=`), and where that mode comes from, in words. The least
    # friendly to a pause when they differ.
    pool_mode: str | None = None
    pool_mode_from: str | None = None


@dataclass(frozen=True)
class Snapshot:
    source: ServerFacts
    target: ServerFacts
    tables: Mapping[TableName, TableFacts]
    pgbouncers: tuple[PgBouncerFacts, ...]
    # Sequences the group uses that tables outside the group use too.
    shared_sequences: Mapping[TableName, tuple[TableName, ...]] = field(default_factory=dict)
    # The group as the catalog model read it from the source, and the DDL the schema
    # step will run from it given what the target has; None with schema_error when it
    # could not be built (no table exists).
    catalog: GroupCatalog | None = None
    existing: ExistingObjects | None = None    # what the target has of it
    schema: GroupSchema | None = None
    schema_error: str | None = None
    # How the group's tables differ between the sides, when they are on the target because
    # this move made them (its marker table is there: the schema step ran, no full
    # rollback or `complete` since); None otherwise.
    drift: tuple[Difference, ...] | None = None
    # What the guards will protect (relations, their indexes), as the replicate step
    # reads it (catalog.guarded_objects): the statements plan shows are the ones it runs.
    guarded: tuple[tuple[TableName, ...], tuple[TableName, ...]] = ((), ())
    # The facts the steps' statements are built from (move_facts), and each step's
    # statements (by step name) described from them once: what plan shows and what the
    # privileges are derived from.
    facts: MoveFacts | None = None
    described: dict[str, tuple[Statement, ...]] = field(default_factory=dict)
    # What the move's actions need and the DSN roles lack (migrator.plan.privileges).
    privilege_gaps: tuple[Gap, ...] = ()
    # This move is under way: its marker table is on the target (the schema step ran, no
    # full rollback or `complete` since) or its checkpoint says steps ran. Its
    # publications, subscriptions, slots and the group's tables on the target are then its
    # own work, not leftovers. `steps_done`: the checkpoint's finished steps, in order.
    in_flight: bool = False
    steps_done: tuple[str, ...] = ()
    taken_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def sequences(self) -> tuple[SequenceUse, ...]:
        """Every sequence use of the group, one per (sequence, column)."""
        return tuple(u for t in self.tables.values() for u in t.sequences)

    @property
    def distinct_sequences(self) -> tuple[TableName, ...]:
        return tuple(sorted({u.sequence for u in self.sequences}))

    @property
    def types(self) -> tuple[TypeFacts, ...]:
        seen: dict[tuple[str, str], TypeFacts] = {}
        for table in self.tables.values():
            for t in table.types:
                seen.setdefault((t.schema, t.name), t)
        return tuple(seen.values())


# --------------------------------------------------------------------------- the snapshot


def inspect_move(
    playbook: Playbook, *, long_transaction_after: float = LONG_TRANSACTION_AFTER,
    steps_done: Iterable[str] = (),
) -> Snapshot:
    """Read both servers and every PgBouncer; change nothing.

    Raises ServerUnreachable (naming source or target) when a server cannot be read;
    an unreachable PgBouncer is a fact of the snapshot, judged by `findings.check`.
    """
    if playbook.whole_database and not playbook.group_read:
        from migrator.move.group import read_schemas

        playbook = read_schemas(playbook)
    steps_done = tuple(steps_done)
    objects = sorted(names.all_objects(playbook))
    with _read_only(playbook.source.dsn, "source") as conn:
        source = server_facts(
            conn, "source", playbook.source.dsn, app_roles=playbook.app_roles,
            object_names=objects, long_transaction_after=long_transaction_after,
        )
        catalog = read_group(conn, playbook.tables, include=playbook.objects.include,
                             exclude=playbook.objects.exclude, schemas=playbook.schema_names)
        present = {t.name for t in catalog.existing}
        relations, indexes = guarded_objects(conn, [t for t in playbook.tables if t in present])
    if catalog.unmatched:
        # As a table that does not exist: the playbook names what is not there.
        raise PlaybookError([f"{where}: {name} is no view, routine, type or domain on the source "
                             f"{playbook.source.display}" for where, name in catalog.unmatched],
                            source=str(playbook.path) if playbook.path else None)
    with _read_only(playbook.target.dsn, "target") as conn:
        target = server_facts(
            conn, "target", playbook.target.dsn, app_roles=playbook.app_roles,
            object_names=objects, long_transaction_after=None,
        )
        on_target = target_tables(conn, playbook.tables)
        existing = existing_objects(conn, catalog)
        marker = _has_marker(conn, playbook)
        drift = _drift(conn, playbook, catalog) if marker else None
    tables = catalog.tables
    schema = group_schema(catalog, existing, playbook.app_roles) if catalog.existing else None
    tables = {
        name: replace(facts, on_target=on_target.get(name, "absent"))
        for name, facts in tables.items()
    }
    bouncers = tuple(
        pgbouncer_facts(entry, playbook, index=i) for i, entry in enumerate(playbook.pgbouncers)
    )
    snapshot = Snapshot(
        source=source, target=target, tables=tables, pgbouncers=bouncers,
        shared_sequences=catalog.shared_sequences, catalog=catalog, existing=existing, schema=schema,
        drift=drift, guarded=(tuple(relations), tuple(indexes)),
        in_flight=marker or bool(steps_done), steps_done=steps_done,
    )
    facts = move_facts(playbook, snapshot)
    described = {step.name: tuple(step.describe(playbook, facts)) for step in STEPS}
    return replace(snapshot, facts=facts, described=described,
                   privilege_gaps=tuple(_privilege_gaps(playbook, facts, described)))


def _privilege_gaps(playbook: Playbook, facts: MoveFacts, described: dict[str, tuple[Statement, ...]]) -> list[Gap]:
    """What the move's actions, and its rollback's, need that the DSN roles lack: asked of
    each server once the statements are known (they depend on both sides' catalogs)."""
    needs = needs_of(playbook, facts, described)
    gaps = []
    for side, dsn in (("source", playbook.source.dsn), ("target", playbook.target.dsn)):
        with _read_only(dsn, side) as conn:
            gaps += read_gaps(conn, side, needs)
    return gaps


def move_facts(playbook: Playbook, snapshot: Snapshot) -> MoveFacts:
    """The facts the steps' statements are built from (migrator.move.steps.MoveFacts), as
    the snapshot has them: a move about to begin, so the replicate step fences every
    relation and the cutover switches the app's privileges around the pause."""
    schema = snapshot.schema
    entries = {b.route_key: _current_entry(snapshot, b) for b in playbook.pgbouncers}
    relations, indexes = snapshot.guarded
    return MoveFacts(
        schema=schema,
        secondary_indexes=tuple(schema.secondary_indexes) if schema is not None else (),
        materialized_views=tuple(v.name for v in schema.views if v.materialized) if schema is not None else (),
        partitioned=snapshot.catalog is not None and snapshot.catalog.partitioned,
        guarded=(tuple(relations), tuple(indexes)),
        ddl_guard={"source": snapshot.source.rights.superuser, "target": snapshot.target.rights.superuser},
        cutover=CutoverFacts(
            app_privileges=tuple(schema.app_privileges) if schema is not None else (),
            sequences=tuple(schema.sequence_names) if schema is not None else (),
            entries={k: v for k, v in entries.items() if v is not None},
            source_version=snapshot.source.version_num, target_version=snapshot.target.version_num),
    )


def _current_entry(snapshot: Snapshot, bouncer) -> str | None:
    for facts in snapshot.pgbouncers:
        if str(facts.config_file) == route_for(bouncer).where and facts.database == bouncer.database:
            return facts.config_entry
    return None


def _has_marker(conn: psycopg.Connection, playbook: Playbook) -> bool:
    """Is the target's copy of the group this move's? The schema step creates the move's
    marker table in the transaction that creates the group there."""
    marker = TableName(*names.sync_marker(playbook)).qualified
    return bool(conn.execute("SELECT pg_catalog.to_regclass(%s) IS NOT NULL", (marker,)).fetchone()[0])


def _drift(conn: psycopg.Connection, playbook: Playbook, source: GroupCatalog) -> tuple[Difference, ...]:
    """The sides compared, when the target's copy of the group is this move's."""
    return tuple(compare({**source.tables, **source.partitions}, tree_facts(conn, playbook.tables)))


@contextmanager
def _read_only(dsn: str, side: str) -> Iterator[psycopg.Connection]:
    """A connection in one REPEATABLE READ READ ONLY transaction, rolled back at the end."""
    try:
        conn = connect(dsn, autocommit=True, purpose="plan")
    except ServerUnreachable as exc:
        raise ServerUnreachable(f"cannot inspect the {side}: {exc.message}", hint=exc.hint) from exc
    try:
        # Session default too, so not even a statement outside the block could write.
        conn.execute("SET default_transaction_read_only = on")
        # Catalog queries over a large database pass jit_above_cost; compiling them costs
        # more than running them (see the catalog reader).
        conn.execute("SET jit = off")
        conn.read_only = True
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction(force_rollback=True):
            yield conn
    except psycopg.OperationalError as exc:
        raise ServerUnreachable(
            f"cannot inspect the {side} ({describe(dsn)}): {first_line(exc)}",
            hint="check that the server is running",
        ) from exc
    except psycopg.Error as exc:
        raise OperationFailed(
            f"cannot inspect the {side} ({describe(dsn)}): {first_line(exc)}",
            hint="the DSN role needs to read the catalogs and the group's tables",
        ) from exc
    finally:
        conn.close()


# --------------------------------------------------------------------------- servers

_SERVER = """
SELECT pg_catalog.current_setting('server_version'),
       pg_catalog.current_setting('server_version_num')::int,
       pg_catalog.current_setting('wal_level'),
       pg_catalog.current_setting('max_replication_slots')::int,
       pg_catalog.current_setting('max_wal_senders')::int,
       pg_catalog.current_setting('max_logical_replication_workers')::int,
       pg_catalog.current_setting('max_worker_processes')::int,
       pg_catalog.current_setting('max_sync_workers_per_subscription')::int,
       CASE WHEN pg_catalog.has_function_privilege('pg_catalog.pg_control_system()', 'EXECUTE')
            -- with the start time: clones (a promoted physical replica, a copied
            -- data directory) share the system identifier but are other servers
            THEN (SELECT system_identifier::text FROM pg_catalog.pg_control_system())
                 || '@' || pg_catalog.pg_postmaster_start_time()::text END,
       current_user, r.rolsuper, r.rolreplication,
       pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CREATE'),
       -- pg_create_subscription exists from PostgreSQL 16; CASE keeps pg_has_role
       -- from being asked about a role that does not exist
       CASE WHEN r.rolsuper THEN true
            WHEN pg_catalog.to_regrole('pg_create_subscription') IS NULL THEN false
            ELSE pg_catalog.pg_has_role('pg_create_subscription', 'MEMBER') END,
       r.rolsuper OR pg_catalog.pg_has_role('pg_signal_backend', 'MEMBER'),
       (SELECT count(*) FROM pg_catalog.pg_replication_slots)::int,
       (SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE backend_type = 'walsender')::int,
       (SELECT count(*) FROM pg_catalog.pg_stat_activity
         WHERE backend_type LIKE 'logical replication %worker')::int,
       -- max_worker_processes bounds background workers: everything that is not a
       -- client backend or one of the server's auxiliary processes
       (SELECT count(*) FROM pg_catalog.pg_stat_activity
         WHERE backend_type NOT IN ('client backend', 'autovacuum launcher', 'autovacuum worker',
                                    'walsender', 'walreceiver', 'checkpointer', 'background writer',
                                    'walwriter', 'startup', 'archiver', 'io worker',
                                    'walsummarizer', 'slotsync worker', 'logger'))::int,
       CASE WHEN pg_catalog.has_table_privilege('pg_catalog.pg_largeobject_metadata', 'SELECT')
            THEN (SELECT count(*) FROM pg_catalog.pg_largeobject_metadata)::int ELSE 0 END,
       r.rolbypassrls
FROM pg_catalog.pg_roles r
WHERE r.rolname = current_user
"""

_APP_ROLES = """
SELECT r, EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r)
FROM pg_catalog.unnest(%s::text[]) AS r
"""

_LEFTOVERS = """
SELECT 'publication', p.pubname::text, '', NULL::numeric, NULL::text
FROM pg_catalog.pg_publication p WHERE p.pubname = ANY(%(names)s)
UNION ALL
SELECT 'subscription', s.subname::text,
       'in database ' || d.datname || CASE WHEN s.subenabled THEN ', enabled' ELSE ', disabled' END,
       NULL, s.subslotname::text
FROM pg_catalog.pg_subscription s
JOIN pg_catalog.pg_database d ON d.oid = s.subdbid
WHERE s.subname = ANY(%(names)s)
UNION ALL
SELECT 'slot', sl.slot_name::text,
       sl.slot_type || ' slot in database ' || COALESCE(sl.database, '-')
           || CASE WHEN sl.active THEN ', in use' ELSE ', not in use' END,
       CASE WHEN NOT pg_catalog.pg_is_in_recovery() AND sl.restart_lsn IS NOT NULL
            THEN pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), sl.restart_lsn) END,
       NULL
FROM pg_catalog.pg_replication_slots sl WHERE sl.slot_name = ANY(%(names)s)
ORDER BY 1, 2
"""

# Physical walsenders (a logical one always holds a logical slot), not base backups.
_STANDBYS = """
SELECT r.application_name, pg_catalog.host(r.client_addr), r.state, sl.slot_name::text,
       (r.backend_xmin IS NOT NULL OR sl.xmin IS NOT NULL OR sl.catalog_xmin IS NOT NULL)
FROM pg_catalog.pg_stat_replication r
LEFT JOIN pg_catalog.pg_replication_slots sl ON sl.active_pid = r.pid
WHERE sl.slot_type IS DISTINCT FROM 'logical' AND r.state IS DISTINCT FROM 'backup'
ORDER BY 1, 2
"""

_FAILOVER = """
SELECT ARRAY(SELECT slot_name::text FROM pg_catalog.pg_replication_slots WHERE slot_type = 'physical'
             ORDER BY 1),
       pg_catalog.current_setting('synchronized_standby_slots', true),
       -- A standby's slot sync worker keeps an ordinary connection here, named by its
       -- primary_conninfo's application_name (as its walreceiver is) or "slotsync worker",
       -- and polls the failover slots.
       (SELECT count(*) FROM pg_catalog.pg_stat_activity a
         WHERE a.backend_type = 'client backend' AND a.pid <> pg_catalog.pg_backend_pid()
           AND (a.application_name = 'slotsync worker' OR a.application_name LIKE '%\\_slotsync worker'
                OR a.application_name IN (SELECT w.application_name FROM pg_catalog.pg_stat_activity w
                                          WHERE w.backend_type = 'walsender' AND w.application_name <> ''
                                            AND w.pid NOT IN (SELECT l.active_pid
                                                              FROM pg_catalog.pg_replication_slots l
                                                              WHERE l.slot_type = 'logical'
                                                                AND l.active_pid IS NOT NULL))
                OR a.query LIKE '%FROM pg_catalog.pg_replication_slots WHERE failover%'))::int,
       (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)
       OR pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE')
"""


def failover_facts(conn: psycopg.Connection) -> FailoverFacts:
    """The server's physical standbys and how they keep its logical slots (read-only)."""
    standbys = tuple(StandbyFacts(name=r[0] or "", address=r[1], state=r[2], slot=r[3], holds_xmin=bool(r[4]))
                     for r in conn.execute(_STANDBYS))
    physical, synchronized, slotsync, readable = conn.execute(_FAILOVER).fetchone()
    listed = None
    if conn.info.server_version >= 170000:
        listed = tuple(n.strip().strip('"') for n in (synchronized or "").split(",") if n.strip())
    return FailoverFacts(standbys=standbys, physical_slots=tuple(physical), synchronized_standby_slots=listed,
                         slotsync_workers=slotsync, readable=bool(readable))


_LONG_TRANSACTIONS = """
SELECT a.pid, a.usename::text, a.application_name, a.state,
       EXTRACT(epoch FROM pg_catalog.clock_timestamp() - a.xact_start)::float8,
       a.backend_xid IS NOT NULL
FROM pg_catalog.pg_stat_activity a
WHERE a.xact_start IS NOT NULL
  AND a.xact_start < pg_catalog.clock_timestamp() - pg_catalog.make_interval(secs => %s)
  AND a.pid <> pg_catalog.pg_backend_pid()
  AND a.backend_type = 'client backend'
ORDER BY a.xact_start
"""


def server_facts(
    conn: psycopg.Connection,
    side: str,
    dsn: str,
    *,
    app_roles: Iterable[str] = (),
    object_names: Iterable[str] = (),
    long_transaction_after: float | None = LONG_TRANSACTION_AFTER,
) -> ServerFacts:
    """Version, settings, capacity in use, the DSN role's rights, app roles, objects
    with this move's names, and (if long_transaction_after) long transactions."""
    row = conn.execute(_SERVER).fetchone()
    assert row is not None, "current_user has no pg_roles row"
    (version, version_num, wal_level, slots, senders, workers, processes, sync, sysid,
     user, superuser, replication, create, subscribe, signal,
     slots_used, senders_used, workers_used, processes_used, large_objects, bypass_rls) = row
    roles = dict(conn.execute(_APP_ROLES, (list(app_roles),)).fetchall())
    leftovers = tuple(
        LeftoverObject(
            server=side, kind=kind, name=name, detail=detail,
            retained_wal_bytes=int(wal) if wal is not None else None, slot=slot,
        )
        for kind, name, detail, wal, slot in conn.execute(_LEFTOVERS, {"names": list(object_names)})
    )
    long_transactions: tuple[LongTransaction, ...] = ()
    if long_transaction_after is not None:
        long_transactions = tuple(
            LongTransaction(pid=r[0], user=r[1], application_name=r[2], state=r[3],
                            seconds=r[4], has_xid=r[5])
            for r in conn.execute(_LONG_TRANSACTIONS, (long_transaction_after,))
        )
    extensions = dict(conn.execute("SELECT extname::text, extversion FROM pg_catalog.pg_extension"))
    available = frozenset(
        r[0] for r in conn.execute("SELECT name::text FROM pg_catalog.pg_available_extensions")
    )
    return ServerFacts(
        side=side,
        display=describe(dsn),
        version=version,
        version_num=version_num,
        system_identifier=sysid,
        wal_level=wal_level,
        settings={
            "max_replication_slots": slots,
            "max_wal_senders": senders,
            "max_logical_replication_workers": workers,
            "max_worker_processes": processes,
            "max_sync_workers_per_subscription": sync,
        },
        in_use={
            "replication_slots": slots_used,
            "wal_senders": senders_used,
            "logical_workers": workers_used,
            "worker_processes": processes_used,
        },
        rights=RoleRights(
            name=user, superuser=superuser, replication=replication or superuser,
            create_on_database=create, create_subscription=subscribe, signal_backend=signal,
            bypass_rls=bypass_rls,
        ),
        app_roles=roles,
        leftovers=leftovers,
        long_transactions=long_transactions,
        extensions=extensions,
        available_extensions=available,
        large_objects=large_objects,
        failover=failover_facts(conn),
    )


# --------------------------------------------------------------------------- PgBouncer


def pgbouncer_facts(entry: PgBouncerEntry, playbook: Playbook, *, index: int = 0) -> PgBouncerFacts:
    """The console (reachable? where does the entry route now?) and the config file
    (readable, replaceable, holding the entry?). Only SHOW commands are sent."""
    display = describe(entry.admin_dsn)
    console: dict[str, Any] = {"reachable": False}
    try:
        with PgBouncerConsole(entry.admin_dsn) as pgb:
            version = pgb.version()
            found = pgb.databases().get(entry.database)
            modes = _pool_mode(pgb, found, playbook) if found is not None else (None, None)
        console = {
            "reachable": True,
            "version": version,
            "entry": found,
            "entry_points_at_source": bool(found and found.points_at(playbook.source.dsn)),
            "entry_points_at_target": bool(found and found.points_at(playbook.target.dsn)),
            "pool_mode": modes[0],
            "pool_mode_from": modes[1],
        }
    except (ServerUnreachable, OperationFailed) as exc:
        console["error"] = exc.message
    route = route_for(entry)
    if entry.command is not None:
        config = _command_facts(entry, route, playbook)
    else:
        config = _config_facts(entry, Path(route.where), playbook)
        if entry.include_file is not None and entry.config_file is not None:
            config["include_problem"] = include_problem(entry.config_file, entry.include_file)
    return PgBouncerFacts(
        index=index, display=display, database=entry.database, config_file=route.where,
        **console, **config,
    )


# How well a pool mode suits a pause: PAUSE in session mode waits for the clients to go.
_POOL_MODE_ORDER = {"transaction": 0, "statement": 1, "session": 2}


def _pool_mode(pgb: PgBouncerConsole, found: DatabaseEntry, playbook: Playbook) -> tuple[str, str]:
    """The entry's pool mode as PgBouncer decides it for each user that reaches it: the
    user's own ([users] section), else the entry's, else the global pool_mode."""
    users = pgb.users()
    default = pgb.config().get("pool_mode", "session")
    if found.force_user:
        reaching = {found.force_user}    # every server connection logs in as it
    else:
        clients = {str(c.get("user")) for c in pgb.show("CLIENTS") if c.get("database") == found.name}
        reaching = set(playbook.app_roles) | clients
    inherited = ((found.pool_mode, f"the entry's own pool_mode={found.pool_mode}") if found.pool_mode
                 else (default, f"the global pool_mode = {default}"))
    modes = [(users[u], f"user {u}'s own pool_mode={users[u]} in [users]") if users.get(u) else inherited
             for u in sorted(reaching)] or [inherited]
    return max(modes, key=lambda m: _POOL_MODE_ORDER.get(m[0], 0))


def _command_facts(entry: PgBouncerEntry, route, playbook: Playbook) -> dict[str, Any]:
    """A command-rerouted entry: its current value from `show` (or the console). Whether
    `prepare` works is proven before the pause, where a failure still pauses nothing."""
    facts: dict[str, Any] = {"config_exists": True, "config_readable": True, "config_writable": True}
    try:
        value = route.read()
    except OperationFailed as exc:
        return {**facts, "config_readable": False, "config_problem": f"cannot be read: {exc.message}"}
    return {**facts, **_config_route(entry, value, playbook)}


def _config_facts(entry: PgBouncerEntry, path: Path, playbook: Playbook) -> dict[str, Any]:
    facts: dict[str, Any] = {"config_exists": path.is_file()}
    if not path.exists():
        facts["config_problem"] = "does not exist"
        return facts
    if not path.is_file():
        facts["config_problem"] = "is not a file"
        return facts
    facts["config_readable"] = os.access(path, os.R_OK)
    # The reroute replaces the file by rename: the directory must be writable too.
    writable_file = os.access(path, os.W_OK)
    writable_dir = os.access(path.parent, os.W_OK | os.X_OK)
    facts["config_writable"] = writable_file and writable_dir
    if not facts["config_readable"]:
        facts["config_problem"] = "is not readable"
    elif not writable_file:
        facts["config_problem"] = "is not writable"
    elif not writable_dir:
        facts["config_problem"] = f"is in a directory that is not writable ({path.parent})"
    if facts["config_readable"]:
        try:
            value = read_entry(path, entry.database)
        except (OSError, UnicodeDecodeError) as exc:
            facts["config_problem"] = f"cannot be read: {exc}"
            return facts
        facts.update(_config_route(entry, value, playbook))
    return facts


def _config_route(entry: PgBouncerEntry, value: str | None, playbook: Playbook) -> dict[str, Any]:
    """The entry's value where the reroute writes it, and which side it routes to."""
    return {"config_entry": value,
            "config_points_at_source": value is not None and _routes_to(entry.database, value, playbook.source.dsn),
            "config_points_at_target": value is not None and _routes_to(entry.database, value, playbook.target.dsn)}


def _routes_to(entry_name: str, value: str, dsn: str) -> bool:
    """Does a [databases] value route to the server and database of dsn? Read as
    PgBouncer reads it: its own keys (pool_size, pool_mode, auth_user, ...) are no
    reason to think it routes elsewhere."""
    try:
        return EntryRoute.of(entry_name, value).points_at(dsn)
    except EntryError:
        return False
