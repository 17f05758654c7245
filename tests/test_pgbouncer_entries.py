"""Real PgBouncer configurations (issue 21): a [databases] entry with options of its own
is read by `plan` and kept by the reroute, both ways; the entry's pool mode is read and
session or statement pooling blocks unless the playbook opts in to closing session
clients."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from movekit import demo_move, wait_sides_identical

from migrator.cli import cli
from migrator.lab.sandbox import GROUP_ENTRY, MoveTopology
from migrator.pgbouncer.console import PgBouncerConsole

# The entry's own options: its pool mode (the PgBouncer's default is session, below), its
# pool sizes and limits, a quoted value. Only host, port and dbname may change.
OWN = "pool_mode=transaction pool_size=7 reserve_pool=2 max_db_connections=9 application_name='files app'"


def configure(move: MoveTopology, *, entry_options: str, default_mode: str = "session", users: str = "") -> None:
    """Rewrite the PgBouncer's config: the group's entry with options of its own, a global
    pool_mode, optionally a [users] section; then RELOAD."""
    config = move.pgbouncer.config_file
    text = config.read_text()
    line = f"{GROUP_ENTRY} = host=127.0.0.1 port={move.source.port} dbname=app"
    current = next(ln for ln in text.splitlines() if ln.startswith(f"{GROUP_ENTRY} ="))
    text = text.replace(current, f"{line} {entry_options}".strip())
    text = text.replace("pool_mode = transaction", f"pool_mode = {default_mode}")
    if users:
        text = text.replace("[pgbouncer]", f"[users]\n{users}\n\n[pgbouncer]")
    config.write_text(text)
    with PgBouncerConsole(move.pgbouncer.admin_dsn()) as console:
        console.reload()


def show(move: MoveTopology) -> dict:
    with PgBouncerConsole(move.pgbouncer.admin_dsn()) as console:
        row = next(r for r in console.show("DATABASES") if r["name"] == GROUP_ENTRY)
    return {k: row[k] for k in ("host", "port", "database", "pool_size", "reserve_pool", "max_connections",
                                "pool_mode")}


def plan_json(path) -> tuple[int, dict]:
    result = CliRunner().invoke(cli, ["plan", str(path), "--json"])
    return result.exit_code, json.loads(result.stdout)


def pool_findings(doc: dict) -> list[tuple[str, str]]:
    return [(f["level"], f["message"]) for f in doc["findings"] if f["code"] == "pgbouncer.pool_mode"]


@pytest.mark.timeout(120)
def test_an_entry_keeps_its_own_options_through_the_cutover_and_the_rollback(make_move, app_load, tmp_path):
    move = make_move()
    demo = demo_move(move, tmp_path, scale=1)
    configure(move, entry_options=OWN)
    before = move.pgbouncer.config_file.read_text()
    on_source = show(move)
    assert on_source == {"host": "127.0.0.1", "port": move.source.port, "database": "app", "pool_size": 7,
                         "reserve_pool": 2, "max_connections": 9, "pool_mode": "transaction"}

    code, doc = plan_json(demo.path)
    assert code == 0, [f["message"] for f in doc["blocking"]]
    bouncer = doc["pgbouncers"][0]
    assert bouncer["config_entry"].endswith(OWN)
    # The PgBouncer pools in session mode by default; the group's entry says transaction.
    assert (bouncer["pool_mode"], bouncer["pool_mode_from"]) == ("transaction",
                                                                 "the entry's own pool_mode=transaction")
    assert pool_findings(doc) == []

    with app_load(move, clients=4, rate=100):
        result = demo.cli("execute")
        assert result.exit_code == 0, result.output
    assert show(move) == {**on_source, "port": move.target.port}
    assert f"{GROUP_ENTRY} = host=127.0.0.1 port={move.target.port} dbname=app {OWN}\n" in \
        move.pgbouncer.config_file.read_text()
    wait_sides_identical(move)

    with app_load(move, clients=4, rate=100):
        result = demo.cli("rollback")
        assert result.exit_code == 0, result.output
    assert show(move) == on_source
    assert move.pgbouncer.config_file.read_text() == before


def test_plan_reads_the_entrys_pool_mode_and_blocks_what_cannot_pause(move, tmp_path):
    demo = demo_move(move, tmp_path, scale=0)

    # The entry's own pool_mode=session.
    configure(move, entry_options="pool_mode=session pool_size=30", default_mode="transaction")
    code, doc = plan_json(demo.path)
    assert code == 3
    ((level, message),) = pool_findings(doc)
    assert level == "block"
    assert "pools app_files in session mode (the entry's own pool_mode=session)" in message
    assert [f["code"] for f in doc["blocking"]] == ["pgbouncer.pool_mode"]   # the options are no problem

    # The opt-in: plan does not block, and says what the application must tolerate.
    playbook = demo.path.read_text()
    demo.path.write_text(playbook.replace("max_lag: 16MB", "max_lag: 16MB\n  session_clients: close"))
    code, doc = plan_json(demo.path)
    assert code == 0, doc["blocking"]
    ((level, message),) = pool_findings(doc)
    assert level == "warn" and "client connections are closed" in message
    assert doc["playbook"]["cutover"]["session_clients"] == "close"
    demo.path.write_text(playbook)

    # Session pooling inherited from the PgBouncer's default.
    configure(move, entry_options="pool_size=30", default_mode="session")
    code, doc = plan_json(demo.path)
    assert code == 3 and "(the global pool_mode = session)" in pool_findings(doc)[0][1]

    # A user's own pool_mode wins over the entry's: the app role pools in statement mode.
    configure(move, entry_options="pool_mode=transaction", default_mode="transaction",
              users="app = pool_mode=statement")
    code, doc = plan_json(demo.path)
    assert code == 3
    ((level, message),) = pool_findings(doc)
    assert level == "block" and "in statement mode (user app's own pool_mode=statement in [users])" in message


class SessionClients:
    """Clients that each keep one connection to the entry (session pooling) and commit a
    row of their own in a loop, recording each one only once its COMMIT returned; a lost
    connection is reopened, as an application that tolerates it does."""

    def __init__(self, dsn: str, clients: int = 4) -> None:
        import threading

        self.dsn, self.stop, self.committed, self.lost = dsn, threading.Event(), [], 0
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)

    def _run(self, index: int) -> None:
        import time

        import psycopg

        conn, n = None, 0
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(self.dsn, prepare_threshold=None, connect_timeout=10)
                n += 1
                name = f"session-{index}-{n}"
                conn.execute("INSERT INTO public.files (owner_id, name) VALUES (1, %s)", (name,))
                conn.commit()
                self.committed.append(name)
            except psycopg.Error:
                self.lost += 1
                if conn is not None:
                    conn.close()
                conn = None
            time.sleep(0.02)
        if conn is not None:
            conn.close()


def names_on(dsn: str) -> set[str]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM public.files WHERE name LIKE 'session-%'")}


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_session_pooling_aborts_naming_the_clients_and_with_the_opt_in_cuts_over_losing_no_row(make_move, tmp_path):
    """An entry PgBouncer pools in session mode, its clients holding their connections:
    without the opt-in the cutover aborts and says why (session mode, the clients kept);
    with cutover.session_clients: close it closes their connections after grace, they
    reconnect to the target, and every row they committed is on both sides."""
    from migrator.lab.sandbox import APP_DB

    move = make_move()
    demo = demo_move(move, tmp_path, scale=1, max_pause="1s", grace="300ms")
    playbook = demo.path.read_text()
    assert demo.cli("execute", "--until", "cutover").exit_code == 0
    # Session pooling from here on (the preflight, done, would have refused it).
    configure(move, entry_options="pool_mode=session", default_mode="transaction")
    with SessionClients(move.app_dsn(GROUP_ENTRY)) as clients:
        result = demo.cli("execute")
        assert result.exit_code == 1, result.output
        assert "cutover aborted before the point of no return" in result.output
        assert "pools app_files in session mode" in result.output and "kept their connection" in result.output
        assert "cutover.session_clients: close" in result.output, result.output

        demo.path.write_text(playbook.replace("max_lag: 16MB", "max_lag: 16MB\n  session_clients: close"))
        result = demo.cli("execute")
        assert result.exit_code == 0, result.output
        assert "session clients' connections" in result.output, result.output
        import time

        time.sleep(1.0)   # they reconnect and commit on the target
    assert clients.lost >= 1 and len(clients.committed) > 20, (clients.lost, len(clients.committed))
    wait_sides_identical(move)
    committed = set(clients.committed)
    assert committed <= names_on(move.target.dsn(APP_DB))
    assert committed <= names_on(move.source.dsn(APP_DB))   # reverse replication carries them back
    with PgBouncerConsole(move.pgbouncer.admin_dsn()) as console:
        entry = console.databases()[GROUP_ENTRY]
    assert entry.port == move.target.port and not entry.paused
