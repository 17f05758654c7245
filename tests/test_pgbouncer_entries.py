"""Real PgBouncer configurations (issue 21): a [databases] entry with options of its own
is read by `plan` and kept by the reroute, both ways; the entry's pool mode is read and
session or statement pooling blocks unless the playbook opts in to closing session
clients."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from movekit import demo_move, wait_sides_identical

from migrator.cli import cli
from migrator.lab.sandbox import GROUP_ENTRY, MoveTopology
from migrator.pgbouncer.console import PgBouncerConsole

# The entry's own options: its pool mode (the PgBouncer's default is session, below), its
# pool sizes and limits, a quoted value. Only host, port and dbname may change.
OWN = "pool_mode=transaction pool_size=7 reserve_pool=2 max_db_connections=9 application_name='files app'"


def configure(move: MoveTopology, *, entry_options: str, default_mode: str = "session", users: str = "") -> None:
    """Rewrite the PgBouncer's config: the group's entry with options of its own, a global
    pool_mode, optionally a [users] section; then RELOAD."""
    config = move.pgbouncer.config_file
    text = config.read_text()
    line = f"{GROUP_ENTRY} = host=127.0.0.1 port={move.source.port} dbname=app"
    current = next(ln for ln in text.splitlines() if ln.startswith(f"{GROUP_ENTRY} ="))
    text = text.replace(current, f"{line} {entry_options}".strip())
    text = text.replace("pool_mode = transaction", f"pool_mode = {default_mode}")
    if users:
        text = text.replace("[pgbouncer]", f"[users]\n{users}\n\n[pgbouncer]")
    config.write_text(text)
    with PgBouncerConsole(move.pgbouncer.admin_dsn()) as console:
        console.reload()


def show(move: MoveTopology) -> dict:
    with PgBouncerConsole(move.pgbouncer.admin_dsn()) as console:
        row = next(r for r in console.show("DATABASES") if r["name"] == GROUP_ENTRY)
    return {k: row[k] for k in ("host", "port", "database", "pool_size", "reserve_pool", "max_connections",
                                "pool_mode")}


def plan_json(path) -> tuple[int, dict]:
    result = CliRunner().invoke(cli, ["plan", str(path), "--json"])
    return result.exit_code, json.loads(result.stdout)


def pool_findings(doc: dict) -> list[tuple[str, str]]:
    return [(f["level"], f["message"]) for f in doc["findings"] if f["code"] == "pgbouncer.pool_mode"]


@pytest.mark.timeout(120)
def test_an_entry_keeps_its_own_options_through_the_cutover_and_the_rollback(make_move, app_load, tmp_path):
    move = make_move()
    demo = demo_move(move, tmp_path, scale=1)
    configure(move, entry_options=OWN)
    before = move.pgbouncer.config_file.read_text()
    on_source = show(move)
    assert on_source == {"host": "127.0.0.1", "port": move.source.port, "database": "app", "pool_size": 7,
                         "reserve_pool": 2, "max_connections": 9, "pool_mode": "transaction"}

    code, doc = plan_json(demo.path)
    assert code == 0, [f["message"] for f in doc["blocking"]]
    bouncer = doc["pgbouncers"][0]
    assert bouncer["config_entry"].endswith(OWN)
    # The PgBouncer pools in session mode by default; the group's entry says transaction.
    assert (bouncer["pool_mode"], bouncer["pool_mode_from"]) == ("transaction",
                                                                 "the entry's own pool_mode=transaction")
    assert pool_findings(doc) == []

    with app_load(move, clients=4, rate=100):
        result = demo.cli("execute")
        assert result.exit_code == 0, result.output
    assert show(move) == {**on_source, "port": move.target.port}
    assert f"{GROUP_ENTRY} = host=127.0.0.1 port={move.target.port} dbname=app {OWN}\n" in \
        move.pgbouncer.config_file.read_text()
    wait_sides_identical(move)

    with app_load(move, clients=4, rate=100):
        result = demo.cli("rollback")
        assert result.exit_code == 0, result.output
    assert show(move) == on_source
    assert move.pgbouncer.config_file.read_text() == before


def test_plan_reads_the_entrys_pool_mode_and_blocks_what_cannot_pause(move, tmp_path):
    demo = demo_move(move, tmp_path, scale=0)

    # The entry's own pool_mode=session.
    configure(move, entry_options="pool_mode=session pool_size=30", default_mode="transaction")
    code, doc = plan_json(demo.path)
    assert code == 3
    ((level, message),) = pool_findings(doc)
    assert level == "block"
    assert "pools app_files in session mode (the entry's own pool_mode=session)" in message
    assert [f["code"] for f in doc["blocking"]] == ["pgbouncer.pool_mode"]   # the options are no problem

    # The opt-in: plan does not block, and says what the application must tolerate.
    playbook = demo.path.read_text()
    demo.path.write_text(playbook.replace("max_lag: 16MB", "max_lag: 16MB\n  session_clients: close"))
    code, doc = plan_json(demo.path)
    assert code == 0, doc["blocking"]
    ((level, message),) = pool_findings(doc)
    assert level == "warn" and "client connections are closed" in message
    assert doc["playbook"]["cutover"]["session_clients"] == "close"
    demo.path.write_text(playbook)

    # Session pooling inherited from the PgBouncer's default.
    configure(move, entry_options="pool_size=30", default_mode="session")
    code, doc = plan_json(demo.path)
    assert code == 3 and "(the global pool_mode = session)" in pool_findings(doc)[0][1]

    # A user's own pool_mode wins over the entry's: the app role pools in statement mode.
    configure(move, entry_options="pool_mode=transaction", default_mode="transaction",
              users="app = pool_mode=statement")
    code, doc = plan_json(demo.path)
    assert code == 3
    ((level, message),) = pool_findings(doc)
    assert level == "block" and "in statement mode (user app's own pool_mode=statement in [users])" in message
