"""The PgBouncer admin console and its config file.

The console speaks only the simple query protocol and takes no parameters, so
commands are composed here from validated entry names, never from free text.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from migrator.dsn import connect, describe, first_line
from migrator.errors import OperationFailed, ServerUnreachable

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

    def points_at(self, dsn: str) -> bool:
        """Does this entry route to the server and database of dsn?"""
        params = conninfo_to_dict(dsn)
        host = params.get("host") or "localhost"
        port = int(params.get("port") or 5432)
        dbname = params.get("dbname")
        same_host = _same_host(self.host or "localhost", host)
        return same_host and self.port == port and (dbname is None or self.database == dbname)


def _same_host(a: str, b: str) -> bool:
    local = {"localhost", "127.0.0.1", "::1"}
    return a == b or (a in local and b in local)


def check_entry_name(name: str) -> str:
    if not _ENTRY_NAME.match(name):
        raise OperationFailed(f"pgbouncer database entry name {name!r} is not a plain identifier")
    return name


class PgBouncerConsole:
    """A connection to one PgBouncer's admin console (the `pgbouncer` database)."""

    def __init__(self, admin_dsn: str, *, connect_timeout: int = 3) -> None:
        self.admin_dsn = admin_dsn
        self.display = describe(admin_dsn)
        try:
            # The console rejects startup options such as statement_timeout.
            self.conn = connect(
                admin_dsn, connect_timeout=connect_timeout, statement_timeout_ms=None,
                purpose="pgbouncer-admin",
            )
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
        self.conn.close()

    def command(self, text: str) -> None:
        try:
            self.conn.execute(text)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise OperationFailed(f"PgBouncer {self.display}: {text} failed: {first_line(exc)}") from exc

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
            )
        return entries

    def pause(self, entry: str) -> None:
        """PAUSE one entry: returns once its in-flight transactions have finished."""
        self.command(f"PAUSE {check_entry_name(entry)}")

    def resume(self, entry: str) -> None:
        try:
            self.command(f"RESUME {check_entry_name(entry)}")
        except OperationFailed as exc:
            # RESUME of an entry that is not paused is an error in PgBouncer; for us
            # the wanted state is reached either way.
            if "not paused" not in str(exc):
                raise

    def reload(self) -> None:
        self.command("RELOAD")

    def kill_connections(self, entry: str) -> None:
        self.command(f"KILL {check_entry_name(entry)}")


# --------------------------------------------------------------------------- config file

_SECTION = re.compile(r"^\s*\[(?P<name>[^\]]+)\]\s*$")
_ENTRY = re.compile(r"^(?P<indent>\s*)(?P<name>[^=;#\s]+)(?P<eq>\s*=\s*)(?P<value>.*?)\s*$")


def read_entry(config_file: Path, entry: str) -> str | None:
    """The connection string of a [databases] entry in a PgBouncer ini file."""
    for section, match in _entries(Path(config_file).read_text().splitlines()):
        if section == "databases" and match and match.group("name") == entry:
            return match.group("value")
    return None


def _entries(lines: list[str]):
    section = None
    for line in lines:
        head = _SECTION.match(line)
        if head:
            section = head.group("name").strip().lower()
            yield section, None
            continue
        stripped = line.strip()
        if not stripped or stripped[0] in ";#":
            yield section, None
            continue
        yield section, _ENTRY.match(line)


def rewrite_entry(config_file: Path, entry: str, value: str) -> str:
    """Replace one [databases] entry's connection string, atomically; returns the old one."""
    prepared = prepare_rewrite(config_file, entry, value)
    prepared.commit()
    return prepared.old_value


@dataclass
class PreparedRewrite:
    """A config file's new version, written and fsynced beside it, waiting for a rename.

    Preparing before the pause costs nothing inside it and proves that the directory
    is writable while giving up is still free; the rename itself is atomic, so a
    RELOAD never reads a half-written file.
    """

    config_file: Path
    temporary: Path
    old_value: str

    def commit(self) -> None:
        os.replace(self.temporary, self.config_file)

    def discard(self) -> None:
        self.temporary.unlink(missing_ok=True)


def prepare_rewrite(config_file: Path, entry: str, value: str) -> PreparedRewrite:
    config_file = Path(config_file)
    lines = config_file.read_text().splitlines(keepends=True)
    old = None
    out = []
    for line, (section, match) in zip(lines, _entries([ln.rstrip("\n") for ln in lines]), strict=True):
        if section == "databases" and match and match.group("name") == entry and old is None:
            old = match.group("value")
            out.append(f"{match.group('indent')}{entry}{match.group('eq')}{value}\n")
        else:
            out.append(line)
    if old is None:
        raise OperationFailed(f"{config_file}: no [databases] entry {entry!r} to rewrite")
    # A writable directory is not enough: an immutable file, or a sticky directory and
    # a file of another owner, refuse the rename itself. Renaming an identical copy
    # over the file proves the rename works while giving up is still free.
    try:
        os.replace(write_beside(config_file, "".join(lines)), config_file)
    except OSError as exc:
        raise OperationFailed(f"cannot replace {config_file}: {exc.strerror}",
                              hint="the tool rewrites the PgBouncer config file by renaming a new version "
                              "over it: the file must be replaceable (not immutable, not read-only)") from exc
    return PreparedRewrite(config_file, write_beside(config_file, "".join(out)), old)


def write_beside(path: Path, text: str) -> Path:
    """Write text to a new file in path's directory with path's owner and mode, fsynced."""
    stat = path.stat()
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OperationFailed(f"cannot write beside {path}: {exc.strerror}",
                              hint="the tool rewrites the PgBouncer config file by rename: "
                              "its directory must be writable") from exc
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, stat.st_mode & 0o7777)
        try:
            os.chown(tmp, stat.st_uid, stat.st_gid)
        except PermissionError:
            pass
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def write_atomically(path: Path, text: str) -> None:
    os.replace(write_beside(path, text), path)


def entry_for(dsn: str) -> str:
    """The [databases] connection string that routes to the server of a DSN (no secrets:
    PgBouncer authenticates to the server with its own auth_file / auth_query)."""
    params = conninfo_to_dict(dsn)
    parts = [
        f"host={params.get('host') or 'localhost'}",
        f"port={params.get('port') or 5432}",
        f"dbname={params['dbname']}" if params.get("dbname") else "",
    ]
    return " ".join(p for p in parts if p)
