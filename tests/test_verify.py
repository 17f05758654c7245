"""`migrator verify`: identical under load, a tampered row found, in-flight changes forgiven.

Replication is set up by hand here (publication and subscription under the names the
move itself uses), so verify's catch-up wait finds it as it would during a move.
"""

from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

from migrator import names
from migrator.cli import cli
from migrator.errors import OperationFailed
from migrator.lab.sandbox import APP_DB, GROUP_TABLES, create_demo_schema
from migrator.playbook import RestartSettings, load_playbook
from migrator.verify.compare import verify


def replicated(move, tmp_path, *, scale: int = 1):
    """The demo schema on both sides, the group replicated source -> target and synced."""
    create_demo_schema(move.source.dsn(APP_DB), scale=scale)
    create_demo_schema(move.target.dsn(APP_DB))
    path = move.write_playbook(tmp_path / "playbook.yaml")
    book = load_playbook(path)
    with psycopg.connect(move.source.dsn(APP_DB), autocommit=True) as src:
        src.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
            sql.Identifier(names.publication(book)),
            sql.SQL(", ").join(t.identifier for t in book.tables)))
    with psycopg.connect(move.target.dsn(APP_DB), autocommit=True) as dst:
        dst.execute(sql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {}").format(
            sql.Identifier(names.subscription(book)), sql.Literal(move.source.dsn(APP_DB)),
            sql.Identifier(names.publication(book))))
        deadline = time.monotonic() + 60
        while dst.execute("SELECT count(*) FILTER (WHERE srsubstate <> 'r'), count(*) "
                          "FROM pg_subscription_rel").fetchone() != (0, len(GROUP_TABLES)):
            assert time.monotonic() < deadline, "the initial copy did not finish"
            time.sleep(0.2)
    return book, path


def on_target(move, statement: str | sql.Composable) -> None:
    with psycopg.connect(move.target.dsn(APP_DB), autocommit=True) as conn:
        conn.execute(statement)


@pytest.mark.containers
def test_identical_while_a_write_load_runs(move, app_load, tmp_path):
    book, path = replicated(move, tmp_path)
    with app_load(move, rate=200) as load:
        time.sleep(0.5)
        result = CliRunner().invoke(cli, ["verify", str(path), "--json", "--chunk-rows", "400"])

    assert load.result().transactions > 50, load.result()
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["identical"] is True and report["ok"] is True
    assert [t["table"] for t in report["tables"]] == list(GROUP_TABLES)
    assert all(t["source_rows"] > 0 and t["chunks"] >= 2 for t in report["tables"]), report
    assert report["catch_up"] == f"waited for subscription {names.subscription(book)}"
    assert report["bytes"] > 0 and report["mb_per_s"] > 0


@pytest.mark.containers
def test_a_row_changed_on_the_target_is_reported_with_its_range_and_key(move, tmp_path):
    book, path = replicated(move, tmp_path)
    on_target(move, "UPDATE files SET name = 'tampered' WHERE id = 421")
    on_target(move, "DELETE FROM file_comments WHERE id = 7")

    result = CliRunner().invoke(cli, ["verify", str(path), "--json", "--chunk-rows", "300"])
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert doc["identical"] is False and doc["ok"] is False
    tables = {t["table"]: t for t in doc["tables"]}
    assert tables["public.file_versions"]["identical"]
    [files] = tables["public.files"]["differences"]
    assert files["sample_keys"] == ["421"] and files["differing_keys"] == 1
    assert int(files["lower"][0]) < 421 <= int(files["upper"][0]), files
    assert files["range"] == f"id > {files['lower'][0]} and id <= {files['upper'][0]}"
    [comments] = tables["public.file_comments"]["differences"]
    assert comments["sample_keys"] == ["7"]
    assert comments["lower"] is None and comments["source_rows"] == comments["target_rows"] + 1
    assert tables["public.file_comments"]["target_rows"] == 999

    text = CliRunner().invoke(cli, ["verify", str(path), "--chunk-rows", "300"])
    assert text.exit_code == 1
    assert "public.files" in text.output and "differ: 421" in text.output
    assert "different: 2 of 3 tables" in text.output
    assert move.source.password not in text.output + result.output


def test_a_difference_still_in_flight_is_not_reported(move, tmp_path):
    book, path = replicated(move, tmp_path)
    subscription = sql.Identifier(names.subscription(book))
    on_target(move, sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(subscription))
    with psycopg.connect(move.source.dsn(APP_DB), autocommit=True) as src:
        src.execute("UPDATE files SET name = 'renamed' WHERE id = 5")
        src.execute("INSERT INTO file_comments (file_id, author_id, body) VALUES (5, 1, 'late')")

    reports = []
    worker = threading.Thread(target=lambda: reports.append(verify(book)))
    worker.start()
    time.sleep(1.0)
    assert worker.is_alive(), "verify did not wait for replication to catch up"
    on_target(move, sql.SQL("ALTER SUBSCRIPTION {} ENABLE").format(subscription))
    worker.join(timeout=30)

    [report] = reports
    assert report.identical, report.to_dict()
    assert report.rechecked_chunks == 2, report.to_dict()   # files and file_comments
    assert report.notes == []
    result = CliRunner().invoke(cli, ["verify", str(path)])
    assert result.exit_code == 0, result.output
    assert "identical: 3 tables" in result.output

    # Replication that stays stopped: the difference persists, and the report says why.
    on_target(move, sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(subscription))
    with psycopg.connect(move.source.dsn(APP_DB), autocommit=True) as src:
        src.execute("UPDATE files SET name = 'again' WHERE id = 6")
    stuck = verify(book, catchup_timeout=0.5, recheck_interval=0.1)
    assert not stuck.identical
    assert [d.sample_keys for t in stuck.tables for d in t.differences] == [["6"]]
    assert stuck.notes == [f"subscription {names.subscription(book)} had not caught up "
                           "after 0.5 s; re-checked without it"]


KEYS_SCHEMA = """
CREATE TABLE public.tags (file_uuid uuid, tag text, weight float8, seen timestamptz,
                          PRIMARY KEY (file_uuid, tag));
CREATE TABLE public.blobs (id uuid PRIMARY KEY, body bytea, doc json, kind public.file_kind);
CREATE TABLE public.events (at timestamptz, what text, amount numeric);
CREATE TABLE public.sparse (id bigint PRIMARY KEY, v text);
INSERT INTO public.sparse SELECT g * 1000, 'v' || g FROM generate_series(1, 120) g;
INSERT INTO public.tags
    SELECT md5(g::text)::uuid, t, g / 7.0, timestamptz '2024-01-01' + g * interval '1 min'
    FROM generate_series(1, 150) g, unnest(ARRAY['a', 'B', 'c d']) t;
INSERT INTO public.blobs
    SELECT md5('b' || g)::uuid, sha256(g::text::bytea), json_build_object('g', g),
           (ARRAY['image', 'video']::public.file_kind[])[1 + g % 2]
    FROM generate_series(1, 200) g;
INSERT INTO public.events
    SELECT timestamptz '2024-01-01' + (g % 50) * interval '1 h', 'e' || (g % 3), g * 1.5
    FROM generate_series(1, 300) g;
"""


def test_composite_uuid_and_keyless_tables_without_replication(move, tmp_path):
    for server in (move.source, move.target):
        create_demo_schema(server.dsn(APP_DB))
        with psycopg.connect(server.dsn(APP_DB), autocommit=True) as conn:
            conn.execute(KEYS_SCHEMA)
    path = move.write_playbook(tmp_path / "playbook.yaml", tables=("tags", "blobs", "events", "sparse"))
    book = load_playbook(path)

    same = verify(book, chunk_rows=40, recheck_interval=0.1)
    assert same.identical, same.to_dict()
    assert same.catch_up == "no subscription: re-checked after 0.1 s"
    assert [(t.key, t.source_rows, t.chunks > 1) for t in same.tables] == [
        (["file_uuid", "tag"], 450, True), (["id"], 200, True), ([], 300, False), (["id"], 120, True)]
    assert same.tables[3].chunks == 4   # bounds looked up: 40000, 80000, 120000, then the rest

    victim = "('%s', 'B')" % "c4ca4238-a0b9-2382-0dcc-509a6f75849b"   # md5('1')
    on_target(move, f"UPDATE tags SET weight = weight + 1e-9 WHERE (file_uuid, tag) = {victim}")
    on_target(move, "DELETE FROM events WHERE amount = 1.5")
    differ = verify(book, chunk_rows=40, recheck_interval=0.1)
    tables = {t.table: t for t in differ.tables}
    assert not differ.identical and tables["public.blobs"].identical and tables["public.sparse"].identical
    [tags] = tables["public.tags"].differences
    assert tags.sample_keys == [["c4ca4238-a0b9-2382-0dcc-509a6f75849b", "B"]], tags
    [events] = tables["public.events"].differences
    assert events.range == "whole table (no primary key)"
    assert (events.source_rows, events.target_rows, events.differing_keys) == (300, 299, 1)


def test_a_table_missing_or_shaped_differently_on_the_target_is_a_difference(move, tmp_path):
    create_demo_schema(move.source.dsn(APP_DB))
    on_target(move, "CREATE TABLE public.teams (id bigint PRIMARY KEY, name text, extra int)")
    path = move.write_playbook(tmp_path / "playbook.yaml", tables=("files", "teams"))
    result = CliRunner().invoke(cli, ["verify", str(path)])
    assert result.exit_code == 1, result.output
    assert "public.files: missing on the target" in result.output
    assert "public.teams: the columns differ between source and target: extra integer" in result.output


@pytest.mark.containers
@pytest.mark.pg(18)
def test_identical_across_postgres_majors(make_move, tmp_path):
    move = make_move(target_version=18)
    book, _ = replicated(move, tmp_path)
    report = verify(book, chunk_rows=400)
    assert report.identical, report.to_dict()
    assert all(t.target_rows == t.source_rows > 0 for t in report.tables)


@pytest.mark.parametrize("bad", ["--chunk-rows=0", "--chunk-rows=x"])
def test_bad_chunk_rows_is_a_usage_error(bad, tmp_path):
    result = CliRunner().invoke(cli, ["verify", str(tmp_path / "none.yaml"), bad])
    assert result.exit_code == 2


# --------------------------------------------------------------------------- a server that restarts


@pytest.mark.timeout(120)
def test_a_target_that_restarts_mid_verify_is_waited_for_and_verify_starts_over(move, tmp_path):
    book, _ = replicated(move, tmp_path)
    said: list[str] = []
    stopped: list[threading.Timer] = []

    def progress(done: int, total: int, table: str) -> None:
        if not stopped:     # the target goes away under verify's sessions, and is back a second later
            move.target.stop()
            stopped.append(threading.Timer(1.0, move.target.start))
            stopped[0].start()

    report = verify(book, chunk_rows=400, progress=progress, waiting=said.append)
    stopped[0].join()
    assert report.identical, report.to_dict()
    target = f"the target (migrator@127.0.0.1:{move.target.port}/app)"
    assert said[0].startswith(f"lost {target} (") and "waiting up to 60 s (restarts.wait)" in said[0], said
    assert said[1].startswith(f"{target} answers again after ") and said[1].endswith("starting over"), said


def test_a_target_that_does_not_come_back_within_restarts_wait_stops_verify_with_the_cause(move, tmp_path):
    book, _ = replicated(move, tmp_path)
    book = book.model_copy(update={"restarts": RestartSettings(wait=1.0)})
    move.target.stop()
    started = time.monotonic()
    with pytest.raises(OperationFailed) as caught:
        verify(book, waiting=lambda text: None)
    assert time.monotonic() - started < 10
    assert caught.value.message.startswith(
        f"the target (migrator@127.0.0.1:{move.target.port}/app) did not answer again within 1 s (restarts.wait): ")
    assert "restarts.wait" in caught.value.hint
