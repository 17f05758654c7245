"""Managed Postgres (DESIGN section 11): a DSN role that is not a superuser, shaped like a
service's admin role (migrator.lab.managed). What `plan` calls ready, the move and its
rollback can do with it; what it lacks, `plan` names one gap per finding with the
statement that closes it, and nothing else is needed once those ran."""

from __future__ import annotations

import json
import time

import psycopg
import pytest
from click.testing import CliRunner
from conftest import PASSWORD
from faultkit import assert_like_before, snapshot_everything
from movekit import demo_move, wait_sides_identical

from migrator.cli import cli
from migrator.lab.managed import MOVER, make_managed
from migrator.lab.sandbox import APP_DB, APP_ROLE, GROUP_TABLES

pytestmark = pytest.mark.slow

SEQUENCES = ("public.files_id_seq", "public.file_number_seq", "public.file_versions_id_seq",
             "public.file_comments_id_seq")


def managed_demo(move, tmp_path, *, gaps=(), passwordless: str | None = None):
    demo = demo_move(move, tmp_path, scale=1)
    profile = make_managed(move, PASSWORD + "-mover", gaps=gaps)
    doc = move.playbook_doc()
    for side in ("source", "target"):
        cluster = getattr(move, side)
        doc[side]["dsn"] = profile.passwordless_url(cluster) if side == passwordless else profile.url(cluster)
    move.write_playbook(demo.path, doc)
    return demo, profile


def plan(demo) -> tuple[int, dict]:
    result = CliRunner().invoke(cli, ["plan", str(demo.path), "--json"])
    assert result.exit_code in (0, 3), result.output
    return result.exit_code, json.loads(result.stdout)


def app_privileges(dsn: str) -> dict[str, list[str]]:
    """What the app role may still do, per group relation and sequence."""
    out: dict[str, list[str]] = {}
    with psycopg.connect(dsn) as conn:
        for table in GROUP_TABLES:
            out[table] = [p for p in ("SELECT", "INSERT", "UPDATE", "DELETE") if conn.execute(
                "SELECT has_table_privilege(%s, %s, %s)", (APP_ROLE, table, p)).fetchone()[0]]
        for sequence in SEQUENCES:
            out[sequence] = [p for p in ("USAGE", "SELECT", "UPDATE") if conn.execute(
                "SELECT has_sequence_privilege(%s, %s, %s)", (APP_ROLE, sequence, p)).fetchone()[0]]
    return out


@pytest.mark.pg(18)
@pytest.mark.timeout(240)
def test_a_managed_role_moves_and_rolls_back_18_to_18_under_load(make_move, app_load, tmp_path):
    """plan ready => execute, verify, rollback after the cutover, execute again and
    complete all succeed with a role that is no superuser; 0 failed transactions, rows
    identical; after each cutover the app holds nothing on the old copy."""
    move = make_move(source_version=18, target_version=18)
    demo, _ = managed_demo(move, tmp_path)
    code, doc = plan(demo)
    assert code == 0, [f["message"] for f in doc["blocking"]]
    assert {f["code"] for f in doc["findings"] if f["level"] == "warn"} <= {"guard.ddl_unavailable",
                                                                          "sequence.copied_at_cutover"}, \
        [f["message"] for f in doc["findings"] if f["level"] == "warn"]
    with app_load(move, clients=4, rate=100) as load:
        for verb in ("execute", "verify", "rollback", "execute"):
            result = demo.cli(verb)
            assert result.exit_code == 0, (verb, result.output)
            if verb == "execute":
                held = app_privileges(move.source.dsn(APP_DB))
                assert not any(held.values()), f"the old copy (source) still grants the app: {held}"
            if verb == "rollback":   # back on the source, with what the app had there
                assert all(app_privileges(move.source.dsn(APP_DB))[t] for t in GROUP_TABLES)
        time.sleep(0.3)
    assert load.result().transactions > 50
    wait_sides_identical(move)
    result = demo.cli("complete")
    assert result.exit_code == 0, result.output
    assert all(app_privileges(move.target.dsn(APP_DB))[t] for t in GROUP_TABLES)


@pytest.mark.pg(18)
def test_on_a_15_source_plan_names_what_needs_a_superuser_and_changes_nothing(make_move, tmp_path):
    move = make_move(target_version=18)
    demo, _ = managed_demo(move, tmp_path)
    before = snapshot_everything(move)
    code, doc = plan(demo)
    assert code == 3
    blocks = {(f["code"], f["subject"]): f for f in doc["blocking"]}
    superuser = blocks[("role.create_subscription", f"source role {MOVER}")]
    assert "PostgreSQL 15" in superuser["message"] and "superuser" in superuser["message"]
    assert "reverse" in superuser["message"] and "16 or newer" in superuser["hint"]
    # The 18 side needs no superuser: pg_create_subscription suffices there.
    assert ("role.create_subscription", f"target role {MOVER}") not in blocks
    result = demo.cli("execute")
    assert result.exit_code == 3 and "preflight" in result.output, result.output
    assert_like_before(move, before)


@pytest.mark.pg(18)
@pytest.mark.timeout(240)
def test_each_missing_privilege_is_one_finding_whose_statement_closes_it(make_move, app_load, tmp_path, monkeypatch):
    """The target's database not the mover's (no CREATE on it, nor on schema public), a
    sequence owned by a role the mover has nothing of, no pg_create_subscription, and
    the source's password only in a passfile: plan blocks naming each, with the
    statement and the server; the test runs exactly those, and plan is ready; the move
    and its rollback then succeed."""
    move = make_move(source_version=18, target_version=18)
    demo, profile = managed_demo(move, tmp_path, gaps=("target_database", "sequence_owner", "create_subscription"),
                                 passwordless="source")
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{move.source.port}:{APP_DB}:{MOVER}:{profile.password}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    before = snapshot_everything(move)
    code, doc = plan(demo)
    assert code == 3
    found = {(f["code"], f["subject"]) for f in doc["findings"] if f["level"] in ("block", "warn")}
    expected = {
        ("role.create_objects", f"target role {MOVER}"),
        ("role.create_in_schema", "public"),
        ("role.set_owner", "public"),
        ("role.create_subscription", f"target role {MOVER}"),
        ("role.create_subscription", f"source role {MOVER}"),
        ("role.sequence", "public.file_number_seq"),
        ("role.grant", "public.file_number_seq"),
        ("role.revoke", "public.file_number_seq"),
        ("subscription.password", "source DSN"),
    }
    assert expected <= found, sorted(found)
    assert found - expected <= {("guard.ddl_unavailable", f"source role {MOVER}"),
                                ("guard.ddl_unavailable", f"target role {MOVER}"),
                                ("sequence.copied_at_cutover", "sequences")}, sorted(found - expected)
    revoke = next(f for f in doc["findings"] if f["code"] == "role.revoke")
    assert revoke["level"] == "warn" and "keep their privileges on the old copy" in revoke["message"]
    assert_like_before(move, before)   # plan changed nothing

    # Exactly what the findings say, where they say it (as that server's superuser).
    ran = []
    for finding in doc["findings"]:
        hint = finding["hint"]
        if finding["code"] == "subscription.password":
            doc_ = move.playbook_doc()
            doc_["source"]["dsn"], doc_["target"]["dsn"] = profile.url(move.source), profile.url(move.target)
            move.write_playbook(demo.path, doc_)
            continue
        if finding["level"] == "ok" or not hint.startswith("run on the "):
            continue
        side, statement = hint.removeprefix("run on the ").split(": ", 1)
        with psycopg.connect(getattr(move, side).dsn(APP_DB), autocommit=True) as conn:
            conn.execute(statement)
        ran.append((side, statement))
    assert ("target", f"GRANT CREATE ON DATABASE \"{APP_DB}\" TO \"{MOVER}\"") in ran, ran
    assert ("source", f"GRANT \"numbering\" TO \"{MOVER}\"") in ran, ran
    code, doc = plan(demo)
    assert code == 0, [f["message"] for f in doc["blocking"]]

    with app_load(move, clients=4, rate=100) as load:
        result = demo.cli("execute")
        assert result.exit_code == 0, result.output
        assert not any(app_privileges(move.source.dsn(APP_DB)).values())
        result = demo.cli("rollback")
        assert result.exit_code == 0, result.output
        time.sleep(0.3)
    assert load.result().transactions > 50
    assert status_state(demo) == "rolled back"


def status_state(demo) -> str:
    code, doc = demo.cli_json("status")
    assert code == 0, doc
    return doc["state"]
