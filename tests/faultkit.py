"""What the fault and rollback tests share: the tool as a killable process, the
catalogs of a server as comparable data, and where PgBouncer routes right now.

`ToolProcess` runs `python -m migrator VERB PLAYBOOK --state URL` as a real process,
optionally held at a named point (MIGRATOR_TEST_PAUSE_AT, see migrator/testhooks.py)
so a test can SIGKILL it exactly there, or let it carry on (SIGUSR1).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg

from migrator.lab.sandbox import APP_DB, GROUP_ENTRY
from migrator.move.cutover import WATCHDOG_MARGIN
from migrator.pgbouncer.console import PgBouncerConsole
from migrator.testhooks import PAUSE_AT_ENV

REPO = Path(__file__).resolve().parent.parent


class ToolProcess:
    def __init__(self, demo, verb: str, *args: str, hold: str | None = None, log_dir: Path | None = None):
        self.verb = verb
        log_dir = log_dir or demo.path.parent
        stamp = f"{verb}-{time.monotonic_ns()}"
        self.out_path = log_dir / f"{stamp}.out"
        self.err_path = log_dir / f"{stamp}.err"
        env = {k: v for k, v in os.environ.items() if k != PAUSE_AT_ENV}
        if hold:
            env[PAUSE_AT_ENV] = hold
        env["COLUMNS"] = "200"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "migrator", verb, str(demo.path), "--state", demo.state_url, *args],
                stdout=out, stderr=err, env=env, cwd=REPO,
            )
        self.killed_at: float | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def output(self) -> str:
        return self.out_path.read_text(errors="replace") + self.err_path.read_text(errors="replace")

    def wait_held(self, timeout: float = 90) -> None:
        """Until the process says it holds at its point; fails if it ends first."""
        deadline = time.monotonic() + timeout
        while "holding at" not in self.err_path.read_text(errors="replace"):
            if self.process.poll() is not None:
                raise AssertionError(f"{self.verb} ended (exit {self.process.returncode}) before its "
                                     f"hold point:\n{self.output}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"{self.verb} did not reach its hold point in {timeout}s:\n{self.output}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM killer would: no cleanup of any kind."""
        if self.process.poll() is None:
            self.killed_at = time.monotonic()
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def release(self) -> None:
        os.kill(self.process.pid, signal.SIGUSR1)

    def wait(self, timeout: float = 120) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.verb} did not finish in {timeout}s:\n{self.output}") from None


def wait_for(predicate, *, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------- the pause's bound

# Seen from outside, a pause looks longer than the tool records it: SHOW DATABASES is
# polled every 20 ms, a client's gap spans a transaction on either side of the pause,
# and the machine running the tests is small and shared.
OBSERVED_SLACK = 1.0


def pause_bound(max_pause: float) -> float:
    """The longest a test may see the group's entry paused, whatever failed: max_pause
    plus the watchdog's margin (the product's promise: README "what happens when", DESIGN
    section 4), plus what observing it from outside adds."""
    return max_pause + WATCHDOG_MARGIN + OBSERVED_SLACK


# --------------------------------------------------------------------------- PgBouncer


def routes(move, entry: str = GROUP_ENTRY) -> list[tuple[str, bool]]:
    """(side, paused) of the group's entry on every PgBouncer, from SHOW DATABASES."""
    out = []
    for bouncer in move.pgbouncers:
        with PgBouncerConsole(bouncer.admin_dsn()) as console:
            db = console.databases()[entry]
        side = "target" if db.port == move.target.port else "source" if db.port == move.source.port else "?"
        out.append((side, db.paused))
    return out


def wait_unpaused(move, timeout: float) -> float:
    """Seconds until no PgBouncer has the group's entry paused."""
    started = time.monotonic()
    wait_for(lambda: not any(paused for _, paused in routes(move)), timeout=timeout, interval=0.02,
             what="PgBouncer to RESUME")
    return time.monotonic() - started


def config_texts(move) -> dict[str, str]:
    return {b.name: b.config_file.read_text() for b in move.pgbouncers}


# --------------------------------------------------------------------------- catalogs

_CATALOG_QUERIES = {
    "schemas": """
        SELECT n.nspname, pg_get_userbyid(n.nspowner),
               (SELECT array_agg(a::text ORDER BY a::text) FROM unnest(n.nspacl) a)
        FROM pg_namespace n WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
        ORDER BY 1""",
    "relations": """
        SELECT n.nspname, c.relname, c.relkind, pg_get_userbyid(c.relowner), c.relreplident, c.relpersistence,
               (SELECT array_agg(a::text ORDER BY a::text) FROM unnest(c.relacl) a)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
        ORDER BY 1, 2""",
    "columns": """
        SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid),
               (SELECT array_agg(x::text ORDER BY x::text) FROM unnest(a.attacl) x)
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm')
          AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
        ORDER BY 1, 2, 3""",
    "constraints": """
        SELECT n.nspname, c.relname, k.conname, pg_get_constraintdef(k.oid)
        FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2, 3""",
    "indexes": """
        SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2, 3""",
    "triggers": """
        SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal ORDER BY 1, 2""",
    "types": """
        SELECT n.nspname, t.typname, t.typtype, pg_get_userbyid(t.typowner),
               (SELECT array_agg(a::text ORDER BY a::text) FROM unnest(t.typacl) a),
               (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid)
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') ORDER BY 1, 2""",
    "functions": """
        SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), pg_get_userbyid(p.proowner),
               md5(p.prosrc), (SELECT array_agg(a::text ORDER BY a::text) FROM unnest(p.proacl) a)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2, 3""",
    "publications": """
        SELECT p.pubname, p.puballtables, p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate,
               (SELECT array_agg(t.schemaname || '.' || t.tablename ORDER BY 1)
                FROM pg_publication_tables t WHERE t.pubname = p.pubname)
        FROM pg_publication p ORDER BY 1""",
    "subscriptions": "SELECT subname, subenabled, subslotname, subpublications FROM pg_subscription ORDER BY 1",
    "slots": "SELECT slot_name, slot_type, plugin, database, temporary FROM pg_replication_slots ORDER BY 1",
    "replication_origins": "SELECT roname FROM pg_replication_origin ORDER BY 1",
    "roles": """
        SELECT r.rolname, r.rolsuper, r.rolcanlogin, r.rolreplication,
               (SELECT array_agg(g.rolname ORDER BY g.rolname) FROM pg_auth_members m
                JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid)
        FROM pg_roles r WHERE r.rolname NOT LIKE 'pg\\_%' ORDER BY 1""",
    "extensions": "SELECT extname, extversion FROM pg_extension ORDER BY 1",
    "event_triggers": "SELECT evtname, evtevent, evtenabled, evtfoid::regproc::text FROM pg_event_trigger ORDER BY 1",
    "default_acls": "SELECT defaclrole::regrole::text, defaclobjtype, defaclacl::text FROM pg_default_acl ORDER BY 1, 2",
}


def catalog_snapshot(dsn: str) -> dict[str, list[tuple]]:
    """Everything a move may create, drop or change in a database's catalogs (not data)."""
    with psycopg.connect(dsn) as conn:
        return {name: conn.execute(query).fetchall() for name, query in _CATALOG_QUERIES.items()}


def catalog_differences(before: dict, after: dict) -> dict[str, dict[str, list]]:
    out = {}
    for name in before:
        gone = [r for r in before[name] if r not in after[name]]
        new = [r for r in after[name] if r not in before[name]]
        if gone or new:
            out[name] = {"only before": gone, "only after": new}
    return out


def snapshot_everything(move) -> dict:
    return {
        "source": catalog_snapshot(move.source.dsn(APP_DB)),
        "target": catalog_snapshot(move.target.dsn(APP_DB)),
        "pgbouncer configs": config_texts(move),
    }


def assert_like_before(move, before: dict) -> None:
    after = snapshot_everything(move)
    for side in ("source", "target"):
        diff = catalog_differences(before[side], after[side])
        assert not diff, f"the {side}'s catalogs differ from before execute: {diff}"
    assert after["pgbouncer configs"] == before["pgbouncer configs"]


def leftover_slots(move) -> list[str]:
    found = []
    for cluster in (move.source, move.target):
        with psycopg.connect(cluster.dsn(APP_DB)) as conn:
            found += [f"{cluster.name}:{r[0]}" for r in conn.execute("SELECT slot_name FROM pg_replication_slots")]
    return found


@contextmanager
def unwritable(path: Path):
    """Make a file or directory impossible to replace or write, even for root (whom file
    modes do not stop): the immutable attribute, as `chattr +i` sets it."""
    if os.geteuid() != 0:
        target = path if path.is_dir() else path.parent  # a rename over the file needs the directory
        mode = target.stat().st_mode
        target.chmod(0o555)
        try:
            yield
        finally:
            target.chmod(mode)
        return
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        import pytest

        pytest.skip(f"cannot make {path} immutable here (chattr +i: {done.stderr.strip()})")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
