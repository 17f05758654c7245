"""`migrator status`'s sentence and next command, from hand-made step records and cutover
data: the verdict a person reads when something went wrong, with no server."""

from __future__ import annotations

import pytest

from migrator.move.checkpoint import CutoverData
from migrator.move.statuses import MoveStatus
from migrator.move.status import Replication, _config_side, _verdict
from migrator.plan.build import STEP_NAMES
from migrator.playbook import load_playbook

PLAYBOOK = """\
name: files-partition
source: {dsn: "postgresql://migrator@127.0.0.1:5432/app"}
target: {dsn: "postgresql://migrator@10.0.0.2:5433/app"}
tables: [public.files]
"""


@pytest.fixture
def playbook(tmp_path):
    path = tmp_path / "move.yaml"
    path.write_text(PLAYBOOK)
    return load_playbook(path)


def cut(data: dict) -> CutoverData:
    """The cutover's checkpoint data as a stored record of it reads."""
    return CutoverData.model_validate(data)


def steps(**statuses: str) -> list[dict]:
    """Step rows as move_report builds them: every step pending unless given (a '_' for '-')."""
    given = {k.replace("_", "-"): v for k, v in statuses.items()}
    unknown = set(given) - set(STEP_NAMES)
    assert not unknown, unknown
    return [{"step": name, "status": given.get(name, "pending"), "seconds": None, "error": None}
            for name in STEP_NAMES]


def all_steps(status: str, **others: str) -> list[dict]:
    return steps(**{name.replace("-", "_"): status for name in STEP_NAMES} | others)


def with_error(rows: list[dict], step: str, error: str) -> list[dict]:
    return [{**r, "error": error} if r["step"] == step else r for r in rows]


def test_a_move_never_run_says_plan_then_execute(playbook):
    path = playbook.path
    assert _verdict(playbook, None, steps(), cut({})) == \
        ("not started", f"migrator plan {path}, then migrator execute {path}")
    # A move row but nothing run yet reads the same.
    assert _verdict(playbook, MoveStatus.ACTIVE, steps(), cut({}))[0] == "not started"


def test_a_playbook_without_a_path_names_a_placeholder(playbook):
    nameless = playbook.model_copy(update={"path": None})
    assert _verdict(nameless, None, steps(), cut({}))[1] == "migrator plan PLAYBOOK, then migrator execute PLAYBOOK"


def test_half_way_names_the_last_step_done(playbook):
    rows = steps(preflight="done", schema="done", defer_indexes="done")
    assert _verdict(playbook, MoveStatus.ACTIVE, rows, cut({})) == \
        ("in progress: done up to defer-indexes", f"migrator execute {playbook.path}")


def test_a_failed_step_shows_its_error_and_both_ways_on(playbook):
    rows = with_error(steps(preflight="done", schema="done", defer_indexes="done", replicate="failed"),
                      "replicate", "lost the target")
    assert _verdict(playbook, MoveStatus.ACTIVE, rows, cut({})) == (
        "replicate failed: lost the target",
        f"migrator execute {playbook.path} (resumes), or migrator rollback {playbook.path}")


def test_a_step_killed_while_running_reads_running_without_an_error(playbook):
    rows = steps(preflight="done", schema="running")
    assert _verdict(playbook, MoveStatus.ACTIVE, rows, cut({})) == (
        "schema running", f"migrator execute {playbook.path} (resumes), or migrator rollback {playbook.path}")


def test_an_interrupted_undo_resumes_with_rollback(playbook):
    rows = all_steps("done", cutover="undone", prepare_reverse="undoing")
    assert _verdict(playbook, MoveStatus.ACTIVE, rows, cut({"phase": "resumed"})) == \
        ("prepare-reverse undoing", f"migrator rollback {playbook.path} (resumes)")


def test_moved_says_verify_then_complete(playbook):
    state, command = _verdict(playbook, MoveStatus.ACTIVE, all_steps("done"), cut({"phase": "resumed"}))
    assert state == "moved: traffic on the target, reverse replication running"
    assert command == (f"migrator verify {playbook.path}, then migrator complete {playbook.path} "
                       f"(or migrator rollback {playbook.path})")


def test_an_aborted_cutover_is_a_failed_step_not_an_interrupted_one(playbook):
    rows = with_error(all_steps("done", cutover="failed"), "cutover",
                      "cutover aborted before the point of no return: the sync marker did not arrive")
    state, command = _verdict(playbook, MoveStatus.ACTIVE, rows, cut({"phase": "aborted", "direction": "forward"}))
    assert state.startswith("cutover failed: cutover aborted before the point of no return")
    assert command.startswith(f"migrator execute {playbook.path} (resumes)")


def test_rolled_back_offers_a_fresh_start(playbook):
    rows = all_steps("undone")
    assert _verdict(playbook, MoveStatus.ACTIVE, rows, cut({"phase": "resumed"})) == \
        ("rolled back", f"migrator execute {playbook.path} to start again")
    # Steps never run (pending) beside undone ones: still rolled back.
    rows = steps(preflight="undone", schema="undone")
    assert _verdict(playbook, MoveStatus.ACTIVE, rows, cut({}))[0] == "rolled back"


def test_completed_wins_over_every_step_record(playbook):
    rows = with_error(all_steps("done", cutover="failed"), "cutover", "whatever")
    assert _verdict(playbook, MoveStatus.COMPLETED, rows, cut({"phase": "pausing"})) == \
        ("completed", "nothing: the move is finished")


@pytest.mark.parametrize(("direction", "phase", "what"), [
    ("forward", "point_of_no_return",
     "past its point of no return: the next run finishes it (traffic to the target)"),
    ("reverse", "point_of_no_return",
     "past its point of no return: the next run finishes it (traffic to the source)"),
    ("forward", "watchdog_reverted",
     "the watchdog gave traffic back to the source; the next run reverts the rest"),
    ("reverse", "watchdog_reverted",
     "the watchdog gave traffic back to the target; the next run reverts the rest"),
    ("forward", "pausing",
     "before its point of no return: the next run reverts it (traffic on the source)"),
    ("reverse", "sync_marker",
     "before its point of no return: the next run reverts it (traffic on the target)"),
])
def test_an_interrupted_cutover_says_which_way_the_next_run_goes(playbook, direction, phase, what):
    # The cutover step reads running (the tool died inside it); the phase decides.
    rows = all_steps("done", cutover="running")
    state, command = _verdict(playbook, MoveStatus.ACTIVE, rows, cut({"phase": phase, "direction": direction}))
    assert state == f"interrupted inside a cutover ({direction}, phase {phase}): {what}"
    assert command == f"migrator execute {playbook.path} (finishes or reverts it) or migrator rollback {playbook.path}"


# --------------------------------------------------------------------------- where the config file points


@pytest.mark.parametrize(("value", "side"), [
    ("host=127.0.0.1 port=5432 dbname=app", "source"),
    ("host=localhost port=5432 dbname=app pool_size=5", "source"),   # the same host, spelt otherwise
    ("port=5432 dbname=app", "source"),                              # libpq's default host
    ("host=10.0.0.2 port=5433 dbname=app", "target"),
    ("host=10.0.0.2 port=5432 dbname=app", "elsewhere"),             # the target's host, another port
    ("host=127.0.0.1 port=5432 dbname=other", "elsewhere"),
])
def test_the_config_entry_is_placed_on_a_side(playbook, value, side):
    assert _config_side(value, playbook) == side


# --------------------------------------------------------------------------- replication broken by a failover


def broken(direction: str) -> Replication:
    return Replication(direction, "migrator_files_partition", None, None,
                       broken="replication slot migrator_files_partition is missing on the source ...")


def test_a_lost_slot_never_says_execute(playbook):
    path = playbook.path
    for rows in (all_steps("done", cutover="pending"), all_steps("done", cutover="failed")):
        state, command = _verdict(playbook, MoveStatus.ACTIVE, rows, cut({}), broken("forward"))
        assert state == "replication broken: slot missing on the source, probably a failover"
        assert command == f"migrator rollback {path}, then migrator execute {path} (copies the group again)"


def test_a_lost_reverse_slot_says_the_group_stays_on_the_target(playbook):
    state, command = _verdict(playbook, MoveStatus.ACTIVE, all_steps("done"),
                              cut({"phase": "resumed", "serving": "target"}), broken("reverse"))
    assert state == "replication broken: slot missing on the target, probably a failover"
    assert command.startswith(f"migrator complete {playbook.path}")


def test_replication_that_runs_changes_no_verdict(playbook):
    running = Replication("forward", "migrator_files_partition", 0, 0.0)
    rows = all_steps("done", cutover="pending")
    assert _verdict(playbook, MoveStatus.ACTIVE, rows, cut({}), running) == _verdict(playbook, MoveStatus.ACTIVE, rows, cut({}))
