"""The seam to Postgres: which timeouts each purpose gets, what a refused connection
says, and how a driver error names its side (all without a server but the last test)."""

from __future__ import annotations

import socket

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from migrator.errors import ServerUnreachable
from migrator.lab.sandbox import APP_DB
from migrator.move.steps import describe_failure
from migrator.postgres.connection import (
    TIMEOUTS,
    Side,
    connect,
    conninfo_for,
    describe,
    describe_error,
    same_server,
    server_addresses,
    side_of,
    timeouts_for,
)
from migrator.postgres.connection import _mark as mark_side


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("purpose", ["plan", "status", "probe", "verify"])
def test_read_only_looks_are_bounded(purpose):
    row = timeouts_for(purpose)
    assert row.statement_ms and row.lock_ms and row.lock_ms < row.statement_ms


@pytest.mark.parametrize("purpose", [
    "schema", "schema-undo", "replicate", "rebuild-indexes", "index-build app-files",
    "cutover old", "cutover privileges", "reconcile", "complete", "",
])
def test_work_that_runs_long_or_must_wait_its_turn_has_no_limit(purpose):
    # Index builds queue behind the app's transactions on purpose; the initial copy
    # runs for hours; the cutover bounds its own waits from its deadline.
    row = timeouts_for(purpose)
    assert (row.statement_ms, row.lock_ms) == (None, None)


def test_the_watchdog_keeps_its_short_timeouts():
    row = TIMEOUTS["watchdog"]
    assert (row.connect_s, row.statement_ms, row.lock_ms) == (2, 1_500, 500)


def test_the_purpose_s_first_word_picks_the_row():
    assert timeouts_for("status of app-files") == TIMEOUTS["status"]
    assert timeouts_for("index-build app-files") == TIMEOUTS["step"]


def test_the_conninfo_carries_name_and_timeouts():
    params = conninfo_to_dict(conninfo_for("host=db1 dbname=app", "status"))
    assert params["application_name"] == "migrator status"
    assert params["connect_timeout"] == "3"
    assert params["options"] == "-c statement_timeout=30000 -c lock_timeout=5000"


def test_the_pgbouncer_console_gets_no_startup_options():
    # The admin console refuses a connection that sends `options`.
    params = conninfo_to_dict(conninfo_for("host=pgb dbname=pgbouncer", "pgbouncer-admin"))
    assert "options" not in params
    assert params["application_name"] == "migrator pgbouncer-admin"


def test_a_timeout_given_by_the_caller_wins_over_the_table():
    params = conninfo_to_dict(conninfo_for("host=db1", "verify", statement_timeout_ms=None, lock_timeout_ms=100))
    assert params["options"] == "-c lock_timeout=100"
    assert "options" not in conninfo_to_dict(conninfo_for("host=db1", "plan", statement_timeout_ms=None,
                                                          lock_timeout_ms=None))


@pytest.mark.parametrize("dsn", [
    "postgresql://mover:s3cr3t-pw@127.0.0.1:{port}/app",
    "host=127.0.0.1 port={port} dbname=app user=mover password=s3cr3t-pw",
])
def test_a_refused_connection_names_the_side_and_hides_the_password(dsn):
    port = closed_port()
    with pytest.raises(ServerUnreachable) as caught:
        connect(dsn.format(port=port), side=Side.TARGET, purpose="probe", connect_timeout=2)
    text = str(caught.value)
    assert text.startswith(f"cannot connect to the target (mover@127.0.0.1:{port}/app): ")
    assert "s3cr3t" not in text
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)


def test_a_connection_without_a_side_says_only_the_server():
    port = closed_port()
    with pytest.raises(ServerUnreachable, match=rf"^cannot connect to mover@127.0.0.1:{port}/app: "):
        connect(f"postgresql://mover@127.0.0.1:{port}/app", purpose="probe")


def test_a_driver_error_keeps_its_type_and_says_its_side():
    exc = psycopg.errors.UndefinedTable('relation "public.files" does not exist')
    mark_side(exc, Side.TARGET)
    mark_side(exc, Side.SOURCE)  # the innermost mark wins: it was raised on the target
    assert isinstance(exc, psycopg.errors.UndefinedTable)
    assert side_of(exc) == Side.TARGET
    assert describe_failure(exc) == 'on the target: relation "public.files" does not exist'
    assert exc.__notes__ == ["on the target"]


def test_a_driver_error_without_a_side_is_just_its_first_line():
    exc = psycopg.errors.ObjectInUse("slot is active\nDETAIL: pid 42")
    assert side_of(exc) is None
    assert describe_error(exc) == "slot is active"


def test_a_statement_that_fails_on_the_target_says_so(move):
    with connect(move.target.dsn(APP_DB), side=Side.TARGET, purpose="status") as conn:
        assert conn.execute("SHOW lock_timeout").fetchone()[0] == "5s"
        assert conn.execute("SELECT current_setting('application_name')").fetchone()[0] == "migrator status"
        with pytest.raises(psycopg.errors.UndefinedTable) as caught:
            conn.execute("SELECT * FROM public.nowhere")
        with pytest.raises(psycopg.errors.UndefinedTable) as by_cursor:
            conn.cursor().execute("SELECT * FROM public.nowhere")
    assert describe_failure(caught.value) == 'on the target: relation "public.nowhere" does not exist'
    assert side_of(by_cursor.value) == Side.TARGET


def test_a_refused_statement_keeps_the_servers_detail_and_hint_and_only_a_lost_one_reads_lost(move):
    """The server's DETAIL (why) and HINT (what to do) reach the user; a statement the
    server refuses on a live connection is not a lost server, a terminated one is."""
    from migrator.postgres.connection import connection_lost, server_hint

    with connect(move.target.dsn(APP_DB), side=Side.TARGET, purpose="status") as conn:
        with pytest.raises(psycopg.Error) as refused:
            conn.execute("SELECT pg_catalog.no_such_function(1)")
        assert "No function matches" in (server_hint(refused.value) or "")
        assert not connection_lost(refused.value)
        with pytest.raises(psycopg.Error) as detailed:
            conn.execute("CREATE TABLE public.pair (a int PRIMARY KEY); "
                         "INSERT INTO public.pair VALUES (1), (1)")
        assert describe_error(detailed.value) == (
            'on the target: duplicate key value violates unique constraint "pair_pkey" '
            "(Key (a)=(1) already exists.)")
        other = connect(move.target.dsn(APP_DB), side=Side.TARGET, purpose="status")
        conn.execute("SELECT pg_catalog.pg_terminate_backend(%s)", (other.info.backend_pid,))
        with pytest.raises(psycopg.OperationalError) as gone:
            other.execute("SELECT 1")
        assert connection_lost(gone.value)
        other.close()


# --------------------------------------------------------------------------- a DSN that lists several hosts


MULTI = "postgresql://migrator:Pw-multi@db-1:5432,db-2:5433/app?target_session_attrs=read-write"


def test_a_host_list_is_every_host_libpq_may_try_in_its_order():
    assert server_addresses(MULTI) == (("db-1", 5432), ("db-2", 5433))
    assert server_addresses("host=a,b port=6000 dbname=x") == (("a", 6000), ("b", 6000))  # one port for all
    assert server_addresses("dbname=x") == (("localhost", 5432),)
    with pytest.raises(ValueError, match="3 hosts but 2 ports"):
        server_addresses("host=a,b,c port=1,2")


def test_a_host_list_is_named_host_by_host_and_without_its_password():
    assert describe(MULTI) == "migrator@db-1:5432,db-2:5433/app"
    assert describe("postgresql://u@db:6432/app") == "u@db:6432/app"


@pytest.mark.parametrize(("conninfo", "same"), [
    ("host=db-2 port=5433", True),         # the standby that became the primary
    ("host=db-1 port=5432", True),
    ("host=db-2 port=5432", False),
    ("host=db-3 port=5433", False),
])
def test_a_connection_to_any_listed_host_is_to_that_side(conninfo, same):
    assert same_server(conninfo, MULTI) is same
    assert same_server("host=localhost port=5432", "host=127.0.0.1,10.0.0.1 port=5432,5433") is True
