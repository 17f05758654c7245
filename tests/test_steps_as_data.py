"""Steps as data (DESIGN 1 and 7): the SQL `plan` shows is the SQL `execute` runs, and
`rollback --dry-run` shows, from the same step objects, what `rollback` will run.

Both are checked against the event log (kind "sql" events carry the step and the SQL,
masked) on the demo group. The contract of `rollback --dry-run [--to STEP] [--json]`:
it changes nothing anywhere, exits 0 and, with --json, prints

    {"move": NAME, "dry_run": true,
     "steps": [{"name": STEP, "title": TEXT,
                "statements": [{"on": "source" | "target" | "pgbouncers[i] ...", "sql": TEXT, "note": TEXT}],
                "notes": [TEXT]}]}

listing the steps it would undo, in the order it would undo them.
"""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from catalogkit import all_events, module_topology, planned_sql, same_sql, sql_events
from click.testing import CliRunner
from conftest import PASSWORD
from faultkit import catalog_differences, snapshot_everything
from movekit import DemoMove, demo_move

from migrator.cli import cli
from migrator.lab.sandbox import GROUP_TABLES
from migrator.move.state import StateStore, metadata
from migrator.move.steps import STEP_NAMES
from migrator.playbook import TableName

CHECKED_STEPS = ("schema", "defer-indexes", "replicate")


def step_named(steps: list[dict], name: str) -> dict:
    found = [s for s in steps if s["name"] == name]
    assert len(found) == 1, f"{len(found)} steps named {name!r} in {[s['name'] for s in steps]}"
    return found[0]


def ident(table: str) -> str:
    return TableName.parse(table).identifier.as_string(None)


# --------------------------------------------------------------------------- plan == execute


@pytest.fixture(scope="module")
def planned_then_executed(workdir, templates, tmp_path_factory):
    """The demo move: `plan --json`, then `execute --until cutover`; the plan and the
    event log."""
    with module_topology(workdir, templates, "plan-then-execute") as move:
        demo = demo_move(move, tmp_path_factory.mktemp("plan-then-execute"), scale=1)
        plan = CliRunner().invoke(cli, ["plan", str(demo.path), "--json"])
        assert plan.exit_code == 0, plan.output
        ran = demo.cli("execute", "--until", "cutover")
        assert ran.exit_code == 0, ran.output
        yield json.loads(plan.stdout), all_events(demo.state_url, demo.playbook.name)


@pytest.mark.parametrize("step", CHECKED_STEPS)
def test_plan_shows_exactly_the_sql_execute_runs(planned_then_executed, step):
    plan, events = planned_then_executed
    shown = planned_sql(step_named(plan["steps"], step))
    ran = sql_events(events, step)
    assert ran, f"the event log recorded no SQL for {step}"
    for text in shown + ran:
        assert PASSWORD not in text
    same_sql(shown, ran, f"step {step}: plan --json vs the SQL execute recorded")


# --------------------------------------------------------------------------- rollback --dry-run


@pytest.fixture(scope="module")
def staged(workdir, templates, tmp_path_factory):
    """One demo move (two PgBouncers) taken forward stage by stage by the tests below,
    in file order; each test first brings the move to its stage (execute resumes)."""
    with module_topology(workdir, templates, "dry-run", pgbouncers=2) as move:
        yield demo_move(move, tmp_path_factory.mktemp("dry-run"), scale=1)


def state_rows(demo: DemoMove) -> dict[str, list]:
    """Every row of the state store for this move: steps, their data, events, locks."""
    store = StateStore(demo.state_url)
    try:
        with store.engine.connect() as conn:
            return {name: [tuple(r) for r in conn.execute(
                        sa.select(table).where(table.c.move == demo.playbook.name))]
                    for name, table in metadata.tables.items()}
    finally:
        store.close()


def status_doc(demo: DemoMove) -> dict:
    code, doc = demo.cli_json("status")
    assert code == 0, doc
    # Lag moves on its own (WAL from checkpoints and the like); it is not something recorded.
    doc["replication"] = {k: v for k, v in doc["replication"].items() if k not in ("lag_bytes", "lag_seconds")}
    return doc


@contextmanager
def changes_nothing(demo: DemoMove):
    before = (status_doc(demo), state_rows(demo), snapshot_everything(demo.move))
    yield
    after = (status_doc(demo), state_rows(demo), snapshot_everything(demo.move))
    assert after[0] == before[0], "status --json changed"
    assert after[1] == before[1], "the state store changed"
    for side in ("source", "target"):
        diff = catalog_differences(before[2][side], after[2][side])
        assert not diff, f"the {side}'s catalogs changed: {diff}"
    assert after[2]["pgbouncer configs"] == before[2]["pgbouncer configs"]


def dry_run(demo: DemoMove, *args: str) -> dict:
    result = demo.cli("rollback", "--dry-run", *args, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["move"] == demo.playbook.name and doc["dry_run"] is True, doc
    configs = {str(b.config_file) for b in demo.move.pgbouncers}
    for step in doc["steps"]:
        assert set(step) >= {"name", "title", "statements", "notes"}, step
        assert isinstance(step["notes"], list), step
        for statement in step["statements"]:
            assert set(statement) == {"on", "sql", "note"}, statement
            assert (statement["on"] in ("source", "target") or statement["on"].startswith("pgbouncers[")
                    or statement["on"] in configs), statement
            assert PASSWORD not in statement["sql"]
    return doc


def names_of(doc: dict) -> list[str]:
    return [s["name"] for s in doc["steps"]]


def without_preflight(names: list[str]) -> list[str]:
    """preflight has nothing to undo: listing it (last, with no statements) is optional."""
    return names[:-1] if names and names[-1] == "preflight" else names


def has(step: dict, on: str, prefix: str, *words: str) -> bool:
    return any(s["on"].startswith(on) and s["sql"].lstrip().upper().startswith(prefix)
               and all(w in s["sql"] for w in words) for s in step["statements"])


def forward(demo: DemoMove, *args: str) -> None:
    result = demo.cli("execute", *args)
    assert result.exit_code == 0, result.output


def test_dry_run_before_any_execute_lists_nothing(staged):
    with changes_nothing(staged):
        doc = dry_run(staged)
        text = staged.cli("rollback", "--dry-run")
        assert text.exit_code == 0, text.output
    assert doc["steps"] == []


def test_dry_run_after_execute_until_replicate(staged):
    forward(staged, "--until", "replicate")
    with changes_nothing(staged):
        doc = dry_run(staged)
    names = names_of(doc)
    assert without_preflight(names) == ["defer-indexes", "schema"], names
    if "preflight" in names:
        assert step_named(doc["steps"], "preflight")["statements"] == []
    schema = step_named(doc["steps"], "schema")
    for table in GROUP_TABLES:
        assert has(schema, "target", "DROP TABLE IF EXISTS", ident(table)), (table, schema["statements"])


def test_dry_run_after_execute_until_cutover(staged):
    forward(staged, "--until", "cutover")
    with changes_nothing(staged):
        doc = dry_run(staged)
        partial = dry_run(staged, "--to", "replicate")
        text = staged.cli("rollback", "--dry-run")
        assert text.exit_code == 0, text.output
    assert without_preflight(names_of(doc)) == [
        "prepare-reverse", "rebuild-indexes", "replicate", "defer-indexes", "schema"], names_of(doc)
    publication = subscription = '"migrator_files_partition"'
    replicate = step_named(doc["steps"], "replicate")
    assert has(replicate, "target", "DROP SUBSCRIPTION", subscription), replicate["statements"]
    assert has(replicate, "source", "DROP PUBLICATION", publication), replicate["statements"]
    schema = step_named(doc["steps"], "schema")
    for table in GROUP_TABLES:
        assert has(schema, "target", "DROP TABLE IF EXISTS", ident(table)), (table, schema["statements"])
    assert names_of(partial) == ["prepare-reverse", "rebuild-indexes"]
    assert "DROP SUBSCRIPTION" in text.output


def test_rollback_runs_exactly_what_the_dry_run_showed(staged):
    forward(staged, "--until", "cutover")
    doc = dry_run(staged)
    seen = len(all_events(staged.state_url, staged.playbook.name))
    result = staged.cli("rollback")
    assert result.exit_code == 0, result.output
    events = all_events(staged.state_url, staged.playbook.name)[seen:]
    problems = []
    for step in ("replicate", "defer-indexes", "schema"):
        shown = planned_sql(step_named(doc["steps"], step))
        if step != "defer-indexes":  # skipped when the schema step drops the tables
            assert shown, f"the dry run shows no SQL for {step}"
        try:
            same_sql(shown, sql_events(events, step), f"step {step}: dry run vs the SQL rollback recorded")
        except AssertionError as exc:
            problems.append(str(exc))
    assert not problems, "\n".join(problems)
    assert status_doc(staged)["state"] == "rolled back"


def test_dry_run_after_the_cutover_is_a_reverse_cutover(staged):
    forward(staged)
    with changes_nothing(staged):
        doc = dry_run(staged)
    assert names_of(doc)[0] == "cutover", names_of(doc)
    cutover = step_named(doc["steps"], "cutover")
    for i, bouncer in enumerate(staged.move.pgbouncers):
        assert has(cutover, f"pgbouncers[{i}]", "PAUSE"), (bouncer.name, cutover["statements"])
        assert has(cutover, f"pgbouncers[{i}]", "RESUME"), (bouncer.name, cutover["statements"])


# --------------------------------------------------------------------------- the whole move, both cutovers


def every_statement(step_doc: dict) -> list[str]:
    """All of a step's statements as shown, PgBouncer commands and route lines included."""
    return [s["sql"] for s in step_doc["statements"]]


def compare_steps(shown: dict, events: list, steps: list[str], what: str) -> list[str]:
    """Each step's statements as shown against those the event log recorded for it."""
    problems = []
    for step in steps:
        doc = step_named(shown["steps"], step)
        expected = every_statement(doc) if step == "cutover" else planned_sql(doc)
        try:
            same_sql(expected, sql_events(events, step), f"step {step}: {what}")
        except AssertionError as exc:
            problems.append(str(exc))
    return problems


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("target_version", [None, pytest.param(18, marks=pytest.mark.pg(18))],
                         ids=["15 to 15", "15 to 18"])
def test_every_step_and_both_cutovers_run_exactly_what_plan_and_the_dry_run_showed(
        make_move, app_load, tmp_path, target_version):
    """`plan --sql --json` before the move, then `execute` under load: every step's SQL
    in the event log, the cutover's (PgBouncer commands and routes too), is what the
    plan showed. Then `rollback --dry-run --json`, then `rollback`: the reverse cutover
    and every undo recorded exactly what the dry run showed. A run-time value (the sync
    marker's token, a sequence's value, the lock timeout left) is `<name>` in both."""
    move = make_move(target_version=target_version)
    demo = demo_move(move, tmp_path, scale=1)
    result = CliRunner().invoke(cli, ["plan", str(demo.path), "--sql", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    with app_load(move, clients=4, rate=100):
        result = demo.cli("execute")
        assert result.exit_code == 0, result.output
        events = all_events(demo.state_url, demo.playbook.name)
        cutover = sql_events(events, "cutover")
        assert any(t.startswith("PAUSE ") for t in cutover) and any("<token>" in t for t in cutover), cutover
        for text in cutover:
            assert PASSWORD not in text
        problems = compare_steps(plan, events, [s for s in STEP_NAMES if s != "preflight"],
                                 "plan --sql --json vs the SQL execute recorded")
        assert not problems, "\n".join(problems)

        doc = dry_run(demo)
        seen = len(events)
        result = demo.cli("rollback")
        assert result.exit_code == 0, result.output
    events = all_events(demo.state_url, demo.playbook.name)[seen:]
    undone = [s["name"] for s in doc["steps"] if s["name"] != "preflight"]
    assert undone[0] == "cutover", undone
    problems = compare_steps(doc, events, undone, "rollback --dry-run --json vs the SQL rollback recorded")
    assert not problems, "\n".join(problems)
    assert status_doc(demo)["state"] == "rolled back"
