"""How one PgBouncer's group entry is rerouted: a file the tool rewrites, or commands.

Three ways, one interface (read the entry's current value; prepare a new one before the
pause; make it live inside the pause; write one outright, for recovery and the watchdog):

- `config_file`: the entry is rewritten in PgBouncer's own config file (renamed into
  place, config.PreparedRewrite);
- `include_file`: the same, in a small file of the tool's own that holds only the
  group's entries and that the main config pulls in with `%include`. Configuration
  management keeps owning the main file, and a PgBouncer restarted after the point of
  no return reads the new route from the include;
- `command`: the config is where the tool cannot write (another host, a container):
  `prepare` receives the new `[databases]` line on stdin before the pause, `activate`
  makes it live inside it, `show` (optional) prints the current value.

The tool RELOADs through the admin console after making an entry live, whichever way.
A route travels to the watchdog process as plain data (`orders()`, `route_from_orders`).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from migrator.errors import OperationFailed
from migrator.pgbouncer.config import (
    PreparedRewrite,
    prepare_rewrite,
    quote_value,
    read_entry,
    rewrite_entry,
)
from migrator.pgbouncer.fleet import all_or_raise
from migrator.postgres.connection import describe

if TYPE_CHECKING:
    from migrator.playbook import PgBouncerEntry, Playbook

PREPARE_TIMEOUT = 30.0   # before the pause: an ssh connection may take its time
SHOW_TIMEOUT = 10.0


class Prepared(Protocol):
    remote: bool          # commit runs a command (the cutover runs those in parallel)

    def commit(self) -> None: ...
    def discard(self) -> None: ...


class EntryRoute(Protocol):
    entry: str
    where: str            # for people: the file rewritten, or which command

    def read(self) -> str | None: ...
    def prepare(self, value: str) -> Prepared: ...
    def write(self, value: str) -> None: ...
    def orders(self) -> dict: ...


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class FileRoute:
    """The entry in an ini file the tool rewrites (the config itself, or its include)."""

    path: Path
    entry: str
    include: bool = False

    @property
    def where(self) -> str:
        return str(self.path)

    def read(self) -> str | None:
        return read_entry(self.path, self.entry)

    def prepare(self, value: str) -> PreparedRewrite:
        return prepare_rewrite(self.path, self.entry, value)

    def write(self, value: str) -> None:
        if self.read() != value:
            rewrite_entry(self.path, self.entry, value)

    def orders(self) -> dict:
        return {"kind": "file", "path": str(self.path), "entry": self.entry, "include": self.include}


_INCLUDE = re.compile(r"^\s*%include\s+(?P<path>\S.*?)\s*$")


def include_problem(config_file: Path, include_file: Path) -> str | None:
    """Why PgBouncer would not read include_file through config_file (None: it does)."""
    try:
        lines = Path(config_file).read_text().splitlines()
    except OSError as exc:
        return f"{config_file} cannot be read ({exc.strerror})"
    wanted = Path(include_file)
    for line in lines:
        match = _INCLUDE.match(line)
        if not match:
            continue
        found = Path(match.group("path").strip("'\""))
        if not found.is_absolute():
            found = Path(config_file).parent / found
        if os.path.normpath(found) == os.path.normpath(wanted if wanted.is_absolute()
                                                       else Path(config_file).parent / wanted):
            return None
    return f"{config_file} has no line `%include {include_file}`: PgBouncer would never read the new route"


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class CommandRoute:
    """The entry changed by the user's commands (ssh, kubectl exec, ...)."""

    entry: str
    admin_dsn: str
    prepare_command: str
    activate_command: str
    show_command: str | None = None
    timeout: float = 1.0

    @property
    def where(self) -> str:
        return f"command ({describe(self.admin_dsn)})"

    def _run(self, which: str, command: str, *, value: str | None, stdin: str | None, timeout: float) -> str:
        env = {**os.environ, "MIGRATOR_PGBOUNCER_ENTRY": self.entry, "MIGRATOR_COMMAND": which}
        if value is not None:
            env["MIGRATOR_ENTRY_VALUE"] = value
        # Its own session: on a timeout the whole group goes (an ssh under a shell
        # would otherwise keep the pipes open and the wait with them).
        process = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
        try:
            out, err = process.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise OperationFailed(f"PgBouncer {describe(self.admin_dsn)}: the {which} command did not finish "
                                  f"within {timeout:g}s") from None
        if process.returncode != 0:
            last = (err or out).strip().splitlines()[-1:] or ["no output"]
            raise OperationFailed(f"PgBouncer {describe(self.admin_dsn)}: the {which} command exited with "
                                  f"{process.returncode}: {last[0][:200]}")
        return out

    def read(self) -> str | None:
        if self.show_command:
            out = self._run("show", self.show_command, value=None, stdin=None, timeout=SHOW_TIMEOUT).strip()
            return out or None
        from migrator.pgbouncer.console import PgBouncerConsole

        with PgBouncerConsole(self.admin_dsn) as console:
            row = next((r for r in console.show("DATABASES") if r.get("name") == self.entry), None)
            config = console.config() if row is not None else {}
        return None if row is None else value_from_show(row, config)

    def prepare(self, value: str) -> PreparedCommand:
        self._run("prepare", self.prepare_command, value=value, stdin=f"{self.entry} = {value}\n",
                  timeout=PREPARE_TIMEOUT)
        return PreparedCommand(self, value)

    def activate(self, value: str) -> None:
        self._run("activate", self.activate_command, value=value, stdin=None, timeout=self.timeout)

    def write(self, value: str) -> None:
        self.prepare(value).commit()

    def orders(self) -> dict:
        return {"kind": "command", "entry": self.entry, "admin_dsn": self.admin_dsn,
                "prepare_command": self.prepare_command, "activate_command": self.activate_command,
                "show_command": self.show_command, "timeout": self.timeout}


# SHOW DATABASES column -> (the entry's key, the global setting it defaults to). A value
# equal to the global one may be the entry's own or inherited: either way it has that effect.
_SHOWN_OPTIONS = {
    "pool_size": ("pool_size", "default_pool_size"),
    "min_pool_size": ("min_pool_size", "min_pool_size"),
    "reserve_pool": ("reserve_pool", "reserve_pool_size"),
    "max_connections": ("max_db_connections", "max_db_connections"),
}


def value_from_show(row: dict, config: dict[str, str]) -> str:
    """An entry's [databases] value as far as SHOW DATABASES tells it: where it routes, its
    forced user, its own pool_mode, and the pool sizes and limits that differ from the
    global ones. Options the console does not show (auth_user, connect_query, ...) need
    the `show` command."""
    parts = [("host", row.get("host")), ("port", row.get("port")), ("dbname", row.get("database")),
             ("user", row.get("force_user")), ("pool_mode", row.get("pool_mode"))]
    for column, (key, default) in _SHOWN_OPTIONS.items():
        if row.get(column) is not None and str(row[column]) != config.get(default, str(row[column])):
            parts.append((key, row[column]))
    return " ".join(f"{key}={quote_value(str(value))}" for key, value in parts if value not in (None, ""))


@dataclass
class PreparedCommand:
    route: CommandRoute
    value: str
    remote = True

    def commit(self) -> None:
        self.route.activate(self.value)

    def discard(self) -> None:
        pass  # what prepare left is only live once activated; the next prepare replaces it


# --------------------------------------------------------------------------- choosing


def route_for(bouncer: PgBouncerEntry) -> EntryRoute:
    if bouncer.command is not None:
        c = bouncer.command
        return CommandRoute(bouncer.database, bouncer.admin_dsn, c.prepare, c.activate, c.show, c.timeout)
    if bouncer.include_file is not None:
        return FileRoute(bouncer.include_file, bouncer.database, include=True)
    assert bouncer.config_file is not None
    return FileRoute(bouncer.config_file, bouncer.database)


def route_from_orders(doc: dict) -> EntryRoute:
    if doc["kind"] == "command":
        return CommandRoute(doc["entry"], doc["admin_dsn"], doc["prepare_command"], doc["activate_command"],
                            doc.get("show_command"), float(doc.get("timeout") or 1.0))
    return FileRoute(Path(doc["path"]), doc["entry"], include=bool(doc.get("include")))


def original_entries(playbook: Playbook) -> dict[str, str]:
    """The current value of each PgBouncer's group entry, keyed by its route_key."""
    out = {}
    for bouncer, value in zip(playbook.pgbouncers,
                              all_or_raise([route_for(b).read for b in playbook.pgbouncers]), strict=True):
        if value is None:
            raise OperationFailed(f"{route_for(bouncer).where}: no [databases] entry {bouncer.database!r}")
        out[bouncer.route_key] = value
    return out
