"""The fault matrix (DESIGN sections 4, 5 and 7): real processes, real failures.

Each test breaks something for real (SIGKILL of the tool, a server stopped, PgBouncer
killed, a lock held, a config file made immutable) and ends the same way: no row lost
or duplicated (both sides compared row by row), traffic served, a clear message,
`status` naming the state and the next command, and a run that completes from there.
"""

from __future__ import annotations

import os
import signal
import time

import psycopg
import pytest
from faultkit import (
    ToolProcess,
    assert_like_before,
    config_texts,
    leftover_slots,
    pause_bound,
    routes,
    snapshot_everything,
    unwritable,
    wait_for,
    wait_unpaused,
)
from movekit import demo_move, wait_sides_identical

from migrator.lab.sandbox import APP_DB, GROUP_ENTRY
from migrator.lab.workload import Workload
from migrator.move.state import StateStore
from migrator.pgbouncer.console import PgBouncerConsole
from migrator.testhooks import FAIL_AT_ENV

pytestmark = pytest.mark.slow


def status_of(demo) -> dict:
    code, doc = demo.cli_json("status")
    assert code == 0, doc
    return doc


def step_statuses(status: dict) -> dict[str, str]:
    return {s["step"]: s["status"] for s in status["steps"]}


class MarkerHeld:
    """The target's apply worker held behind a lock exactly when the cutover's own sync
    marker (not the warm-up ones) arrives, as a lock held by someone on the target would.

    A trigger that replication fires (ENABLE ALWAYS) waits on an advisory lock that this
    object holds until released."""

    KEY = 4242

    def __init__(self, move, direction: str = "forward", table: str = "migrator.sync_marker_files_partition"):
        self.dsn = move.target.dsn(APP_DB)
        self.table = table
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"""
                CREATE FUNCTION public.hold_marker() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF NEW.direction = '{direction}' THEN PERFORM pg_advisory_xact_lock({self.KEY}); END IF;
                    RETURN NEW;
                END $$;
                CREATE TRIGGER hold_marker BEFORE INSERT ON {table}
                    FOR EACH ROW EXECUTE FUNCTION public.hold_marker();
                ALTER TABLE {table} ENABLE ALWAYS TRIGGER hold_marker;
            """)
        self.holder = psycopg.connect(self.dsn, autocommit=True)
        self.holder.execute("SELECT pg_advisory_lock(%s)", (self.KEY,))

    def release(self) -> None:
        if not self.holder.closed:
            self.holder.close()

    def remove(self) -> None:
        self.release()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"DROP TRIGGER IF EXISTS hold_marker ON {self.table}; "
                         "DROP FUNCTION IF EXISTS public.hold_marker()")


def assert_moved(demo) -> None:
    status = status_of(demo)
    assert status["state"].startswith("moved"), status["state"]
    assert [r["points_to"] for r in status["routes"]] == ["target"] * len(status["routes"])
    assert not any(r["paused"] for r in status["routes"])
    assert status["replication"]["direction"] == "reverse"
    assert status["replication"]["orphaned_slots"] == []


def watchdog_acted(demo, why: str, side: str) -> bool:
    """Did the watchdog record that it acted for that reason, resuming on that side
    ("old" or "new")? It writes the event log after its RESUME."""
    store = StateStore(demo.state_url)
    try:
        messages = [e.message for e in store.events(demo.playbook.name) if e.kind == "watchdog"]
    finally:
        store.close()
    return any(m.startswith(f"watchdog acted ({why}): traffic resumed on the {side} side") for m in messages)


# --------------------------------------------------------------------------- 1. SIGKILL of the tool


@pytest.mark.parametrize("point", [
    "schema:end",            # the DDL committed, `done` not recorded
    "defer-indexes:end",     # the indexes dropped, `done` not recorded
    "replicate:copying",     # subscription made, the initial copy in flight
    "rebuild-indexes:end",   # the indexes rebuilt, `done` not recorded
])
def test_sigkill_inside_a_step_then_execute_resumes(make_move, app_load, tmp_path, point):
    move = make_move()
    step = point.split(":")[0]
    demo = demo_move(move, tmp_path, scale=10 if step == "replicate" else 2)  # a copy long enough to be in
    with app_load(move, clients=4, rate=100) as load:
        tool = ToolProcess(demo, "execute", hold=point)
        tool.wait_held()
        tool.kill()

        status = status_of(demo)
        assert step_statuses(status)[step] == "running"
        assert status["state"].startswith(f"{step} running")
        assert status["next_command"].startswith(f"migrator execute {demo.path}")
        assert [r["points_to"] for r in status["routes"]] == ["source"]

        result = demo.cli("execute")
        assert result.exit_code == 0, result.output
        time.sleep(0.3)
    assert load.result().transactions > 50
    wait_sides_identical(move)
    assert_moved(demo)


def index_builds(move) -> set[int]:
    """Backends on the target running the tool's CREATE INDEX, waiting for a lock."""
    with psycopg.connect(move.target.dsn(APP_DB)) as conn:
        return {r[0] for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE 'CREATE%%INDEX%%' AND wait_event_type = 'Lock' "
            "AND application_name LIKE 'migrator%%'")}


def test_sigkill_during_an_index_build_then_execute_resumes(make_move, tmp_path):
    """Killed while its CREATE INDEX runs: the server goes on building for a dead client
    (it does not notice the client left), so the next run must not race that build."""
    move = make_move()
    demo = demo_move(move, tmp_path, scale=2)
    assert demo.cli("execute", "--until", "rebuild-indexes").exit_code == 0
    # The copy of each table built its indexes as it finished; a run that rebuilds only
    # what is missing needs them missing here (as a build cut short would leave them).
    with psycopg.connect(move.target.dsn(APP_DB), autocommit=True) as conn:
        conn.execute("SET migrator.guard = 'bypass'")
        conn.execute("DROP INDEX public.files_owner_idx, public.files_name_idx")
    # Someone's transaction on the target holds the group's tables: the builds wait.
    blocker = psycopg.connect(move.target.dsn(APP_DB))
    blocker.execute("LOCK TABLE public.files, public.file_versions, public.file_comments IN ROW EXCLUSIVE MODE")
    try:
        tool = ToolProcess(demo, "execute")
        orphans = wait_for(lambda: index_builds(move), timeout=60, what="the index builds")
        tool.kill()
        again = ToolProcess(demo, "execute")
        wait_for(lambda: index_builds(move) and not index_builds(move) & orphans, timeout=60,
                 what="the new run's own builds (and not the dead run's)")
    finally:
        blocker.rollback()
        blocker.close()
    assert again.wait() == 0, again.output
    wait_sides_identical(move)
    assert_moved(demo)
    with psycopg.connect(move.target.dsn(APP_DB)) as conn:
        built = {r[0] for r in conn.execute(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indisvalid AND indrelid = 'public.files'::regclass")}
    assert built == {"files_pkey", "files_uuid_key", "files_owner_idx", "files_name_idx"}

def test_sigkill_after_the_point_of_no_return_finishes_forward(make_move, app_load, tmp_path):
    """Killed with the point of no return recorded, PgBouncer paused, not yet rerouted:
    the watchdog must finish forward (the record says so), within max_pause + margin."""
    move = make_move()
    demo = demo_move(move, tmp_path, scale=2, max_pause="2s")
    assert demo.cli("execute", "--until", "cutover").exit_code == 0
    with app_load(move) as load:
        tool = ToolProcess(demo, "execute", hold="cutover:forward-point_of_no_return")
        tool.wait_held()
        assert routes(move) == [("source", True)]
        tool.kill()
        resumed_after = wait_unpaused(move, timeout=10)
        assert resumed_after < pause_bound(2.0), resumed_after
        assert routes(move) == [("target", False)]
        time.sleep(1.0)  # the application writes on the target, the tool still dead

        status = status_of(demo)
        assert "interrupted inside a cutover (forward, phase point_of_no_return)" in status["state"]
        assert status["next_command"].startswith(f"migrator execute {demo.path}")
        result = demo.cli("execute")
        assert result.exit_code == 0, result.output
        assert "was finished" in result.output
        time.sleep(0.5)
    seen = load.result()
    assert seen.longest_gap_s < pause_bound(2.0), seen
    wait_sides_identical(move)
    assert_moved(demo)


def test_sigkill_while_paused_before_the_point_of_no_return_reverts(make_move, app_load, tmp_path):
    """Killed while PgBouncer is paused and the sync marker is awaited: the watchdog gives
    traffic back to the source at once; the next run reverts the rest and cuts over."""
    move = make_move()
    demo = demo_move(move, tmp_path, scale=2, max_pause="4s")
    assert demo.cli("execute", "--until", "cutover").exit_code == 0
    held = MarkerHeld(move)
    try:
        with app_load(move) as load:
            tool = ToolProcess(demo, "execute")
            wait_for(lambda: routes(move) == [("source", True)], timeout=60, interval=0.02,
                     what="the cutover's PAUSE")
            tool.kill()
            resumed_after = wait_unpaused(move, timeout=10)
            assert resumed_after < pause_bound(4.0), resumed_after
            # It acted on the tool's death, not at the deadline (how soon: cutover_bench).
            wait_for(lambda: watchdog_acted(demo, "the tool exited during the cutover", "old"), timeout=10,
                     what="the watchdog's record of why it acted")
            assert routes(move) == [("source", False)]
            held.release()
            time.sleep(0.5)

            status = status_of(demo)
            assert "interrupted inside a cutover (forward, phase watchdog_reverted)" in status["state"]
            assert status["next_command"].startswith(f"migrator execute {demo.path}")
            result = demo.cli("execute")
            assert result.exit_code == 0, result.output
            assert "was reverted" in result.output
            time.sleep(0.5)
    finally:
        held.remove()
    assert load.result().longest_gap_s < pause_bound(4.0), load.result()
    wait_sides_identical(move)
    assert_moved(demo)


def test_a_hung_tool_is_overtaken_by_the_watchdog_and_then_aborts(make_move, app_load, tmp_path):
    """The tool stops responding while paused (SIGSTOP): the watchdog gives traffic back
    at max_pause + its margin and records it; the tool, woken up later, must not cross
    the point of no return on its own."""
    move = make_move()
    demo = demo_move(move, tmp_path, scale=2, max_pause="1s")
    assert demo.cli("execute", "--until", "cutover").exit_code == 0
    held = MarkerHeld(move)
    try:
        with app_load(move):
            tool = ToolProcess(demo, "execute")
            wait_for(lambda: routes(move) == [("source", True)], timeout=60, interval=0.02,
                     what="the cutover's PAUSE")
            os.kill(tool.pid, signal.SIGSTOP)
            assert wait_unpaused(move, timeout=10) < pause_bound(1.0)
            wait_for(lambda: watchdog_acted(demo, "deadline passed", "old"), timeout=10,
                     what="the watchdog's record of why it acted")
            assert routes(move) == [("source", False)]
            held.release()
            os.kill(tool.pid, signal.SIGCONT)
            assert tool.wait() == 1, tool.output
            assert "cutover aborted before the point of no return" in tool.output
            assert routes(move) == [("source", False)]
            result = demo.cli("execute")
            assert result.exit_code == 0, result.output
            time.sleep(0.3)
    finally:
        held.remove()
    wait_sides_identical(move)
    assert_moved(demo)


def test_the_record_decides_between_the_tool_and_the_watchdog(tmp_path):
    """Exactly one of them decides, by compare-and-set on the cutover's phase."""
    from migrator.move.cutover import CutoverPhase
    from migrator.move.state import StateStore
    from migrator.move.watchdog import WatchdogOrders, decide

    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    orders = WatchdogOrders(move="m", deadline=0, old_dsn="", new_dsn="")
    store.update_data("m", "cutover", phase=CutoverPhase.PAUSING)
    # The tool said "pnr" but never recorded it: back, and the record says so.
    assert decide(orders, store, told_forward=True) is False
    assert store.step("m", "cutover").data.phase == CutoverPhase.WATCHDOG_REVERTED
    # A tool that wakes up now cannot record the point of no return.
    assert not store.update_data_if("m", "cutover", phase_in=(CutoverPhase.PAUSING,),
                                    phase=CutoverPhase.POINT_OF_NO_RETURN)
    # Recorded (even if the tool died before saying "pnr"): forward.
    store.update_data("m", "cutover", phase=CutoverPhase.PAUSING)
    assert store.update_data_if("m", "cutover", phase_in=(CutoverPhase.PAUSING,),
                                phase=CutoverPhase.POINT_OF_NO_RETURN)
    assert decide(orders, store, told_forward=False) is True
    assert store.step("m", "cutover").data.phase == CutoverPhase.POINT_OF_NO_RETURN
    # No readable record: the tool's word is all there is.
    assert decide(orders, None, told_forward=True) is True

def test_sigkill_after_resume_finishes_the_replication_switch(make_move, app_load, tmp_path):
    """Killed right after RESUME on the target, before the reverse subscription exists:
    the slot made in the pause keeps every change, and the next run subscribes to it."""
    move = make_move()
    demo = demo_move(move, tmp_path, scale=2)
    assert demo.cli("execute", "--until", "cutover").exit_code == 0
    with app_load(move):
        tool = ToolProcess(demo, "execute", hold="cutover:forward-resumed")
        tool.wait_held()
        tool.kill()
        assert routes(move) == [("target", False)]
        time.sleep(1.0)  # writes on the target that only the slot remembers
        status = status_of(demo)
        assert step_statuses(status)["cutover"] == "running"
        assert status["next_command"].startswith(f"migrator execute {demo.path}")
        result = demo.cli("execute")
        assert result.exit_code == 0, result.output
        time.sleep(0.5)
    wait_sides_identical(move)
    assert_moved(demo)


def test_sigkill_during_rollback_then_rollback_completes(make_move, app_load, tmp_path):
    """Killed inside the reverse cutover after its point of no return: the watchdog
    routes back to the source; `rollback` afterwards finishes, down to nothing left."""
    move = make_move()
    demo = demo_move(move, tmp_path, scale=2)
    before = snapshot_everything(move)
    assert demo.cli("execute").exit_code == 0
    with app_load(move):
        tool = ToolProcess(demo, "rollback", hold="cutover:reverse-point_of_no_return")
        tool.wait_held()
        assert routes(move) == [("target", True)]
        tool.kill()
        assert wait_unpaused(move, timeout=10) < pause_bound(2.0)
        assert routes(move) == [("source", False)]
        time.sleep(0.5)

        status = status_of(demo)
        assert "interrupted inside a cutover (reverse, phase point_of_no_return)" in status["state"]
        assert f"migrator rollback {demo.path}" in status["next_command"]
        result = demo.cli("rollback", "--to", "prepare-reverse")
        assert result.exit_code == 0, result.output
        time.sleep(0.5)
    wait_sides_identical(move)  # forward replication again: the target keeps up

    result = demo.cli("rollback")
    assert result.exit_code == 0, result.output
    assert leftover_slots(move) == []
    assert_like_before(move, before)
    assert status_of(demo)["state"] == "rolled back"


# --------------------------------------------------------------------------- 5. the sync marker is late


def test_sync_marker_not_arriving_within_max_pause_aborts(make_move, app_load, tmp_path):
    move = make_move()
    demo = demo_move(move, tmp_path, scale=2, max_pause="1s")
    assert demo.cli("execute", "--until", "cutover").exit_code == 0
    held = MarkerHeld(move)
    try:
        with app_load(move):
            result = demo.cli("execute")
            assert result.exit_code == 1, result.output
            assert "cutover aborted before the point of no return: the sync marker did not arrive" \
                in result.output
            assert "traffic resumed on the source" in result.output
            assert "Traceback" not in result.output
            assert routes(move) == [("source", False)]

            status = status_of(demo)
            assert status["last_cutover"]["outcome"] == "aborted"
            assert status["last_cutover"]["total"] < pause_bound(1.0), status["last_cutover"]
            assert status["state"].startswith("cutover failed: cutover aborted")
            assert status["next_command"].startswith(f"migrator execute {demo.path}")
            assert status["replication"]["direction"] == "forward"

            held.release()  # the lock goes; the apply worker catches up
            time.sleep(0.5)
            result = demo.cli("execute")
            assert result.exit_code == 0, result.output
            time.sleep(0.5)
    finally:
        held.remove()
    wait_sides_identical(move)
    assert_moved(demo)


# --------------------------------------------------------------------------- 6. PgBouncer's config file


@pytest.mark.parametrize("what", ["file", "directory"])
def test_config_that_cannot_be_written_stops_the_cutover_before_the_pause(make_move, app_load, tmp_path, what):
    """The reroute rewrites the config after the point of no return, where failing is no
    longer an option: the cutover proves it can replace the file before it pauses."""
    move = make_move()
    demo = demo_move(move, tmp_path, scale=2)
    assert demo.cli("execute", "--until", "cutover").exit_code == 0
    config = move.pgbouncer.config_file
    before = config_texts(move)
    with app_load(move) as load:
        with unwritable(config if what == "file" else config.parent):
            result = demo.cli("execute")
            assert result.exit_code == 1, result.output
            assert str(config) in result.output
            assert "nothing was paused" in result.output
            assert "Traceback" not in result.output
            assert routes(move) == [("source", False)]
            assert config_texts(move) == before
            status = status_of(demo)
            assert status["state"].startswith("cutover failed")
            assert status["next_command"].startswith(f"migrator execute {demo.path}")
            assert (status["last_cutover"] or {}).get("outcome") != "completed"
        result = demo.cli("execute")
        assert result.exit_code == 0, result.output
        time.sleep(0.3)
    seen = load.result()
    assert seen.longest_gap_s < pause_bound(2.0), seen  # one cutover's pause, no stuck one
    wait_sides_identical(move)
    assert_moved(demo)


# --------------------------------------------------------------------------- 2. one of two PgBouncers


def test_one_of_two_pgbouncers_unreachable_stops_the_cutover_before_the_pause(make_move, app_load, tmp_path):
    move = make_move(pgbouncers=2)
    demo = demo_move(move, tmp_path, scale=2)
    doc = move.playbook_doc()
    doc["restarts"] = {"wait": "1s"}   # a PgBouncer that restarts is waited for this long
    move.write_playbook(demo.path, doc)
    assert demo.cli("execute", "--until", "cutover").exit_code == 0
    first, second = move.pgbouncers
    with app_load(move, pgbouncer=first):  # the other PgBouncer's traffic never notices
        second.kill()
        result = demo.cli("execute")
        assert result.exit_code == 1, result.output
        assert f"127.0.0.1:{second.port}" in result.output and "unreachable" in result.output
        assert "did not answer again within 1 s (restarts.wait)" in result.output
        assert "Traceback" not in result.output
        status = status_of(demo)
        assert status["routes"][0]["points_to"] == "source" and not status["routes"][0]["paused"]
        assert status["routes"][1]["points_to"] == "unknown" and "unreachable" in status["routes"][1]["error"]
        assert status["state"].startswith("cutover failed")
        assert status["next_command"].startswith(f"migrator execute {demo.path}")

        second.start()
        result = demo.cli("execute")
        assert result.exit_code == 0, result.output
        time.sleep(0.3)
    wait_sides_identical(move)
    assert_moved(demo)


@pytest.mark.containers
def test_a_pgbouncer_killed_inside_the_cutover_aborts_it_and_the_next_run_moves(make_move, app_load, tmp_path):
    """PgBouncer dies after the cutover began (recorded `pausing`, before its PAUSE): the
    cutover aborts before the point of no return, the other PgBouncer's traffic resumes
    on the source, and once the dead one is back the next run moves. On testcontainers
    it is a container killed (SIGKILL), as a crash of its host would."""
    move = make_move(pgbouncers=2)
    demo = demo_move(move, tmp_path, scale=2)
    assert demo.cli("execute", "--until", "cutover").exit_code == 0
    first, second = move.pgbouncers
    with app_load(move, pgbouncer=first) as load:
        tool = ToolProcess(demo, "execute", hold="cutover:forward-pausing")
        tool.wait_held()
        second.kill()
        assert not second.running()
        tool.release()
        assert tool.wait() == 1, tool.output
        assert "cutover aborted before the point of no return" in tool.output, tool.output
        assert f"127.0.0.1:{second.port}" in tool.output
        assert "Traceback" not in tool.output
        with PgBouncerConsole(first.admin_dsn()) as console:
            entry = console.databases()[GROUP_ENTRY]
        assert (entry.port, entry.paused) == (move.source.port, False)
        assert status_of(demo)["next_command"].startswith(f"migrator execute {demo.path}")

        second.start()
        result = demo.cli("execute")
        assert result.exit_code == 0, result.output
        time.sleep(0.3)
    assert load.result().longest_gap_s < pause_bound(2.0), load.result()
    wait_sides_identical(move)
    assert_moved(demo)


def test_one_of_two_pgbouncers_not_pausing_in_time_aborts(make_move, app_load, tmp_path):
    move = make_move(pgbouncers=2)
    demo = demo_move(move, tmp_path, scale=2, max_pause="1s", grace="200ms")
    assert demo.cli("execute", "--until", "cutover").exit_code == 0
    first, second = move.pgbouncers
    # An idle transaction on the second PgBouncer's entry: its PAUSE waits for it.
    holder = psycopg.connect(move.app_dsn(GROUP_ENTRY, second), prepare_threshold=None)
    holder.execute("SELECT count(*) FROM public.files")
    with app_load(move, pgbouncer=first) as load:
        result = demo.cli("execute")
        assert result.exit_code == 1, result.output
        assert "cutover aborted before the point of no return" in result.output
        assert "did not pause within max_pause" in result.output
        # It says what it saw there: the idle transaction's server connection.
        assert "1 server connection of app_files still in a transaction" in result.output, result.output
        assert routes(move) == [("source", False), ("source", False)]
        status = status_of(demo)
        assert status["last_cutover"]["outcome"] == "aborted"
        assert status["last_cutover"]["total"] < pause_bound(1.0), status["last_cutover"]
        assert status["next_command"].startswith(f"migrator execute {demo.path}")

        # An id below every one the load picks (it edits and deletes ids >= 1): only this
        # transaction's fate decides whether the row is there at the end.
        holder.execute("INSERT INTO public.files (id, owner_id, name) VALUES (-1, 1, 'held through the abort')")
        holder.commit()
        holder.close()
        result = demo.cli("execute")
        assert result.exit_code == 0, result.output
        time.sleep(0.3)
    seen = load.result()
    assert seen.longest_gap_s < pause_bound(1.0), seen
    wait_sides_identical(move)
    assert_moved(demo)
    with psycopg.connect(move.target.dsn(APP_DB)) as conn:
        assert conn.execute("SELECT count(*) FROM public.files WHERE name = 'held through the abort'").fetchone() == (1,)


# --------------------------------------------------------------------------- 3. and 4. a server goes away


def copy_states(move) -> dict[str, str]:
    with psycopg.connect(move.target.dsn(APP_DB)) as conn:
        return dict(conn.execute(
            "SELECT srrelid::regclass::text, srsubstate FROM pg_subscription_rel").fetchall())


def test_target_stops_during_the_initial_copy_and_execute_waits_for_it(make_move, app_load, tmp_path):
    """The target crashes mid-copy and is back a second later: the running `execute`
    says it waits (restarts.wait), then carries on to the end; no rerun."""
    move = make_move()
    demo = demo_move(move, tmp_path, scale=20)
    with app_load(move, clients=4, rate=100):  # the application only uses the source
        tool = ToolProcess(demo, "execute", hold="replicate:copying")
        tool.wait_held()
        assert any(state != "r" for state in copy_states(move).values()), copy_states(move)
        move.target.stop(mode="immediate")  # a crash, mid-copy
        tool.release()
        wait_for(lambda: "waiting up to 60 s (restarts.wait)" in tool.output, timeout=30,
                 what="execute to say it waits for the target")
        assert "the target" in tool.output.split("waiting up to")[0].splitlines()[-1], tool.output
        move.target.start()
        assert tool.wait() == 0, tool.output
        assert "answers again after" in tool.output and "pause window" in tool.output, tool.output
        assert "Traceback" not in tool.output
        time.sleep(0.3)
    wait_sides_identical(move)
    assert_moved(demo)


def test_a_target_down_past_restarts_wait_stops_execute_with_the_cause(make_move, app_load, tmp_path):
    move = make_move()
    demo = demo_move(move, tmp_path, scale=20)
    doc = move.playbook_doc()
    doc["restarts"] = {"wait": "2s"}
    move.write_playbook(demo.path, doc)
    with app_load(move, clients=4, rate=100):
        tool = ToolProcess(demo, "execute", hold="replicate:copying")
        tool.wait_held()
        move.target.stop(mode="immediate")
        tool.release()
        assert tool.wait() == 1, tool.output
        assert "did not answer again within 2 s (restarts.wait)" in tool.output, tool.output
        assert "the target" in tool.output and "Traceback" not in tool.output
        status = status_of(demo)
        assert status["state"].startswith("replicate failed:"), status["state"]
        assert "restarts.wait" in status["state"]
        assert status["next_command"].startswith(f"migrator execute {demo.path}")
        assert status["routes"][0]["points_to"] == "source"

        move.target.start()
        result = demo.cli("execute")
        assert result.exit_code == 0, result.output
        time.sleep(0.3)
    wait_sides_identical(move)
    assert_moved(demo)


def test_source_restarts_while_execute_waits_on_it(make_move, tmp_path):
    """The source restarts under a running `execute` (its connections open, waiting for
    the lag): it waits for the source to answer, then carries on to the cutover; the
    subscription reconnects by itself."""
    move = make_move()
    demo = demo_move(move, tmp_path, scale=2)
    # PgBouncer retries a failed server login after server_login_retry (15 s by
    # default); the restart is short, so is the retry here.
    with open(move.pgbouncer.config_file, "a") as config:
        config.write("server_login_retry = 1\n")
    with PgBouncerConsole(move.pgbouncer.admin_dsn()) as console:
        console.reload()
    with Workload(move.app_dsn(GROUP_ENTRY), clients=8, rate=300) as load:
        tool = ToolProcess(demo, "execute", hold="rebuild-indexes:lag")
        tool.wait_held()
        move.source.restart()
        tool.release()

        def served_again() -> bool:
            # A whole second served without a failure: PgBouncer refuses logins for
            # server_login_retry after a failed one, so some clients may still fail
            # just after others are served again (seen once in CI).
            recent = load.result(since=time.monotonic() - 1.0)
            return recent.transactions > 10 and recent.failures == 0

        wait_for(served_again, timeout=20, what="the application to be served again after the restart")
        recovered = time.monotonic()
        assert tool.wait() == 0, tool.output
        assert "lost the source" in tool.output and "answers again after" in tool.output, tool.output
        assert "pause window" in tool.output
        time.sleep(0.5)
    seen = load.stop()
    # Clients fail while the source itself is down (PgBouncer cannot hide a restart),
    # never after it, and none because of the move.
    after = load.result(since=recovered)
    assert after.failures == 0, after.failure_kinds
    assert after.transactions > 100, after
    assert all("permission denied" not in kind for kind in seen.failure_kinds), seen.failure_kinds
    wait_sides_identical(move)
    assert_moved(demo)


def test_a_second_execute_or_rollback_is_refused_while_one_runs(make_move, app_load, tmp_path):
    move = make_move()
    demo = demo_move(move, tmp_path, scale=2)
    with app_load(move, clients=4, rate=100):
        first = ToolProcess(demo, "execute", hold="replicate:copying")
        first.wait_held()
        second = ToolProcess(demo, "execute")
        assert second.wait() == 1, second.output
        assert f"move 'files-partition' is locked: execute by pid {first.pid}" in second.output
        assert "Traceback" not in second.output
        third = ToolProcess(demo, "rollback")
        assert third.wait() == 1, third.output
        assert f"is locked: execute by pid {first.pid}" in third.output

        status = status_of(demo)  # status takes no lock
        assert step_statuses(status)["replicate"] == "running"

        first.release()
        assert first.wait() == 0, first.output
        time.sleep(0.3)
    wait_sides_identical(move)
    assert_moved(demo)


def test_rollback_after_complete_is_refused_with_an_explanation(make_move, app_load, tmp_path):
    move = make_move()
    demo = demo_move(move, tmp_path, scale=2)
    with app_load(move):
        assert demo.cli("execute").exit_code == 0
        time.sleep(0.3)
    wait_sides_identical(move)

    with app_load(move) as load:
        result = demo.cli("complete")
        assert result.exit_code == 0, result.output
        result = demo.cli("rollback")
        assert result.exit_code == 1, result.output
        assert "was completed" in result.output and "nothing to roll back to" in result.output
        assert "source and target swapped" in result.output  # what to do instead
        assert "Traceback" not in result.output
        assert routes(move) == [("target", False)]
        time.sleep(0.3)
    assert load.result().transactions > 50
    status = status_of(demo)
    assert status["state"] == "completed"
    assert status["next_command"] == "nothing: the move is finished"
    assert leftover_slots(move) == []


# --------------------------------------------------------------------------- 5. a failure at each stage of the cutover


BEFORE_THE_POINT_OF_NO_RETURN = ("gated", "prepared", "briefed", "pausing", "paused", "old-switched", "caught-up",
                                 "replication-switched")
AFTER_IT = ("point_of_no_return", "rerouted", "resumed", "finished")


def tool_sessions(move) -> list[tuple]:
    """The tool's own sessions on either server (not the application's, not replication's)."""
    found = []
    for side in (move.source, move.target):
        with psycopg.connect(side.dsn(APP_DB)) as conn:
            found += conn.execute(
                "SELECT application_name, state FROM pg_stat_activity WHERE backend_type = 'client backend' "
                "AND application_name LIKE 'migrator %%' AND application_name NOT LIKE 'migrator workload%%' "
                "AND pid <> pg_backend_pid()").fetchall()
    return found


def temporary_configs(move) -> list[str]:
    """Files the reroute writes beside a PgBouncer's config before the pause."""
    return sorted(str(p) for b in move.pgbouncers for p in b.config_file.parent.glob(f".{b.config_file.name}.*"))


def fail_at(demo, monkeypatch, verb: str, point: str):
    monkeypatch.setenv(FAIL_AT_ENV, f"cutover:{point}")
    try:
        return demo.cli(verb)
    finally:
        monkeypatch.delenv(FAIL_AT_ENV)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("points", [BEFORE_THE_POINT_OF_NO_RETURN, AFTER_IT],
                         ids=["before the point of no return", "after it"])
def test_a_failure_at_each_stage_of_the_cutover_leaves_no_file_and_no_session_behind(
        make_move, app_load, tmp_path, monkeypatch, points):
    """The cutover fails at each of its named stages in turn, under load. Whatever the
    stage, the resources it held are released: no file beside the PgBouncer config, no
    session of the tool on either server, no PgBouncer paused; before the point of no
    return the traffic stays on the source, after it on the target; the next run carries
    on from there, and no client transaction fails."""
    move = make_move(pgbouncers=2)
    demo = demo_move(move, tmp_path, scale=1)
    assert demo.cli("execute", "--until", "cutover").exit_code == 0
    with app_load(move, clients=4, rate=100) as load:
        for point in points:
            result = fail_at(demo, monkeypatch, "execute", f"forward-{point}")
            assert result.exit_code == 1, (point, result.output)
            assert f"injected failure at cutover:forward-{point}" in result.output, (point, result.output)
            assert "Traceback" not in result.output
            expected = "source" if point in BEFORE_THE_POINT_OF_NO_RETURN else "target"
            wait_for(lambda e=expected: routes(move) == [(e, False)] * 2, timeout=10,
                     what=f"traffic on the {expected}, resumed, after a failure at {point}")
            wait_for(lambda: not tool_sessions(move), timeout=10, what=f"the tool's sessions gone after {point}")
            assert temporary_configs(move) == [], point
            if point in AFTER_IT:
                # The move is on the target: the next run finishes what is left, then the
                # move goes back for the next stage's failure.
                result = demo.cli("execute")
                assert result.exit_code == 0, (point, result.output)
                assert routes(move) == [("target", False)] * 2
                result = demo.cli("rollback", "--to", "prepare-reverse")
                assert result.exit_code == 0, (point, result.output)
                assert routes(move) == [("source", False)] * 2
        result = demo.cli("execute")
        assert result.exit_code == 0, result.output
        assert routes(move) == [("target", False)] * 2
        assert not tool_sessions(move) and temporary_configs(move) == []
        time.sleep(0.3)
    assert load.result().transactions > 50
    wait_sides_identical(move)
    assert_moved(demo)
