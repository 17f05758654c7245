"""The guards of a move in flight (DESIGN section 9, issue 12): the DDL guard, the write
fence, `migrator ddl`, and what a rollback and `complete` leave.

Every refusal is tried as the people who cause split brains would: a superuser's own
session straight to the server (no PgBouncer, no app role), before and after the
cutover, on both sides.
"""

from __future__ import annotations

import time

import psycopg
import pytest
from faultkit import assert_like_before, snapshot_everything
from movekit import demo_move, wait_sides_identical

from migrator import names
from migrator.lab.sandbox import APP_DB
from migrator.postgres import guards

MOVE = "files-partition"
SLUG = "files_partition"


def refused(dsn: str, statement: str) -> psycopg.Error:
    """The error a plain superuser session gets for `statement` (it must get one)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute(statement)
        except psycopg.Error as exc:
            return exc
    raise AssertionError(f"{statement!r} was not refused on {dsn}")


def runs(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def guard_state(dsn: str) -> guards.GuardState:
    with psycopg.connect(dsn) as conn:
        return guards.read_state(conn, SLUG)


def assert_ddl_refused(dsn: str) -> None:
    for statement in ("ALTER TABLE public.files ADD COLUMN note text",
                      "ALTER TABLE public.file_versions DROP COLUMN content_hash",
                      "DROP TABLE public.file_comments",
                      "CREATE INDEX files_size_idx ON public.files (id, name)",
                      "DROP INDEX public.file_versions_hash_idx",
                      "COMMENT ON COLUMN public.files.name IS 'the name'",
                      f"DROP TRIGGER {names.fence(SLUG)} ON public.files"):
        error = refused(dsn, statement)
        assert isinstance(error, psycopg.errors.ObjectInUse), (statement, error)
        assert f"move {MOVE} is in flight" in str(error), (statement, error)
        assert "migrator ddl PLAYBOOK" in (error.diag.message_hint or ""), (statement, error.diag.message_hint)


def assert_write_refused(dsn: str, serving: str) -> None:
    for statement in ("INSERT INTO public.file_comments (file_id, body) SELECT id, 'stray' FROM public.files LIMIT 1",
                      "UPDATE public.files SET name = name WHERE id = 1",
                      "DELETE FROM public.file_versions WHERE id = 1",
                      "TRUNCATE public.file_comments"):
        error = refused(dsn, statement)
        assert isinstance(error, psycopg.errors.ReadOnlySqlTransaction), (statement, error)
        assert f"move {MOVE} is in flight" in str(error) and f"the {serving} serves it" in str(error), error


def test_ddl_and_stray_writes_are_refused_on_the_side_that_does_not_serve_before_and_after_the_cutover(
        make_move, app_load, tmp_path):
    move = make_move()
    demo = demo_move(move, tmp_path, scale=1)
    src, dst = move.source.dsn(APP_DB), move.target.dsn(APP_DB)
    assert demo.cli("execute", "--until", "cutover").exit_code == 0
    assert guard_state(src) == guards.GuardState(ddl_guard=2, fence="serving", fenced_tables=3)
    assert guard_state(dst) == guards.GuardState(ddl_guard=2, fence="refuses", fenced_tables=3)
    for side in (src, dst):
        assert_ddl_refused(side)
    assert_write_refused(dst, serving="source")
    # What is not the group's passes, and so does a session that says it means it.
    runs(src, "ALTER TABLE public.users ADD COLUMN nickname text", "ALTER TABLE public.users DROP COLUMN nickname")
    runs(dst, guards.bypass_statement().as_string(None), "COMMENT ON TABLE public.files IS NULL")

    with app_load(move, clients=4, rate=100) as load:
        result = demo.cli("execute")
        assert result.exit_code == 0, result.output
        # The old copy now refuses every writer but the reverse apply worker, which
        # keeps it current under the load.
        assert_write_refused(src, serving="target")
    assert load.result().transactions > 50
    wait_sides_identical(move)
    # Refused at the end of the command, so a DDL tried on the serving side under load
    # takes its locks first (a DROP TABLE locks the table it references too): tried
    # once the load is over, it cannot deadlock with the application's transactions.
    for side in (src, dst):
        assert_ddl_refused(side)
    assert guard_state(src).fence == "refuses" and guard_state(dst).fence == "serving"
    code, status = demo.cli_json("status")
    assert code == 0 and status["guards"]["source"]["fence"] == "refuses", status.get("guards")


def app_may(dsn: str, privilege: str) -> dict[str, bool]:
    """Per group table: may the app role do `privilege` on this side?"""
    with psycopg.connect(dsn) as conn:
        return {t: conn.execute("SELECT has_table_privilege('app', %s, %s)", (t, privilege)).fetchone()[0]
                for t in ("public.files", "public.file_versions", "public.file_comments")}


def cutover_events(demo) -> list[str]:
    from migrator.move.state import StateStore

    store = StateStore(demo.state_url)
    try:
        return [e.message for e in store.events(demo.playbook.name, limit=10_000) if e.step == "cutover"]
    finally:
        store.close()


@pytest.mark.parametrize("fenced", [True, False], ids=["every relation fenced", "one relation unfenced"])
def test_the_cutover_switches_the_privileges_around_the_pause_only_where_the_fence_covers_the_group(
        make_move, app_load, tmp_path, fenced):
    """With the fence on every relation, the app's table privileges are granted on the
    target before the pause and revoked on the source after it; a side whose relation
    lacks it (a move begun by an earlier version) has them switched inside the pause.
    Either way: 0 failed transactions, the sides identical, the privileges moved."""
    move = make_move()
    demo = demo_move(move, tmp_path, scale=1)
    src, dst = move.source.dsn(APP_DB), move.target.dsn(APP_DB)
    assert demo.cli("execute", "--until", "cutover").exit_code == 0
    assert not any(app_may(dst, "INSERT").values()) and all(app_may(src, "INSERT").values())
    if not fenced:
        runs(src, guards.bypass_statement().as_string(None),
             f"DROP TRIGGER {names.fence(SLUG)} ON public.file_comments")
    with app_load(move, clients=4, rate=100) as load:
        result = demo.cli("execute")
        assert result.exit_code == 0, result.output
    assert load.result().transactions > 50
    wait_sides_identical(move)
    missing = [m for m in cutover_events(demo) if "the write fence is missing on the source" in m]
    assert bool(missing) is not fenced, missing
    assert all(app_may(dst, "INSERT").values()) and all(app_may(dst, "SELECT").values())
    assert not any(app_may(src, "INSERT").values()) and not any(app_may(src, "SELECT").values())


def test_a_cutover_that_cannot_start_its_watchdog_takes_the_early_grants_back(make_move, tmp_path, monkeypatch):
    """The target's privileges are granted before the pause; if the pause never begins
    (here the watchdog does not come up), the target gets back what it had."""
    from migrator.errors import OperationFailed
    from migrator.move import watchdog

    move = make_move()
    demo = demo_move(move, tmp_path, scale=1)
    dst = move.target.dsn(APP_DB)
    assert demo.cli("execute", "--until", "cutover").exit_code == 0
    assert not any(app_may(dst, "SELECT").values())

    def not_ready(self, timeout: float = 30) -> None:
        self.process.kill()
        raise OperationFailed("the watchdog process did not start within 30s; nothing was paused")

    monkeypatch.setattr(watchdog.Watchdog, "wait_ready", not_ready)
    result = demo.cli("execute")
    assert result.exit_code != 0 and "the watchdog process did not start" in result.output, result.output
    assert not any(app_may(dst, "SELECT").values()) and not any(app_may(dst, "INSERT").values())
    monkeypatch.undo()
    result = demo.cli("execute")
    assert result.exit_code == 0, result.output
    assert all(app_may(dst, "INSERT").values())


def test_the_fence_lets_the_initial_copy_and_the_apply_through_and_a_rollback_takes_every_guard_away(
        make_move, app_load, tmp_path):
    move = make_move()
    demo = demo_move(move, tmp_path, scale=1)
    before = snapshot_everything(move)
    with app_load(move, clients=4, rate=100):
        assert demo.cli("execute").exit_code == 0
        result = demo.cli("rollback")
        assert result.exit_code == 0, result.output
    assert_like_before(move, before)   # functions, triggers and event triggers included
    for dsn in (move.source.dsn(APP_DB), move.target.dsn(APP_DB)):
        assert not guard_state(dsn).any


def test_complete_keeps_the_old_copy_fenced_and_says_how_to_lift_it(make_move, tmp_path):
    move = make_move()
    demo = demo_move(move, tmp_path, scale=1)
    src, dst = move.source.dsn(APP_DB), move.target.dsn(APP_DB)
    assert demo.cli("execute").exit_code == 0
    result = demo.cli("complete")
    assert result.exit_code == 0, result.output
    lift = f'DROP FUNCTION IF EXISTS "migrator"."{names.fence(SLUG)}"() CASCADE'
    assert "it stays fenced" in result.output and lift in result.output
    assert guard_state(dst) == guards.GuardState(ddl_guard=0, fence=None, fenced_tables=0)
    assert guard_state(src) == guards.GuardState(ddl_guard=0, fence="refuses", fenced_tables=3)
    error = refused(src, "DELETE FROM public.file_comments")
    assert "is complete" in (error.diag.message_hint or "") and lift in error.diag.message_hint
    runs(src, "ALTER TABLE public.files ADD COLUMN note text")   # no DDL guard any more
    runs(src, lift, "DELETE FROM public.file_comments")
    assert not guard_state(src).any


def test_complete_with_drop_source_leaves_no_guard(make_move, tmp_path):
    move = make_move()
    demo = demo_move(move, tmp_path, scale=1)
    assert demo.cli("execute").exit_code == 0
    assert demo.cli("complete", "--drop-source", "--yes").exit_code == 0
    for dsn in (move.source.dsn(APP_DB), move.target.dsn(APP_DB)):
        assert not guard_state(dsn).any
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT evtname FROM pg_event_trigger").fetchall() == []


@pytest.mark.parametrize("after_cutover", [False, True], ids=["before the cutover", "after the cutover"])
def test_migrator_ddl_adds_and_drops_a_column_under_load_and_the_sides_stay_identical(
        make_move, app_load, tmp_path, after_cutover):
    move = make_move()
    demo = demo_move(move, tmp_path, scale=1)
    assert demo.cli("execute", *([] if after_cutover else ["--until", "cutover"])).exit_code == 0
    publishing, subscribing = ("target", "source") if after_cutover else ("source", "target")
    with app_load(move, clients=4, rate=100) as load:
        code, doc = demo.cli_json("ddl", "ALTER TABLE public.files ADD COLUMN note text DEFAULT 'none'")
        assert code == 0, doc
        assert doc["order"] == [subscribing, publishing] and doc["table"] == "public.files"
        code, doc = demo.cli_json("ddl", "CREATE INDEX files_note_idx ON public.files (note)")
        assert code == 0, doc
        for dsn in (move.source.dsn(APP_DB), move.target.dsn(APP_DB)):
            with psycopg.connect(dsn) as conn:
                assert conn.execute("SELECT count(*) FROM public.files WHERE note = 'none'").fetchone()[0] > 0
            error = refused(dsn, "DROP INDEX public.files_note_idx")     # the guard learnt the new index
            assert f"move {MOVE} is in flight" in str(error)
        code, doc = demo.cli_json("ddl", "DROP INDEX public.files_note_idx")
        assert code == 0 and doc["order"] == [subscribing, publishing], doc
        code, doc = demo.cli_json("ddl", "ALTER TABLE public.files DROP COLUMN note")
        assert code == 0, doc
        assert doc["order"] == [publishing, subscribing]
        time.sleep(0.5)                                      # the load goes on after the change
    assert load.result().transactions > 50
    wait_sides_identical(move)
    for dsn in (move.source.dsn(APP_DB), move.target.dsn(APP_DB)):
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM information_schema.columns WHERE table_name = 'files' "
                                "AND column_name = 'note'").fetchone()[0] == 0


def test_migrator_ddl_refuses_what_it_cannot_order_and_what_would_fail_changing_nothing(make_move, tmp_path):
    move = make_move()
    demo = demo_move(move, tmp_path, scale=1)
    before = snapshot_everything(move)
    result = demo.cli("ddl", "ALTER TABLE public.files ADD COLUMN note text")
    assert result.exit_code == 1 and "is not replicating" in result.output, result.output
    assert demo.cli("execute", "--until", "cutover").exit_code == 0
    during = snapshot_everything(move)
    for statement, code, words in (
        ("ALTER TABLE public.files ALTER COLUMN name TYPE varchar(300)", 2, "type change cannot be ordered"),
        ("ALTER TABLE public.files RENAME COLUMN name TO title", 2, "rename cannot be ordered"),
        ("ALTER TABLE public.users ADD COLUMN nickname text", 2, "is not a table of move"),
        ("ALTER TABLE public.files ADD CONSTRAINT no_names CHECK (name IS NULL)", 1, "would fail on the source"),
        ("ALTER TABLE public.nowhere ADD COLUMN x int", 2, "does not exist"),
    ):
        result = demo.cli("ddl", statement)
        assert result.exit_code == code and words in result.output, (statement, result.output)
    after = snapshot_everything(move)
    for side in ("source", "target"):
        assert after[side] == during[side], side
    assert before["pgbouncer configs"] == after["pgbouncer configs"]


# --------------------------------------------------------------------------- SIGKILL around each guard change


def fences(move) -> tuple[str | None, str | None]:
    return guard_state(move.source.dsn(APP_DB)).fence, guard_state(move.target.dsn(APP_DB)).fence


@pytest.mark.slow
@pytest.mark.parametrize("point, verb", [
    ("replicate:guarded-target", "execute"),       # the target guarded, the source not yet
    ("replicate:undo-unguarded-source", "rollback"),  # a rollback between the two sides' removals
    ("cutover:forward-pausing", "execute"),         # the fence half moved inside the pause
    ("cutover:forward-point_of_no_return", "execute"),
])
def test_a_sigkill_around_a_guard_change_leaves_no_orphan(make_move, app_load, tmp_path, point, verb):
    """Killed at each point where a guard changes: the next run puts the fence where the
    traffic is, and a full rollback leaves nothing of the guards on either side."""
    from faultkit import ToolProcess, wait_unpaused

    move = make_move()
    demo = demo_move(move, tmp_path, scale=1)
    before = snapshot_everything(move)
    if verb == "rollback" or point.startswith("cutover"):
        assert demo.cli("execute", "--until", "cutover").exit_code == 0
    with app_load(move, clients=4, rate=100):
        tool = ToolProcess(demo, verb, hold=point)
        tool.wait_held()
        tool.kill()
        wait_unpaused(move, timeout=10)
        result = demo.cli(verb)
        assert result.exit_code == 0, result.output
        if verb == "execute":
            assert fences(move) == ("refuses", "serving")     # moved: the old copy refuses
            result = demo.cli("rollback")
            assert result.exit_code == 0, result.output
    assert_like_before(move, before)


def test_a_sigkill_between_the_sides_of_a_migrator_ddl_is_finished_by_running_it_again(make_move, app_load,
                                                                                        tmp_path):
    from faultkit import ToolProcess

    move = make_move()
    demo = demo_move(move, tmp_path, scale=1)
    assert demo.cli("execute", "--until", "cutover").exit_code == 0
    change = "ALTER TABLE public.files ADD COLUMN note text"
    with app_load(move, clients=4, rate=100):
        tool = ToolProcess(demo, "ddl", change, hold="ddl:applied-1")      # on the target only
        tool.wait_held()
        tool.kill()
        other = demo.cli("ddl", "CREATE INDEX files_x ON public.files (id)")
        assert other.exit_code == 1 and "stopped after 1 of its 2 statements" in other.output, other.output
        result = demo.cli("ddl", change)
        assert result.exit_code == 0, result.output
        time.sleep(0.5)
    wait_sides_identical(move)
    for dsn in (move.source.dsn(APP_DB), move.target.dsn(APP_DB)):
        runs(dsn, "SELECT note FROM public.files LIMIT 1")


def test_a_sigkill_inside_complete_is_finished_by_running_it_again(make_move, tmp_path):
    from faultkit import ToolProcess

    move = make_move()
    demo = demo_move(move, tmp_path, scale=1)
    assert demo.cli("execute").exit_code == 0
    tool = ToolProcess(demo, "complete", hold="complete:unguarded")
    tool.wait_held()
    tool.kill()
    result = demo.cli("complete")
    assert result.exit_code == 0, result.output
    assert guard_state(move.target.dsn(APP_DB)) == guards.GuardState(0, None, 0)
    assert guard_state(move.source.dsn(APP_DB)) == guards.GuardState(0, "refuses", 3)


def test_the_guards_cover_a_partitioned_tree_at_every_level(make_move):
    """The guard SQL on its own, on one server: a two-level tree, its partitions and a
    partition added later, written to directly or through the root."""
    from migrator.playbook import TableName
    from migrator.postgres.catalog import guarded_objects

    move = make_move()
    dsn = move.source.dsn(APP_DB)
    runs(dsn, "CREATE SCHEMA IF NOT EXISTS migrator",
         'CREATE TABLE public."Events" (id bigint, at date, kind text, PRIMARY KEY (id, at, kind)) PARTITION BY RANGE (at)',
         'CREATE TABLE public.events_2025 PARTITION OF public."Events" FOR VALUES FROM (\'2025-01-01\') '
         "TO ('2026-01-01') PARTITION BY LIST (kind)",
         "CREATE TABLE public.events_2025_a PARTITION OF public.events_2025 FOR VALUES IN ('a')",
         'CREATE TABLE public.events_rest PARTITION OF public."Events" DEFAULT',
         'CREATE INDEX events_kind ON public."Events" (kind)')
    with psycopg.connect(dsn, autocommit=True) as conn:
        relations, indexes = guarded_objects(conn, [TableName("public", "Events")])
        assert {r.name for r in relations} == {"Events", "events_2025", "events_2025_a", "events_rest"}
        for statement in guards.install_statements(SLUG, MOVE, relations, indexes, serving=False,
                                                   serving_side="target"):
            conn.execute(statement)
    for statement in ("INSERT INTO public.\"Events\" VALUES (1, '2025-03-01', 'a')",
                      "INSERT INTO public.events_2025_a VALUES (2, '2025-03-01', 'a')",
                      "TRUNCATE public.events_rest"):
        assert isinstance(refused(dsn, statement), psycopg.errors.ReadOnlySqlTransaction), statement
    for statement in ("CREATE TABLE public.events_2025_b PARTITION OF public.events_2025 FOR VALUES IN ('b')",
                      "ALTER TABLE public.events_2025 DETACH PARTITION public.events_2025_a",
                      "DROP TABLE public.events_rest",
                      'ALTER TABLE public."Events" ADD COLUMN note text',
                      "ALTER TABLE public.events_2025_a ADD CONSTRAINT k CHECK (kind = 'a')",
                      "DROP INDEX public.events_kind"):
        error = refused(dsn, statement)
        assert isinstance(error, psycopg.errors.ObjectInUse) and f"move {MOVE}" in str(error), (statement, error)
    runs(dsn, "CREATE TABLE public.elsewhere (id int)", "DROP TABLE public.elsewhere")   # not the group's
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert guards.read_state(conn, SLUG) == guards.GuardState(2, "refuses", 4)
        for statement in guards.remove_statements(SLUG, guards.fenced_relations(conn, SLUG)):
            conn.execute(statement)
        assert not guards.read_state(conn, SLUG).any
    runs(dsn, "INSERT INTO public.events_2025_a VALUES (2, '2025-03-01', 'a')")
