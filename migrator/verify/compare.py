"""`migrator verify`: is the table group the same on both servers?

Everything is computed on the servers; rows never travel to the client. Each table is
cut into ranges of its primary key of at most `chunk_rows` rows (a dense integer key is
cut arithmetically; any other key where the source's index says), and each range is
summarised on both sides at once as (row count, sum of 64-bit row hashes). The sum is
order-independent, so a range costs one index scan and no sort. A table without a key
(nor a replica identity index) is one range.

While replication runs, a range can differ only because a change is still in flight.
So a differing range is checked again once the subscriber has applied everything the
publisher had written (or, with no subscription, a moment later); if it still
differs, the (key, row hash) pairs of that range are compared, and only keys that
differ in every one of `rechecks` rounds, each after a catch-up, are reported.

Row hashes are `hash_record_extended` over the columns, named in the source's order:
the per-type hash functions hash partitioning uses, which PostgreSQL keeps stable
across major versions (they are not stable across CPU byte orders). Text is hashed
under the "C" collation (its bytes); a type without a portable hash (an enum hashes
its OID, which differs between servers) is hashed as its text output, with the
session settings that shape text output pinned below. Key ranges follow each server's
ordering of the key: a text key assumes both servers sort it alike (the same collation
and collation version), as their indexes of it already do.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
from psycopg import sql

from migrator import names, waiting
from migrator.waiting import ride_out
from migrator.errors import OperationFailed
from migrator.playbook import Playbook, TableName
from migrator.postgres import replication
from migrator.postgres.catalog import leaf_tables, table_facts
from migrator.postgres.connection import (
    Side,
    answers,
    connect,
    connection_lost,
    describe,
    first_line,
    side_of,
)

__all__ = ["ChunkDifference", "TableReport", "VerifyReport", "verify"]

DEFAULT_CHUNK_ROWS = 100_000
SAMPLE_KEYS = 10
_RECHECK_KEYS = 1000   # suspect keys re-read one by one; more: the whole range again

Progress = Callable[[int, int, str], None]   # (bytes done, bytes in all, table)
Key = tuple[str, ...]                         # a primary key's columns, as text

# Text output of these settings' types would otherwise differ between sessions.
_SESSION = sql.SQL(
    "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; "
    "SET extra_float_digits = 1; SET bytea_output = 'hex'; SET lc_monetary = 'C'; "
    # A check that runs beside production uses one core per server, and writes nothing.
    "SET max_parallel_workers_per_gather = 0; SET default_transaction_read_only = on"
)
# Built-in types whose hash function depends on the value only (not on OIDs or locale).
_PORTABLE_HASH = {
    16, 17, 20, 21, 23, 700, 701, 1082, 1083, 1114, 1184, 1186, 1266, 1700, 2950, 3802,
}   # bool bytea int8 int2 int4 float4 float8 date time timestamp timestamptz interval timetz numeric uuid jsonb
_INTEGER_TYPES = {20, 21, 23}    # int8, int2, int4
_TEXT_TYPES = {25, 1042, 1043}   # text, bpchar, varchar: hashed as bytes under "C"
_C_COLLATION = sql.Identifier("pg_catalog", "C")


# --------------------------------------------------------------------------- report


@dataclasses.dataclass
class ChunkDifference:
    """A key range whose rows still differed after replication had caught up."""

    lower: Key | None          # exclusive; None: from the first row
    upper: Key | None          # inclusive; None: to the last row
    range: str
    source_rows: int
    target_rows: int
    differing_keys: int
    sample_keys: list          # a key's text, or a list of texts for a multi-column key

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class TableReport:
    table: str
    key: list[str]             # the columns ranges are cut on; [] compares the whole table
    source_rows: int = 0
    target_rows: int = 0
    chunks: int = 0
    bytes: int = 0
    seconds: float = 0.0
    differences: list[ChunkDifference] = dataclasses.field(default_factory=list)
    problem: str | None = None   # the table could not be compared (missing, other columns)

    @property
    def identical(self) -> bool:
        return self.problem is None and not self.differences

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "identical": self.identical}


@dataclasses.dataclass
class VerifyReport:
    name: str
    source: str
    target: str
    tables: list[TableReport]
    seconds: float
    bytes: int
    chunk_rows: int
    rechecked_chunks: int
    catch_up: str                # how in-flight changes were waited for
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def identical(self) -> bool:
        return all(table.identical for table in self.tables)

    @property
    def mb_per_s(self) -> float:
        return round(self.bytes / 1024**2 / max(self.seconds, 1e-9), 1)

    def to_dict(self) -> dict:
        doc = dataclasses.asdict(self)
        doc["tables"] = [table.to_dict() for table in self.tables]
        return {**doc, "identical": self.identical, "mb_per_s": self.mb_per_s}


# --------------------------------------------------------------------------- the verb


def verify(
    playbook: Playbook,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: Progress | None = None,
    rechecks: int = 3,
    catchup_timeout: float = 15.0,
    recheck_interval: float = 1.0,
    waiting: Callable[[str], None] | None = None,
) -> VerifyReport:
    """Compare the playbook's tables on source and target; changes nothing anywhere.

    Differences that disappear once replication has caught up are not reported. A
    server that stops answering (a restart, a failover) is waited for, up to the
    playbook's restarts.wait, saying so through `waiting`; then the comparison starts
    over, as it reads only.
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    sides = {"source": playbook.source.dsn, "target": playbook.target.dsn}

    def lost(exc: BaseException) -> str | None:
        if not connection_lost(exc):
            return None
        side = side_of(exc)
        down = [str(side)] if side is not None else [s for s, dsn in sides.items() if not answers(dsn)]
        return " and ".join(f"the {s} ({describe(sides[s])})" for s in down) or "a connection"

    def back(name: str) -> bool:
        return all(answers(dsn) for s, dsn in sides.items() if f"the {s} " in name or name == "a connection")

    def once() -> VerifyReport:
        return _verify(playbook, chunk_rows, progress, rechecks, catchup_timeout, recheck_interval)

    try:
        return ride_out(once, bound=playbook.restarts.wait, lost=lost, back=back, say=waiting or (lambda _: None))
    except psycopg.Error as exc:
        raise OperationFailed(f"verify stopped: {first_line(exc)}") from exc


def _verify(playbook: Playbook, chunk_rows: int, progress: Progress | None, rechecks: int,
            catchup_timeout: float, recheck_interval: float) -> VerifyReport:
    started = time.monotonic()
    with _Comparison(playbook, chunk_rows, progress, catchup_timeout, recheck_interval) as run:
        catch_up = run.catch_up_description()
        tables = run.scan_all()
        rechecked = run.recheck(tables, rounds=max(rechecks, 1))
        notes = run.notes
    return VerifyReport(
        name=playbook.name,
        source=describe(playbook.source.dsn),
        target=describe(playbook.target.dsn),
        tables=[t.report for t in tables],
        seconds=round(time.monotonic() - started, 3),
        bytes=sum(t.report.bytes for t in tables),
        chunk_rows=chunk_rows,
        rechecked_chunks=rechecked,
        catch_up=catch_up,
        notes=notes,
    )


# --------------------------------------------------------------------------- internals


@dataclasses.dataclass
class _Chunk:
    lower: Key | None
    upper: Key | None
    source: tuple[int, str] = (0, "0")   # (rows, sum of row hashes)
    target: tuple[int, str] = (0, "0")
    keys: set | None = None               # keys that differed in every drill-down round

    @property
    def differs(self) -> bool:
        return self.source != self.target


@dataclasses.dataclass
class _Table:
    name: TableName
    report: TableReport
    columns: list[tuple[str, int]] = dataclasses.field(default_factory=list)  # (name, type oid)
    chunks: list[_Chunk] = dataclasses.field(default_factory=list)
    estimated_rows: int = 0

    @property
    def key(self) -> list[str]:
        return self.report.key

    def ident(self) -> sql.Identifier:
        return self.name.identifier

    def row_hash(self, native: bool) -> sql.Composable:
        parts = []
        for column, type_oid in self.columns:
            ident = sql.Identifier(column)
            if type_oid in _TEXT_TYPES:
                parts.append(sql.SQL("{} COLLATE {}").format(ident, _C_COLLATION))
            elif type_oid in _PORTABLE_HASH:
                parts.append(ident)
            else:
                parts.append(sql.SQL("{}::text COLLATE {}").format(ident, _C_COLLATION))
        row = sql.SQL("ROW({})").format(sql.SQL(", ").join(parts))
        if native:
            return sql.SQL("pg_catalog.hash_record_extended({}, 0)").format(row)
        return sql.SQL("pg_catalog.hashtextextended({}::text, 0)").format(row)

    def key_list(self) -> sql.Composable:
        return sql.SQL(", ").join(sql.Identifier(k) for k in self.key)

    def key_text(self) -> sql.Composable:
        # Aliased: an output column named like the key would make ORDER BY sort the text.
        return sql.SQL(", ").join(
            sql.SQL("{}::text AS {}").format(sql.Identifier(k), sql.Identifier(f"key_{i}"))
            for i, k in enumerate(self.key)
        )

    def where(self, lower: Key | None, upper: Key | None) -> tuple[sql.Composable, list[str]]:
        # Bounds travel as text with an unknown type, so the server reads them as the
        # key's own types: exact for every type, and the key's index serves the range.
        parts: list[sql.Composable] = []
        params: list[str] = []
        for bound, op in ((lower, ">"), (upper, "<=")):
            if bound is not None:
                marks = sql.SQL(", ").join(sql.Placeholder() * len(bound))
                parts.append(sql.SQL("({}) {} ({})").format(self.key_list(), sql.SQL(op), marks))
                params.extend(bound)
        return (sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")), params


class _Comparison:
    """The connections and the steps of one verify run."""

    def __init__(self, playbook, chunk_rows, progress, catchup_timeout, recheck_interval):
        self.playbook = playbook
        self.chunk_rows = chunk_rows
        self.progress = progress or (lambda done, total, table: None)
        self.catchup_timeout = catchup_timeout
        self.recheck_interval = recheck_interval
        self.notes: list[str] = []
        self.conns: list[psycopg.Connection] = []
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="verify")
        self.links: list[tuple[str, psycopg.Connection, psycopg.Connection]] = []

    def __enter__(self) -> _Comparison:
        try:
            self.source = self._open(self.playbook.source.dsn, Side.SOURCE)
            self.target = self._open(self.playbook.target.dsn, Side.TARGET)
            # Boundaries of the next range are found on the source while this one is hashed.
            self.bounds = self._open(self.playbook.source.dsn, Side.SOURCE)
            versions = [c.info.server_version for c in (self.source, self.target)]
            self.native = min(versions) >= 140000   # hash_record_extended is new in 14
            self.links = self._subscriptions()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True)
        for conn in self.conns:
            conn.close()

    def _open(self, dsn: str, side: Side) -> psycopg.Connection:
        conn = connect(dsn, side=side, purpose="verify", statement_timeout_ms=3_600_000)
        self.conns.append(conn)
        conn.execute(_SESSION)
        return conn

    def _both(self, query: Callable[[psycopg.Connection], object]) -> tuple:
        """Run a query on source and target at the same moment."""
        on_source = self.pool.submit(query, self.source)
        on_target = query(self.target)
        return on_source.result(), on_target

    # shapes -------------------------------------------------------------------

    def _describe(self, table: TableName) -> _Table:
        """Columns and key from the catalog model, on both sides."""
        found = _Table(table, TableReport(table=str(table), key=[]))
        facts = []
        for side, conn in (("source", self.source), ("target", self.target)):
            on_side = table_facts(conn, [table])[table]
            if not on_side.exists:
                found.report.problem = f"missing on the {side}"
                return found
            facts.append(on_side)
        source, target = facts
        only = {(c.name, c.type) for c in source.columns} ^ {(c.name, c.type) for c in target.columns}
        if only:
            listed = ", ".join(f"{name} {kind}" for name, kind in sorted(only))
            found.report.problem = f"the columns differ between source and target: {listed}"
            return found
        found.columns = [(c.name, c.type_oid) for c in source.columns]
        found.report.key = list(source.key)
        found.report.bytes = source.copy_bytes
        found.estimated_rows = source.estimated_rows or self.source.execute(
            sql.SQL("SELECT count(*) FROM {}").format(found.ident())
        ).fetchone()[0]
        return found

    # the pass -----------------------------------------------------------------

    def scan_all(self) -> list[_Table]:
        # A partitioned table is compared leaf by leaf: each row in the same partition.
        tables = [self._describe(name) for name in leaf_tables(self.source, self.playbook.tables)]
        total = sum(t.report.bytes for t in tables)
        done = 0
        for table in tables:
            if table.report.problem is None:
                started = time.monotonic()
                for rows in self._scan(table):
                    share = rows / max(table.estimated_rows, 1)
                    self.progress(min(done + round(share * table.report.bytes), total), total,
                                  table.report.table)
                table.report.seconds = round(time.monotonic() - started, 3)
            done += table.report.bytes
            self.progress(done, total, table.report.table)
        return tables

    def _scan(self, table: _Table) -> Iterator[int]:
        """Hash every range on both sides; yields the source rows done so far.

        Each side runs through the ranges at its own pace: in lockstep, every range
        would wait for the slower side. A range that changed between the two reads
        is a suspect like any in-flight change, and the re-check settles it."""
        lower: Key | None = None
        for upper in self._boundaries(table):
            table.chunks.append(_Chunk(lower, upper))
            lower = upper

        def run(conn: psycopg.Connection, side: str) -> None:
            for chunk in table.chunks:
                setattr(chunk, side, self._summary(conn, table, chunk))

        sides = [self.pool.submit(run, self.source, "source"), self.pool.submit(run, self.target, "target")]
        while not all(future.done() for future in sides):
            time.sleep(0.1)
            yield sum(c.source[0] for c in table.chunks if c.source is not None)
        for future in sides:
            future.result()
        yield sum(c.source[0] for c in table.chunks)
        self._count(table)

    def _boundaries(self, table: _Table) -> Iterator[Key | None]:
        """The ranges' upper bounds, ending with None (up to the last row, on either side)."""
        if not table.key:
            yield None
            return
        dense = self._dense_integer_key(table)
        if dense is not None:
            # Unique integers: a range chunk_rows wide holds at most chunk_rows rows,
            # so the bounds need no scan of the index at all.
            bound, high = dense
            while bound < high:
                yield (str(bound),)
                bound += self.chunk_rows
            yield None
            return
        # The next bound is looked up on the source while this range is hashed.
        pending = self.pool.submit(self._boundary, table, None)
        while (bound := pending.result()) is not None:
            pending = self.pool.submit(self._boundary, table, bound)
            yield bound
        yield None

    def _dense_integer_key(self, table: _Table) -> tuple[int, int] | None:
        """(first upper bound, max key) when the key is one integer column filled at least half."""
        if len(table.key) != 1 or dict(table.columns)[table.key[0]] not in _INTEGER_TYPES:
            return None
        key = sql.Identifier(table.key[0])
        low, high = self.source.execute(
            sql.SQL("SELECT min({}), max({}) FROM {}").format(key, key, table.ident())).fetchone()
        if low is None or table.estimated_rows < (high - low + 1) / 2:
            return None
        return low - 1 + self.chunk_rows, high

    def _boundary(self, table: _Table, lower: Key | None) -> Key | None:
        """The key chunk_rows rows after lower on the source, or None past the end."""
        where, params = table.where(lower, None)
        row = self.bounds.execute(
            sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY {} OFFSET %s LIMIT 1").format(
                table.key_text(), table.ident(), where, table.key_list()),
            [*params, self.chunk_rows - 1],
        ).fetchone()
        return tuple(row) if row else None

    def _summary(self, conn: psycopg.Connection, table: _Table, chunk: _Chunk) -> tuple[int, str]:
        where, params = table.where(chunk.lower, chunk.upper)
        count, total = conn.execute(
            sql.SQL("SELECT count(*), coalesce(sum({}), 0)::text FROM {} WHERE {}").format(
                table.row_hash(self.native), table.ident(), where),
            params,
        ).fetchone()
        return count, total

    def _count(self, table: _Table) -> None:
        table.report.chunks = len(table.chunks)
        table.report.source_rows = sum(c.source[0] for c in table.chunks)
        table.report.target_rows = sum(c.target[0] for c in table.chunks)

    # in-flight changes ----------------------------------------------------------

    def recheck(self, tables: list[_Table], rounds: int) -> int:
        """Re-check differing ranges after catch-ups; keep what persists. Returns how many."""
        suspects = [(t, c) for t in tables for c in t.chunks if c.differs]
        if suspects:
            self._settle()
            for table, chunk in suspects:
                chunk.source, chunk.target = self._both(lambda conn: self._summary(conn, table, chunk))
            pending = [(t, c) for t, c in suspects if c.differs]
            for attempt in range(rounds):
                if not pending:
                    break
                if attempt:
                    self._settle()
                for table, chunk in pending:
                    self._compare_keys(table, chunk)
                pending = [(t, c) for t, c in pending if c.keys]
        for table in tables:
            self._count(table)
            table.report.differences = [_difference(table, c) for c in table.chunks if c.keys]
        return len(suspects)

    def _compare_keys(self, table: _Table, chunk: _Chunk) -> None:
        """Per-key hashes on both sides; keep the keys that differ every time.

        The first round reads the range; later rounds only the keys still suspect.
        """
        whole = chunk.keys is None or len(chunk.keys) > _RECHECK_KEYS or not table.key
        if not table.key:   # no key: the rows themselves, as a multiset of hashes
            query = sql.SQL("SELECT h, count(*) FROM (SELECT {} AS h FROM {}) s GROUP BY h").format(
                table.row_hash(self.native), table.ident())
            params: list[str] = []
        else:
            if whole:
                where, params = table.where(chunk.lower, chunk.upper)
            else:
                one = sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() * len(table.key)))
                where = sql.SQL("({}) IN ({})").format(
                    table.key_list(), sql.SQL(", ").join([one] * len(chunk.keys)))
                params = [part for key in chunk.keys for part in key]
            query = sql.SQL("SELECT {}, {} FROM {} WHERE {}").format(
                table.key_text(), table.row_hash(self.native), table.ident(), where)

        def pairs(conn: psycopg.Connection) -> dict:
            rows = conn.execute(query, params).fetchall()
            return {tuple(r[:-1]): r[-1] for r in rows}

        on_source, on_target = self._both(pairs)
        differing = {k for k in on_source.keys() | on_target.keys() if on_source.get(k) != on_target.get(k)}
        chunk.keys = differing if chunk.keys is None else chunk.keys & differing
        if whole:
            count = len if table.key else (lambda found: sum(found.values()))
            chunk.source = (count(on_source), chunk.source[1])
            chunk.target = (count(on_target), chunk.target[1])

    def _subscriptions(self) -> list[tuple[str, psycopg.Connection, psycopg.Connection]]:
        """(name, publisher, subscriber) of the move's forward or reverse replication.

        An enabled subscription is the one to wait for; a disabled one only when no
        other exists (it may be re-enabled while verify runs).
        """
        found = []
        for name, publisher, subscriber, side in (
            (names.subscription(self.playbook), self.source, self.target, "source"),
            (names.reverse_subscription(self.playbook), self.target, self.source, "target"),
        ):
            row = subscriber.execute(
                "SELECT s.subenabled, s.subslotname FROM pg_catalog.pg_subscription s JOIN pg_catalog.pg_database d "
                "ON d.oid = s.subdbid WHERE s.subname = %s AND d.datname = pg_catalog.current_database()",
                (name,),
            ).fetchone()
            if row is None:
                continue
            if row[1] and not replication.slot_exists(publisher, row[1]):
                # Nothing will ever arrive through it: waiting would only slow every re-check,
                # and a difference found is real.
                lost = replication.slot_lost(row[1], side, after_cutover=side == "target")
                self.notes.append(f"{lost.message}; differences are not re-checked after a catch-up — {lost.hint}")
                continue
            found.append((row[0], (name, publisher, subscriber)))
        enabled = [link for on, link in found if on]
        return enabled or [link for _, link in found]

    def _settle(self) -> None:
        """Wait until the subscription has applied what its publisher has written."""
        if not self.links:
            time.sleep(self.recheck_interval)
            return
        for link in list(self.links):
            name, publisher, subscriber = link
            lsn = _end_of_wal(publisher)

            def applied(name: str = name, subscriber: psycopg.Connection = subscriber, lsn: str = lsn) -> bool | None:
                return subscriber.execute(
                    "SELECT coalesce(max(latest_end_lsn) >= %s::pg_lsn, false) "
                    "FROM pg_catalog.pg_stat_subscription WHERE subname = %s AND relid IS NULL",
                    (lsn, name),
                ).fetchone()[0] or None

            try:
                waiting.poll(applied, every=0.02, deadline=time.monotonic() + self.catchup_timeout,
                             timed_out=lambda: TimeoutError(name))
            except TimeoutError:
                # Waiting for it again would only make every re-check this slow.
                self.links.remove(link)
                self.notes.append(f"subscription {name} had not caught up after "
                                  f"{self.catchup_timeout:g} s; re-checked without it")

    def catch_up_description(self) -> str:
        if self.links:
            return "waited for subscription " + ", ".join(name for name, _, _ in self.links)
        return f"no subscription: re-checked after {self.recheck_interval:g} s"


def _end_of_wal(conn: psycopg.Connection) -> str:
    """The publisher's WAL insert position, as a record end the subscriber can reach.

    When the last record ends at a page boundary, the insert position points past the
    next page's header, where no record ends until more WAL is written.
    """
    text, block = conn.execute(
        "SELECT pg_catalog.pg_current_wal_insert_lsn()::text, "
        "pg_catalog.current_setting('wal_block_size')::int"
    ).fetchone()
    high, low = (int(part, 16) for part in text.split("/"))
    lsn = (high << 32) | low
    if lsn % block in (24, 40):   # SizeOfXLogShortPHD, SizeOfXLogLongPHD on 64-bit builds
        lsn -= lsn % block
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def _difference(table: _Table, chunk: _Chunk) -> ChunkDifference:
    keys = sorted(chunk.keys or (), key=lambda k: [(len(str(p)), str(p)) for p in k])
    if table.key:
        sample = [k[0] if len(k) == 1 else list(k) for k in keys[:SAMPLE_KEYS]]
    else:
        sample = [f"row hash {k[0]}" for k in keys[:SAMPLE_KEYS]]
    return ChunkDifference(
        lower=chunk.lower,
        upper=chunk.upper,
        range=describe_range(table.key, chunk.lower, chunk.upper),
        source_rows=chunk.source[0],
        target_rows=chunk.target[0],
        differing_keys=len(keys),
        sample_keys=sample,
    )


def describe_range(key: list[str], lower: Key | None, upper: Key | None) -> str:
    """'id > 1000 and id <= 2000', '(a, b) > (1, x)', 'whole table'."""
    if not key:
        return "whole table (no primary key)"
    if lower is None and upper is None:
        return "all rows"
    name = key[0] if len(key) == 1 else f"({', '.join(key)})"

    def value(bound: Key) -> str:
        return bound[0] if len(bound) == 1 else f"({', '.join(bound)})"

    parts = []
    if lower is not None:
        parts.append(f"{name} > {value(lower)}")
    if upper is not None:
        parts.append(f"{name} <= {value(upper)}")
    return " and ".join(parts)

