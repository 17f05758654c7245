"""`migrator complete`: ends a finished move, and only a finished one."""

from __future__ import annotations

import psycopg
from movekit import demo_move, wait_sides_identical

from migrator.lab.sandbox import APP_DB


def leftovers(dsn: str) -> dict:
    with psycopg.connect(dsn) as conn:
        return {
            "publications": conn.execute("SELECT pubname FROM pg_publication").fetchall(),
            "subscriptions": conn.execute("SELECT subname FROM pg_subscription").fetchall(),
            "slots": conn.execute("SELECT slot_name FROM pg_replication_slots").fetchall(),
            "schema": conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = 'migrator'").fetchall(),
        }


def group_tables(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE 'file%' ORDER BY 1")]


def test_complete_removes_every_object_then_rollback_is_refused(make_move, tmp_path):
    move = make_move()
    demo = demo_move(move, tmp_path, scale=1)

    early = demo.cli("complete")
    assert early.exit_code == 1 and "has not cut over" in early.output
    assert demo.cli("execute").exit_code == 0
    wait_sides_identical(move)

    refused = demo.cli("complete", "--drop-source")  # no terminal and no --yes
    assert refused.exit_code == 2 and "--yes" in refused.output
    assert group_tables(move.source.dsn(APP_DB)) == ["file_comments", "file_versions", "files"]

    code, doc = demo.cli_json("complete")
    assert code == 0, doc
    empty = {"publications": [], "subscriptions": [], "slots": [], "schema": []}
    # The old copy stays fenced (its function keeps the tool's schema); nothing else is left.
    assert leftovers(move.source.dsn(APP_DB)) == {**empty, "schema": [("migrator",)]}
    assert leftovers(move.target.dsn(APP_DB)) == empty
    with psycopg.connect(move.source.dsn(APP_DB)) as conn:
        assert conn.execute("SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                            "WHERE n.nspname = 'migrator'").fetchall() == [("migrator_files_partition_fence",)]
        assert conn.execute("SELECT relname FROM pg_class WHERE relnamespace = 'migrator'::regnamespace"
                            ).fetchall() == []
    assert group_tables(move.source.dsn(APP_DB)) == ["file_comments", "file_versions", "files"]

    rollback = demo.cli("rollback")
    assert rollback.exit_code == 1
    assert "was completed" in rollback.output and "nothing to roll back to" in rollback.output
    again = demo.cli("complete")
    assert again.exit_code == 1 and "already completed" in again.output
    code, status = demo.cli_json("status")
    assert status["state"] == "completed"


def test_complete_can_drop_the_source_copy(make_move, tmp_path):
    move = make_move()
    demo = demo_move(move, tmp_path, scale=1)
    assert demo.cli("execute").exit_code == 0
    result = demo.cli("complete", "--drop-source", "--yes")
    assert result.exit_code == 0, result.output
    assert group_tables(move.source.dsn(APP_DB)) == []
    assert group_tables(move.target.dsn(APP_DB)) == ["file_comments", "file_versions", "files"]
    with psycopg.connect(move.source.dsn(APP_DB)) as conn:  # what was outside the group stays
        assert conn.execute("SELECT count(*) FROM public.users").fetchone() == (500,)
