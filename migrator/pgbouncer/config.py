"""A PgBouncer config file's [databases] entries: read one, work out the value that
routes it to a side, rewrite one atomically.

The reroute replaces the file by renaming a new version over it, then RELOADs, so
PgBouncer never reads a half-written file.
"""

from __future__ import annotations

import os
import re
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from psycopg.conninfo import conninfo_to_dict

from migrator.errors import OperationFailed
from migrator.postgres.connection import Side

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


def entry_value(original: str, dsn: str) -> str:
    """The [databases] value routing to dsn's server, keeping the entry's other settings."""
    params = conninfo_to_dict(dsn)
    wanted = {"host": params.get("host") or "localhost", "port": str(params.get("port") or 5432)}
    if params.get("dbname"):
        wanted["dbname"] = params["dbname"]
    out, seen = [], set()
    for token in shlex.split(original):
        key, _, value = token.partition("=")
        if key in wanted:
            value = wanted[key]
            seen.add(key)
        out.append(f"{key}={shlex.quote(value) if ' ' in value else value}")
    out += [f"{k}={v}" for k, v in wanted.items() if k not in seen]
    return " ".join(out)


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
    remote = False   # commit is a rename here, not a command to wait for

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
    proof = write_beside(config_file, "".join(lines))
    try:
        os.replace(proof, config_file)
    except OSError as exc:
        proof.unlink(missing_ok=True)
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
