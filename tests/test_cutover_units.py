"""The cutover written once, without a server: its sequence rendered for a 15 and a 16+
subscriber, its undo log and the order that log runs in, the abort-or-finish decision
for every phase, and the typed checkpoint data (round trip, an old checkpoint, a newer
one refused)."""

from __future__ import annotations

import json

import pytest

from migrator.errors import OperationFailed
from migrator.move import checkpoint
from migrator.move.checkpoint import CutoverData, DeferIndexesData, PreflightData, SchemaData
from migrator.move.cutover import CutoverFacts, Direction, cutover_sequence
from migrator.move.phases import CutoverPhase
from migrator.move.recovery import Recovery, recovery_for
from migrator.move.undo import in_undo_order, run_undo
from migrator.playbook import TableName, load_playbook
from migrator.postgres.ddl import AppPrivilege

PLAYBOOK = """
name: files-partition
source: {dsn: "postgresql://migrator:s3cret-pw@127.0.0.1:5432/app"}
target: {dsn: "postgresql://migrator:s3cret-pw@10.0.0.2:5433/app"}
tables: [public.files, public.file_versions]
app_roles: [app]
pgbouncers:
  - {admin_dsn: "postgresql://pgbouncer@127.0.0.1:6432/pgbouncer", database: app_files,
     config_file: /etc/pgbouncer/a.ini}
  - {admin_dsn: "postgresql://pgbouncer@127.0.0.2:6432/pgbouncer", database: app_files,
     config_file: /etc/pgbouncer/b.ini}
"""

ENTRY = "host=127.0.0.1 port=5432 dbname=app pool_size=30"


@pytest.fixture
def playbook(tmp_path):
    path = tmp_path / "move.yaml"
    path.write_text(PLAYBOOK)
    return load_playbook(path)


def facts(playbook, *, source: int = 150000, target: int = 180000, fenced: bool = True) -> CutoverFacts:
    return CutoverFacts(
        app_privileges=(AppPrivilege("TABLE", "public", "files", "app", "INSERT"),
                        AppPrivilege("TABLE", "public", "files", "app", "SELECT"),
                        AppPrivilege("SEQUENCE", "public", "files_id_seq", "app", "USAGE")),
        sequences=(TableName("public", "files_id_seq"),),
        entries={b.route_key: ENTRY for b in playbook.pgbouncers},
        source_version=source, target_version=target, fenced=fenced)


def texts(seq) -> list[str]:
    return [s.text for s in seq.render()]


def index_of(lines: list[str], start: str, after: int = -1) -> int:
    return next(i for i, line in enumerate(lines) if i > after and line.startswith(start))


# --------------------------------------------------------------------------- rendering


@pytest.mark.parametrize(("old_version", "run_as_owner"), [(150000, False), (160000, True), (180000, True)],
                         ids=["15", "16", "18"])
def test_the_reverse_subscription_runs_as_its_owner_only_on_a_16_or_newer_subscriber(
        playbook, old_version, run_as_owner):
    # Forward, the reverse subscription is made on the source; in the reverse cutover,
    # the forward one is made again on the target. Each follows its own server's major.
    forward = cutover_sequence(playbook, Direction.forward(playbook), facts(playbook, source=old_version))
    reverse = cutover_sequence(playbook, Direction.reverse(playbook), facts(playbook, target=old_version))
    for seq, on in ((forward, "source"), (reverse, "target")):
        statement = seq.reverse_subscription
        assert statement.on == on and statement.text.startswith("CREATE SUBSCRIPTION")
        assert ("run_as_owner = true" in statement.text) is run_as_owner, statement.text
        assert "s3cret-pw" not in statement.text


def test_the_forward_cutover_renders_its_stages_in_the_order_they_run(playbook):
    lines = texts(cutover_sequence(playbook, Direction.forward(playbook), facts(playbook)))
    order = ["SELECT pg_catalog.pg_wal_lsn_diff", "[databases] app_files = host=10.0.0.2 port=5433 dbname=app",
             "GRANT INSERT, SELECT ON TABLE", "PAUSE app_files", "SELECT pg_catalog.pg_cancel_backend",
             "SET LOCAL lock_timeout = <lock_timeout>", "CREATE OR REPLACE FUNCTION",
             "SET LOCAL synchronous_commit = on", "INSERT INTO \"migrator\".\"sync_marker_files_partition\"",
             "SELECT 1 FROM", "SELECT u.i, pg_catalog.pg_sequence_last_value", "SELECT pg_catalog.setval",
             'ALTER SUBSCRIPTION "migrator_files_partition" DISABLE', "SELECT pg_catalog.pg_create_logical",
             "RELOAD", "RESUME app_files", "SHOW DATABASES", "REVOKE INSERT, SELECT ON TABLE",
             "CREATE SUBSCRIPTION", 'DROP SUBSCRIPTION "migrator_files_partition"']
    at = -1
    for start in order:   # each one found after the one before
        at = index_of(lines, start, at)
    # Every PgBouncer is paused, rerouted (keeping its own options) and resumed.
    assert sum(line == "PAUSE app_files" for line in lines) == 2
    assert sum(line == "RESUME app_files" for line in lines) == 2
    assert "[databases] app_files = host=10.0.0.2 port=5433 dbname=app pool_size=30" in lines
    # Values known only when it runs are named, never guessed.
    assert any("<token>" in line for line in lines)
    assert any("<last_values>" in line for line in lines)
    assert not any("s3cret-pw" in line for line in lines)


def test_with_the_fence_the_table_privileges_switch_around_the_pause_without_it_inside(playbook):
    fenced = texts(cutover_sequence(playbook, Direction.forward(playbook), facts(playbook)))
    unfenced = texts(cutover_sequence(playbook, Direction.forward(playbook), facts(playbook, fenced=False)))
    pause, resume = index_of(fenced, "PAUSE"), index_of(fenced, "RESUME")
    assert index_of(fenced, "GRANT INSERT, SELECT ON TABLE") < pause
    assert index_of(fenced, "REVOKE INSERT, SELECT ON TABLE") > resume
    pause, resume = index_of(unfenced, "PAUSE"), index_of(unfenced, "RESUME")
    assert pause < index_of(unfenced, "REVOKE INSERT, SELECT ON TABLE") < resume
    assert pause < index_of(unfenced, "GRANT INSERT, SELECT ON TABLE") < resume
    # The sequence's privilege switches around the pause either way.
    assert index_of(unfenced, "GRANT USAGE ON SEQUENCE") < pause


def test_the_reverse_cutover_is_the_forward_one_with_the_sides_swapped(playbook):
    forward = cutover_sequence(playbook, Direction.forward(playbook), facts(playbook))
    reverse = cutover_sequence(playbook, Direction.reverse(playbook), facts(playbook))
    assert [s.on for s in forward.render() if s.on in ("source", "target")] == [
        {"source": "target", "target": "source"}[s.on] for s in reverse.render() if s.on in ("source", "target")]
    # Back to the source, the entry is written exactly as it was before the move.
    assert reverse.reroute[0].value == ENTRY


# --------------------------------------------------------------------------- the undo log


def test_the_undo_log_holds_an_inverse_for_every_action_of_the_pause(playbook):
    seq = cutover_sequence(playbook, Direction.forward(playbook), facts(playbook))
    log = seq.undo_log()
    commands = [r["command"] for r in log if r["kind"] == "console"]
    assert commands == ["RESUME app_files", "RESUME app_files"]
    sql = [" ; ".join(r["sql"]) for r in log if r["kind"] == "sql"]
    assert any(t.startswith("REVOKE") for t in sql)                                   # the early grants
    assert any("migrator fence: serving" in t and r["on"] == "source"                 # the source's fence lifted
               for t, r in zip(sql, [r for r in log if r["kind"] == "sql"], strict=True))
    ops = [r["op"] for r in log if r.get("op")]
    assert ["enable_subscription", "migrator_files_partition"] in ops
    assert ["drop_slot", "migrator_files_partition_reverse"] in ops
    json.dumps(log)   # plain data: it goes to the checkpoint and the watchdog's orders
    assert "s3cret-pw" not in json.dumps(log)


def test_the_undo_log_gives_the_traffic_back_first():
    log = [{"kind": "sql", "on": "target", "sql": ["new 1"], "op": []},
           {"kind": "console", "bouncer": 0, "command": "RESUME a"},
           {"kind": "sql", "on": "source", "sql": ["old 1"], "op": []},
           {"kind": "sql", "on": "target", "sql": ["new 2"], "op": []},
           {"kind": "sql", "on": "source", "sql": ["old 2"], "op": []}]
    order = in_undo_order(log, old_side="source")
    assert [r.get("sql", [r.get("command")])[0] for r in order] == ["old 2", "old 1", "RESUME a", "new 2", "new 1"]


def test_one_record_failing_does_not_stop_the_others():
    ran: list[str] = []

    class Conn:
        def __init__(self, side: str) -> None:
            self.side = side

        def transaction(self):
            import contextlib
            return contextlib.nullcontext()

        def execute(self, text: str) -> None:
            if text == "broken":
                raise RuntimeError("on purpose")
            ran.append(text)

    log = [{"kind": "sql", "on": "target", "sql": ["new"], "op": []},
           {"kind": "sql", "on": "source", "sql": ["broken"], "op": []},
           {"kind": "console", "bouncer": 1, "command": "RESUME a"}]
    outcome = run_undo(log, old_side="source", connection=Conn, consoles=lambda records: {1: "no answer"})
    assert ran == ["new"]
    assert outcome.unresumed == [1]
    assert any("broken" in p for p in outcome.problems) and any("no answer" in p for p in outcome.problems)


# --------------------------------------------------------------------------- the decision


@pytest.mark.parametrize(("phase", "expected"), [
    (None, Recovery.NOTHING),
    (CutoverPhase.PAUSING, Recovery.REVERT),
    (CutoverPhase.WATCHDOG_REVERTED, Recovery.REVERT),
    (CutoverPhase.ABORTED, Recovery.REDO_UNDO),
    (CutoverPhase.POINT_OF_NO_RETURN, Recovery.FINISH),
    (CutoverPhase.RESUMED, Recovery.AFTER_RESUME),
    ("sync_marker", Recovery.REVERT),      # a phase an older version recorded
])
def test_only_a_recorded_point_of_no_return_goes_forward(phase, expected):
    assert recovery_for(phase) == expected


def test_every_phase_has_a_decision():
    assert {recovery_for(p) for p in CutoverPhase} == set(Recovery) - {Recovery.NOTHING}


# --------------------------------------------------------------------------- the typed checkpoint


# As the version before the models wrote them (lists, plain dicts, no version key).
OLD_SCHEMA = {
    "intent": True, "created_schemas": ["billing"], "created_types": [["public", "mood", "enum"]],
    "created_functions": [["public", "touch", "", "function"]], "created_views": [["public", "v", False]],
    "created_sequences": [], "app_privileges": [["TABLE", "public", "files", "app", "SELECT", None]],
    "sequences": [["public", "files_id_seq"]],
    "indexes": [{"table": ["public", "files"], "name": "files_name_idx",
                 "definition": "CREATE INDEX files_name_idx ON public.files USING btree (name)",
                 "comment": None, "attached": [], "copied_with": None}],
    "partitioned": False,
}
OLD_CUTOVER = {"phase": "resumed", "direction": "reverse", "serving": "source", "pause_started": 1.5,
               "last_window": {"total": 0.03}, "history": [{"total": 0.03}]}


def test_an_old_checkpoint_loads_as_the_typed_data():
    schema = checkpoint.load("schema", json.loads(json.dumps(OLD_SCHEMA)))
    assert isinstance(schema, SchemaData) and schema.version == 1
    assert schema.privileges == [AppPrivilege("TABLE", "public", "files", "app", "SELECT", None)]
    assert schema.sequence_names == [TableName("public", "files_id_seq")]
    assert schema.secondary_indexes[0].identity == TableName("public", "files_name_idx")
    cut = checkpoint.load("cutover", OLD_CUTOVER)
    assert isinstance(cut, CutoverData) and cut.phase == CutoverPhase.RESUMED and cut.serving == "source"
    assert checkpoint.load("preflight", {"original_entries": {"a": ENTRY}}) == PreflightData(
        original_entries={"a": ENTRY})


def test_the_typed_data_round_trips_through_the_store_form():
    for step, data in (("schema", OLD_SCHEMA), ("cutover", OLD_CUTOVER),
                       ("defer-indexes", {"dropped": OLD_SCHEMA["indexes"]})):
        loaded = checkpoint.load(step, data)
        stored = json.loads(json.dumps(checkpoint.dump(loaded)))
        assert checkpoint.load(step, stored) == loaded
    merged = checkpoint.merged("cutover", checkpoint.dump(checkpoint.load("cutover", OLD_CUTOVER)),
                               {"phase": CutoverPhase.PAUSING, "undo": [{"kind": "console", "bouncer": 0,
                                                                          "command": "RESUME a"}]})
    assert merged["phase"] == "pausing" and merged["undo"][0]["command"] == "RESUME a"
    assert isinstance(checkpoint.load("defer-indexes", {}), DeferIndexesData)


def test_a_newer_or_unreadable_checkpoint_is_refused_with_a_clear_message():
    with pytest.raises(OperationFailed, match="written by a newer migrator"):
        checkpoint.load("schema", {**OLD_SCHEMA, "version": checkpoint.VERSION + 1})
    with pytest.raises(OperationFailed, match="cannot be read: .*surprise"):
        checkpoint.load("cutover", {**OLD_CUTOVER, "surprise": 1})
    with pytest.raises(OperationFailed, match="cannot be read"):
        checkpoint.merged("schema", OLD_SCHEMA, {"partitioned": "maybe"})
