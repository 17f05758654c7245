"""A PgBouncer config file's [databases] entries: read one, work out the value that
routes it to a side, rewrite one atomically.

The reroute replaces the file by renaming a new version over it, then RELOADs, so
PgBouncer never reads a half-written file.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from psycopg.conninfo import conninfo_to_dict

from migrator.errors import OperationFailed
from migrator.postgres.connection import Side, describe, server_addresses

if TYPE_CHECKING:
    from migrator.playbook import Playbook

_SECTION = re.compile(r"^\s*\[(?P<name>[^\]]+)\]\s*$")
_ENTRY = re.compile(r"^(?P<indent>\s*)(?P<name>[^=;#\s]+)(?P<eq>\s*=\s*)(?P<value>.*?)\s*$")


def read_entry(config_file: Path, entry: str) -> str | None:
    """The connection string of a [databases] entry in a PgBouncer ini file."""
    for section, match in _entries(Path(config_file).read_text().splitlines()):
        if section == "databases" and match and match.group("name") == entry:
            return match.group("value")
    return None


# --------------------------------------------------------------------------- an entry's value
# PgBouncer reads `key=value` pairs of its own (loader.c, cstr_get_pair), not libpq's:
# keys such as pool_size, pool_mode, max_db_connections or auth_user are its own; a
# value ends at a space unless it is in single quotes, where '' is one quote; no
# backslash escapes; an empty value is an error. Only host, port and dbname say where
# an entry routes; a reroute rewrites those three and keeps every other pair as written.

class EntryError(OperationFailed, ValueError):
    """A [databases] value PgBouncer itself would refuse ("syntax error in connstring"),
    or one that cannot route to a DSN's server."""


@dataclass(frozen=True)
class EntrySetting:
    key: str
    value: str
    start: int        # where the pair is written in the entry's value, [start, end)
    end: int


def parse_entry(text: str) -> list[EntrySetting]:
    """The key=value pairs of a [databases] value, as PgBouncer reads them."""
    out, i, n = [], 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return out
        start = i
        while i < n and text[i] not in "= ":
            i += 1
        key = text[start:i]
        while i < n and text[i].isspace():
            i += 1
        if not key or i >= n or text[i] != "=":
            raise EntryError(f"not a PgBouncer connection string: expected key=value at {text[start:][:20]!r}")
        i += 1
        while i < n and text[i].isspace():
            i += 1
        if i < n and text[i] == "'":
            i += 1
            chars = []
            while True:
                if i >= n:
                    raise EntryError(f"not a PgBouncer connection string: unterminated quote in {key}=")
                if text[i] == "'":
                    if i + 1 < n and text[i + 1] == "'":
                        chars.append("'")
                        i += 2
                        continue
                    i += 1
                    break
                chars.append(text[i])
                i += 1
            value = "".join(chars)
        else:
            begin = i
            while i < n and text[i] != " ":
                i += 1
            value = text[begin:i]
        if not value:
            raise EntryError(f"not a PgBouncer connection string: {key}= has no value")
        out.append(EntrySetting(key, value, start, i))


def entry_settings(text: str) -> dict[str, str]:
    """key -> value of a [databases] value (a key given twice: PgBouncer keeps the last)."""
    return {setting.key: setting.value for setting in parse_entry(text)}


def quote_value(value: str) -> str:
    """A value as PgBouncer reads it back: quoted when it holds a space or a quote."""
    if value and not any(c.isspace() or c == "'" for c in value):
        return value
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class EntryRoute:
    """Where a [databases] value sends the entry's clients, with PgBouncer's defaults
    (port 5432; dbname the entry's own name)."""

    host: str | None
    port: int | None
    database: str

    @classmethod
    def of(cls, entry: str, text: str) -> EntryRoute:
        settings = entry_settings(text)
        port = settings.get("port", "5432")
        return cls(settings.get("host"), int(port) if port.isdigit() else None, settings.get("dbname") or entry)

    def points_at(self, dsn: str) -> bool:
        from migrator.pgbouncer.console import DatabaseEntry

        return DatabaseEntry(name="", host=self.host, port=self.port, database=self.database, paused=False,
                             disabled=False, current_connections=0).points_at(dsn)


def route_settings(dsn: str) -> dict[str, str]:
    """host, port and dbname of the one server a DSN names, as an entry spells them.

    PgBouncer has no failover between hosts: it round-robins a host list, so a DSN that
    lists several (libpq follows the primary among them) cannot be written into an entry."""
    addresses = server_addresses(dsn)
    if len(addresses) > 1:
        raise EntryError(
            f"{describe(dsn)} lists {len(addresses)} hosts: PgBouncer would round-robin them, not follow "
            "the primary",
            hint="give that side's DSN one address that always reaches its primary (a DNS name or a "
            "virtual IP that moves on failover)")
    params = conninfo_to_dict(dsn)
    (host, port), = addresses
    wanted = {"host": host, "port": str(port)}
    if params.get("dbname"):
        wanted["dbname"] = params["dbname"]
    return wanted


def entry_value(original: str, dsn: str) -> str:
    """The [databases] value routing to dsn's server: the original with its host, port and
    dbname changed, every other setting (pool_mode, pool_size, max_db_connections,
    auth_user, ...) kept exactly as written; what it did not say is added."""
    wanted = route_settings(dsn)
    out, last, seen = [], 0, set()
    for setting in parse_entry(original):
        out.append(original[last:setting.start])
        if setting.key in wanted:
            out.append(f"{setting.key}={quote_value(wanted[setting.key])}")
            seen.add(setting.key)
        else:
            out.append(original[setting.start:setting.end])
        last = setting.end
    text = "".join(out).strip()
    extra = " ".join(f"{k}={quote_value(v)}" for k, v in wanted.items() if k not in seen)
    return f"{text} {extra}".strip()


def entry_for_side(original: str, playbook: Playbook, side: Side) -> str:
    """The [databases] value routing to `side`. Back to the source it is the entry
    exactly as it was before the move, whatever spelling of the host the playbook's
    DSN uses: a full rollback leaves the config file as it found it."""
    return original if side == Side.SOURCE else entry_value(original, playbook.target.dsn)


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


# Two moves may reroute two entries of one config file at once (and a watchdog a third):
# each prepares its new version of the whole file before its pause and renames it into
# place inside it. Renamed blindly, the later version would put back the entry the
# earlier one had just changed. So every read-and-rename of a config file happens under
# an exclusive lock on its directory (flock: the file itself is replaced, the directory
# stays), and a commit whose file changed since it was prepared re-applies its one
# entry to what is there now. Waiting for the lock is bounded: a writer that hangs
# holding it must not hold a watchdog's resume.
LOCK_WAIT = 1.0


@contextmanager
def _directory_lock(path: Path) -> Iterator[None]:
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        yield  # no lock to be had here (a directory this user may not read): as before
        return
    try:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.005)
        yield
    finally:
        os.close(fd)


def _with_entry(text: str, config_file: Path, entry: str, value: str) -> tuple[str, str]:
    """(text with the entry's value replaced, the value it had)."""
    lines = text.splitlines(keepends=True)
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
    return "".join(out), old


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
    entry: str = ""
    value: str = ""
    base: str | None = None   # the file's text the new version was made from
    remote = False   # commit is a rename here, not a command to wait for

    def commit(self) -> None:
        with _directory_lock(self.config_file):
            if self.base is not None:
                current = self.config_file.read_text()
                if current != self.base:
                    # Another writer changed the file since: keep its change, apply ours to it.
                    text, _ = _with_entry(current, self.config_file, self.entry, self.value)
                    self.discard()
                    self.temporary = write_beside(self.config_file, text)
            os.replace(self.temporary, self.config_file)

    def discard(self) -> None:
        self.temporary.unlink(missing_ok=True)


def prepare_rewrite(config_file: Path, entry: str, value: str) -> PreparedRewrite:
    config_file = Path(config_file)
    with _directory_lock(config_file):
        text = config_file.read_text()
        new, old = _with_entry(text, config_file, entry, value)
        # A writable directory is not enough: an immutable file, or a sticky directory and
        # a file of another owner, refuse the rename itself. Renaming an identical copy
        # over the file proves the rename works while giving up is still free.
        proof = write_beside(config_file, text)
        try:
            os.replace(proof, config_file)
        except OSError as exc:
            proof.unlink(missing_ok=True)
            raise OperationFailed(f"cannot replace {config_file}: {exc.strerror}",
                                  hint="the tool rewrites the PgBouncer config file by renaming a new version "
                                  "over it: the file must be replaceable (not immutable, not read-only)") from exc
    return PreparedRewrite(config_file, write_beside(config_file, new), old, entry, value, text)


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
    return " ".join(f"{k}={quote_value(v)}" for k, v in route_settings(dsn).items())
