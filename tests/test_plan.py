"""`migrator plan` against real servers: what it finds, what blocks, and that it changes nothing.

Every blocking condition the plan promises to catch is created here for real on a
fresh topology, then the plan is run through the CLI and must exit 3 naming the object.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from conftest import PASSWORD

from migrator.cli import cli
from migrator.lab.sandbox import APP_DB, GROUP_ENTRY, GROUP_TABLES, create_demo_schema
from migrator.lab.topology import FAST_SETTINGS, LOGICAL_SETTINGS
from migrator.pgbouncer.console import PgBouncerConsole

# The keys of `plan --json` (README "Plan"): scripts rely on them, so they only grow.
PLAN_KEYS = {
    "ok", "playbook", "source", "target", "findings", "blocking", "tables", "pgbouncers",
    "steps", "estimate", "objects", "inspected_at",
}
FINDING_KEYS = {"level", "code", "subject", "message", "hint", "noun"}
STEP_KEYS = {"name", "title", "statements", "notes"}
STATEMENT_KEYS = {"on", "sql", "note"}
ESTIMATE_KEYS = {
    "tables", "estimated_rows", "bytes_to_copy", "index_bytes_to_rebuild",
    "copy_rate_bytes_per_s", "copy_seconds",
}
TABLE_KEYS = {
    "name", "exists", "kind", "size", "estimated_rows", "replica_identity", "primary_key",
    "on_target", "columns", "indexes", "sequences", "foreign_keys", "triggers",
    "generated_columns", "types", "extensions",
}
SERVER_KEYS = {
    "display", "version", "major", "wal_level", "settings", "in_use", "role", "app_roles",
    "leftovers", "long_transactions", "extensions", "failover",
}
STEPS = ["preflight", "schema", "defer-indexes", "replicate", "rebuild-indexes",
         "prepare-reverse", "cutover"]


def demo(move, tmp_path: Path, *, scale: int = 0, tables=GROUP_TABLES, **changes) -> Path:
    """The demo schema on the source and a playbook (DSNs carry the password) for it."""
    create_demo_schema(move.source.dsn(APP_DB), scale=scale)
    doc = move.playbook_doc(tables)
    doc.update(changes)
    return move.write_playbook(tmp_path / "playbook.yaml", doc)


def plan(path: Path, *args: str):
    result = CliRunner().invoke(cli, ["plan", str(path), *args])
    assert "Traceback" not in result.output
    assert PASSWORD not in result.output
    return result


def plan_json(path: Path, *args: str) -> tuple[int, dict]:
    result = plan(path, "--json", *args)
    return result.exit_code, json.loads(result.stdout)


def codes(doc: dict, level: str | None = None) -> set[str]:
    return {f["code"] for f in doc["findings"] if level is None or f["level"] == level}


def blocking_text(doc: dict) -> str:
    return "\n".join(f"{f['code']}: {f['message']} — {f['hint']}" for f in doc["blocking"])


def sql(move, side: str, *statements: str) -> None:
    cluster = move.source if side == "source" else move.target
    with psycopg.connect(cluster.dsn(APP_DB), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


# --------------------------------------------------------------------------- a good plan


def test_the_demo_plan_is_ready_and_shows_every_step_with_its_sql(move, tmp_path):
    path = demo(move, tmp_path, scale=1)

    result = plan(path, "--sql")

    assert result.exit_code == 0, result.output
    text = result.stdout
    for number, step in enumerate(STEPS, 1):
        assert f"{number}. {step} — " in text
    assert 'CREATE TABLE "public"."files"' in text
    assert 'DROP INDEX IF EXISTS "public"."files_owner_idx"' in text
    assert "CREATE INDEX IF NOT EXISTS files_owner_idx ON public.files" in text
    assert 'CREATE PUBLICATION "migrator_files_partition" FOR TABLE "public"."files"' in text
    assert "CREATE SUBSCRIPTION \"migrator_files_partition\" CONNECTION 'postgresql://migrator:****@" in text
    assert 'CREATE PUBLICATION "migrator_files_partition_reverse"' in text
    assert f"PAUSE {GROUP_ENTRY}" in text and f"RESUME {GROUP_ENTRY}" in text
    assert f"{GROUP_ENTRY} = host=127.0.0.1 port={move.target.port} dbname={APP_DB}" in text
    assert "pg_catalog.setval(u.seq, u.v, u.c)" in text
    assert "'\"public\".\"file_number_seq\"'" in text  # the bare sequence too
    assert "sequence.copied_at_cutover" in text
    assert "ready: nothing blocks the move" in text
    assert "estimate: copy about 5,000 rows" in text


def test_plan_json_has_stable_keys_and_the_same_facts(move, tmp_path):
    path = demo(move, tmp_path, scale=1)

    code, doc = plan_json(path, "--copy-rate", "1MB/s")

    assert code == 0
    assert set(doc) == PLAN_KEYS
    assert doc["ok"] is True and doc["blocking"] == []
    assert set(doc["source"]) == SERVER_KEYS and set(doc["target"]) == SERVER_KEYS
    assert all(set(f) == FINDING_KEYS for f in doc["findings"])
    assert [s["name"] for s in doc["steps"]] == STEPS
    assert all(set(s) == STEP_KEYS for s in doc["steps"])
    assert all(set(st) == STATEMENT_KEYS for s in doc["steps"] for st in s["statements"])
    assert set(doc["estimate"]) == ESTIMATE_KEYS
    assert [t["name"] for t in doc["tables"]] == list(GROUP_TABLES)
    assert all(set(t) == TABLE_KEYS for t in doc["tables"])
    assert doc["playbook"]["objects"]["slot"] == "migrator_files_partition"

    estimate = doc["estimate"]
    files = doc["tables"][0]
    assert estimate["copy_rate_bytes_per_s"] == 1024**2
    assert estimate["estimated_rows"] == 5000
    assert estimate["bytes_to_copy"] == sum(t["size"]["copy_bytes"] for t in doc["tables"]) > 0
    assert estimate["copy_seconds"] == pytest.approx(estimate["bytes_to_copy"] / 1024**2, abs=0.001)
    deferred = {i["name"] for t in doc["tables"] for i in t["indexes"] if i["secondary"]}
    assert deferred == {"files_uuid_key", "files_owner_idx", "files_name_idx",
                        "file_versions_created_idx", "file_versions_hash_idx", "file_comments_file_idx"}
    assert {s["sequence"] for s in files["sequences"]} == {"public.files_id_seq", "public.file_number_seq"}
    assert files["primary_key"] == "files_pkey" and files["on_target"] == "absent"
    defer = next(s for s in doc["steps"] if s["name"] == "defer-indexes")
    assert len(defer["statements"]) == len(deferred)
    assert all(st["on"] == "target" for st in defer["statements"])
    assert doc["pgbouncers"][0]["points_at_source"] is True


def test_plan_with_indexes_not_deferred_counts_indexes_in_the_copy(move, tmp_path):
    path = demo(move, tmp_path, scale=1, indexes={"defer": False})

    code, doc = plan_json(path)

    assert code == 0
    tables = doc["tables"]
    assert doc["estimate"]["bytes_to_copy"] == sum(
        t["size"]["copy_bytes"] + t["size"]["index_bytes"] for t in tables)
    assert doc["estimate"]["index_bytes_to_rebuild"] == 0
    defer = next(s for s in doc["steps"] if s["name"] == "defer-indexes")
    assert defer["statements"] == [] and "indexes.defer is false" in defer["notes"][0]


def test_the_schema_sql_of_the_plan_creates_the_group_on_an_empty_server(move, tmp_path):
    # The plan promises the schema step's SQL: run it on the target and compare catalogs.
    path = demo(move, tmp_path)
    code, doc = plan_json(path)
    assert code == 0
    schema = next(s for s in doc["steps"] if s["name"] == "schema")
    runnable = [st["sql"] for st in schema["statements"] if st["on"] == "target" and not st["note"]]
    with psycopg.connect(move.target.dsn(APP_DB)) as conn:
        for statement in runnable:
            conn.execute(statement)
        columns = conn.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_name IN "
            "('files', 'file_versions', 'file_comments')").fetchone()[0]
        indexes = conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE tablename IN ('files', 'file_versions', 'file_comments')"
        ).fetchone()[0]
        conn.rollback()
    assert columns == 10 + 6 + 5
    assert indexes == 4 + 4 + 2  # files: pkey + 3; file_versions: pkey, unique, 2; file_comments: pkey + 1


# --------------------------------------------------------------------------- plan changes nothing


def catalog_state(move) -> dict:
    """What a plan must not change, on both servers and in PgBouncer."""
    state: dict = {}
    for side, cluster in (("source", move.source), ("target", move.target)):
        with psycopg.connect(cluster.dsn(APP_DB), autocommit=True) as conn:
            def rows(query: str) -> list:
                return conn.execute(query).fetchall()

            state[side] = {
                "publications": rows("SELECT pubname, puballtables FROM pg_publication ORDER BY 1"),
                "publication_tables": rows("SELECT * FROM pg_publication_tables ORDER BY 1, 2, 3"),
                "subscriptions": rows("SELECT subname, subenabled FROM pg_subscription ORDER BY 1"),
                "slots": rows("SELECT slot_name, plugin, slot_type FROM pg_replication_slots ORDER BY 1"),
                "relations": rows(
                    "SELECT c.oid, n.nspname, c.relname, c.relkind, c.relacl::text, c.relreplident "
                    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') ORDER BY 1"),
                "schemas": rows("SELECT nspname, nspacl::text FROM pg_namespace ORDER BY 1"),
                "roles": rows("SELECT rolname, rolsuper, rolreplication FROM pg_roles ORDER BY 1"),
                "database_acl": rows("SELECT datname, datacl::text FROM pg_database ORDER BY 1"),
                "sequences": rows("SELECT schemaname, sequencename, last_value FROM pg_sequences ORDER BY 1, 2"),
                "types": rows("SELECT oid, typname FROM pg_type WHERE typnamespace = 'public'::regnamespace ORDER BY 1"),
                "settings": rows("SELECT name, setting FROM pg_settings WHERE source NOT IN "
                                 "('client', 'session', 'default') ORDER BY 1"),
                "rows": rows("SELECT (SELECT count(*) FROM public.files), (SELECT count(*) FROM public.file_versions)")
                if side == "source" else [],
            }
    with PgBouncerConsole(move.pgbouncer.admin_dsn()) as console:
        state["pgbouncer"] = sorted(
            (name, e.host, e.port, e.database, e.paused, e.disabled) for name, e in console.databases().items()
        )
    state["pgbouncer_config"] = move.pgbouncer.config_file.read_text()
    return state


def test_plan_changes_nothing_on_either_server_or_pgbouncer(move, tmp_path):
    path = demo(move, tmp_path, scale=1, app_roles=["app"])
    # Objects that exist already must not be touched either.
    sql(move, "target", "CREATE TABLE public.files (id bigint)", "INSERT INTO public.files VALUES (1)")
    sql(move, "source", "SELECT pg_create_logical_replication_slot('migrator_files_partition', 'pgoutput')")
    before = catalog_state(move)

    text = plan(path)
    code, _ = plan_json(path)

    assert text.exit_code == 3 and code == 3
    assert catalog_state(move) == before


# --------------------------------------------------------------------------- blocking conditions


def test_a_table_without_a_key_blocks_and_is_named(move, tmp_path):
    create_demo_schema(move.source.dsn(APP_DB))
    sql(move, "source", "CREATE TABLE public.events (at timestamptz, what text)")
    path = move.write_playbook(tmp_path / "p.yaml", tables=[*GROUP_TABLES, "public.events"])

    result = plan(path)
    code, doc = plan_json(path)

    assert result.exit_code == 3 and code == 3
    assert "error: the move is blocked: public.events has no primary key or replica identity" in result.stderr
    assert "add a primary key" in result.stderr
    block = doc["blocking"]
    assert [f["code"] for f in block] == ["table.no_replica_identity"]
    assert block[0]["subject"] == "public.events"
    assert "UPDATE/DELETE would fail once it is published" in block[0]["message"]
    assert "REPLICA IDENTITY FULL" in block[0]["hint"]


def test_wal_level_replica_and_no_free_slots_block(move, tmp_path):
    path = demo(move, tmp_path)
    move.source.write_settings({**LOGICAL_SETTINGS, **FAST_SETTINGS,
                                "wal_level": "replica", "max_replication_slots": "1"})
    move.source.restart()

    code, doc = plan_json(path)

    assert code == 3
    wal = [f for f in doc["blocking"] if f["code"] == "server.wal_level"]
    assert len(wal) == 1 and wal[0]["subject"] == "source"
    assert "wal_level = replica" in wal[0]["message"] and "wal_level = logical" in wal[0]["hint"]
    slots = [f for f in doc["blocking"] if f["code"] == "server.slots_headroom"]
    assert len(slots) == 1 and "max_replication_slots = 1" in slots[0]["message"]
    assert doc["source"]["wal_level"] == "replica"


def test_foreign_keys_across_the_group_boundary_block_naming_both_tables(move, tmp_path):
    create_demo_schema(move.source.dsn(APP_DB))
    sql(move, "source", "ALTER TABLE public.files ADD CONSTRAINT files_owner_fkey "
                        "FOREIGN KEY (owner_id) REFERENCES public.users(id)")
    # file_comments stays behind but references files: the reverse direction.
    path = move.write_playbook(tmp_path / "p.yaml", tables=["public.files", "public.file_versions"])

    code, doc = plan_json(path)

    assert code == 3
    crossing = {f["subject"]: f for f in doc["blocking"] if f["code"] == "fk.crosses_group"}
    assert set(crossing) == {"public.files -> public.users", "public.file_comments -> public.files"}
    out = crossing["public.files -> public.users"]
    assert "files_owner_fkey" in out["message"] and "public.users (outside the group)" in out["message"]
    assert "add public.users to tables:" in out["hint"]
    back = crossing["public.file_comments -> public.files"]
    assert "public.file_comments (outside the group) references public.files" in back["message"]
    assert "add public.file_comments to tables:" in back["hint"]


def test_a_missing_table_blocks_and_is_named(move, tmp_path):
    path = demo(move, tmp_path, tables=[*GROUP_TABLES, "public.attachments"])

    result = plan(path)
    code, doc = plan_json(path)

    assert result.exit_code == 3 and code == 3
    assert "public.attachments does not exist on the source" in result.stderr
    assert [(f["code"], f["subject"]) for f in doc["blocking"]] == [("table.missing", "public.attachments")]
    assert doc["tables"][-1] == {**doc["tables"][-1], "name": "public.attachments", "exists": False}


def test_a_missing_app_role_blocks_naming_the_role_and_server(move, tmp_path):
    sql(move, "source", "CREATE ROLE reporting")
    path = demo(move, tmp_path, app_roles=["app", "reporting"])

    code, doc = plan_json(path)

    assert code == 3
    assert [(f["code"], f["subject"]) for f in doc["blocking"]] == [("role.missing", "target role reporting")]
    assert "app role reporting does not exist on the target" in doc["blocking"][0]["message"]
    assert doc["target"]["app_roles"] == {"app": True, "reporting": False}


def test_a_stopped_pgbouncer_blocks(move, tmp_path):
    path = demo(move, tmp_path)
    move.pgbouncer.stop()

    result = plan(path)
    code, doc = plan_json(path)

    assert result.exit_code == 3 and code == 3
    assert [f["code"] for f in doc["blocking"]] == ["pgbouncer.unreachable"]
    finding = doc["blocking"][0]
    assert f"127.0.0.1:{move.pgbouncer.port}/pgbouncer" in finding["subject"]
    assert "unreachable" in finding["message"] and "start PgBouncer" in finding["hint"]
    assert f"PgBouncer admin console migrator@127.0.0.1:{move.pgbouncer.port}/pgbouncer" in result.stderr


def test_a_pgbouncer_entry_routing_elsewhere_blocks(move, tmp_path):
    path = demo(move, tmp_path)
    config = move.pgbouncer.config_file
    config.write_text(config.read_text().replace(f"{GROUP_ENTRY} = host=127.0.0.1 port={move.source.port}",
                                                 f"{GROUP_ENTRY} = host=127.0.0.1 port={move.target.port}"))
    with PgBouncerConsole(move.pgbouncer.admin_dsn()) as console:
        console.reload()

    code, doc = plan_json(path)

    assert code == 3
    found = {f["code"]: f for f in doc["blocking"]}
    assert set(found) == {"pgbouncer.entry_not_on_source", "pgbouncer.config_entry_not_on_source"}
    assert f"routes {GROUP_ENTRY} to 127.0.0.1:{move.target.port}/app (the target: already moved?)" in (
        found["pgbouncer.entry_not_on_source"]["message"])


@pytest.mark.pg(18)
def test_a_target_older_than_the_source_blocks(make_move, tmp_path):
    move = make_move(source_version=18)
    path = demo(move, tmp_path, scale=1)

    result = plan(path)
    code, doc = plan_json(path)

    assert result.exit_code == 3 and code == 3
    assert [f["code"] for f in doc["blocking"]] == ["server.version_order"]
    assert "the target runs PostgreSQL 15, older than the source's 18" in doc["blocking"][0]["message"]
    assert doc["source"]["major"] == 18 and doc["target"]["major"] == 15
    # Everything else was read from the PostgreSQL 18 catalogs as from 15's.
    assert [t["primary_key"] for t in doc["tables"]] == ["files_pkey", "file_versions_pkey", "file_comments_pkey"]
    assert {i["name"] for t in doc["tables"] for i in t["indexes"] if i["secondary"]} == {
        "files_uuid_key", "files_owner_idx", "files_name_idx", "file_versions_created_idx",
        "file_versions_hash_idx", "file_comments_file_idx"}
    assert doc["estimate"]["estimated_rows"] == 5000


def test_a_leftover_slot_blocks_and_is_named_with_the_wal_it_retains(move, tmp_path):
    path = demo(move, tmp_path)
    sql(move, "source", "SELECT pg_create_logical_replication_slot('migrator_files_partition', 'pgoutput')")

    result = plan(path)
    code, doc = plan_json(path)

    assert result.exit_code == 3 and code == 3
    assert [(f["code"], f["subject"]) for f in doc["blocking"]] == [
        ("move.leftover_slot", "source slot migrator_files_partition")]
    message = doc["blocking"][0]["message"]
    assert "slot migrator_files_partition already exists on the source" in message
    assert "of WAL" in message and "not in use" in message
    assert "pg_drop_replication_slot('migrator_files_partition')" in doc["blocking"][0]["hint"]
    assert doc["source"]["leftovers"][0]["name"] == "migrator_files_partition"


def test_a_group_table_holding_rows_on_the_target_blocks(move, tmp_path):
    path = demo(move, tmp_path)
    sql(move, "target", "CREATE TABLE public.file_comments (id bigint PRIMARY KEY)",
        "INSERT INTO public.file_comments VALUES (1)",
        "CREATE TABLE public.file_versions (id bigint PRIMARY KEY)")

    code, doc = plan_json(path)

    assert code == 3
    assert {(f["code"], f["subject"]) for f in doc["blocking"]} == {
        ("target.table_not_empty", "public.file_comments"),
        ("target.table_exists", "public.file_versions"),
    }
    assert [t["on_target"] for t in doc["tables"]] == ["absent", "empty", "has rows"]


def test_a_stopped_target_is_exit_1_naming_the_target(move, tmp_path):
    path = demo(move, tmp_path)
    move.target.stop()

    result = plan(path)
    code, doc = plan_json(path)

    assert result.exit_code == 1 and code == 1
    assert result.stderr.startswith(f"error: cannot inspect the target: cannot connect to migrator@127.0.0.1:"
                                    f"{move.target.port}/app")
    assert doc["ok"] is False and doc["error"].startswith("cannot inspect the target")
