"""The PgBouncer admin console.

The console speaks only the simple query protocol and takes no parameters, so
commands are composed here from validated entry names, never from free text.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

from migrator.errors import OperationFailed, ServerUnreachable
from migrator.postgres.connection import connect, describe, first_line, same_host, server_addresses

# PgBouncer's own rule for database names in the console is looser, but an entry
# we PAUSE/RESUME by name must not need quoting: refuse anything else up front.
_ENTRY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.$-]*$")


@dataclass(frozen=True)
class DatabaseEntry:
    """One row of SHOW DATABASES: where a [databases] entry routes to right now."""

    name: str
    host: str | None
    port: int | None
    database: str | None
    paused: bool
    disabled: bool
    current_connections: int
    # The entry's own pool_mode (None: it inherits the user's or the global one), and
    # the user every server connection of the entry logs in as (`user=` in the entry).
    pool_mode: str | None = None
    force_user: str | None = None

    def points_at(self, dsn: str) -> bool:
        """Does this entry route to the server and database of dsn? A DSN that lists
        several hosts is any of them (it follows whichever is the primary); an entry that
        lists several hosts (PgBouncer round-robins them) must have each among them."""
        try:
            addresses = server_addresses(dsn)
        except ValueError:
            return False
        dbname = conninfo_to_dict(dsn).get("dbname")
        hosts = [h.strip() for h in (self.host or "localhost").split(",")]
        return (all(any(same_host(host, h) and self.port == p for h, p in addresses) for host in hosts)
                and (dbname is None or self.database == dbname))


def check_entry_name(name: str) -> str:
    if not _ENTRY_NAME.match(name):
        raise OperationFailed(f"pgbouncer database entry name {name!r} is not a plain identifier")
    return name


def pause_command(entry: str) -> str:
    return f"PAUSE {check_entry_name(entry)}"


def resume_command(entry: str) -> str:
    return f"RESUME {check_entry_name(entry)}"


def already_resumed(error: BaseException) -> bool:
    """RESUME of an entry that is not paused is an error in PgBouncer; for us the wanted
    state is reached either way."""
    return "not paused" in str(error)


class PgBouncerConsole:
    """A connection to one PgBouncer's admin console (the `pgbouncer` database)."""

    def __init__(self, admin_dsn: str, *, connect_timeout: int = 3) -> None:
        self.admin_dsn = admin_dsn
        self.display = describe(admin_dsn)
        self._guard = threading.Lock()
        self._running = 0
        self._close_after = False
        self._sent = ""
        try:
            # The console rejects startup options such as statement_timeout: its row
            # of TIMEOUTS sets none.
            # No prepared statements either: after a few runs of one SHOW psycopg would
            # prepare it, and the console speaks only the simple protocol.
            self.conn = connect(admin_dsn, connect_timeout=connect_timeout, purpose="pgbouncer-admin",
                                prepare_threshold=None)
        except ServerUnreachable as exc:
            raise ServerUnreachable(
                f"PgBouncer admin console {self.display} unreachable: {exc.message.split(': ', 1)[-1]}",
                hint="check that PgBouncer runs and admin_dsn's user is in admin_users",
            ) from exc

    def __enter__(self) -> PgBouncerConsole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close now, or, while another thread still waits in a command on it (a PAUSE the
        cutover gave up on), once that command returns: freeing a connection libpq is
        using in another thread crashes the process."""
        with self._guard:
            if self._running:
                self._close_after = True
                return
        self.conn.close()

    def command(self, text: str) -> None:
        with self._guard:
            self._running += 1
        try:
            self.conn.execute(text)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise OperationFailed(f"PgBouncer {self.display}: {text} failed: {first_line(exc)}") from exc
        finally:
            with self._guard:
                self._running -= 1
                close = self._close_after and not self._running
            if close:
                self.conn.close()

    # -- one command on many consoles at once (fleet.command_all): send now, answer later.
    # No thread waits inside libpq for these, so close() may close a console whose
    # answer never came (a PAUSE given up on): PgBouncer stays paused until a RESUME.

    def fileno(self) -> int:
        return self.conn.pgconn.socket

    def send(self, text: str) -> None:
        """Send a command without waiting for its answer (`receive` collects it)."""
        self._sent = text
        try:
            self.conn.pgconn.send_query(text.encode())
        except psycopg.Error as exc:
            raise OperationFailed(f"PgBouncer {self.display}: {text} failed: {first_line(exc)}") from exc

    def receive(self) -> bool:
        """Read what has arrived of the answer to `send`: True once it is complete.
        Call when the socket is readable; raises OperationFailed for an error answer."""
        pgconn = self.conn.pgconn
        error = None
        try:
            pgconn.consume_input()
            if pgconn.is_busy():
                return False
            while (result := pgconn.get_result()) is not None:
                if result.status == pq.ExecStatus.FATAL_ERROR:
                    error = result.get_error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or result.error_message
        except psycopg.Error as exc:
            error = first_line(exc)
        if error is not None:
            text = error.decode(errors="replace") if isinstance(error, bytes) else str(error)
            raise OperationFailed(f"PgBouncer {self.display}: {self._sent} failed: {text.strip()}")
        return True

    def show(self, what: str) -> list[dict]:
        try:
            cur = self.conn.execute(f"SHOW {what}")  # type: ignore[arg-type]
            names = [c.name for c in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        except psycopg.Error as exc:
            raise OperationFailed(f"PgBouncer {self.display}: SHOW {what} failed: {first_line(exc)}") from exc

    def version(self) -> str:
        rows = self.show("VERSION")
        return str(next(iter(rows[0].values()))) if rows else "unknown"

    def databases(self) -> dict[str, DatabaseEntry]:
        entries = {}
        for row in self.show("DATABASES"):
            entries[row["name"]] = DatabaseEntry(
                name=row["name"],
                host=row.get("host"),
                port=int(row["port"]) if row.get("port") is not None else None,
                database=row.get("database"),
                paused=bool(int(row.get("paused") or 0)),
                disabled=bool(int(row.get("disabled") or 0)),
                current_connections=int(row.get("current_connections") or 0),
                pool_mode=row.get("pool_mode") or None,
                force_user=row.get("force_user") or None,
            )
        return entries

    def users(self) -> dict[str, str | None]:
        """SHOW USERS: each user of the [users] section (and every one seen) with its own
        pool_mode (None: it inherits the entry's or the global one)."""
        return {row["name"]: row.get("pool_mode") or None for row in self.show("USERS")}

    def config(self) -> dict[str, str]:
        """SHOW CONFIG: every [pgbouncer] setting as PgBouncer runs it now."""
        return {str(row["key"]): str(row["value"]) for row in self.show("CONFIG")}

    def pause(self, entry: str) -> None:
        """PAUSE one entry: returns once its in-flight transactions have finished."""
        self.command(pause_command(entry))

    def resume(self, entry: str) -> None:
        try:
            self.command(resume_command(entry))
        except OperationFailed as exc:
            if not already_resumed(exc):
                raise

    def reload(self) -> None:
        self.command("RELOAD")

    def kill_connections(self, entry: str) -> None:
        self.command(f"KILL {check_entry_name(entry)}")
