"""Many moves between the same two servers, one after another and at the same time,
and replication that fails loudly instead of waiting forever (issue 14).

Each move publishes its own marker table: nothing one move leaves on either side (its
marker rows, its reverse subscription, its tables on the target) is in another move's
publication, so another move's initial copy and apply never touch it.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
from faultkit import ToolProcess
from movekit import DemoMove, demo_move, wait_sides_identical

from migrator.lab.sandbox import APP_DB, GROUP_TABLES
from migrator.pgbouncer.console import PgBouncerConsole

USERS_TABLES = ("public.teams", "public.users")
USERS_ENTRY = "app_users"


def add_entry(move, entry: str) -> None:
    """A [databases] entry dedicated to another group, routed to the source, on every PgBouncer."""
    for bouncer in move.pgbouncers:
        text = bouncer.config_file.read_text()
        line = f"{entry} = host={move.source.host} port={move.source.port} dbname={APP_DB}\n"
        bouncer.config_file.write_text(text.replace("[databases]\n", "[databases]\n" + line, 1))
        with PgBouncerConsole(bouncer.admin_dsn()) as console:
            console.reload()


def second_move(move, directory: Path, *, tables=USERS_TABLES, entry: str = USERS_ENTRY,
                name: str = "users-partition") -> DemoMove:
    """A move of another group of the demo schema, through its own PgBouncer entry."""
    directory.mkdir(parents=True, exist_ok=True)
    add_entry(move, entry)
    doc = move.playbook_doc(tables, name=name)
    for bouncer in doc["pgbouncers"]:
        bouncer["database"] = entry
    path = move.write_playbook(directory / "playbook.yaml", doc)
    return DemoMove(move, path, f"sqlite:///{directory / 'state.db'}")


def marker_tables(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'migrator' ORDER BY 1")]


def test_moves_one_after_another_after_a_cutover_and_after_complete(make_move, app_load, tmp_path):
    move = make_move()
    (tmp_path / "files").mkdir()
    first = demo_move(move, tmp_path / "files", scale=1)
    with app_load(move, clients=4, rate=100):
        assert first.cli("execute").exit_code == 0
    wait_sides_identical(move)

    # A second group while the first one's reverse replication runs.
    users = second_move(move, tmp_path / "users")
    started = time.monotonic()
    with app_load(move, entry=USERS_ENTRY, mix="app", clients=4, rate=100) as load:
        result = users.cli("execute")
        assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 60
    assert load.result().transactions > 50
    wait_sides_identical(move, USERS_TABLES)
    assert marker_tables(move.target.dsn(APP_DB)) == ["sync_marker_files_partition", "sync_marker_users_partition"]

    # The first move completed: its marker table goes, the second's stays.
    assert first.cli("complete").exit_code == 0
    assert marker_tables(move.source.dsn(APP_DB)) == ["sync_marker_users_partition"]

    # A third group after that complete: a table of its own.
    with psycopg.connect(move.source.dsn(APP_DB), autocommit=True) as conn:
        conn.execute("CREATE TABLE public.audit (id bigserial PRIMARY KEY, what text NOT NULL); "
                     "INSERT INTO public.audit (what) SELECT 'x' || g FROM generate_series(1, 500) g; "
                     "GRANT SELECT, INSERT ON public.audit TO app; GRANT USAGE ON SEQUENCE public.audit_id_seq TO app")
    audit = second_move(move, tmp_path / "audit", tables=("public.audit",), entry="app_audit", name="audit-partition")
    # (The load now runs on the completed first group, which no longer replicates back.)
    with app_load(move, clients=4, rate=100), app_load(move, entry=USERS_ENTRY, mix="app", clients=2, rate=50):
        result = audit.cli("execute")
        assert result.exit_code == 0, result.output
    wait_sides_identical(move, ("public.audit",))
    wait_sides_identical(move, USERS_TABLES)


def test_two_moves_at_once(make_move, app_load, tmp_path):
    move = make_move()
    (tmp_path / "files").mkdir()
    files = demo_move(move, tmp_path / "files", scale=1)
    users = second_move(move, tmp_path / "users")
    with app_load(move, clients=4, rate=100) as on_files, \
            app_load(move, entry=USERS_ENTRY, mix="app", clients=4, rate=100) as on_users:
        runs = [ToolProcess(files, "execute"), ToolProcess(users, "execute")]
        codes = [run.wait(80) for run in runs]
        assert codes == [0, 0], [run.output for run in runs]
    assert on_files.result().failures == 0 and on_users.result().failures == 0
    wait_sides_identical(move, GROUP_TABLES)
    wait_sides_identical(move, USERS_TABLES)
    for demo in (files, users):
        code, status = demo.cli_json("status")
        assert status["routes"][0]["points_to"] == "target", status


def test_a_conflicting_row_on_the_target_stops_the_copy_with_the_servers_message(make_move, tmp_path):
    move = make_move()
    demo = demo_move(move, tmp_path, scale=1)
    assert demo.cli("execute", "--until", "replicate").exit_code == 0
    with psycopg.connect(move.target.dsn(APP_DB), autocommit=True) as conn:
        conn.execute("INSERT INTO public.files (id, owner_id, name) VALUES (1, 1, 'in the way')")
    started = time.monotonic()
    result = demo.cli("execute", "--until", "rebuild-indexes")
    took = time.monotonic() - started
    assert result.exit_code == 1, result.output
    assert 'duplicate key value violates unique constraint "files_pkey"' in result.output
    assert "Key (id)=(1) already exists" in result.output
    assert took < 20, f"the copy's failure took {took:.1f}s to be reported"


def test_an_apply_error_stops_the_move_before_any_pause_with_the_servers_message(make_move, tmp_path):
    move = make_move()
    demo = demo_move(move, tmp_path, scale=1)
    assert demo.cli("execute", "--until", "rebuild-indexes").exit_code == 0
    with psycopg.connect(move.target.dsn(APP_DB), autocommit=True) as conn:
        # Past the write fence on purpose, as replication passes it (a superuser may).
        conn.execute("SET session_replication_role = replica")
        conn.execute("INSERT INTO public.files (id, owner_id, name) VALUES (999999, 1, 'in the way')")
    with psycopg.connect(move.source.dsn(APP_DB), autocommit=True) as conn:
        conn.execute("INSERT INTO public.files (id, owner_id, name) VALUES (999999, 1, 'replicated')")
    started = time.monotonic()
    # The lag gate or, if the worker had not failed yet, the cutover's warm-up marker
    # (before PAUSE) sees the worker fail.
    result = demo.cli("execute")
    took = time.monotonic() - started
    assert result.exit_code == 1, result.output
    assert 'duplicate key value violates unique constraint "files_pkey"' in result.output
    assert "Key (id)=(999999) already exists" in result.output
    assert "pause window" not in result.output and "aborted" not in result.output
    assert took < 25, f"the apply worker's failure took {took:.1f}s to be reported"
    code, status = demo.cli_json("status")
    assert status["routes"][0]["points_to"] == "source" and not status["routes"][0]["paused"]


def test_two_moves_making_the_tools_schema_at_the_same_moment_both_succeed(make_move):
    """`CREATE SCHEMA IF NOT EXISTS` loses to a concurrent one on the catalog's unique
    index (seen once as the second of two moves failing its schema step): the tool takes
    one lock, per server, in the transaction that makes its shared objects."""
    import threading

    from migrator.postgres import replication

    move = make_move()
    dsn = move.source.dsn(APP_DB)
    with psycopg.connect(dsn) as first, psycopg.connect(dsn, autocommit=True) as second:
        with first.transaction():
            replication.ensure_marker_table(first, "files_partition")     # made, not yet committed
            failure: list[BaseException] = []

            def make_the_other():
                try:
                    replication.ensure_marker_table(second, "users_partition")
                except BaseException as exc:                                 # noqa: BLE001 (reported below)
                    failure.append(exc)

            other = threading.Thread(target=make_the_other)
            other.start()
            time.sleep(0.5)
            assert other.is_alive(), "the second move did not wait for the first"
        other.join(10)
        assert not other.is_alive() and failure == [], failure
    assert marker_tables(dsn) == ["sync_marker_files_partition", "sync_marker_users_partition"]
