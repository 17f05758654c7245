"""Is a subscription making progress, or failing over and over without a word?

A logical replication worker that hits an error (a conflicting row on the subscriber,
a missing column, a permission) exits, and the launcher starts it again every
`wal_retrieve_retry_interval` (5 s): the copy or the apply never gets anywhere, and
nothing in `pg_subscription_rel` or in the slot's lag says why. The signs are in
`pg_stat_subscription_stats` (PG 15+: apply_error_count, sync_error_count), in
`pg_stat_subscription` (a worker whose pid keeps changing, or none at all), and the
words only in the subscriber's server log, which a superuser (or a member of
pg_read_server_files) can read through `pg_current_logfile()` when the server runs
its logging collector.

A `SubscriptionWatch` takes a baseline when a wait starts; `check()` raises
`ReplicationFailing` with the server's message once new errors say the wait is
hopeless. Errors of the connection to the publisher (a publisher restarting) are
what replication survives on its own, so only a run of them stops a wait.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg

from migrator.errors import OperationFailed

# Connection trouble the worker recovers from by itself once the publisher is back.
_TRANSIENT = re.compile(
    r"could not (receive|send) data (from|to) WAL stream|could not connect to the publisher|"
    r"server closed the connection|connection to server|the database system is (starting up|shutting down)|"
    r"terminating connection due to administrator command|could not start WAL streaming|"
    r"replication slot \S+ is active for PID|terminating logical replication worker",
    re.I,
)
TRANSIENT_ERRORS_TOLERATED = 6      # ~30 s of a publisher that keeps dropping the stream
UNEXPLAINED_ERRORS_TOLERATED = 2    # no words to judge by: the third error in a row stops
RESTARTS_TOLERATED = 3              # worker pids seen to change without any error counted
LOG_TAIL_BYTES = 256 * 1024


class ReplicationFailing(OperationFailed):
    """The subscription's workers keep failing: waiting longer would never end."""


@dataclass(frozen=True)
class Sample:
    enabled: bool | None               # None: no such subscription
    apply_errors: int | None           # None: the server has no pg_stat_subscription_stats
    sync_errors: int | None
    apply_pid: int | None
    sync_workers: dict[str, int]       # relation -> pid of its tablesync worker


def sample(conn: psycopg.Connection, subscription: str) -> Sample:
    # From PG 16 parallel apply workers have no relid either: their leader_pid says whose.
    leader = " AND w.leader_pid IS NULL" if conn.info.server_version >= 160000 else ""
    row = conn.execute(
        "SELECT s.subenabled, "
        "(SELECT w.pid FROM pg_catalog.pg_stat_subscription w WHERE w.subid = s.oid AND w.relid IS NULL"
        + leader + ") "
        "FROM pg_catalog.pg_subscription s WHERE s.subname = %s AND s.subdbid = "
        "(SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())",
        (subscription,),
    ).fetchone()
    if row is None:
        return Sample(None, None, None, None, {})
    sync = dict(conn.execute(
        "SELECT n.nspname || '.' || c.relname, w.pid FROM pg_catalog.pg_stat_subscription w "
        "JOIN pg_catalog.pg_subscription s ON s.oid = w.subid "
        "JOIN pg_catalog.pg_class c ON c.oid = w.relid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE s.subname = %s AND w.relid IS NOT NULL AND w.pid IS NOT NULL", (subscription,)).fetchall())
    apply_errors = sync_errors = None
    if conn.info.server_version >= 150000:
        stats = conn.execute(
            "SELECT apply_error_count, sync_error_count FROM pg_catalog.pg_stat_subscription_stats "
            "WHERE subname = %s", (subscription,)).fetchone()
        apply_errors, sync_errors = (int(stats[0]), int(stats[1])) if stats else (0, 0)
    return Sample(row[0], apply_errors, sync_errors, row[1], sync)


# --------------------------------------------------------------------------- the server's words


@dataclass(frozen=True)
class ServerError:
    message: str                       # "duplicate key value ... (Key (id)=(1) already exists.)"
    context: str | None = None         # the CONTEXT line: which relation, which COPY

    @property
    def transient(self) -> bool:
        return bool(_TRANSIENT.search(self.message))

    def __str__(self) -> str:
        return self.message + (f" [{self.context}]" if self.context else "")


_PID = re.compile(r"\[(\d+)\]")
_LEVEL = re.compile(r"\b(ERROR|FATAL|DETAIL|CONTEXT|HINT|LOG|WARNING|STATEMENT):\s+(.*)$")


def log_tail(conn: psycopg.Connection, limit: int = LOG_TAIL_BYTES) -> list[str] | None:
    """The last lines of the server's current log file, or None when the server does not
    say where it logs (no logging collector) or does not let this role read it."""
    try:
        with conn.transaction():
            path = conn.execute("SELECT pg_catalog.pg_current_logfile()").fetchone()[0]
            if not path:
                return None
            size = conn.execute("SELECT size FROM pg_catalog.pg_stat_file(%s)", (path,)).fetchone()[0]
            start = max(0, int(size) - limit)
            data = conn.execute("SELECT pg_catalog.pg_read_binary_file(%s, %s, %s)",
                                (path, start, int(size) - start)).fetchone()[0]
    except psycopg.Error:
        return None
    lines = bytes(data).decode("utf-8", errors="replace").splitlines()
    return lines[1:] if start > 0 else lines   # the first line may be cut


def last_worker_error(lines: list[str], subscription: str) -> ServerError | None:
    """The last ERROR logged by one of the subscription's workers.

    Workers announce themselves ("logical replication apply worker for subscription
    "x" has started"); their pid (log_line_prefix's %p, in brackets by default)
    ties their later ERROR to this subscription and not to another move's."""
    quoted = f'subscription "{subscription}"'
    pids = {m.group(1) for line in lines if quoted in line for m in [_PID.search(line)] if m}
    found: ServerError | None = None
    for index, line in enumerate(lines):
        level = _LEVEL.search(line)
        if not level or level.group(1) != "ERROR":
            continue
        pid = _PID.search(line)
        ours = pid is not None and pid.group(1) in pids
        if not ours and pids:
            continue
        detail = context = None
        for follow in lines[index + 1:index + 6]:
            more = _LEVEL.search(follow)
            if not more or more.group(1) in ("ERROR", "LOG", "FATAL", "WARNING"):
                break
            if more.group(1) == "DETAIL":
                detail = more.group(2).strip()
            elif more.group(1) == "CONTEXT":
                context = more.group(2).strip()
        if not ours and not (context and subscription in context):
            continue
        message = level.group(2).strip() + (f" ({detail})" if detail else "")
        found = ServerError(message, context)
    return found


# --------------------------------------------------------------------------- the watch


def hint_for(error: ServerError | None, side: str, verb: str) -> str:
    if error is not None and ("duplicate key" in error.message or "violates" in error.message):
        return (f"a row on the {side} conflicts with one being replicated to it (the message names the key): "
                f"remove it on the {side}, then run `migrator {verb}` again; or `migrator rollback`")
    if error is None:
        return (f"the {side}'s server log has the error (its logging collector is off, or this role may not "
                f"read it); fix the cause, then run `migrator {verb}` again, or `migrator rollback`")
    return f"fix the cause on the {side}, then run `migrator {verb}` again, or `migrator rollback`"


class SubscriptionWatch:
    """Errors and restarts of one subscription's workers since the watch began."""

    def __init__(self, conn: psycopg.Connection, subscription: str, *, side: str, verb: str = "execute") -> None:
        self.conn = conn
        self.subscription = subscription
        self.side = side
        self.verb = verb
        self.base = sample(conn, subscription)
        self.last = self.base
        self.apply_pids: set[int] = {self.base.apply_pid} if self.base.apply_pid else set()
        self.transient_seen = 0
        # An error counted before its words reached the log (the collector writes a
        # moment later): judged again at the next look, not at the next error.
        self.unexplained = False
        self.started = time.monotonic()

    def _errors(self, s: Sample) -> int:
        if s.apply_errors is None or self.base.apply_errors is None:
            return 0
        return (s.apply_errors - self.base.apply_errors) + (s.sync_errors - self.base.sync_errors)

    def check(self) -> Sample:
        """One look; raises ReplicationFailing when the workers keep failing."""
        s = sample(self.conn, self.subscription)
        if s.enabled is None:
            raise ReplicationFailing(f"subscription {self.subscription} is gone from the {self.side}",
                                     hint=f"run `migrator status`, then `migrator {self.verb}` again")
        if s.apply_errors is not None and self.base.apply_errors is not None and (
                s.apply_errors < self.base.apply_errors or s.sync_errors < self.base.sync_errors):
            # The statistics were reset (a crash restart of the subscriber): start again.
            self.base = s
        if s.apply_pid:
            self.apply_pids.add(s.apply_pid)
        new = self._errors(s)
        grew = new > self._errors(self.last)
        self.last = s
        if grew or self.unexplained:
            self._judge(new)
        elif len(self.apply_pids) > RESTARTS_TOLERATED and s.apply_errors is None:
            self._fail(f"its apply worker restarted {len(self.apply_pids) - 1} times", self._server_error())
        return s

    def _judge(self, new: int) -> None:
        error = self._server_error()
        self.unexplained = error is None
        if error is None:
            if new > UNEXPLAINED_ERRORS_TOLERATED:
                self._fail(f"{new} worker errors in {time.monotonic() - self.started:.0f}s", None)
            return
        if error.transient:
            self.transient_seen += 1
            if self.transient_seen > TRANSIENT_ERRORS_TOLERATED:
                self._fail(f"{new} worker errors in {time.monotonic() - self.started:.0f}s", error)
            return
        self._fail("", error)

    def _server_error(self) -> ServerError | None:
        lines = log_tail(self.conn)
        return last_worker_error(lines, self.subscription) if lines else None

    def _fail(self, what: str, error: ServerError | None) -> None:
        words = f": {error}" if error is not None else ""
        extra = f" ({what})" if what else ""
        raise ReplicationFailing(
            f"replication into the {self.side} fails: subscription {self.subscription}'s worker stopped "
            f"with an error{extra}{words}",
            hint=hint_for(error, self.side, self.verb))

    def waiting_for(self, s: Sample | None = None, tables: Iterable[str] = ()) -> str:
        """What a wait waits for right now, in a person's words."""
        s = s or self.last
        if s.enabled is False:
            return f"subscription {self.subscription} is disabled"
        parts = ["apply worker running" if s.apply_pid else "apply worker not running (restarting)"]
        copying = sorted(s.sync_workers)
        if copying:
            parts.append("copying " + ", ".join(copying))
        pending = [t for t in tables if t not in s.sync_workers]
        if pending:
            parts.append("waiting to copy " + ", ".join(pending[:5]) + (" ..." if len(pending) > 5 else ""))
        return "; ".join(parts)
