"""The testcontainers back-end for real (skipped on the local back-end): where its
containers listen, what their logs show, a restart that keeps the data, and a teardown
that leaves nothing behind. CI runs these in its testcontainers pass."""

from __future__ import annotations

from pathlib import Path

import psutil
import psycopg
import pytest
from conftest import backend_choice

from migrator.lab import engine
from migrator.lab.sandbox import APP_DB

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.containers


@pytest.fixture(autouse=True)
def on_containers():
    choice = backend_choice()
    if choice.name != "testcontainers":
        pytest.skip(f"the testcontainers back-end is not in use: backend={choice.name} ({choice.why})")
    if choice.unusable:
        pytest.skip(choice.unusable)


def session_containers():
    client = engine.docker_client()
    return client.containers.list(all=True, filters={"label": f"{engine.SESSION_LABEL}={engine.SESSION}"})


def listening(pids: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket the processes of these pids (and their
    children) listen on."""
    family = set(pids)
    for pid in pids:
        family |= {child.pid for child in psutil.Process(pid).children(recursive=True)}
    return {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.pid in family}


def test_every_container_is_on_the_host_network_and_listens_on_127_0_0_1_only(make_move):
    move = make_move(pgbouncers=2, target_version=18)
    members = [move.source, move.target, *move.pgbouncers]
    sockets = listening(set(move.topology.processes()))
    assert sockets == {("127.0.0.1", member.port) for member in members}
    for container in session_containers():
        container.reload()
        assert container.attrs["HostConfig"]["NetworkMode"] == "host", container.name
        assert not container.attrs["NetworkSettings"]["Ports"], f"{container.name} publishes ports"
        assert not container.attrs["HostConfig"].get("PortBindings"), container.name
    with psycopg.connect(move.target.dsn()) as conn:
        assert conn.execute("SHOW server_version_num").fetchone()[0].startswith("18")
        assert conn.execute("SHOW wal_level").fetchone() == ("logical",)


def test_container_logs_are_what_a_failed_test_gets(move):
    logs = move.topology.logs(40)
    assert "--- source (docker logs)" in logs and "--- pgbouncer (docker logs)" in logs
    assert "database system is ready to accept connections" in logs
    assert "process up" in logs or "listening on 127.0.0.1" in logs, logs


def test_a_restarted_server_keeps_its_data_and_its_port(move):
    with psycopg.connect(move.source.dsn(APP_DB), autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (id int)")
        conn.execute("INSERT INTO kept VALUES (1)")
    before = move.source.pid()
    move.source.restart()
    assert move.source.pid() not in (None, before)
    with psycopg.connect(move.source.dsn(APP_DB)) as conn:
        assert conn.execute("SELECT count(*) FROM kept").fetchone() == (1,)


def test_teardown_removes_every_container_it_started(make_move):
    move = make_move()
    names = {container.name for container in session_containers()}
    assert len(names) >= 3
    move.topology.stop()
    assert move.topology.processes() == []
    assert not session_containers(), "a topology's stop left containers behind"


def test_a_failed_test_gets_the_containers_logs_in_its_report(pytester):
    """The fixture module's promise, on containers: run a failing test in a session of
    its own (this conftest, this back-end) and read its report."""
    def lab_containers():
        return {c.id for c in engine.docker_client().containers.list(all=True, filters={"label": engine.LABEL})}

    before = lab_containers()
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(test_fails="def test_fails(move):\n    assert move.source.running() is False\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(failed=1)
    report = result.stdout.str()
    assert "backend=testcontainers" in report
    assert "server logs" in report and "--- source (docker logs)" in report and "--- pgbouncer (docker logs)" in report
    assert "database system is ready to accept connections" in report
    # Only new ones count: an earlier test's containers may still be going away meanwhile.
    assert not lab_containers() - before, "the inner session's teardown left containers"
