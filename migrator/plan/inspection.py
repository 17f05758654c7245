"""Inspection: one read-only snapshot of everything a move depends on.

`inspect_move` reads both servers and every PgBouncer and returns an immutable
`Snapshot`; `findings.check` judges it and `plan.build_plan` turns it into steps.
Nothing here writes: each server is read inside one REPEATABLE READ, READ ONLY
transaction (so all catalog reads see the same moment, and a slip could not change
anything), and PgBouncer only gets SHOW commands.

The functions that take an open connection (`sequences_used`, `secondary_indexes`,
`foreign_keys`, `table_facts`, ...) are also used by the execute steps and the cutover
against either server. They read definitions with `search_path` emptied for the
duration of the call, as pg_dump does, so every name in a definition comes back
schema-qualified and means the same thing on the other server.
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
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from migrator import names
from migrator.errors import OperationFailed, ServerUnreachable
from migrator.pgbouncer.config import read_entry
from migrator.pgbouncer.console import DatabaseEntry, PgBouncerConsole
from migrator.playbook import PgBouncerEntry, Playbook, TableName
from migrator.postgres.connection import connect, describe, first_line

__all__ = [
    "ColumnFacts",
    "ConstraintFacts",
    "ForeignKey",
    "Grant",
    "IndexFacts",
    "LeftoverObject",
    "LongTransaction",
    "PgBouncerFacts",
    "RoleRights",
    "SequenceUse",
    "ServerFacts",
    "Snapshot",
    "TableFacts",
    "TriggerFacts",
    "TypeFacts",
    "foreign_keys",
    "inspect_move",
    "pgbouncer_facts",
    "secondary_indexes",
    "sequences_used",
    "server_facts",
    "table_facts",
    "target_tables",
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


# --------------------------------------------------------------------------- facts


@dataclass(frozen=True)
class ColumnFacts:
    name: str
    type: str                      # format_type(): schema-qualified unless pg_catalog
    not_null: bool
    default: str | None            # expression text, None for generated columns
    identity: str | None           # 'always' | 'by default'
    generated: str | None          # the expression of a generated column
    generated_kind: str | None     # 'stored' | 'virtual' (PostgreSQL 18)
    collation: str | None          # only when it differs from the type's default


@dataclass(frozen=True)
class ConstraintFacts:
    """A primary key, unique, check or exclusion constraint (foreign keys: ForeignKey)."""

    name: str
    kind: str                      # 'primary key' | 'unique' | 'check' | 'exclusion'
    definition: str


@dataclass(frozen=True)
class TypeFacts:
    """A type a table's columns need that is not built in (directly or inside an array,
    domain, range or composite)."""

    schema: str
    name: str
    kind: str                      # 'enum' | 'domain' | 'composite' | 'range' | 'base' | ...
    extension: str | None          # the extension that provides it, if any
    labels: tuple[str, ...] = ()   # enum labels in sort order
    base: str | None = None        # a domain's base type

    @property
    def qualified(self) -> str:
        return str(TableName(self.schema, self.name))


@dataclass(frozen=True)
class IndexFacts:
    table: TableName
    name: str
    definition: str                # pg_get_indexdef(): a complete CREATE INDEX statement
    is_primary: bool
    is_replica_identity: bool
    is_constraint: bool            # a constraint depends on it (its own, or a foreign key's)
    constraints: tuple[str, ...] = ()
    is_unique: bool = False
    is_valid: bool = True
    size_bytes: int = 0

    @property
    def secondary(self) -> bool:
        """May be dropped for the bulk copy and rebuilt after: the apply worker does not
        need it and no constraint depends on it."""
        return not (self.is_primary or self.is_replica_identity or self.is_constraint)

    @property
    def qualified(self) -> TableName:
        return TableName(self.table.schema, self.name)


@dataclass(frozen=True)
class SequenceUse:
    """One column's use of one sequence: owned by it (serial, OWNED BY), its identity,
    and/or called from its default (nextval('seq'), a bare sequence counts too)."""

    table: TableName
    column: str
    sequence: TableName
    owned: bool
    identity: bool
    in_default: bool
    data_type: str = "bigint"
    start: int = 1
    increment: int = 1
    minimum: int = 1
    maximum: int = 2**63 - 1
    cache: int = 1
    cycle: bool = False


@dataclass(frozen=True)
class ForeignKey:
    name: str
    table: TableName               # the referencing table
    columns: tuple[str, ...]
    references: TableName          # the referenced table
    referenced_columns: tuple[str, ...]
    definition: str                # pg_get_constraintdef()
    crosses_group: bool            # exactly one of the two tables is in the group


@dataclass(frozen=True)
class TriggerFacts:
    name: str
    definition: str                # pg_get_triggerdef(): a complete CREATE TRIGGER
    enabled: str                   # 'origin' | 'always' | 'replica' | 'disabled'
    function: str                  # schema-qualified name of the trigger function


@dataclass(frozen=True)
class Grant:
    grantee: str                   # a role name, or PUBLIC
    privileges: tuple[str, ...]


_KIND = {
    "r": "table", "p": "partitioned table", "v": "view", "m": "materialized view",
    "f": "foreign table", "S": "sequence", "c": "composite type", "i": "index",
    "I": "partitioned index", "t": "TOAST table",
}
_IDENTITY = {"d": "default", "n": "nothing", "f": "full", "i": "index"}


@dataclass(frozen=True)
class TableFacts:
    """One table of the group, as it is on the source (and whether the target has it)."""

    name: TableName
    exists: bool
    kind: str = "missing"          # 'table' | 'partitioned table' | 'view' | ... | 'missing'
    unlogged: bool = False
    partition_of: TableName | None = None
    partitions: tuple[TableName, ...] = ()
    owner: str | None = None
    owned_by_dsn_role: bool = False
    replica_identity: str = "default"    # 'default' | 'full' | 'index' | 'nothing'
    row_security: bool = False
    heap_bytes: int = 0
    toast_bytes: int = 0
    index_bytes: int = 0
    estimated_rows: int | None = None    # None: never analyzed
    columns: tuple[ColumnFacts, ...] = ()
    constraints: tuple[ConstraintFacts, ...] = ()
    indexes: tuple[IndexFacts, ...] = ()
    sequences: tuple[SequenceUse, ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = ()
    triggers: tuple[TriggerFacts, ...] = ()
    types: tuple[TypeFacts, ...] = ()
    extensions: tuple[str, ...] = ()
    grants: tuple[Grant, ...] = ()
    large_object_columns: tuple[str, ...] = ()
    on_target: str = "absent"            # 'absent' | 'empty' | 'has rows' | 'unknown'

    @property
    def copy_bytes(self) -> int:
        """What the initial copy moves: the heap and TOAST (indexes are built, not copied)."""
        return self.heap_bytes + self.toast_bytes

    @property
    def primary_key(self) -> ConstraintFacts | None:
        return next((c for c in self.constraints if c.kind == "primary key"), None)

    @property
    def replica_identity_index(self) -> IndexFacts | None:
        return next((i for i in self.indexes if i.is_replica_identity), None)

    @property
    def identifies_rows(self) -> bool:
        """Can UPDATE and DELETE be replicated? (Postgres refuses them otherwise once
        the table is in a publication that publishes them.)"""
        if self.replica_identity == "full":
            return True
        if self.replica_identity == "index":
            return self.replica_identity_index is not None
        return self.replica_identity == "default" and self.primary_key is not None

    @property
    def secondary_indexes(self) -> tuple[IndexFacts, ...]:
        return tuple(i for i in self.indexes if i.secondary)

    @property
    def generated_columns(self) -> tuple[ColumnFacts, ...]:
        return tuple(c for c in self.columns if c.generated is not None)


@dataclass(frozen=True)
class RoleRights:
    """What the playbook's DSN role may do on one server."""

    name: str
    superuser: bool
    replication: bool              # REPLICATION attribute (subscriptions connect as it)
    create_on_database: bool       # CREATE on the database (publications, schemas)
    create_subscription: bool      # superuser, or pg_create_subscription (PostgreSQL 16+)
    signal_backend: bool           # may cancel other roles' queries (pg_signal_backend)


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
    config_file: Path
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


@dataclass(frozen=True)
class Snapshot:
    source: ServerFacts
    target: ServerFacts
    tables: Mapping[TableName, TableFacts]
    pgbouncers: tuple[PgBouncerFacts, ...]
    # Sequences the group uses that tables outside the group use too.
    shared_sequences: Mapping[TableName, tuple[TableName, ...]] = field(default_factory=dict)
    # The DDL the schema step will run (migrator.postgres.ddl.GroupSchema), read from the
    # source in the same snapshot; None with schema_error when it could not be read.
    schema: Any = None
    schema_error: str | None = None
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
    playbook: Playbook, *, long_transaction_after: float = LONG_TRANSACTION_AFTER
) -> Snapshot:
    """Read both servers and every PgBouncer; change nothing.

    Raises ServerUnreachable (naming source or target) when a server cannot be read;
    an unreachable PgBouncer is a fact of the snapshot, judged by `findings.check`.
    """
    objects = sorted(names.all_objects(playbook))
    with _read_only(playbook.source.dsn, "source") as conn:
        source = server_facts(
            conn, "source", playbook.source.dsn, app_roles=playbook.app_roles,
            object_names=objects, long_transaction_after=long_transaction_after,
        )
        tables = table_facts(conn, playbook.tables)
        shared = _shared_sequences(conn, playbook.tables)
        schema, schema_error = _group_schema(
            conn, [name for name, facts in tables.items() if facts.exists], playbook.app_roles
        )
    with _read_only(playbook.target.dsn, "target") as conn:
        target = server_facts(
            conn, "target", playbook.target.dsn, app_roles=playbook.app_roles,
            object_names=objects, long_transaction_after=None,
        )
        on_target = target_tables(conn, playbook.tables)
    tables = {
        name: replace(facts, on_target=on_target.get(name, "absent"))
        for name, facts in tables.items()
    }
    bouncers = tuple(
        pgbouncer_facts(entry, playbook, index=i) for i, entry in enumerate(playbook.pgbouncers)
    )
    return Snapshot(
        source=source, target=target, tables=tables, pgbouncers=bouncers, shared_sequences=shared,
        schema=schema, schema_error=schema_error,
    )


def _group_schema(
    conn: psycopg.Connection, tables: list[TableName], app_roles: Iterable[str]
) -> tuple[Any, str | None]:
    """The schema step's own reading of the DDL, so the plan shows exactly what it runs.

    In a savepoint: whatever goes wrong there is a finding about the schema step, not
    a reason to stop inspecting.
    """
    from migrator.postgres.ddl import read_group_schema

    if not tables:
        return None, None
    try:
        with conn.transaction():
            return read_group_schema(conn, tables, list(app_roles)), None
    except Exception as exc:  # noqa: BLE001 - reported as a blocking finding
        return None, first_line(exc)


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


# --------------------------------------------------------------------------- helpers


@contextmanager
def _qualified_names(conn: psycopg.Connection) -> Iterator[None]:
    """Empty search_path for the block, so pg_get_*def and format_type qualify names.

    set_config(..., is_local => true) inside a transaction (or savepoint): an error
    rolls it back with the block, and on success the caller's value is put back.
    """
    with conn.transaction():
        old = conn.execute("SELECT pg_catalog.current_setting('search_path')").fetchone()[0]
        conn.execute("SELECT pg_catalog.set_config('search_path', '', true)")
        yield
        conn.execute("SELECT pg_catalog.set_config('search_path', %s, true)", (old,))


def _group_params(tables: Iterable[TableName]) -> dict[str, list[str]]:
    tables = list(tables)
    return {"schemas": [t.schema for t in tables], "names": [t.name for t in tables]}


# The group as (relid, schema, name): names are passed as two text arrays and matched
# exactly against the catalogs, so no name is ever parsed or quoted on the way.
_GROUP = """
group_tables AS (
    SELECT c.oid AS relid, g.s AS schema_name, g.n AS table_name
    FROM ROWS FROM (pg_catalog.unnest(%(schemas)s::text[]), pg_catalog.unnest(%(names)s::text[])) AS g(s, n)
    JOIN pg_catalog.pg_namespace ns ON ns.nspname = g.s
    JOIN pg_catalog.pg_class c ON c.relnamespace = ns.oid AND c.relname = g.n
)"""


def _name(schema: str, name: str) -> TableName:
    return TableName(schema, name)


# --------------------------------------------------------------------------- sequences

_SEQUENCE_USES = (
    "WITH" + _GROUP + """,
uses AS (
    -- serial / OWNED BY ('a') and identity ('i'): the sequence depends on the column
    SELECT d.refobjid AS relid, d.refobjsubid AS attnum, d.objid AS seqid,
           d.deptype = 'a' AS owned, d.deptype = 'i' AS identity, false AS in_default
    FROM pg_catalog.pg_depend d
    WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
      AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
      AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0
    UNION ALL
    -- nextval('seq') in a default: the default expression depends on the sequence
    SELECT ad.adrelid, ad.adnum, d.refobjid, false, false, true
    FROM pg_catalog.pg_attrdef ad
    JOIN pg_catalog.pg_depend d
      ON d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND d.objid = ad.oid
     AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
),
seq_uses AS (
    SELECT u.relid, u.attnum, u.seqid,
           pg_catalog.bool_or(u.owned) AS owned, pg_catalog.bool_or(u.identity) AS identity,
           pg_catalog.bool_or(u.in_default) AS in_default
    FROM uses u
    JOIN pg_catalog.pg_class s ON s.oid = u.seqid AND s.relkind = 'S'
    GROUP BY u.relid, u.attnum, u.seqid
)
SELECT tn.nspname, t.relname, a.attname, sn.nspname, s.relname,
       su.owned, su.identity, su.in_default,
       pg_catalog.format_type(q.seqtypid, NULL), q.seqstart, q.seqincrement,
       q.seqmin, q.seqmax, q.seqcache, q.seqcycle,
       su.relid IN (SELECT relid FROM group_tables) AS in_group
FROM seq_uses su
JOIN pg_catalog.pg_class t ON t.oid = su.relid
JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = su.relid AND a.attnum = su.attnum
JOIN pg_catalog.pg_class s ON s.oid = su.seqid
JOIN pg_catalog.pg_namespace sn ON sn.oid = s.relnamespace
JOIN pg_catalog.pg_sequence q ON q.seqrelid = su.seqid
WHERE su.seqid IN (SELECT seqid FROM seq_uses WHERE relid IN (SELECT relid FROM group_tables))
ORDER BY tn.nspname, t.relname, a.attnum, sn.nspname, s.relname
""")


def _sequence_rows(conn: psycopg.Connection, tables: Iterable[TableName]) -> list[tuple]:
    return conn.execute(_SEQUENCE_USES, _group_params(tables)).fetchall()  # type: ignore[arg-type]


def _sequence_use(row: tuple) -> SequenceUse:
    return SequenceUse(
        table=_name(row[0], row[1]), column=row[2], sequence=_name(row[3], row[4]),
        owned=row[5], identity=row[6], in_default=row[7], data_type=row[8], start=row[9],
        increment=row[10], minimum=row[11], maximum=row[12], cache=row[13], cycle=row[14],
    )


def sequences_used(
    conn: psycopg.Connection, tables: Iterable[TableName]
) -> dict[TableName, list[SequenceUse]]:
    """Every sequence each table uses: owned (serial, OWNED BY), identity, or called
    from a column default (a bare sequence counts). Tables using none are absent.

    A default that names its sequence as text (nextval('s'::text)) records no
    dependency in pg_depend and cannot be found; Postgres itself writes regclass.
    """
    found: dict[TableName, list[SequenceUse]] = {}
    with _qualified_names(conn):
        for row in _sequence_rows(conn, tables):
            if row[15]:
                use = _sequence_use(row)
                found.setdefault(use.table, []).append(use)
    return found


def _shared_sequences(
    conn: psycopg.Connection, tables: Iterable[TableName]
) -> dict[TableName, tuple[TableName, ...]]:
    shared: dict[TableName, set[TableName]] = {}
    with _qualified_names(conn):
        for row in _sequence_rows(conn, tables):
            if not row[15]:
                shared.setdefault(_name(row[3], row[4]), set()).add(_name(row[0], row[1]))
    return {seq: tuple(sorted(users)) for seq, users in sorted(shared.items())}


# --------------------------------------------------------------------------- indexes

_INDEXES = (
    "WITH" + _GROUP + """
SELECT g.schema_name, g.table_name, ic.relname, pg_catalog.pg_get_indexdef(i.indexrelid),
       i.indisprimary, i.indisreplident, i.indisunique, i.indisvalid,
       ARRAY(
           -- conindid: a unique/PK/exclusion constraint's own index, and the
           -- referenced table's index of every foreign key (DROP INDEX refuses both)
           SELECT co.conname::text FROM pg_catalog.pg_constraint co
           WHERE co.conindid = i.indexrelid ORDER BY co.conname
       ),
       pg_catalog.pg_relation_size(i.indexrelid)
FROM group_tables g
JOIN pg_catalog.pg_index i ON i.indrelid = g.relid
JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
ORDER BY g.schema_name, g.table_name, ic.relname
""")


def _index_rows(conn: psycopg.Connection, tables: Iterable[TableName]) -> list[IndexFacts]:
    return [
        IndexFacts(
            table=_name(r[0], r[1]), name=r[2], definition=r[3], is_primary=r[4],
            is_replica_identity=r[5], is_constraint=bool(r[8]), constraints=tuple(r[8]),
            is_unique=r[6], is_valid=r[7], size_bytes=r[9],
        )
        for r in conn.execute(_INDEXES, _group_params(tables))  # type: ignore[arg-type]
    ]


def secondary_indexes(
    conn: psycopg.Connection, tables: Iterable[TableName], *, include_kept: bool = False
) -> list[IndexFacts]:
    """The indexes of tables that can be dropped for the bulk copy and rebuilt after:
    not the primary key, not the replica identity index, no constraint depending on it.

    With include_kept, every index, each flagged with why it must stay.
    """
    with _qualified_names(conn):
        indexes = _index_rows(conn, tables)
    return indexes if include_kept else [i for i in indexes if i.secondary]


# --------------------------------------------------------------------------- foreign keys

_FOREIGN_KEYS = (
    "WITH" + _GROUP + """
SELECT co.conname, sn.nspname, sc.relname,
       ARRAY(SELECT a.attname::text FROM pg_catalog.unnest(co.conkey) WITH ORDINALITY k(n, o)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = co.conrelid AND a.attnum = k.n
             ORDER BY k.o),
       dn.nspname, dc.relname,
       ARRAY(SELECT a.attname::text FROM pg_catalog.unnest(co.confkey) WITH ORDINALITY k(n, o)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = co.confrelid AND a.attnum = k.n
             ORDER BY k.o),
       pg_catalog.pg_get_constraintdef(co.oid),
       co.conrelid IN (SELECT relid FROM group_tables),
       co.confrelid IN (SELECT relid FROM group_tables)
FROM pg_catalog.pg_constraint co
JOIN pg_catalog.pg_class sc ON sc.oid = co.conrelid
JOIN pg_catalog.pg_namespace sn ON sn.oid = sc.relnamespace
JOIN pg_catalog.pg_class dc ON dc.oid = co.confrelid
JOIN pg_catalog.pg_namespace dn ON dn.oid = dc.relnamespace
WHERE co.contype = 'f'
  -- a foreign key on a partitioned table is cloned onto each partition; keep the parent's
  AND co.conparentid = 0
  AND (co.conrelid IN (SELECT relid FROM group_tables)
       OR co.confrelid IN (SELECT relid FROM group_tables))
ORDER BY sn.nspname, sc.relname, co.conname
""")


def foreign_keys(conn: psycopg.Connection, tables: Iterable[TableName]) -> list[ForeignKey]:
    """Every foreign key from or to a table of the group, and whether it crosses the
    group's boundary (one end inside, the other outside)."""
    with _qualified_names(conn):
        return _foreign_key_rows(conn, _group_params(tables))


# --------------------------------------------------------------------------- tables

_TABLES = """
SELECT g.ord, g.s, g.n, c.oid, c.relkind, c.relpersistence, c.relispartition,
       pg_catalog.pg_get_userbyid(c.relowner),
       pg_catalog.pg_has_role(c.relowner, 'USAGE'),
       c.relreplident, c.relrowsecurity,
       pg_catalog.pg_relation_size(c.oid),
       COALESCE(pg_catalog.pg_relation_size(NULLIF(c.reltoastrelid, 0)), 0),
       pg_catalog.pg_indexes_size(c.oid),
       c.reltuples,
       (SELECT ARRAY[pn.nspname::text, pc.relname::text]
          FROM pg_catalog.pg_inherits h
          JOIN pg_catalog.pg_class pc ON pc.oid = h.inhparent
          JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace
         WHERE h.inhrelid = c.oid AND c.relispartition),
       ARRAY(SELECT ARRAY[pn.nspname::text, pc.relname::text]
               FROM pg_catalog.pg_inherits h
               JOIN pg_catalog.pg_class pc ON pc.oid = h.inhrelid
               JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace
              WHERE h.inhparent = c.oid AND c.relkind = 'p'
              ORDER BY pn.nspname, pc.relname),
       ARRAY(SELECT ARRAY[x.grantee, x.privilege]
               FROM (SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                 ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END AS grantee,
                            a.privilege_type::text AS privilege
                       FROM pg_catalog.aclexplode(c.relacl) a
                      WHERE a.grantee <> c.relowner) AS x
              ORDER BY x.grantee, x.privilege)
FROM ROWS FROM (pg_catalog.unnest(%(schemas)s::text[]), pg_catalog.unnest(%(names)s::text[])) WITH ORDINALITY AS g(s, n, ord)
LEFT JOIN pg_catalog.pg_namespace ns ON ns.nspname = g.s
LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = ns.oid AND c.relname = g.n
ORDER BY g.ord
"""

_COLUMNS = (
    "WITH" + _GROUP + """
SELECT g.schema_name, g.table_name, a.attname,
       pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
       CASE WHEN a.attcollation <> t.typcollation
            THEN (SELECT pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname)
                    FROM pg_catalog.pg_collation co
                    JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
                   WHERE co.oid = a.attcollation)
       END,
       -- large object references: oid, or a domain over it such as the lo extension's
       'pg_catalog.oid'::pg_catalog.regtype IN (t.oid, t.typbasetype)
FROM group_tables g
JOIN pg_catalog.pg_attribute a ON a.attrelid = g.relid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
ORDER BY g.schema_name, g.table_name, a.attnum
""")

_CONSTRAINTS = (
    "WITH" + _GROUP + """
SELECT g.schema_name, g.table_name, co.conname, co.contype, pg_catalog.pg_get_constraintdef(co.oid)
FROM group_tables g
JOIN pg_catalog.pg_constraint co ON co.conrelid = g.relid
-- 'n' (PostgreSQL 18's NOT NULL constraints) is carried by the columns' NOT NULL
WHERE co.contype IN ('p', 'u', 'x', 'c')
ORDER BY g.schema_name, g.table_name, pg_catalog.strpos('pucx', co.contype::text), co.conname
""")

_TRIGGERS = (
    "WITH" + _GROUP + """
SELECT g.schema_name, g.table_name, tg.tgname, pg_catalog.pg_get_triggerdef(tg.oid),
       tg.tgenabled, tg.tgfoid::pg_catalog.regproc::text
FROM group_tables g
JOIN pg_catalog.pg_trigger tg ON tg.tgrelid = g.relid
WHERE NOT tg.tgisinternal
ORDER BY g.schema_name, g.table_name, tg.tgname
""")

# Every type the columns need, following arrays, domains, ranges and composites down
# to the built-ins; kept when not built in or when an extension provides it.
_TYPES = (
    "WITH RECURSIVE" + _GROUP + """,
used(relid, typid) AS (
    SELECT a.attrelid, a.atttypid
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid IN (SELECT relid FROM group_tables) AND a.attnum > 0 AND NOT a.attisdropped
    UNION
    SELECT u.relid, x.typid
    FROM used u
    JOIN pg_catalog.pg_type t ON t.oid = u.typid
    CROSS JOIN LATERAL (
        SELECT t.typelem WHERE t.typelem <> 0
        UNION ALL SELECT t.typbasetype WHERE t.typbasetype <> 0
        UNION ALL SELECT r.rngsubtype FROM pg_catalog.pg_range r WHERE r.rngtypid = t.oid
        UNION ALL SELECT ca.atttypid FROM pg_catalog.pg_attribute ca
                  WHERE t.typtype = 'c' AND ca.attrelid = t.typrelid AND ca.attnum > 0
                    AND NOT ca.attisdropped
    ) AS x(typid)
)
SELECT g.schema_name, g.table_name, tn.nspname, t.typname, t.typtype,
       (SELECT e.extname FROM pg_catalog.pg_depend d
          JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
         WHERE d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND d.objid = t.oid
           AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND d.deptype = 'e'),
       ARRAY(SELECT en.enumlabel::text FROM pg_catalog.pg_enum en
              WHERE en.enumtypid = t.oid ORDER BY en.enumsortorder),
       CASE WHEN t.typtype = 'd' THEN pg_catalog.format_type(t.typbasetype, t.typtypmod) END,
       t.typcategory = 'A'
FROM used u
JOIN group_tables g ON g.relid = u.relid
JOIN pg_catalog.pg_type t ON t.oid = u.typid
JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace
ORDER BY g.schema_name, g.table_name, tn.nspname, t.typname
""")

# Extensions whose members anything of the table depends on: column types (through
# the types above), functions in defaults and generated columns, operator classes
# and functions of indexes, constraints' functions, trigger functions' languages.
_EXTENSIONS = (
    "WITH RECURSIVE" + _GROUP + """,
used(relid, typid) AS (
    SELECT a.attrelid, a.atttypid
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid IN (SELECT relid FROM group_tables) AND a.attnum > 0 AND NOT a.attisdropped
    UNION
    SELECT u.relid, x.typid
    FROM used u
    JOIN pg_catalog.pg_type t ON t.oid = u.typid
    CROSS JOIN LATERAL (
        SELECT t.typelem WHERE t.typelem <> 0
        UNION ALL SELECT t.typbasetype WHERE t.typbasetype <> 0
        UNION ALL SELECT r.rngsubtype FROM pg_catalog.pg_range r WHERE r.rngtypid = t.oid
    ) AS x(typid)
),
objects(relid, classid, objid) AS (
    SELECT g.relid, 'pg_catalog.pg_class'::pg_catalog.regclass, g.relid FROM group_tables g
    UNION ALL
    SELECT ad.adrelid, 'pg_catalog.pg_attrdef'::pg_catalog.regclass, ad.oid
    FROM pg_catalog.pg_attrdef ad WHERE ad.adrelid IN (SELECT relid FROM group_tables)
    UNION ALL
    SELECT i.indrelid, 'pg_catalog.pg_class'::pg_catalog.regclass, i.indexrelid
    FROM pg_catalog.pg_index i WHERE i.indrelid IN (SELECT relid FROM group_tables)
    UNION ALL
    SELECT co.conrelid, 'pg_catalog.pg_constraint'::pg_catalog.regclass, co.oid
    FROM pg_catalog.pg_constraint co WHERE co.conrelid IN (SELECT relid FROM group_tables)
    UNION ALL
    SELECT tg.tgrelid, 'pg_catalog.pg_trigger'::pg_catalog.regclass, tg.oid
    FROM pg_catalog.pg_trigger tg
    WHERE tg.tgrelid IN (SELECT relid FROM group_tables) AND NOT tg.tgisinternal
),
refs(relid, classid, objid) AS (
    SELECT o.relid, d.refclassid, d.refobjid
    FROM objects o
    JOIN pg_catalog.pg_depend d ON d.classid = o.classid AND d.objid = o.objid
    UNION ALL
    SELECT u.relid, 'pg_catalog.pg_type'::pg_catalog.regclass, u.typid FROM used u
)
SELECT DISTINCT g.schema_name, g.table_name, e.extname
FROM refs r
JOIN group_tables g ON g.relid = r.relid
JOIN pg_catalog.pg_depend x
  ON x.classid = r.classid AND x.objid = r.objid AND x.deptype = 'e'
 AND x.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
JOIN pg_catalog.pg_extension e ON e.oid = x.refobjid
ORDER BY 1, 2, 3
""")


def table_facts(
    conn: psycopg.Connection, tables: Iterable[TableName]
) -> dict[TableName, TableFacts]:
    """Everything about each table of the group on this server, in playbook order."""
    tables = list(tables)
    params = _group_params(tables)
    with _qualified_names(conn):
        rows = conn.execute(_TABLES, params).fetchall()  # type: ignore[arg-type]
        by_table: dict[str, dict[TableName, list[Any]]] = {
            key: {} for key in ("columns", "constraints", "triggers", "types", "extensions")
        }
        for key, query, make in (
            ("columns", _COLUMNS, _column),
            ("constraints", _CONSTRAINTS, _constraint),
            ("triggers", _TRIGGERS, _trigger),
            ("types", _TYPES, _type),
            ("extensions", _EXTENSIONS, lambda r: r[2]),
        ):
            for row in conn.execute(query, params):  # type: ignore[arg-type]
                item = make(row)
                if item is not None:
                    by_table[key].setdefault(_name(row[0], row[1]), []).append(item)
        indexes: dict[TableName, list[IndexFacts]] = {}
        for index in _index_rows(conn, tables):
            indexes.setdefault(index.table, []).append(index)
        sequences: dict[TableName, list[SequenceUse]] = {}
        for row in _sequence_rows(conn, tables):
            if row[15]:
                use = _sequence_use(row)
                sequences.setdefault(use.table, []).append(use)
        foreign_keys_of: dict[TableName, list[ForeignKey]] = {}
        for fk in _foreign_key_rows(conn, params):
            for end in {fk.table, fk.references}:
                foreign_keys_of.setdefault(end, []).append(fk)

    facts: dict[TableName, TableFacts] = {}
    for row in rows:
        name = _name(row[1], row[2])
        if row[3] is None:
            facts[name] = TableFacts(name=name, exists=False)
            continue
        columns = tuple(by_table["columns"].get(name, ()))
        facts[name] = TableFacts(
            name=name,
            exists=True,
            kind=_KIND.get(row[4], row[4]),
            unlogged=row[5] == "u",
            partition_of=_name(*row[15]) if row[15] else None,
            partitions=tuple(_name(*p) for p in row[16] or ()),
            owner=row[7],
            owned_by_dsn_role=row[8],
            replica_identity=_IDENTITY.get(row[9], row[9]),
            row_security=row[10],
            heap_bytes=row[11],
            toast_bytes=row[12],
            index_bytes=row[13],
            estimated_rows=None if row[14] is None or row[14] < 0 else round(row[14]),
            columns=tuple(c for c, _ in columns),
            constraints=tuple(by_table["constraints"].get(name, ())),
            indexes=tuple(indexes.get(name, ())),
            sequences=tuple(sequences.get(name, ())),
            foreign_keys=tuple(foreign_keys_of.get(name, ())),
            triggers=tuple(by_table["triggers"].get(name, ())),
            types=tuple(by_table["types"].get(name, ())),
            extensions=tuple(by_table["extensions"].get(name, ())),
            grants=_grants(row[17]),
            large_object_columns=tuple(c.name for c, is_lo in columns if is_lo),
        )
    return facts


def _foreign_key_rows(conn: psycopg.Connection, params: dict) -> list[ForeignKey]:
    rows = conn.execute(_FOREIGN_KEYS, params).fetchall()  # type: ignore[arg-type]
    return [
        ForeignKey(
            name=r[0], table=_name(r[1], r[2]), columns=tuple(r[3]),
            references=_name(r[4], r[5]), referenced_columns=tuple(r[6]),
            definition=r[7], crosses_group=r[8] != r[9],
        )
        for r in rows
    ]


def _column(row: tuple) -> tuple[ColumnFacts, bool]:
    generated = row[7] or None
    return (
        ColumnFacts(
            name=row[2], type=row[3], not_null=row[4],
            default=None if generated else row[5],
            identity={"a": "always", "d": "by default"}.get(row[6] or ""),
            generated=row[5] if generated else None,
            generated_kind={"s": "stored", "v": "virtual"}.get(generated) if generated else None,
            collation=row[8],
        ),
        bool(row[9]),
    )


def _constraint(row: tuple) -> ConstraintFacts:
    kind = {"p": "primary key", "u": "unique", "x": "exclusion", "c": "check"}[row[3]]
    return ConstraintFacts(name=row[2], kind=kind, definition=row[4])


def _trigger(row: tuple) -> TriggerFacts:
    enabled = {"O": "origin", "A": "always", "R": "replica", "D": "disabled"}.get(row[4], row[4])
    return TriggerFacts(name=row[2], definition=row[3], enabled=enabled, function=row[5])


_TYPE_KIND = {"e": "enum", "d": "domain", "c": "composite", "r": "range", "b": "base", "m": "multirange"}
_BUILTIN_SCHEMAS = ("pg_catalog", "information_schema")


def _type(row: tuple) -> TypeFacts | None:
    schema, name, kind, extension, labels, base, is_array = row[2:9]
    if is_array and kind == "b":
        return None  # the array type of a type listed on its own
    if schema in _BUILTIN_SCHEMAS and extension is None:
        return None
    return TypeFacts(
        schema=schema, name=name, kind=_TYPE_KIND.get(kind, kind), extension=extension,
        labels=tuple(labels or ()), base=base,
    )


def _grants(rows: list[list[str]] | None) -> tuple[Grant, ...]:
    privileges: dict[str, list[str]] = {}
    for grantee, privilege in rows or ():
        privileges.setdefault(grantee, []).append(privilege)
    return tuple(Grant(grantee=g, privileges=tuple(p)) for g, p in privileges.items())


_TARGET_TABLES = """
SELECT g.s, g.n, c.oid IS NOT NULL, c.oid IS NOT NULL AND pg_catalog.has_table_privilege(c.oid, 'SELECT')
FROM ROWS FROM (pg_catalog.unnest(%(schemas)s::text[]), pg_catalog.unnest(%(names)s::text[])) AS g(s, n)
LEFT JOIN pg_catalog.pg_namespace ns ON ns.nspname = g.s
LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = ns.oid AND c.relname = g.n
"""


def target_tables(conn: psycopg.Connection, tables: Iterable[TableName]) -> dict[TableName, str]:
    """For each table: 'absent', 'empty', 'has rows' or 'unknown' (no right to read it)."""
    tables = list(tables)
    state: dict[TableName, str] = {}
    readable = []
    for schema, name, exists, can_read in conn.execute(_TARGET_TABLES, _group_params(tables)):  # type: ignore[arg-type]
        table = _name(schema, name)
        state[table] = "absent" if not exists else ("empty" if can_read else "unknown")
        if can_read:
            readable.append(table)
    if readable:
        query = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}::int, EXISTS (SELECT FROM {})").format(sql.Literal(i), t.identifier)
            for i, t in enumerate(readable)
        )
        for i, has_rows in conn.execute(query):
            if has_rows:
                state[readable[i]] = "has rows"
    return state


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
            THEN (SELECT count(*) FROM pg_catalog.pg_largeobject_metadata)::int ELSE 0 END
FROM pg_catalog.pg_roles r
WHERE r.rolname = current_user
"""

_APP_ROLES = """
SELECT r, EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r)
FROM pg_catalog.unnest(%s::text[]) AS r
"""

_LEFTOVERS = """
SELECT 'publication', p.pubname::text, '', NULL::numeric
FROM pg_catalog.pg_publication p WHERE p.pubname = ANY(%(names)s)
UNION ALL
SELECT 'subscription', s.subname::text,
       'in database ' || d.datname || CASE WHEN s.subenabled THEN ', enabled' ELSE ', disabled' END,
       NULL
FROM pg_catalog.pg_subscription s
JOIN pg_catalog.pg_database d ON d.oid = s.subdbid
WHERE s.subname = ANY(%(names)s)
UNION ALL
SELECT 'slot', sl.slot_name::text,
       sl.slot_type || ' slot in database ' || COALESCE(sl.database, '-')
           || CASE WHEN sl.active THEN ', in use' ELSE ', not in use' END,
       CASE WHEN NOT pg_catalog.pg_is_in_recovery() AND sl.restart_lsn IS NOT NULL
            THEN pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), sl.restart_lsn) END
FROM pg_catalog.pg_replication_slots sl WHERE sl.slot_name = ANY(%(names)s)
ORDER BY 1, 2
"""

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
     slots_used, senders_used, workers_used, processes_used, large_objects) = row
    roles = dict(conn.execute(_APP_ROLES, (list(app_roles),)).fetchall())
    leftovers = tuple(
        LeftoverObject(
            server=side, kind=kind, name=name, detail=detail,
            retained_wal_bytes=int(wal) if wal is not None else None,
        )
        for kind, name, detail, wal in conn.execute(_LEFTOVERS, {"names": list(object_names)})
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
        ),
        app_roles=roles,
        leftovers=leftovers,
        long_transactions=long_transactions,
        extensions=extensions,
        available_extensions=available,
        large_objects=large_objects,
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
        console = {
            "reachable": True,
            "version": version,
            "entry": found,
            "entry_points_at_source": bool(found and found.points_at(playbook.source.dsn)),
            "entry_points_at_target": bool(found and found.points_at(playbook.target.dsn)),
        }
    except (ServerUnreachable, OperationFailed) as exc:
        console["error"] = exc.message
    return PgBouncerFacts(
        index=index, display=display, database=entry.database, config_file=entry.config_file,
        **console, **_config_facts(entry, playbook.source.dsn),
    )


def _config_facts(entry: PgBouncerEntry, source_dsn: str) -> dict[str, Any]:
    path = Path(entry.config_file)
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
        facts["config_entry"] = value
        facts["config_points_at_source"] = value is not None and _routes_to(
            entry.database, value, source_dsn
        )
    return facts


def _routes_to(entry_name: str, value: str, dsn: str) -> bool:
    """Does a [databases] connection string route to the server and database of dsn?"""
    try:
        params = conninfo_to_dict(value)
    except psycopg.ProgrammingError:
        return False
    port = params.get("port") or "5432"
    route = DatabaseEntry(
        name=entry_name, host=params.get("host"),
        port=int(port) if port.isdigit() else None,
        # PgBouncer's default for a missing dbname is the entry's own name.
        database=params.get("dbname") or entry_name,
        paused=False, disabled=False, current_connections=0,
    )
    return route.points_at(dsn)
