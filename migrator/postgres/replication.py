"""Publications, subscriptions, slots, sync markers and lag, in both directions.

Every function is idempotent: it checks the catalogs first, so a step re-run after a
crash converges instead of failing on "already exists".
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass

import psycopg
from psycopg import sql

from migrator import names, waiting
from migrator.errors import OperationFailed
from migrator.playbook import TableName
from migrator.postgres.statement import RunValue, bound


def marker_table(move) -> sql.Identifier:
    """This move's marker table (`move`: a Playbook or its slug)."""
    return sql.Identifier(*names.sync_marker(move))


# `CREATE ... IF NOT EXISTS` is not safe against a concurrent CREATE of the same name
# (the loser fails on the catalog's unique index): two moves making their first objects
# on one server at once take this lock, in the transaction that creates them, first.
SHARED_OBJECTS_LOCK = sql.SQL("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext({}))").format(
    sql.Literal("migrator: shared objects"))


def marker_table_statements(move) -> list[sql.Composable]:
    """The tool's schema (shared) and this move's marker table (its own: only this
    move's publications carry it, so no other move's copy or apply ever touches it).
    Run in one transaction: the first statement is the shared objects' lock."""
    return [
        SHARED_OBJECTS_LOCK,
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(names.SCHEMA)),
        sql.SQL("CREATE TABLE IF NOT EXISTS {} (token text PRIMARY KEY, "
                "direction text NOT NULL, at timestamptz NOT NULL DEFAULT now())").format(marker_table(move)),
    ]


def ensure_marker_table(conn: psycopg.Connection, move) -> None:
    with conn.transaction():
        for statement in marker_table_statements(move):
            conn.execute(statement)


def drop_marker_table(conn: psycopg.Connection, move) -> None:
    """Drop this move's marker table; the schema goes once nothing else is in it."""
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(marker_table(move)))
    try:
        with conn.transaction():
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} RESTRICT").format(sql.Identifier(names.SCHEMA)))
    except psycopg.errors.DependentObjectsStillExist:
        pass  # another move's marker table (or guard) is still there


def _exists(conn: psycopg.Connection, query, params=()) -> bool:
    return conn.execute(query, params).fetchone() is not None


# --------------------------------------------------------------------------- publications


def publication_exists(conn: psycopg.Connection, name: str) -> bool:
    return _exists(conn, "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = %s", (name,))


def publication_statement(name: str, tables: list[TableName], move, *, via_root: bool = False) -> sql.Composable:
    """The group and this move's marker table, whose rows prove how far the other side is.

    With partitioned tables, via the root: the changes of every partition are published
    as the partitioned table's, so each group table is one relation to copy and follow
    (one line in pg_subscription_rel) and the other side routes rows into its own
    identical tree; partitions added later are covered without touching the publication."""
    return sql.SQL("CREATE PUBLICATION {} FOR TABLE {}{}").format(
        sql.Identifier(name), sql.SQL(", ").join([t.identifier for t in tables] + [marker_table(move)]),
        sql.SQL(" WITH (publish_via_partition_root = true)" if via_root else ""))


def drop_publication_statement(name: str) -> sql.Composable:
    return sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(name))


def drop_publication(conn: psycopg.Connection, name: str) -> sql.Composable:
    stmt = drop_publication_statement(name)
    conn.execute(stmt)
    return stmt


# --------------------------------------------------------------------------- slots


def slot_exists(conn: psycopg.Connection, name: str) -> bool:
    return _exists(conn, "SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = %s", (name,))


def drop_slot(conn: psycopg.Connection, name: str, timeout: float = 10) -> None:
    """Drop a slot (waiting for its walsender to let go); orphaned slots hold WAL forever."""
    def dropped() -> bool | None:
        if not slot_exists(conn, name):
            return True
        active = conn.execute(
            "SELECT active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = %s", (name,)
        ).fetchone()
        if active and active[0]:
            conn.execute("SELECT pg_catalog.pg_terminate_backend(%s)", (active[0],))
        try:
            conn.execute("SELECT pg_catalog.pg_drop_replication_slot(%s)", (name,))
        except psycopg.errors.ObjectInUse:
            return None  # its walsender has not let go yet
        except psycopg.errors.UndefinedObject:
            pass
        return True

    waiting.poll(dropped, every=0.1, deadline=time.monotonic() + timeout, timed_out=lambda: OperationFailed(
        f"replication slot {name} stays in use; drop it by hand"))


# From PostgreSQL 17 a logical slot can be marked for failover: a physical standby that
# synchronises slots (sync_replication_slots, a physical slot, hot_standby_feedback, a
# dbname in primary_conninfo) keeps a copy of it, and replication goes on from the
# promoted standby. Without the mark the slot is lost with the primary.
FAILOVER_SINCE = 170000


def slot_failover(publisher_version: int) -> bool:
    """Are this publisher's logical slots made with failover enabled?"""
    return publisher_version >= FAILOVER_SINCE


def create_slot_statement(name: str, *, failover: bool = False) -> sql.Composable:
    return sql.SQL("SELECT pg_catalog.pg_create_logical_replication_slot({}, 'pgoutput'{})").format(
        sql.Literal(name), sql.SQL(", failover => true" if failover else ""))


def drop_slot_statement(name: str) -> sql.Composable:
    return sql.SQL("SELECT pg_catalog.pg_drop_replication_slot({})").format(sql.Literal(name))


def create_slot(conn: psycopg.Connection, name: str) -> None:
    """A pgoutput slot made over an open connection: no walsender start-up, and from
    its creation on the server keeps every change for whoever subscribes to it. On 17+
    it is a failover slot (slot_failover)."""
    if not slot_exists(conn, name):
        conn.execute(create_slot_statement(name, failover=slot_failover(conn.info.server_version)))


class SlotLost(OperationFailed):
    """A subscription's slot is gone from its publisher (a failover of a primary whose
    standby did not synchronise it): the changes since can never be replicated."""


def slot_lost(slot: str, publisher: str, *, after_cutover: bool = False) -> SlotLost:
    """The words for a slot missing on its publisher (the source, or the target after the
    cutover), and the only safe way on."""
    if after_cutover:
        return SlotLost(
            f"replication slot {slot} is missing on the {publisher}, probably a failover of the {publisher} "
            "(its standby did not synchronise the slot): the changes made there since cannot be replicated "
            "back, so a rollback could not carry them",
            hint="the group stays where it is served: `migrator complete` ends the move (check the old copy "
                 "with `migrator verify` first if you may need it)")
    return SlotLost(
        f"replication slot {slot} is missing on the {publisher}, probably a failover of the {publisher} "
        "(its standby did not synchronise the slot): replication is broken and the changes since cannot be "
        "replicated",
        hint="`migrator rollback`, then `migrator execute` copies the group again")


def tablesync_slots(conn: psycopg.Connection, subscription_oid: int) -> list[str]:
    rows = conn.execute(
        "SELECT slot_name FROM pg_catalog.pg_replication_slots WHERE slot_name LIKE %s",
        (f"pg_{subscription_oid}_sync_%",),
    ).fetchall()
    return [r[0] for r in rows]


_TABLESYNC_SLOT = re.compile(r"^pg_(\d+)_sync_(\d+)_(\d+)$")


def drop_orphaned_tablesync_slots(publisher: psycopg.Connection, subscriber: psycopg.Connection) -> list[str]:
    """Drop the publisher's table-sync slots left by subscriptions of this subscriber that
    no longer exist (dropped while the publisher was down, mid-copy).

    Such a slot is named pg_<subscription oid>_sync_<relation oid>_<subscriber's system
    identifier>; nothing would ever drop it, and it retains WAL forever."""
    sysid = str(subscriber.execute("SELECT system_identifier FROM pg_catalog.pg_control_system()").fetchone()[0])
    # pg_subscription is shared: every database's subscriptions of that cluster.
    alive = {str(r[0]) for r in subscriber.execute("SELECT oid FROM pg_catalog.pg_subscription")}
    dropped = []
    for (name,) in publisher.execute(
            "SELECT slot_name FROM pg_catalog.pg_replication_slots WHERE slot_name LIKE 'pg\\_%\\_sync\\_%'"
    ).fetchall():
        match = _TABLESYNC_SLOT.match(name)
        if match and match.group(3) == sysid and match.group(1) not in alive:
            drop_slot(publisher, name)
            dropped.append(name)
    return dropped


# --------------------------------------------------------------------------- subscriptions


@dataclass(frozen=True)
class Subscription:
    oid: int
    name: str
    enabled: bool
    slot: str | None


def subscription(conn: psycopg.Connection, name: str) -> Subscription | None:
    row = conn.execute(
        "SELECT oid, subname, subenabled, subslotname FROM pg_catalog.pg_subscription "
        "WHERE subname = %s AND subdbid = (SELECT oid FROM pg_catalog.pg_database "
        "WHERE datname = pg_catalog.current_database())",
        (name,),
    ).fetchone()
    return Subscription(*row) if row else None


def create_subscription(
    subscriber: psycopg.Connection,
    publisher: psycopg.Connection,
    *,
    name: str,
    publisher_dsn: str,
    publication: str,
    slot: str,
    copy_data: bool,
    create_slot: bool = True,
) -> sql.Composable | None:
    """Subscribe; a no-op if the subscription exists already.

    create_slot=True makes the slot on the publisher now; False attaches to a slot
    made earlier (the cutover makes it inside the pause and subscribes after it)."""
    if subscription(subscriber, name):
        return None
    if create_slot and slot_exists(publisher, slot):
        # A crash between the slot's creation on the publisher and the subscription's
        # commit leaves the slot behind; it has no subscriber, so drop it and start over.
        drop_slot(publisher, slot)
    if not create_slot and not slot_exists(publisher, slot):
        raise OperationFailed(f"replication slot {slot} is missing on the publisher; "
                              "the changes since the cutover cannot be replicated back")
    stmt = subscription_statement(name, publisher_dsn, publication, slot, copy_data=copy_data,
                                  create_slot=create_slot, run_as_owner=runs_as_owner(subscriber.info.server_version))
    subscriber.execute(stmt)
    return stmt


def runs_as_owner(subscriber_version: int) -> bool:
    """From PostgreSQL 16 the apply worker acts as each table's owner unless told to act
    as the subscription's: a table owned by a role without rights on its own schema (or
    the subscription owner unable to become it) would stop replication. As the
    subscription's owner (the DSN role), 16+ applies as 15 does."""
    return subscriber_version >= 160000


def subscription_statement(name: str, publisher_dsn: str, publication: str, slot: str, *,
                           copy_data: bool, create_slot: bool = True, run_as_owner: bool = False,
                           failover: bool = False) -> sql.Composable:
    """CREATE SUBSCRIPTION; its connection string holds the DSN as given (a Statement's
    text masks any password in it). run_as_owner: see runs_as_owner. failover: the slot
    it creates is a failover slot (publisher and subscriber 17+: see slot_failover)."""
    return sql.SQL(
        "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} "
        "WITH (copy_data = {}, create_slot = {}, slot_name = {}, enabled = true{}{})"
    ).format(
        sql.Identifier(name), sql.Literal(publisher_dsn), sql.Identifier(publication),
        sql.SQL("true" if copy_data else "false"), sql.SQL("true" if create_slot else "false"),
        sql.Literal(slot), sql.SQL(", run_as_owner = true" if run_as_owner else ""),
        sql.SQL(", failover = true" if failover else ""),
    )


def drop_subscription_statement(name: str) -> sql.Composable:
    return sql.SQL("DROP SUBSCRIPTION {}").format(sql.Identifier(name))


def set_subscription_statement(name: str, enabled: bool) -> sql.Composable:
    return sql.SQL("ALTER SUBSCRIPTION {} {}").format(sql.Identifier(name), sql.SQL("ENABLE" if enabled else "DISABLE"))


def set_subscription_enabled(conn: psycopg.Connection, name: str, enabled: bool) -> None:
    if subscription(conn, name):
        conn.execute(set_subscription_statement(name, enabled))


def drop_subscription(subscriber: psycopg.Connection, name: str,
                      publisher: psycopg.Connection | None) -> None:
    """Drop a subscription and its slots on the publisher, even if the publisher is down.

    DROP SUBSCRIPTION connects to the publisher to drop the slot; when that cannot
    work, detach the slot first, then drop it directly when the publisher is back.
    """
    sub = subscription(subscriber, name)
    if sub is None:
        if publisher is not None and slot_exists(publisher, name):
            drop_slot(publisher, name)
        return
    if publisher is not None:
        try:
            subscriber.execute(drop_subscription_statement(name))
            return
        except psycopg.Error:
            pass
    subscriber.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(sql.Identifier(name)))
    subscriber.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(sql.Identifier(name)))
    subscriber.execute(sql.SQL("DROP SUBSCRIPTION {}").format(sql.Identifier(name)))
    if publisher is not None:
        for slot in [sub.slot or name, *tablesync_slots(publisher, sub.oid)]:
            drop_slot(publisher, slot)


def sync_states(conn: psycopg.Connection, name: str) -> dict[TableName, str]:
    """pg_subscription_rel state per table: i init, d copying, f/s syncing, r ready.

    Keyed by (schema, name) as the catalogs spell them: a mixed-case name is never
    re-quoted or re-split on the way."""
    rows = conn.execute(
        """
        SELECT n.nspname, c.relname, r.srsubstate
        FROM pg_catalog.pg_subscription_rel r
        JOIN pg_catalog.pg_subscription s ON s.oid = r.srsubid
        JOIN pg_catalog.pg_class c ON c.oid = r.srrelid
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE s.subname = %s
        """,
        (name,),
    ).fetchall()
    return {TableName(schema, table): state for schema, table, state in rows}


# --------------------------------------------------------------------------- progress and lag


def relation_bytes(conn: psycopg.Connection, tables: list[TableName]) -> dict[TableName, int]:
    """Heap + TOAST bytes per table (what the initial copy moves; indexes excluded); a
    partitioned table's are its partitions'."""
    rows = conn.execute(
        """
        SELECT n.nspname, c.relname,
               COALESCE((SELECT sum(pg_catalog.pg_table_size(t.relid))::bigint
                         FROM pg_catalog.pg_partition_tree(c.oid) t), pg_catalog.pg_table_size(c.oid))
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
        """,
        ([t.schema for t in tables], [t.name for t in tables]),
    ).fetchall()
    return {TableName(schema, table): size for schema, table, size in rows}


def slot_lag_statement(slot: str) -> sql.Composable:
    """WAL the subscriber of `slot` has not confirmed yet, in bytes."""
    return sql.SQL("SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
                   "FROM pg_catalog.pg_replication_slots WHERE slot_name = {}").format(sql.Literal(slot))


def slot_lag_bytes(publisher: psycopg.Connection, slot: str) -> int | None:
    """WAL the subscriber has not confirmed yet (None: no such slot)."""
    row = publisher.execute(slot_lag_statement(slot)).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def replay_lag_seconds(publisher: psycopg.Connection, application_name: str) -> float | None:
    row = publisher.execute(
        "SELECT extract(epoch FROM replay_lag) FROM pg_catalog.pg_stat_replication "
        "WHERE application_name = %s",
        (application_name,),
    ).fetchone()
    return float(row[0]) if row and row[0] is not None else (0.0 if row else None)


# --------------------------------------------------------------------------- sync marker


@dataclass(frozen=True)
class SyncMarker:
    """A row committed on the serving side; once the other side sees it, every
    transaction committed before it has been applied there too."""

    token: str
    committed_at: float


TOKEN = RunValue("token")


def new_token(direction: str) -> str:
    return f"{direction}:{uuid.uuid4()}"


def marker_statements(move, direction: str) -> list[sql.Composable]:
    """The statements that commit a marker (its token a run-time value, `<token>`): to
    run in one transaction, alone or after other statements of the same commit (the
    cutover's fence)."""
    # Walsenders only send flushed WAL: an asynchronous commit here would sit in
    # the WAL buffers for up to wal_writer_delay before the subscriber could see it.
    return [sql.SQL("SET LOCAL synchronous_commit = on"),
            sql.SQL("INSERT INTO {} (token, direction) VALUES ({}, {})").format(
                marker_table(move), TOKEN, sql.Literal(direction))]


def marker_arrived_statement(move) -> sql.Composable:
    """Is the marker `<token>` there? (polled on the other side)"""
    return sql.SQL("SELECT 1 FROM {} WHERE token = {}").format(marker_table(move), TOKEN)


def commit_marker(conn: psycopg.Connection, move, direction: str,
                  statements: list[sql.Composable] | None = None) -> SyncMarker:
    """Commit a marker row in `move`'s table (a Playbook or its slug), in one round trip
    (a simple-protocol batch runs as one transaction); `statements`: the whole batch,
    marker_statements last (default: those alone)."""
    token = new_token(direction)
    with bound({"token": token}), conn.transaction():
        conn.execute(sql.SQL("; ").join(statements or marker_statements(move, direction)))
    return SyncMarker(token, time.monotonic())


def wait_for_marker(conn: psycopg.Connection, move, marker: SyncMarker, *, deadline: float,
                    poll: float = 0.003) -> float:
    """Poll the other side until the marker is applied; returns seconds waited."""
    with bound({"token": marker.token}):
        query = sql.SQL(marker_arrived_statement(move).as_string(conn))

    def arrived() -> float | None:
        if conn.execute(query).fetchone():
            return time.monotonic() - marker.committed_at
        return None

    return waiting.poll(arrived, every=poll, deadline=deadline, timed_out=lambda: MarkerTimeout(
        f"the sync marker did not arrive within {deadline - marker.committed_at:.2f}s"))


class MarkerTimeout(OperationFailed):
    pass


# --------------------------------------------------------------------------- sequences


def sequences_array(sequences: list[TableName]) -> sql.Composable:
    """The sequences as regclass input text in an ARRAY (quoted as the catalogs need)."""
    return sql.SQL("ARRAY[{}]").format(sql.SQL(", ").join(
        sql.Literal(q.identifier.as_string(None)) for q in sequences))


def read_sequences_statement(sequences: sql.Composable) -> sql.Composable:
    """Every sequence's value in one statement, planned once whatever their number
    (a UNION ALL of one SELECT per sequence costs the pause a plan per sequence).
    pg_sequence_last_value is NULL for a sequence whose last value was not handed out
    (is_called false); those few are read one by one."""
    return sql.SQL("SELECT u.i, pg_catalog.pg_sequence_last_value(u.seq) "
                   "FROM unnest({}::regclass[]) WITH ORDINALITY AS u(seq, i)").format(sequences)


def write_sequences_statement() -> sql.Composable:
    """setval of every sequence in one statement; which ones and their values are
    run-time values."""
    return sql.SQL("SELECT pg_catalog.setval(u.seq, u.v, u.c) "
                   "FROM unnest({}::regclass[], {}::bigint[], {}::boolean[]) AS u(seq, v, c)").format(
                       RunValue("sequences"), RunValue("last_values"), RunValue("is_called"))


@dataclass(frozen=True)
class SequenceValue:
    name: TableName
    last_value: int
    is_called: bool

    @property
    def state(self) -> tuple[int, bool]:
        return self.last_value, self.is_called


def read_sequences(conn: psycopg.Connection, sequences: list[TableName],
                   statement: sql.Composable | None = None) -> list[SequenceValue]:
    """Each sequence's value; `statement`: read_sequences_statement of these sequences
    (composed once, before the pause)."""
    if not sequences:
        return []
    statement = statement if statement is not None else read_sequences_statement(sequences_array(sequences))
    found = dict(conn.execute(statement).fetchall())
    out, not_called = [], []
    for index, name in enumerate(sequences, start=1):
        if found.get(index) is None:
            not_called.append(name)
        else:
            out.append(SequenceValue(name, int(found[index]), True))
    if not_called:
        parts = [sql.SQL("SELECT {}, {}, last_value, is_called FROM {}").format(
                    sql.Literal(q.schema), sql.Literal(q.name), q.identifier) for q in not_called]
        out += [SequenceValue(TableName(r[0], r[1]), int(r[2]), bool(r[3]))
                for r in conn.execute(sql.SQL(" UNION ALL ").join(parts)).fetchall()]
    return out


def write_sequences(conn: psycopg.Connection, values: list[SequenceValue],
                    statement: sql.Composable | None = None) -> None:
    """setval of every sequence in one round trip (none: the statement runs with empty
    lists, so what runs is what was shown)."""
    with bound({"sequences": [v.name.identifier.as_string(None) for v in values],
                "last_values": [v.last_value for v in values], "is_called": [v.is_called for v in values]}):
        conn.execute(sql.SQL((statement if statement is not None else write_sequences_statement()).as_string(conn)))
