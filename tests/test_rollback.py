"""`migrator rollback`: undo from wherever the run stands, down to exactly what was there.

A full rollback must leave both servers' catalogs and every PgBouncer config as they
were before `execute` (compared with a snapshot), and a rollback across the cutover is
a reverse cutover under the same bounds as the forward one.
"""

from __future__ import annotations

import json
import time

import psycopg
import pytest
import yaml
from click.testing import CliRunner
from faultkit import (
    ToolProcess,
    assert_like_before,
    config_texts,
    leftover_slots,
    pause_bound,
    routes,
    snapshot_everything,
    wait_for,
)
from movekit import DemoMove, assert_sides_identical, demo_move, wait_sides_identical

from migrator.cli import cli
from migrator.lab.sandbox import APP_DB, GROUP_ENTRY


def status_of(demo) -> dict:
    code, doc = demo.cli_json("status")
    assert code == 0, doc
    return doc


def statuses(demo) -> list[str]:
    return [s["status"] for s in status_of(demo)["steps"]]


def replication_objects(move) -> dict[str, list]:
    out = {}
    for cluster in (move.source, move.target):
        with psycopg.connect(cluster.dsn(APP_DB)) as conn:
            out[cluster.name] = sorted(
                [f"pub {r[0]}" for r in conn.execute("SELECT pubname FROM pg_publication")]
                + [f"sub {r[0]}{'' if r[1] else ' (disabled)'}"
                   for r in conn.execute("SELECT subname, subenabled FROM pg_subscription")]
                + [f"slot {r[0]}" for r in conn.execute("SELECT slot_name FROM pg_replication_slots")])
    return out


def target_indexes(move, table: str = "files") -> set[str]:
    with psycopg.connect(move.target.dsn(APP_DB)) as conn:
        return {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", (table,))}


def write_a_little(move, n: int = 20) -> None:
    with psycopg.connect(move.app_dsn(GROUP_ENTRY), autocommit=True, prepare_threshold=None) as conn:
        for i in range(n):
            conn.execute("INSERT INTO public.files (owner_id, name) VALUES (1, %s)", (f"little-{i}",))


def test_rollback_stage_by_stage_before_the_cutover(make_move, tmp_path):
    move = make_move()
    demo = demo_move(move, tmp_path, scale=1)
    before = snapshot_everything(move)

    result = demo.cli("rollback")
    assert result.exit_code == 1 and "has no recorded run to roll back" in result.output
    assert demo.cli("execute", "--until", "cutover").exit_code == 0
    result = demo.cli("rollback", "--to", "no-such-step")
    assert result.exit_code == 1 and "is not a step" in result.output

    # Back to "replicated, indexes not rebuilt": forward replication keeps running.
    result = demo.cli("rollback", "--to", "replicate")
    assert result.exit_code == 0, result.output
    assert statuses(demo) == ["done"] * 4 + ["undone"] * 2 + ["pending"]
    assert target_indexes(move) == {"files_pkey"}
    assert replication_objects(move) == {
        "source": ["pub migrator_files_partition", "slot migrator_files_partition"],
        "target": ["sub migrator_files_partition"],
    }
    write_a_little(move)
    wait_sides_identical(move)
    status = status_of(demo)
    assert status["state"] == "in progress: done up to replicate"
    assert status["next_command"] == f"migrator execute {demo.path}"

    # Forward again, then back to "schema only": replication gone, indexes restored.
    assert demo.cli("execute", "--until", "cutover").exit_code == 0
    assert target_indexes(move) == {"files_pkey", "files_uuid_key", "files_owner_idx", "files_name_idx"}
    result = demo.cli("rollback", "--to", "schema")
    assert result.exit_code == 0, result.output
    assert statuses(demo) == ["done", "done"] + ["undone"] * 4 + ["pending"]
    assert replication_objects(move) == {"source": [], "target": []}
    assert target_indexes(move) == {"files_pkey", "files_uuid_key", "files_owner_idx", "files_name_idx"}

    result = demo.cli("rollback")
    assert result.exit_code == 0, result.output
    assert_like_before(move, before)
    status = status_of(demo)
    assert status["state"] == "rolled back"
    assert status["next_command"] == f"migrator execute {demo.path} to start again"
    assert status["replication"]["orphaned_slots"] == []


@pytest.mark.containers
@pytest.mark.slow
def test_full_rollback_after_the_cutover_leaves_catalogs_and_configs_as_before(make_move, app_load, tmp_path):
    """The acceptance test: publications, subscriptions, slots, replication origins,
    every relation with its ACL, columns, constraints, indexes, triggers, types,
    functions, schemas and roles on both servers, and the PgBouncer config files, all
    compared with a snapshot taken before `execute`."""
    move = make_move()
    demo = demo_move(move, tmp_path, scale=2)
    # The playbook names the source differently from PgBouncer's entry: routing back
    # must restore the entry as it was, not a rewrite of it from the playbook's DSN.
    doc = yaml.safe_load(demo.path.read_text())
    doc["source"]["dsn"] = doc["source"]["dsn"].replace("@127.0.0.1:", "@localhost:")
    demo.path.write_text(yaml.safe_dump(doc, sort_keys=False))
    before = snapshot_everything(move)
    with app_load(move):
        assert demo.cli("execute").exit_code == 0
        time.sleep(0.5)  # the application writes on the target
        result = demo.cli("rollback", "--to", "replicate")
        assert result.exit_code == 0, result.output
        assert "pause window (reverse)" in result.output
        assert routes(move) == [("source", False)]
        time.sleep(0.5)
    counts = wait_sides_identical(move)  # nothing written on the target was lost
    assert counts["public.files"] > 2000

    result = demo.cli("rollback")
    assert result.exit_code == 0, result.output
    assert leftover_slots(move) == []
    assert_like_before(move, before)
    with psycopg.connect(move.source.dsn(APP_DB)) as conn:
        assert conn.execute("SELECT count(*) FROM public.files").fetchone()[0] == counts["public.files"]
    status = status_of(demo)
    assert status["state"] == "rolled back"
    assert [r["points_to"] for r in status["routes"]] == ["source"]

    # A full rollback leaves a state from which the move runs again, from scratch.
    result = demo.cli("execute")
    assert result.exit_code == 0, result.output
    assert_sides_identical(move)


@pytest.mark.slow
def test_rollback_under_benchmark_load_then_the_move_is_retried(make_move, app_load, tmp_path):
    """The reverse cutover under the cutover benchmark's load (16 clients, 600 tps asked
    through PgBouncer): no failed client transaction, the pause within max_pause, both
    sides identical; forward replication is re-created without copying, so execute
    retries. How short the pause and the clients' stall are: cutover_bench."""
    move = make_move()
    demo = demo_move(move, tmp_path, scale=2)
    assert demo.cli("execute").exit_code == 0
    max_pause = demo.playbook.cutover.max_pause
    with app_load(move, clients=16, rate=600) as load:
        time.sleep(1.0)
        result = demo.cli("rollback", "--to", "prepare-reverse")
        assert result.exit_code == 0, result.output
        time.sleep(1.0)
    assert load.result().longest_gap_s < pause_bound(max_pause), load.result()
    window = status_of(demo)["last_cutover"]
    assert window["direction"] == "reverse" and window["outcome"] == "completed"
    assert window["total"] <= max_pause, window
    wait_sides_identical(move)
    assert routes(move) == [("source", False)]
    assert replication_objects(move)["target"] == ["pub migrator_files_partition_reverse",
                                                   "sub migrator_files_partition"]
    status = status_of(demo)
    assert statuses(demo) == ["done"] * 6 + ["undone"]
    assert status["replication"]["direction"] == "forward"

    with app_load(move):
        result = demo.cli("execute")
        assert result.exit_code == 0, result.output
        assert "→ replicate" not in result.output  # retried from the cutover, no second copy
        time.sleep(0.5)
    wait_sides_identical(move)
    assert routes(move) == [("target", False)]


def test_rollback_keep_target_keeps_the_tables_and_removes_the_rest(make_move, tmp_path):
    move = make_move()
    demo = demo_move(move, tmp_path, scale=1)
    configs = config_texts(move)
    assert demo.cli("execute").exit_code == 0
    write_a_little(move)
    wait_sides_identical(move)

    result = demo.cli("rollback", "--keep-target")
    assert result.exit_code == 0, result.output
    assert "kept the target's tables" in result.output
    counts = assert_sides_identical(move)  # the target's copy is whole and stays
    assert counts["public.files"] == 1000 + 20
    assert target_indexes(move) == {"files_pkey", "files_uuid_key", "files_owner_idx", "files_name_idx"}
    assert replication_objects(move) == {"source": [], "target": []}
    for cluster in (move.source, move.target):
        with psycopg.connect(cluster.dsn(APP_DB)) as conn:
            assert conn.execute("SELECT to_regnamespace('migrator')").fetchone() == (None,)
    assert config_texts(move) == configs
    assert routes(move) == [("source", False)]
    assert status_of(demo)["state"] == "rolled back"

    # The kept tables are not this move's any more: a new run says so instead of
    # copying on top of them.
    result = demo.cli("execute")
    assert result.exit_code == 3, result.output
    assert "public.files already holds rows on the target" in result.output


def tablesync_slots(move) -> list[str]:
    with psycopg.connect(move.source.dsn(APP_DB)) as conn:
        return [r[0] for r in conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'pg\\_%\\_sync\\_%'")]


def test_rollback_with_the_source_down_mid_copy_leaves_no_slot_behind(make_move, tmp_path):
    """The tool dies during the initial copy, then the source goes down: rollback drops
    the subscription but not yet its slots (the main one and the table-sync ones of the
    copy in flight). status and plan report them (they retain WAL) until the next
    rollback, with the source back, drops every one."""
    move = make_move()
    demo = demo_move(move, tmp_path, scale=20)
    before = snapshot_everything(move)
    tool = ToolProcess(demo, "execute", hold="replicate:copying")
    tool.wait_held()
    wait_for(lambda: tablesync_slots(move), timeout=30, what="a table-sync slot of the copy")
    tool.kill()
    move.source.stop(mode="immediate")
    result = demo.cli("rollback")
    assert result.exit_code == 1, result.output
    assert "the source is unreachable" in result.output
    assert "migrator_files_partition" in result.output
    move.source.start()

    status = status_of(demo)
    assert status["state"].startswith("replicate undoing")
    assert status["next_command"] == f"migrator rollback {demo.path} (resumes)"
    orphans = status["replication"]["orphaned_slots"]
    assert any(s.startswith("migrator_files_partition on") for s in orphans), orphans
    assert any(s.startswith("pg_") and "_sync_" in s for s in orphans), orphans
    text = demo.cli("status").output
    assert "inactive replication slots (they retain WAL)" in text
    plan = CliRunner().invoke(cli, ["plan", str(demo.path), "--json"])
    assert plan.exit_code == 3, plan.output
    blocking = [f["message"] for f in json.loads(plan.stdout)["blocking"] if f["code"] == "move.leftover_slot"]
    assert len(blocking) == 1 and "slot migrator_files_partition already exists on the source" in blocking[0]

    result = demo.cli("rollback")
    assert result.exit_code == 0, result.output
    assert leftover_slots(move) == []
    assert_like_before(move, before)
    assert status_of(demo)["replication"]["orphaned_slots"] == []


OWN_SCHEMA = """
CREATE SCHEMA media;
GRANT USAGE ON SCHEMA media TO app;
CREATE TYPE media.asset_kind AS ENUM ('image', 'video');
CREATE SEQUENCE media.asset_no START 500;
CREATE TABLE media.assets (
    id bigint PRIMARY KEY DEFAULT nextval('media.asset_no'),
    kind media.asset_kind NOT NULL DEFAULT 'image',
    tag text
);
CREATE FUNCTION media.tag_asset() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.tag := coalesce(NEW.tag, 'untagged'); RETURN NEW; END $$;
CREATE TRIGGER assets_tag BEFORE INSERT ON media.assets FOR EACH ROW EXECUTE FUNCTION media.tag_asset();
CREATE INDEX assets_tag_idx ON media.assets (tag);
GRANT SELECT, INSERT, UPDATE, DELETE ON media.assets TO app;
GRANT USAGE ON SEQUENCE media.asset_no TO app;
INSERT INTO media.assets (kind) SELECT 'video' FROM generate_series(1, 100);
"""


def test_full_rollback_removes_the_schema_types_and_functions_it_created(make_move, tmp_path):
    """A group in its own schema, with an enum, a function and a bare sequence: the move
    creates all of them on the target, and a full rollback removes all of them."""
    move = make_move()
    with psycopg.connect(move.source.dsn(APP_DB), autocommit=True) as conn:
        conn.execute(OWN_SCHEMA)
    path = move.write_playbook(tmp_path / "playbook.yaml", move.playbook_doc(["media.assets"]))
    demo = DemoMove(move, path, f"sqlite:///{tmp_path / 'state.db'}")
    before = snapshot_everything(move)
    assert demo.cli("execute").exit_code == 0
    with psycopg.connect(move.app_dsn(GROUP_ENTRY), autocommit=True, prepare_threshold=None) as conn:
        conn.execute("INSERT INTO media.assets DEFAULT VALUES")
    result = demo.cli("rollback", "--to", "replicate")
    assert result.exit_code == 0, result.output
    wait_sides_identical(move, ["media.assets"])
    result = demo.cli("rollback")
    assert result.exit_code == 0, result.output
    assert_like_before(move, before)
