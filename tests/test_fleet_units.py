"""Pure parts of issue 14, without a server: how an entry is rerouted (playbook and
routes), grouped privilege statements, and reading a worker's error from a server log."""

from __future__ import annotations

import pytest

from migrator.errors import OperationFailed, PlaybookError
from migrator.pgbouncer.fleet import command_all, run_all
from migrator.pgbouncer.route import CommandRoute, FileRoute, include_problem, route_for
from migrator.playbook import parse_playbook
from migrator.postgres.grants import inside_and_outside_the_pause, switch_statements
from migrator.postgres.subscription_health import ServerError, last_worker_error

BASE = """
name: m
source: {dsn: "host=a dbname=app"}
target: {dsn: "host=b dbname=app"}
tables: [public.files]
pgbouncers:
  - admin_dsn: "host=p port=6432 dbname=pgbouncer"
    database: app_files
"""


def test_a_pgbouncer_entry_says_how_it_is_rerouted(tmp_path):
    with pytest.raises(PlaybookError) as none:
        parse_playbook(BASE)
    assert "say how to reroute the entry" in str(none.value)
    with pytest.raises(PlaybookError) as both:
        parse_playbook(BASE + "    config_file: /x.ini\n    command: {prepare: a, activate: b}\n")
    assert "not both" in str(both.value)
    with pytest.raises(PlaybookError) as typo:
        parse_playbook(BASE + "    command: {prepare: a, activte: b}\n")
    assert "did you mean 'activate'" in str(typo.value)

    include = parse_playbook(BASE + "    config_file: /etc/pgb.ini\n    include_file: /etc/own.ini\n").pgbouncers[0]
    assert route_for(include) == FileRoute(include.include_file, "app_files", include=True)
    assert include.route_key == "/etc/own.ini"
    command = parse_playbook(BASE + "    command: {prepare: 'cat > x', activate: 'mv x y', timeout: 300ms}\n")
    route = route_for(command.pgbouncers[0])
    assert isinstance(route, CommandRoute) and route.timeout == 0.3
    assert command.pgbouncers[0].route_key == "command p:6432/pgbouncer/app_files"


def test_include_problem_finds_the_include_line(tmp_path):
    main = tmp_path / "pgbouncer.ini"
    main.write_text("[databases]\napp = host=a\n%include own.ini\n[pgbouncer]\n")
    assert include_problem(main, tmp_path / "own.ini") is None
    assert "has no line `%include" in include_problem(main, tmp_path / "other.ini")


def test_commands_get_the_line_on_stdin_and_a_failure_says_so(tmp_path):
    staged, live = tmp_path / "next", tmp_path / "live"
    route = CommandRoute("app_files", "host=p port=6432 dbname=pgbouncer", f"cat > {staged}",
                         f"mv {staged} {live}", f"sed -n 's/^app_files = //p' {live}", timeout=2)
    route.write("host=b port=5 dbname=app")
    assert live.read_text() == "app_files = host=b port=5 dbname=app\n"
    assert route.read() == "host=b port=5 dbname=app"
    failing = CommandRoute("app_files", "host=p dbname=pgbouncer", "echo nope >&2; exit 3", "true")
    with pytest.raises(OperationFailed, match="the prepare command exited with 3: nope"):
        failing.prepare("x")
    slow = CommandRoute("app_files", "host=p dbname=pgbouncer", "true", "sleep 5", timeout=0.2)
    with pytest.raises(OperationFailed, match="did not finish within 0.2s"):
        slow.write("x")


def test_run_all_reports_late_calls_without_waiting_for_them():
    import time

    outcomes = run_all([lambda: 1, lambda: time.sleep(2), lambda: 1 / 0], timeout=0.2)
    assert outcomes[0].value == 1 and outcomes[1].late and isinstance(outcomes[2].error, ZeroDivisionError)


class _Console:
    """A console's send/receive over a socket pair: the test answers for PgBouncer."""

    def __init__(self, name: str) -> None:
        import socket

        self.display = name
        self.ours, self.theirs = socket.socketpair()
        self.sent: list[str] = []

    def fileno(self) -> int:
        return self.ours.fileno()

    def send(self, text: str) -> None:
        self.sent.append(text)

    def receive(self) -> bool:
        answer = self.ours.recv(100).decode()
        if answer.startswith("ERROR"):
            raise OperationFailed(f"PgBouncer {self.display}: {self.sent[-1]} failed: {answer[6:]}")
        return answer == "done"


def test_command_all_reads_every_answer_on_one_thread_and_reports_the_late_ones():
    import threading
    import time

    consoles = [_Console(f"b{i}") for i in range(4)]
    ticks = []

    def answer() -> None:
        time.sleep(0.05)
        consoles[0].theirs.send(b"done")
        consoles[1].theirs.send(b"ERROR not paused")
        consoles[3].theirs.send(b"done")   # b2 never answers

    threading.Thread(target=answer).start()
    started = time.monotonic()
    outcomes = command_all(consoles, [f"PAUSE e{i}" for i in range(4)], deadline=started + 0.4,
                           every=lambda: ticks.append(1))
    assert [c.sent for c in consoles] == [["PAUSE e0"], ["PAUSE e1"], ["PAUSE e2"], ["PAUSE e3"]]
    assert outcomes[0].ok and outcomes[3].ok
    assert "not paused" in str(outcomes[1].error) and not outcomes[1].late
    assert outcomes[2].late and outcomes[2].error is None
    assert 0.4 <= time.monotonic() - started < 2 and len(ticks) >= 10


def test_command_all_stops_at_the_first_error_when_told():
    import time

    consoles = [_Console("a"), _Console("b")]
    consoles[0].theirs.send(b"ERROR no such database")
    started = time.monotonic()
    outcomes = command_all(consoles, ["PAUSE x", "PAUSE x"], deadline=started + 5, stop_on_error=True)
    assert "no such database" in str(outcomes[0].error) and outcomes[1].late
    assert time.monotonic() - started < 1


def test_privileges_are_grouped_per_kind_role_and_set():
    privileges = [["TABLE", "public", t, "app", p, None] for t in ("a", "b") for p in ("SELECT", "INSERT")]
    privileges += [["TABLE", "public", "c", "app", "SELECT", None], ["SEQUENCE", "public", "a_id_seq", "app", "USAGE", None],
                   ["TABLE", "public", "a", "app", "UPDATE", "name"]]
    texts = [q.as_string(None) for q in switch_statements(privileges, grant=False)]
    assert texts == [
        'REVOKE USAGE ON SEQUENCE "public"."a_id_seq" FROM "app"',
        'REVOKE INSERT, SELECT ON TABLE "public"."a", "public"."b" FROM "app"',
        'REVOKE SELECT ON TABLE "public"."c" FROM "app"',
        'REVOKE UPDATE ("name") ON TABLE "public"."a" FROM "app"',
    ]
    inside, outside = inside_and_outside_the_pause(privileges, fenced=False)
    assert [p[0] for p in outside] == ["SEQUENCE"] and len(inside) == 6
    # With the write fence on every relation, nothing is switched inside the pause.
    inside, outside = inside_and_outside_the_pause(privileges, fenced=True)
    assert inside == [] and outside == privileges


LOG = """\
2026-12-01 10:00:00.000 UTC [100] LOG:  logical replication apply worker for subscription "migrator_other" has started
2026-12-01 10:00:00.100 UTC [100] ERROR:  duplicate key value violates unique constraint "users_pkey"
2026-12-01 10:00:00.100 UTC [100] DETAIL:  Key (id)=(7) already exists.
2026-12-01 10:00:01.000 UTC [200] LOG:  logical replication table synchronization worker for subscription "migrator_m", table "files" has started
2026-12-01 10:00:01.200 UTC [200] ERROR:  duplicate key value violates unique constraint "files_pkey"
2026-12-01 10:00:01.200 UTC [200] DETAIL:  Key (id)=(1) already exists.
2026-12-01 10:00:01.200 UTC [200] CONTEXT:  COPY files, line 1
2026-12-01 10:00:01.300 UTC [50] LOG:  background worker "logical replication worker" (PID 200) exited with exit code 1
"""


def test_the_last_error_of_this_subscriptions_workers_is_found():
    found = last_worker_error(LOG.splitlines(), "migrator_m")
    assert found == ServerError('duplicate key value violates unique constraint "files_pkey" '
                                "(Key (id)=(1) already exists.)", "COPY files, line 1")
    assert not found.transient
    other = last_worker_error(LOG.splitlines(), "migrator_other")
    assert other is not None and "users_pkey" in other.message
    assert last_worker_error(LOG.splitlines(), "migrator_nobody") is None
    assert ServerError("could not receive data from WAL stream: server closed the connection unexpectedly").transient
