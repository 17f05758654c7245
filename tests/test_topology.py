"""The test topology itself: real clusters replicate, real PgBouncer pauses per entry."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from migrator.errors import MissingBinary
from migrator.lab.binaries import postgres_bindir
from migrator.lab.sandbox import APP_DB, GROUP_ENTRY, WHOLE_ENTRY
from migrator.pgbouncer.config import read_entry, rewrite_entry
from migrator.pgbouncer.console import PgBouncerConsole

pytestmark = pytest.mark.containers  # the topology every test stands on, on either back-end


def app_connect(move, entry):
    # PgBouncer in transaction pooling cannot keep server-side prepared statements.
    return psycopg.connect(move.app_dsn(entry), autocommit=True, prepare_threshold=None)


def test_two_clusters_replicate_a_table_logically(move):
    with psycopg.connect(move.source.dsn(APP_DB), autocommit=True) as src, \
         psycopg.connect(move.target.dsn(APP_DB), autocommit=True) as dst:
        for conn in (src, dst):
            conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        src.execute("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g")
        src.execute("CREATE PUBLICATION pub FOR TABLE t")
        dst.execute(
            psycopg.sql.SQL("CREATE SUBSCRIPTION sub CONNECTION {} PUBLICATION pub").format(
                psycopg.sql.Literal(move.source.dsn(APP_DB))
            )
        )
        src.execute("INSERT INTO t VALUES (101, 'late')")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if dst.execute("SELECT count(*) FROM t").fetchone()[0] == 101:
                break
            time.sleep(0.1)
        assert dst.execute("SELECT count(*), max(v) FROM t WHERE id > 100").fetchone() == (1, "late")
        assert dst.execute("SELECT count(*) FROM t").fetchone()[0] == 101
        dst.execute("DROP SUBSCRIPTION sub")


def test_pgbouncer_console_answers_show_version(move):
    with PgBouncerConsole(move.pgbouncer.admin_dsn()) as console:
        assert console.version().startswith("PgBouncer 1.")
        entries = console.databases()
    assert entries[GROUP_ENTRY].port == move.source.port
    assert entries[WHOLE_ENTRY].port == move.source.port


def test_pause_holds_one_entry_while_another_keeps_serving(move):
    paused_client = app_connect(move, GROUP_ENTRY)
    other_client = app_connect(move, WHOLE_ENTRY)
    paused_client.execute("SELECT 1")
    with PgBouncerConsole(move.pgbouncer.admin_dsn()) as console:
        console.pause(GROUP_ENTRY)
        assert console.databases()[GROUP_ENTRY].paused
        finished = threading.Event()

        def held_query():
            paused_client.execute("SELECT 1")
            finished.set()

        worker = threading.Thread(target=held_query)
        worker.start()
        time.sleep(0.5)
        assert not finished.is_set(), "a query on the paused entry ran during PAUSE"
        # The other entry answers while the pause still holds (how fast: cutover_bench's
        # other-entry stall); held by it, this would wait for the RESUME below.
        answers: list = []
        other = threading.Thread(target=lambda: answers.append(other_client.execute("SELECT 42").fetchone()))
        other.start()
        other.join(timeout=10)
        assert answers == [(42,)], "the other entry was held by the pause"
        assert console.databases()[GROUP_ENTRY].paused and not finished.is_set()
        console.resume(GROUP_ENTRY)
        worker.join(timeout=5)
        assert finished.is_set(), "RESUME did not release the held query"
    paused_client.close()
    other_client.close()


def test_config_entry_is_rewritten_atomically_and_reload_reroutes(move):
    config = move.pgbouncer.config_file
    before = config.read_text()
    old = rewrite_entry(config, GROUP_ENTRY, f"host=127.0.0.1 port={move.target.port} dbname={APP_DB}")
    assert old == f"host=127.0.0.1 port={move.source.port} dbname={APP_DB}"
    assert read_entry(config, WHOLE_ENTRY) == old, "only the named entry changes"
    assert config.stat().st_mode & 0o777 == 0o644
    with PgBouncerConsole(move.pgbouncer.admin_dsn()) as console:
        console.reload()
        assert console.databases()[GROUP_ENTRY].port == move.target.port
    rewrite_entry(config, GROUP_ENTRY, old)
    assert config.read_text() == before


def test_missing_server_binaries_name_the_package():
    with pytest.raises(MissingBinary, match="apt-get install postgresql-99"):
        postgres_bindir(99)


def test_available_majors_lists_the_installed_postgres():
    from migrator.lab.binaries import available_majors

    majors = available_majors()
    assert 15 in majors
