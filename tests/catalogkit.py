"""What the acceptance tests of the catalog reader and the steps-as-data contract share.

- `CatalogMove`: a move of a hand-written group on a MoveTopology, driven through the
  real CLI in a subprocess with a timeout, so a step that waits forever fails the test
  instead of hanging it;
- `rows` / `wait_rows_identical`: `SELECT * ... ORDER BY pk` on both sides, compared
  row by row (independent of `migrator verify`);
- `Writer`: a small background load through PgBouncer, bounded in iterations;
- `sql_events` / `planned_sql` / `same_sql`: the event log's SQL per step and the SQL a
  plan or a dry run shows, compared in order;
- `module_topology`: one MoveTopology for a whole module, for tests that can share it.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from migrator.lab.sandbox import APP_DB, GROUP_ENTRY, MoveTopology
from migrator.move.state import StateStore
from migrator.playbook import TableName, load_playbook

REPO = Path(__file__).resolve().parent.parent
CLI_TIMEOUT = 90.0


# --------------------------------------------------------------------------- the CLI


@dataclass
class Ran:
    args: list[str]
    code: int | None          # None: killed after the timeout
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def timed_out(self) -> bool:
        return self.code is None

    def json(self) -> dict:
        return json.loads(self.stdout or "{}")

    def why(self) -> str:
        """The last lines of the output, for an assertion message."""
        head = f"`migrator {' '.join(self.args[:1] + self.args[2:])}` "
        head += (f"did not finish in {self.seconds:.0f}s (killed)" if self.timed_out
                 else f"exited {self.code} after {self.seconds:.1f}s")
        try:  # a JSON document (plan --json): its blocking findings, not its last lines
            blocking = json.loads(self.stdout).get("blocking")
        except (ValueError, AttributeError):
            blocking = None
        if blocking:
            return f"{head}, blocking:\n" + "\n".join(
                f"{b['code']} {b['subject']}: {b['message']}" for b in blocking)
        tail = "\n".join(self.output.strip().splitlines()[-15:])
        return f"{head}:\n{tail}"


def run_cli(*args: str, timeout: float = CLI_TIMEOUT) -> Ran:
    """`python -m migrator ARGS` in its own process group; killed (the whole group)
    after `timeout` seconds."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "250", "NO_COLOR": "1"}
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "migrator", *args], cwd=REPO, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        code = None
    return Ran(list(args), code, out, err, time.monotonic() - started)


@dataclass
class CatalogMove:
    """A playbook over `tables` on a MoveTopology, with its own state file."""

    move: MoveTopology
    path: Path
    state_url: str
    tables: list[TableName]

    @property
    def name(self) -> str:
        return load_playbook(self.path).name

    def run(self, verb: str, *args: str, timeout: float = CLI_TIMEOUT) -> Ran:
        """A verb that keeps state (execute, rollback, status)."""
        return run_cli(verb, str(self.path), "--state", self.state_url, *args, timeout=timeout)

    def plan(self, *args: str, timeout: float = 60) -> Ran:
        return run_cli("plan", str(self.path), *args, timeout=timeout)

    def verify(self, *args: str, timeout: float = 60) -> Ran:
        return run_cli("verify", str(self.path), *args, timeout=timeout)

    def store(self) -> StateStore:
        return StateStore(self.state_url)


def catalog_move(move: MoveTopology, directory: Path, ddl: str, tables: list[str], *,
                 name: str = "catalog-move") -> CatalogMove:
    """Run `ddl` on the source's app database and write a playbook for `tables`."""
    with psycopg.connect(move.source.dsn(APP_DB), autocommit=True) as conn:
        conn.execute(ddl)
    doc = move.playbook_doc(tables, name=name)
    path = move.write_playbook(directory / "playbook.yaml", doc)
    return CatalogMove(move, path, f"sqlite:///{directory / 'state.db'}", [TableName.parse(t) for t in tables])


def on_both(move: MoveTopology, statement: str) -> None:
    """Cluster-wide things (roles) that must exist on both servers before a move."""
    for cluster in (move.source, move.target):
        with psycopg.connect(cluster.dsn(APP_DB), autocommit=True) as conn:
            conn.execute(statement)


# --------------------------------------------------------------------------- rows


def primary_key(conn: psycopg.Connection, table: TableName) -> list[str]:
    rows = conn.execute(
        """
        SELECT a.attname FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
        WHERE i.indrelid = to_regclass(%s) AND i.indisprimary
        ORDER BY array_position(i.indkey, a.attnum)
        """, (table.qualified,)).fetchall()
    assert rows, f"{table} has no primary key on {conn.info.port}"
    return [r[0] for r in rows]


def rows(dsn: str, table: TableName) -> list[tuple]:
    """Every row, `SELECT * ... ORDER BY pk`, values as psycopg loads them (text for
    types it does not know, such as composites: compared as the server prints them)."""
    with psycopg.connect(dsn) as conn:
        key = primary_key(conn, table)
        query = sql.SQL("SELECT * FROM {} ORDER BY {}").format(
            table.identifier, sql.SQL(", ").join(sql.Identifier(k) for k in key))
        return conn.execute(query).fetchall()


def first_difference(source: list[tuple], target: list[tuple]) -> str:
    for i, (a, b) in enumerate(zip(source, target)):
        if a != b:
            return f"row {i}: source {a!r} target {b!r}"
    return f"source has {len(source)} rows, target {len(target)}"


def wait_rows_identical(move: MoveTopology, tables: list[TableName], timeout: float = 30) -> dict[str, int]:
    """Both sides hold the same rows, once replication (either way) has caught up."""
    deadline = time.monotonic() + timeout
    while True:
        counts, differences = {}, []
        for table in tables:
            source = rows(move.source.dsn(APP_DB), table)
            target = rows(move.target.dsn(APP_DB), table)
            counts[table.qualified] = len(source)
            if source != target:
                differences.append(f"{table}: {first_difference(source, target)}")
        if not differences:
            return counts
        if time.monotonic() > deadline:
            raise AssertionError("the sides differ: " + "; ".join(differences))
        time.sleep(0.3)


def query_both(move: MoveTopology, query: str, params=()) -> tuple[list[tuple], list[tuple]]:
    out = []
    for cluster in (move.source, move.target):
        with psycopg.connect(cluster.dsn(APP_DB)) as conn:
            out.append(conn.execute(query, params).fetchall())
    return out[0], out[1]


# --------------------------------------------------------------------------- load


@dataclass
class Writer:
    """One client writing through PgBouncer (the group's entry, as the app) until
    stopped or `max_iterations` are done; `write(conn, i)` is one autocommit iteration."""

    dsn: str
    write: object
    max_iterations: int = 1500
    interval: float = 0.01
    done: int = 0
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="catalogkit-writer")

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> Writer:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "the writer is stuck (a PgBouncer left paused?)"
        return self

    def _loop(self) -> None:
        conn = None
        for i in range(self.max_iterations):
            if self._stop.is_set():
                break
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = psycopg.connect(self.dsn, autocommit=True, prepare_threshold=None, connect_timeout=5)
                self.write(conn, i)
                self.done += 1
            except psycopg.Error as exc:
                self.failures.append(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}")
                if conn is not None:
                    conn.close()
                conn = None
            self._stop.wait(self.interval)
        if conn is not None:
            conn.close()


def writer(move: MoveTopology, write, **kwargs) -> Writer:
    return Writer(move.app_dsn(GROUP_ENTRY), write, **kwargs)


# --------------------------------------------------------------------------- SQL as data


def all_events(state_url: str, move_name: str) -> list:
    store = StateStore(state_url)
    try:
        return store.events(move_name, limit=1_000_000)
    finally:
        store.close()


def sql_events(events: list, step: str) -> list[str]:
    """The SQL texts the event log recorded for one step, in order."""
    return [e.sql for e in events if e.kind == "sql" and e.step == step]


def planned_sql(step_doc: dict) -> list[str]:
    """The SQL of a plan's (or a dry run's) step that runs on a server, in order."""
    return [s["sql"] for s in step_doc["statements"] if s["on"] in ("source", "target")]


def _is_index_build(text: str) -> bool:
    head = text.lstrip().upper()
    return head.startswith("CREATE INDEX") or head.startswith("CREATE UNIQUE INDEX")


def parallel_runs_sorted(texts: list[str]) -> list[str]:
    """Index builds run in parallel (up to 4 at a time) and are recorded as each one
    finishes: within a run of consecutive builds, order is not part of the contract."""
    out: list[str] = []
    run: list[str] = []
    for text in [*texts, None]:
        if text is not None and _is_index_build(text):
            run.append(text)
            continue
        out += sorted(run)
        run = []
        if text is not None:
            out.append(text)
    return out


def same_sql(shown: list[str], ran: list[str], what: str) -> None:
    """`shown` (plan / dry run) and `ran` (event log) are the same statements, in order."""
    a, b = parallel_runs_sorted(shown), parallel_runs_sorted(ran)
    if a == b:
        return
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            where = f"statement {i}: shown {x!r}\n    but ran {y!r}"
            break
    else:
        longer, which = (a, "shown, never ran") if len(a) > len(b) else (b, "ran, never shown")
        where = f"statement {min(len(a), len(b))} {which}: {longer[min(len(a), len(b))]!r}"
    raise AssertionError(f"{what}: {len(a)} statements shown, {len(b)} ran; first difference at {where}")


# --------------------------------------------------------------------------- a shared topology


@contextmanager
def module_topology(workdir: Path, templates, label: str, *, pgbouncers: int = 1):
    """A MoveTopology for a whole module (either back-end), stopped and removed after."""
    import pytest
    from conftest import PASSWORD, backend_choice

    from migrator.lab import topology
    from migrator.lab.sandbox import build_move_topology

    root = workdir / f"{label}-{secrets.token_hex(3)}"
    choice = backend_choice()
    if choice.name == "testcontainers":
        from migrator.lab.containers import build_container_move

        if choice.unusable:
            pytest.skip(choice.unusable)

        move = build_container_move(root, pgbouncers=pgbouncers, password=PASSWORD)
    else:
        move = build_move_topology(root, pgbouncers=pgbouncers, password=PASSWORD,
                                   templates={None: templates(None)})
    try:
        yield move
    finally:
        move.topology.stop()
        if getattr(move.topology, "root", None) is not None:
            topology.remove_tree(move.topology.root)
