"""A source that fails over mid-move (issue 21): a PostgreSQL 18 primary with a streaming
standby, the playbook's source DSN listing both (target_session_attrs=read-write). The
primary is stopped and the standby promoted while the move streams; PgBouncer is pointed
at the new primary, as the operator's failover (a DNS name, a virtual IP) would do.

- The standby synchronises the move's failover slot: the move goes on from the promoted
  standby, cuts over, and every row the application committed is on both sides.
- It does not: `status`, `plan`, `verify` and `execute` name the lost slot and the one
  way on (rollback, then execute copies again), and the rollback leaves nothing behind.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import psycopg
import pytest
from catalogkit import all_events, planned_sql, same_sql, sql_events
from click.testing import CliRunner
from faultkit import catalog_differences, catalog_snapshot, wait_for
from movekit import DemoMove, demo_move, wait_sides_identical

from migrator.cli import cli
from migrator.lab.sandbox import APP_DB, GROUP_ENTRY, WHOLE_ENTRY, MoveTopology
from migrator.lab.workload import Workload
from migrator.pgbouncer.console import PgBouncerConsole

SLOT = "migrator_files_partition"

pytestmark = [pytest.mark.pg(18), pytest.mark.slow]


def failover_move(make_move, tmp_path, slot_sync: bool) -> DemoMove:
    move = make_move(source_version=18, target_version=18, source_standby="slot-sync" if slot_sync else "plain")
    demo = demo_move(move, tmp_path, scale=1)
    source = move.source
    both = (f"postgresql://{source.superuser}:{source.password}@127.0.0.1:{source.port},"
            f"127.0.0.1:{move.standby.port}/{APP_DB}?target_session_attrs=read-write")
    demo.path.write_text(demo.path.read_text().replace(source.url(APP_DB), both))
    assert demo.playbook.source.dsn == both
    return demo


def plan_json(demo: DemoMove) -> tuple[int, dict]:
    result = CliRunner().invoke(cli, ["plan", str(demo.path), "--json"])
    return result.exit_code, json.loads(result.stdout)


def query(cluster, statement: str, params=()) -> list[tuple]:
    with psycopg.connect(cluster.dsn(APP_DB), autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def synced(move: MoveTopology) -> bool:
    """Has the standby a copy of the move's slot that would survive its promotion? A copy
    stays temporary until the primary's slot moves its restart_lsn, at the next record of
    running transactions (every 15 s, or at once when asked for one)."""
    query(move.source, "SELECT pg_catalog.pg_log_standby_snapshot()")
    return bool(query(move.standby, "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s "
                                    "AND synced AND NOT temporary", (SLOT,)))


def fail_over(move: MoveTopology) -> None:
    """The primary stops, the standby is promoted, PgBouncer follows it (the PgBouncer would
    otherwise refuse logins for server_login_retry, 15 s, after the failed ones to the
    stopped primary: a longer test, not another one)."""
    move.source.stop("fast")
    move.standby.promote()
    config = move.pgbouncer.config_file
    config.write_text(config.read_text().replace(f"port={move.source.port}", f"port={move.standby.port}")
                      .replace("[pgbouncer]\n", "[pgbouncer]\nserver_login_retry = 1\n"))
    with PgBouncerConsole(move.pgbouncer.admin_dsn()) as console:
        console.reload()


class Committed:
    """The application's inserts through PgBouncer, each recorded once its COMMIT returned."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, conn, rng, shared) -> None:
        name = f"committed-{uuid.uuid4()}"
        conn.execute("INSERT INTO public.files (owner_id, name) VALUES (1, %s)", (name,))
        conn.commit()
        with self.lock:
            self.names.append(name)

    def count(self) -> int:
        with self.lock:
            return len(self.names)


@pytest.mark.timeout(150)
def test_a_move_follows_the_promoted_standby_and_cuts_over_with_every_committed_row(make_move, tmp_path):
    demo = failover_move(make_move, tmp_path, slot_sync=True)
    move = demo.move

    plan = plan_json(demo)[1]
    assert [f["level"] for f in plan["findings"] if f["code"] == "server.standby_slot_sync"] == ["ok"]
    seen = plan["source"]["failover"]
    assert [(s["name"], s["slot"], s["holds_xmin"]) for s in seen["standbys"]] == [("standby", "standby", True)]
    assert seen["synchronized_standby_slots"] == ["standby"] and seen["slotsync_workers"] == 1
    replicate = next(s for s in plan["steps"] if s["name"] == "replicate")
    assert "failover = true" in replicate["statements"][-1]["sql"]
    cutover = next(s for s in plan["steps"] if s["name"] == "cutover")
    assert any("pg_create_logical_replication_slot('migrator_files_partition_reverse', 'pgoutput', "
               "failover => true)" in q["sql"] for q in cutover["statements"])

    committed = Committed()
    load = Workload(move.app_dsn(GROUP_ENTRY), mix=committed, clients=4, rate=100).start()
    try:
        ran = demo.cli("execute", "--until", "cutover")
        assert ran.exit_code == 0, ran.output
        # What ran is what plan showed: the subscription makes a failover slot.
        same_sql(planned_sql(replicate), sql_events(all_events(demo.state_url, demo.playbook.name), "replicate"),
                 "replicate: plan vs execute")
        assert query(move.source, "SELECT failover FROM pg_replication_slots WHERE slot_name = %s", (SLOT,)) == \
            [(True,)]
        assert query(move.target, "SELECT subfailover FROM pg_subscription") == [(True,)]
        wait_for(lambda: synced(move), timeout=30, interval=0.2, what="the standby to synchronise the move's slot")

        before = committed.count()
        fail_over(move)
        wait_for(lambda: committed.count() > before + 20, timeout=30,
                 what="the application to commit on the promoted standby")

        code, status = demo.cli_json("status")
        assert code == 0 and status["replication"]["broken"] is None, status["replication"]
        ran = demo.cli("execute")
        assert ran.exit_code == 0, ran.output
        assert "pause window" in ran.output
        time.sleep(0.3)
    finally:
        load.stop()
    names = list(committed.names)
    assert len(names) > before + 20

    # Both sides the same, every committed row on both (the new primary: the standby).
    wait_sides_identical(move, source_cluster=move.standby)
    for cluster in (move.standby, move.target):
        found = {r[0] for r in query(cluster, "SELECT name FROM public.files WHERE name = ANY(%s)", (names,))}
        assert found == set(names), f"{len(set(names) - found)} committed rows missing on {cluster.name}"
    with PgBouncerConsole(move.pgbouncer.admin_dsn()) as console:
        assert console.databases()[GROUP_ENTRY].port == move.target.port
        assert console.databases()[WHOLE_ENTRY].port == move.standby.port
    code, verified = demo.cli_json("verify")
    assert code == 0 and verified["identical"], verified


@pytest.mark.timeout(120)
def test_a_slot_lost_to_a_failover_is_named_with_the_way_on_and_rollback_leaves_nothing(make_move, tmp_path):
    demo = failover_move(make_move, tmp_path, slot_sync=False)
    move = demo.move
    source_before = catalog_snapshot(move.source.dsn(APP_DB))
    target_before = catalog_snapshot(move.target.dsn(APP_DB))

    plan = plan_json(demo)[1]
    (standbys,) = [f for f in plan["findings"] if f["code"] == "server.standby_slot_sync"]
    assert standbys["level"] == "warn" and "streams without a physical slot" in standbys["message"]

    ran = demo.cli("execute", "--until", "cutover")
    assert ran.exit_code == 0, ran.output
    fail_over(move)
    # The application goes on on the promoted standby: its writes never reach the target.
    query(move.standby, "INSERT INTO public.files (owner_id, name) VALUES (1, 'after the failover')")
    config_after_failover = move.pgbouncer.config_file.read_text()
    way_on = "`migrator rollback`, then `migrator execute` copies the group again"

    code, status = demo.cli_json("status")
    assert code == 0
    assert status["state"] == "replication broken: slot missing on the source, probably a failover"
    assert status["next_command"] == (f"migrator rollback {demo.path}, then migrator execute {demo.path} "
                                      "(copies the group again)")
    assert f"replication slot {SLOT} is missing on the source" in status["replication"]["broken"]
    text = demo.cli("status").output
    assert "next: migrator execute" not in text and "replication: broken" in text

    code, plan = plan_json(demo)
    assert code == 3
    assert plan["blocking"][0]["code"] == "move.slot_lost"
    assert plan["blocking"][0]["hint"] == way_on
    assert "earlier run" not in " ".join(f["message"] for f in plan["findings"])

    code, verified = demo.cli_json("verify")
    assert code == 1 and not verified["identical"]
    assert any(f"replication slot {SLOT} is missing on the source" in n and way_on in n for n in verified["notes"])

    ran = demo.cli("execute")
    assert ran.exit_code == 1
    assert f"replication slot {SLOT} is missing on the source, probably a failover" in ran.output
    assert way_on in ran.output

    ran = demo.cli("rollback")
    assert ran.exit_code == 0, ran.output
    # Nothing left on the promoted standby (the source now) nor on the target.
    assert catalog_differences(source_before, catalog_snapshot(move.standby.dsn(APP_DB))) == {}
    assert catalog_differences(target_before, catalog_snapshot(move.target.dsn(APP_DB))) == {}
    assert move.pgbouncer.config_file.read_text() == config_after_failover
    assert demo.cli_json("status")[1]["state"] == "rolled back"
