"""The one seam to Postgres: DSNs masked for people, and every connection the tool opens.

Every connection carries an application_name (so an operator sees the tool in
pg_stat_activity), a connect timeout, and a statement and a lock timeout chosen by
what the connection is for (TIMEOUTS). A connection that cannot be opened raises
ServerUnreachable naming the side; a statement that fails on a side's connection
keeps its driver exception type (callers catch ObjectInUse, UndefinedObject, ...)
but carries the side, so the user's one line says where it failed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from migrator.errors import ServerUnreachable
from migrator.masking import mask_secrets

APPLICATION_NAME = "migrator"


class Side(str, enum.Enum):
    """The two servers of a move, in the user's words. Values are stored (`serving`)."""

    SOURCE = "source"
    TARGET = "target"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Timeouts:
    """None means no limit (the server's default of 0)."""

    connect_s: int = 5
    statement_ms: int | None = None
    lock_ms: int | None = None
    # The session passes the move's DDL guard (migrator.postgres.guards): the DDL the
    # steps run on a group table is the move's own (fences, index builds, `migrator ddl`).
    guard_bypass: bool = False


# By the purpose's first word; the rest (a step, the move's slug) only names the session.
TIMEOUTS: dict[str, Timeouts] = {
    # Read-only looks a person waits for: a bounded answer, and behind someone's ACCESS
    # EXCLUSIVE lock (an ALTER TABLE, a DROP) an error that says so, not a queue.
    "plan": Timeouts(statement_ms=30_000, lock_ms=5_000),
    "status": Timeouts(connect_s=3, statement_ms=30_000, lock_ms=5_000),
    "probe": Timeouts(connect_s=2, statement_ms=30_000, lock_ms=5_000),
    "verify": Timeouts(statement_ms=3_600_000, lock_ms=30_000),   # reads whole tables
    # Samples pg_stat_activity and pg_locks every few milliseconds: a sample that does
    # not come back quickly is a problem to report, not to wait for.
    "analyze": Timeouts(connect_s=5, statement_ms=10_000, lock_ms=2_000),
    # It acts while clients wait on a paused PgBouncer: a tool hung inside its own
    # privilege transaction holds the rows its GRANTs need, and RESUME comes next.
    "watchdog": Timeouts(connect_s=2, statement_ms=1_500, lock_ms=500, guard_bypass=True),
    # No statement limit: the waits are bounded by the cutover's own deadlines, and the
    # REVOKE inside the pause (the one statement there that queues behind the app's
    # locks) sets a lock_timeout from the time left. After an abort, giving the app its
    # privileges back must wait its turn rather than give up.
    "cutover": Timeouts(guard_bypass=True),
    "reconcile": Timeouts(guard_bypass=True),
    "complete": Timeouts(guard_bypass=True),
    # The steps' work: the initial copy and its waits, index builds that must queue
    # behind the application's transactions (DESIGN section 3), DDL, replication.
    "step": Timeouts(guard_bypass=True),
    # PgBouncer's admin console rejects startup options: nothing to send it.
    "pgbouncer-admin": Timeouts(connect_s=3),
    # Lab: the application's own sessions (through PgBouncer) and setting up servers.
    "workload": Timeouts(),
    "lab": Timeouts(),
}

# A purpose the table does not name is a step's (MoveContext passes the step's words):
# a long step cut off by a limit meant for a quick look would be the worse mistake.
DEFAULT_PURPOSE = "step"


def timeouts_for(purpose: str) -> Timeouts:
    word = purpose.split(" ", 1)[0]
    return TIMEOUTS.get(word, TIMEOUTS[DEFAULT_PURPOSE])


def describe(dsn: str) -> str:
    """A short, secret-free name for a server: user@host:port/dbname; a DSN that lists
    several hosts (libpq tries them in turn) reads user@host1:port1,host2:port2/dbname."""
    try:
        params = conninfo_to_dict(dsn)
        where = ",".join(f"{host}:{port}" for host, port in server_addresses(dsn))
    except (psycopg.ProgrammingError, ValueError):
        return mask_secrets(dsn)
    user = params.get("user")
    prefix = f"{user}@" if user else ""
    return f"{prefix}{where}/{params.get('dbname', '')}"


LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def server_addresses(dsn: str) -> tuple[tuple[str, int], ...]:
    """Every (host, port) a DSN may connect to, in libpq's order, with its defaults.

    libpq takes a comma-separated list of hosts (and of hostaddrs), and either one port
    for all of them or one port per host; with `target_session_attrs=read-write` it
    connects to whichever of them is the primary now. Raises ValueError for a port list
    that does not match the hosts."""
    params = conninfo_to_dict(dsn)
    hosts = (params.get("host") or params.get("hostaddr") or "localhost").split(",")
    ports = (params.get("port") or "5432").split(",")
    if len(ports) == 1:
        ports = ports * len(hosts)
    if len(ports) != len(hosts):
        raise ValueError(f"{len(hosts)} hosts but {len(ports)} ports")
    return tuple((host.strip() or "localhost", int(port.strip() or 5432)) for host, port in zip(hosts, ports,
                                                                                              strict=True))


def same_host(a: str, b: str) -> bool:
    return a == b or (a in LOCAL_HOSTS and b in LOCAL_HOSTS)


def same_server(a: str, b: str) -> bool:
    """Do two DSNs (or connection strings) name a server in common? A DSN that lists
    several hosts names each of them: a connection to any is to that server's cluster."""
    try:
        left, right = server_addresses(a), server_addresses(b)
    except (psycopg.ProgrammingError, ValueError):
        return False
    return any(same_host(h1, h2) and p1 == p2 for h1, p1 in left for h2, p2 in right)


def with_options(dsn: str, **params: Any) -> str:
    """The DSN with extra connection parameters (existing ones win)."""
    current = conninfo_to_dict(dsn)
    extra = {k: v for k, v in params.items() if k not in current and v is not None}
    return make_conninfo(dsn, **extra)


# -- driver errors that say where they happened ------------------------------------

_SIDE_ATTRIBUTE = "migrator_side"


def side_of(exc: BaseException) -> Side | None:
    """The side whose connection raised exc, if it was a side's connection."""
    return getattr(exc, _SIDE_ATTRIBUTE, None)


def _mark(exc: BaseException, side: Side | None) -> None:
    if side is not None and side_of(exc) is None:
        setattr(exc, _SIDE_ATTRIBUTE, side)
        exc.add_note(f"on the {side}")


class SideCursor(psycopg.Cursor):
    """A cursor whose driver errors carry its connection's side (type unchanged)."""

    def execute(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        try:
            return super().execute(*args, **kwargs)
        except psycopg.Error as exc:
            _mark(exc, getattr(self.connection, "side", None))
            raise

    def executemany(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        try:
            return super().executemany(*args, **kwargs)
        except psycopg.Error as exc:
            _mark(exc, getattr(self.connection, "side", None))
            raise


class SideConnection(psycopg.Connection):
    """A connection to one side of a move. `execute` goes through SideCursor; a
    failed COMMIT (a deferred constraint, a lost server) is marked here."""

    side: Side | None = None

    def commit(self) -> None:
        try:
            super().commit()
        except psycopg.Error as exc:
            _mark(exc, self.side)
            raise


_KEEP: Any = object()  # "from the purpose's row of TIMEOUTS"


GUARD_SETTING = "migrator.guard"   # names.GUARD_SETTING (names imports nothing of this module)


def conninfo_for(
    dsn: str,
    purpose: str = "",
    *,
    connect_timeout: int | None = _KEEP,
    statement_timeout_ms: int | None = _KEEP,
    lock_timeout_ms: int | None = _KEEP,
) -> str:
    """The DSN with the tool's application_name and the purpose's timeouts (a timeout
    given here wins over the table; a parameter the DSN sets itself wins over both)."""
    row = timeouts_for(purpose)
    connect_s = row.connect_s if connect_timeout is _KEEP else connect_timeout
    statement_ms = row.statement_ms if statement_timeout_ms is _KEEP else statement_timeout_ms
    lock_ms = row.lock_ms if lock_timeout_ms is _KEEP else lock_timeout_ms
    settings = [f"-c statement_timeout={statement_ms}" if statement_ms else None,
                f"-c lock_timeout={lock_ms}" if lock_ms else None,
                f"-c {GUARD_SETTING}=bypass" if row.guard_bypass else None]
    options = " ".join(s for s in settings if s) or None
    name = f"{APPLICATION_NAME} {purpose}".strip()
    return with_options(dsn, application_name=name, connect_timeout=connect_s, options=options)


def connect(
    dsn: str,
    *,
    side: Side | None = None,
    purpose: str = "",
    autocommit: bool = True,
    connect_timeout: int | None = _KEEP,
    statement_timeout_ms: int | None = _KEEP,
    lock_timeout_ms: int | None = _KEEP,
    **kwargs: Any,
) -> SideConnection:
    """Open a connection for `purpose` (see conninfo_for), or raise ServerUnreachable
    naming the side. Driver errors of its statements carry the side (see side_of)."""
    where = f"the {side} ({describe(dsn)})" if side is not None else describe(dsn)
    try:
        conninfo = conninfo_for(dsn, purpose, connect_timeout=connect_timeout,
                                statement_timeout_ms=statement_timeout_ms, lock_timeout_ms=lock_timeout_ms)
        conn = SideConnection.connect(conninfo, autocommit=autocommit, cursor_factory=SideCursor, **kwargs)
    except psycopg.Error as exc:
        raise ServerUnreachable(
            f"cannot connect to {where}: {first_line(exc)}",
            hint="check that the server is running and the DSN, role and password are right",
        ) from exc
    conn.side = side
    return conn


# SQLSTATEs of a server going away under a session: admin_shutdown (a fast or smart stop,
# pg_terminate_backend of a walsender's kin), crash_shutdown, cannot_connect_now (starting
# up, shutting down); class 08 is the connection's own failure.
_GONE = ("57P01", "57P02", "57P03")


def connection_lost(exc: BaseException) -> bool:
    """Did exc come from a server that stopped answering (a restart, a failover), rather
    than from what a statement asked for? A lost connection has no SQLSTATE of its own."""
    if isinstance(exc, ServerUnreachable):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = getattr(exc, "sqlstate", None)
    return state is None or state.startswith("08") or state in _GONE


def answers(dsn: str, connect_timeout: int = 2) -> bool:
    """Does the server of dsn accept a connection now?"""
    try:
        connect(dsn, purpose="probe", connect_timeout=connect_timeout).close()
        return True
    except ServerUnreachable:
        return False


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, secrets masked."""
    text = str(exc).strip().splitlines()
    return mask_secrets(text[0] if text else type(exc).__name__)


def server_words(exc: BaseException) -> str:
    """The server's message with its DETAIL (why), secrets masked: what a person needs to
    act on a refusal. The HINT (what to do) is `server_hint`."""
    diag = getattr(exc, "diag", None)
    detail = getattr(diag, "message_detail", None) if diag is not None else None
    words = first_line(exc)
    if detail:
        words += f" ({mask_secrets(' '.join(detail.split()))})"
    return words


def server_hint(exc: BaseException) -> str | None:
    diag = getattr(exc, "diag", None)
    hint = getattr(diag, "message_hint", None) if diag is not None else None
    return mask_secrets(" ".join(hint.split())) if hint else None


def describe_error(exc: BaseException) -> str:
    """A driver error as the user's one line: where it failed, then the server's words
    (its DETAIL too)."""
    side = side_of(exc)
    return f"on the {side}: {server_words(exc)}" if side is not None else server_words(exc)
