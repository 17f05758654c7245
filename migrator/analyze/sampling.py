"""The sampler: what the source's backends are doing, every `interval`, read-only.

One query per sample joins pg_stat_activity (backends active or idle in a transaction,
their wait event, who they are and where they connect from) with pg_locks grouped by
the holder's virtual transaction id. A transaction keeps its relation locks until it
ends, so the relations one transaction touched accumulate across the samples that
catch it, even after the statement that took them finished; the virtual transaction
id (unique for the cluster's life) says which samples are the same transaction, and
is read from pg_locks itself, so a backend that moved on to its next transaction
between the two views cannot lend one transaction's locks to another.

A lock is on a relation, not a table: indexes, TOAST tables and sequences are mapped
to the table they serve by the catalog model (`table_relations`). A sequence counts
for the table of the same transaction that uses it (an INSERT's nextval is that
table's, not a second table), else for every table that uses it.

Sampling is statistical: a 1 ms transaction is caught by a 10 ms sampler about one
time in ten. The counters read at both ends of the window (pg_stat_database's
commits, pg_stat_user_tables' reads and writes) say how much was seen.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import psycopg

from migrator.playbook import TableName
from migrator.postgres.catalog import TableRelation

MAX_QUERIES = 3
_CONTROL = re.compile(r"^\s*(BEGIN|START|COMMIT|END|ROLLBACK|ABORT|SAVEPOINT|RELEASE|SET|RESET|SHOW|"
                      r"DISCARD|DEALLOCATE|SELECT 1\s*;?\s*$)", re.I)

# The tool's own observing sessions (this one, a `plan --observe`) are left out.
OWN_SESSIONS = "migrator analyze%"
QUERY_CHARS = 300

_SAMPLE = """
SELECT a.pid, a.backend_start, a.state, a.wait_event_type, a.usename::text, a.application_name,
       pg_catalog.host(a.client_addr), a.client_port, l.vxid, l.relids,
       pg_catalog.left(a.query, %(query_chars)s)
FROM pg_catalog.pg_stat_activity a
JOIN (SELECT k.pid, k.virtualtransaction AS vxid,
             pg_catalog.array_agg(k.relation) FILTER (
                 WHERE k.locktype = 'relation' AND k.database = %(db)s) AS relids
      FROM pg_catalog.pg_locks k
      WHERE k.pid IS NOT NULL
      GROUP BY k.pid, k.virtualtransaction) l ON l.pid = a.pid
WHERE a.datid = %(db)s
  AND a.backend_type = 'client backend'
  AND a.pid <> pg_catalog.pg_backend_pid()
  AND a.state IN ('active', 'idle in transaction', 'idle in transaction (aborted)')
  AND a.application_name NOT LIKE %(own)s
"""

_DATABASE = """
SELECT d.oid, d.datname, s.xact_commit + s.xact_rollback, pg_catalog.clock_timestamp()
FROM pg_catalog.pg_database d JOIN pg_catalog.pg_stat_database s ON s.datid = d.oid
WHERE d.datname = pg_catalog.current_database()
"""

_TABLE_COUNTERS = """
SELECT relid, COALESCE(seq_tup_read, 0) + COALESCE(idx_tup_fetch, 0),
       n_tup_ins + n_tup_upd + n_tup_del
FROM pg_catalog.pg_stat_user_tables
"""

WAIT_CLASSES = ("cpu", "io", "lock", "other")


def wait_class(wait_event_type: str | None) -> str:
    """An active backend's wait: none is on CPU; heavyweight locks and IO by name."""
    if wait_event_type is None:
        return "cpu"
    return {"IO": "io", "Lock": "lock"}.get(wait_event_type, "other")


@dataclass(frozen=True)
class Backend:
    """One server process of the source, as pg_stat_activity shows it."""

    pid: int
    started: float                  # backend_start, as an epoch (pids are reused)
    role: str
    application_name: str
    client_addr: str | None         # None: a Unix-domain socket
    client_port: int | None

    @property
    def key(self) -> tuple[int, float]:
        return (self.pid, self.started)


@dataclass
class Transaction:
    """One transaction caught by at least one sample."""

    vxid: str
    backend: tuple[int, float]
    relids: set[int] = field(default_factory=set)
    samples: int = 0
    active_samples: int = 0
    queries: list[str] = field(default_factory=list)   # distinct statements seen, in order

    @property
    def query(self) -> str | None:
        """What it ran, as far as the samples saw (BEGIN, COMMIT and the like left out)."""
        return "; ".join(self.queries) if self.queries else None

    def saw(self, query: str | None) -> None:
        if (query and len(self.queries) < MAX_QUERIES and query not in self.queries
                and not _CONTROL.match(query)):
            self.queries.append(query)


@dataclass(frozen=True)
class Counters:
    """The server's own counters at one instant."""

    at: float                              # the server's clock, epoch seconds
    transactions: int                      # commits + rollbacks of the database
    tables: Mapping[int, tuple[int, int]]  # relid -> (rows read, rows written)


@dataclass
class Samples:
    """Everything the sampler saw over its window."""

    interval_s: float
    ticks: int = 0
    seconds: float = 0.0
    queries: int = 0                      # statements this session ran (its own commits)
    backends: dict[tuple[int, float], Backend] = field(default_factory=dict)
    transactions: dict[str, Transaction] = field(default_factory=dict)
    # (tables an active backend's transaction held, wait class) -> samples
    active: Counter = field(default_factory=Counter)
    late_ticks: int = 0                   # samples that started late (a slow server)


class RouteWatcher(Protocol):
    def backend_seen(self, backend: Backend) -> None: ...


def tables_of(relids: Iterable[int], relations: Mapping[int, TableRelation]) -> frozenset[TableName]:
    """The tables a set of locked relations stands for (see the module's docstring)."""
    direct: set[TableName] = set()
    sequences: list[TableRelation] = []
    for relid in relids:
        relation = relations.get(relid)
        if relation is None:
            continue                      # a catalog, a view, a relation made since
        if relation.kind == "sequence":
            sequences.append(relation)
        else:
            direct.update(relation.tables)
    for sequence in sequences:
        own = direct.intersection(sequence.tables)
        if not own:
            direct.update(sequence.tables)
    return frozenset(direct)


def database_oid(conn: psycopg.Connection) -> int:
    return conn.execute(_DATABASE).fetchone()[0]


def read_counters(conn: psycopg.Connection) -> Counters:
    _, _, transactions, at = conn.execute(_DATABASE).fetchone()
    tables = {relid: (int(reads), int(writes)) for relid, reads, writes in conn.execute(_TABLE_COUNTERS)}
    return Counters(at=at.timestamp(), transactions=int(transactions), tables=tables)


def sample(
    conn: psycopg.Connection,
    relations: Mapping[int, TableRelation],
    *,
    duration: float,
    interval: float,
    routes: RouteWatcher | None = None,
    progress: Callable[[float, float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Samples:
    """Sample for `duration` seconds every `interval` on conn (autocommit: each sample
    must see the present, and pg_stat_activity is cached for a transaction's life)."""
    db = database_oid(conn)
    params = {"db": db, "own": OWN_SESSIONS, "query_chars": QUERY_CHARS}
    seen = Samples(interval_s=interval)
    started = clock()
    deadline = started + duration
    next_at = started
    last_progress = 0.0
    while True:
        now = clock()
        if now >= deadline:
            break
        if next_at > now:
            time.sleep(min(next_at - now, deadline - now))
            continue
        if now - next_at > interval:
            seen.late_ticks += 1
            next_at = now                 # behind: carry on, no burst of catch-up samples
        next_at += interval
        rows = conn.execute(_SAMPLE, params, prepare=True).fetchall()
        seen.queries += 1
        seen.ticks += 1
        _record(seen, rows, relations, routes)
        if progress is not None and now - last_progress >= 0.2:
            last_progress = now
            progress(now - started, duration)
    seen.seconds = clock() - started
    if progress is not None:
        progress(duration, duration)
    return seen


def _record(seen: Samples, rows: list[tuple], relations: Mapping[int, TableRelation],
            routes: RouteWatcher | None) -> None:
    # One pid can show two virtual transactions when pg_locks read it mid-switch:
    # its active sample counts once, for what both hold.
    active_now: dict[int, tuple[set[TableName], str]] = {}
    for pid, backend_start, state, wait_type, role, app, addr, port, vxid, relids, query in rows:
        started = backend_start.timestamp()
        key = (pid, started)
        if key not in seen.backends:
            backend = Backend(pid=pid, started=started, role=role or "", application_name=app or "",
                              client_addr=addr, client_port=port if port and port > 0 else None)
            seen.backends[key] = backend
            if routes is not None:
                routes.backend_seen(backend)
        txn = seen.transactions.get(vxid)
        if txn is None:
            txn = seen.transactions[vxid] = Transaction(vxid=vxid, backend=key)
        relids = relids or ()
        txn.relids.update(relids)
        txn.samples += 1
        txn.saw(query)
        if state == "active":
            txn.active_samples += 1
            tables, _ = active_now.setdefault(pid, (set(), wait_class(wait_type)))
            tables.update(tables_of(relids, relations))
    for tables, klass in active_now.values():
        seen.active[(frozenset(tables), klass)] += 1
