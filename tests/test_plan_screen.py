"""The plan at real size: a 40-table group with a trigger on each table reads on one
screen, grouped by finding code, while `--sql` and `--json` still carry everything."""

from __future__ import annotations

import json
import math

import pytest
from catalogkit import catalog_move
from click.testing import CliRunner

from migrator.cli import cli

TABLES = [f"shop.item_{n:02d}" for n in range(40)]
DDL = "CREATE SCHEMA shop;\n" + """
CREATE FUNCTION shop.touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
""" + "\n".join(
    f"CREATE TABLE {t} (id bigint PRIMARY KEY, body text, updated_at timestamptz);\n"
    f"CREATE INDEX {t.split('.')[1]}_body_idx ON {t} (body);\n"
    f"CREATE TRIGGER touch BEFORE UPDATE ON {t} FOR EACH ROW EXECUTE FUNCTION shop.touch();\n"
    f"INSERT INTO {t} SELECT g, repeat('x', 100), now() FROM generate_series(1, 500) g;"
    for t in TABLES) + "\nANALYZE;"


@pytest.fixture(scope="module")
def forty(workdir, templates, tmp_path_factory):
    """One topology for the module's tests: the plan is read-only."""
    from catalogkit import module_topology

    directory = tmp_path_factory.mktemp("forty")
    with module_topology(workdir, templates, "forty") as move:
        yield catalog_move(move, directory, DDL, TABLES, name="forty-tables")


def _plan(path, *args, width=100):
    env = {"COLUMNS": str(width), "LINES": "50"}
    result = CliRunner(env=env).invoke(cli, ["plan", str(path), *args])
    assert "Traceback" not in result.output, result.output
    return result



def screen_lines(text: str, width: int) -> int:
    """The lines a terminal of this width shows (a long line takes several)."""
    from rich.cells import cell_len

    return sum(max(1, math.ceil(cell_len(line) / width)) for line in text.splitlines())


def test_the_plan_of_40_tables_with_triggers_fits_one_screen(forty):
    result = _plan(forty.path)

    assert result.exit_code == 0, result.output
    text = result.stdout
    lines = text.splitlines()
    assert screen_lines(text, 100) <= 60, text
    assert lines[1].startswith("ready: nothing blocks the move (40 warnings)")  # the verdict first
    code_lines = [line for line in lines if "table.triggers" in line]
    assert len(code_lines) == 1 and "40 tables: shop.item_00, shop.item_01" in code_lines[0], text
    assert "and 34 more" in text
    for number, step in enumerate(["preflight", "schema", "defer-indexes", "replicate", "rebuild-indexes",
                                   "prepare-reverse", "cutover"], 1):
        assert sum(line.startswith(f"{number}. {step} ") for line in lines) == 1, text
    assert "(40 on target)" in next(line for line in lines if line.startswith("3. defer-indexes")), text
    assert "CREATE TABLE" not in text and "REVOKE" not in text
    assert lines[-1].startswith("next: migrator execute ")


def test_sql_and_json_still_carry_every_statement_and_finding(forty):
    code, doc = None, None
    result = _plan(forty.path, "--json")
    code, doc = result.exit_code, json.loads(result.stdout)
    assert code == 0
    triggers = [f for f in doc["findings"] if f["code"] == "table.triggers"]
    assert sorted(f["subject"] for f in triggers) == TABLES
    assert all(f["message"] and f["hint"] for f in triggers)

    shown = _plan(forty.path, "--sql", width=80)
    assert shown.exit_code == 0
    lines = shown.stdout.splitlines()
    statements = [s for step in doc["steps"] for s in step["statements"]]
    assert len(statements) > 250
    for s in statements:
        # every statement whole, on its own line(s), never folded inside a token at 80 columns
        first = s["sql"].splitlines()[0]
        assert any(line.strip().startswith(first) for line in lines), first
    assert sum(1 for line in lines if line.strip().startswith("CREATE TABLE \"shop\".")) == 40
    for finding_code in {f["code"] for f in doc["findings"]}:
        assert finding_code in shown.stdout


def test_no_url_or_path_is_broken_at_80_columns(forty):
    result = _plan(forty.path, "--sql", width=80)
    doc = json.loads(_plan(forty.path, "--json").stdout)
    lines = result.stdout.splitlines()
    for token in (doc["source"]["display"], doc["target"]["display"], doc["pgbouncers"][0]["config_file"],
                  doc["pgbouncers"][0]["admin"]):
        assert any(token in line for line in lines), token
    subscription = next(s["sql"] for step in doc["steps"] for s in step["statements"]
                        if s["sql"].startswith("CREATE SUBSCRIPTION"))
    assert any(subscription in line for line in lines)
    assert "****" in subscription
