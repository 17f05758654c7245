"""`migrator plan` at the command line, before any server is reached: invalid playbooks
and options are one clean line with exit 2, and the README documents the plan."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from migrator.cli import cli
from migrator.plan.findings import CODES

PASSWORD = "pl4n-s3cret"
README = Path(__file__).resolve().parent.parent / "README.md"

GOOD: dict[str, Any] = {
    "name": "files-partition",
    "source": {"dsn": f"postgresql://migrator:{PASSWORD}@db-main:5432/app"},
    "target": {"dsn": f"postgresql://migrator:{PASSWORD}@db-files:5432/app"},
    "tables": ["public.files", "public.file_versions"],
    "app_roles": ["app_files"],
    "pgbouncers": [{
        "admin_dsn": f"postgresql://pgbouncer:{PASSWORD}@pgb-1:6432/pgbouncer",
        "database": "app_files",
        "config_file": "/etc/pgbouncer/pgbouncer.ini",
    }],
    "cutover": {"max_pause": "2s", "grace": "500ms", "max_lag": "16MB"},
}


def changed(**changes: Any) -> str:
    doc = copy.deepcopy(GOOD)
    for key, value in changes.items():
        if value is None:
            doc.pop(key)
        else:
            doc[key] = value
    return yaml.safe_dump(doc, sort_keys=False)


def cutover(**settings: Any) -> str:
    return changed(cutover={**GOOD["cutover"], **settings})


BAD = [
    pytest.param(changed(tabels=["public.files"]), "unknown key 'tabels' (did you mean 'tables'?)",
                 id="misspelt-key"),
    pytest.param(changed(tables=None), "tables: field required", id="no-tables"),
    pytest.param(changed(tables=[]), "tables: the list is empty", id="empty-tables"),
    pytest.param(changed(tables=["files", "public.files"]),
                 "tables[1]: public.files is listed twice (also tables[0])", id="duplicate-table"),
    pytest.param(changed(tables=["my table"]), "tables[0]: 'my table' is not a table name",
                 id="unquoted-name"),
    pytest.param(changed(name="Files Partition"), "name: 'Files Partition' is not a valid name",
                 id="bad-name"),
    pytest.param(cutover(max_pause="2 seconds"), "cutover.max_pause: '2 seconds' is not a duration",
                 id="bad-duration"),
    pytest.param(cutover(grace="3s"), "cutover: grace (3 s) must be shorter than max_pause (2 s)",
                 id="grace-too-long"),
    pytest.param(cutover(max_lag="lots"), "cutover.max_lag: 'lots' is not a size", id="bad-size"),
    pytest.param(changed(source={"dsn": f"host=db-main password={PASSWORD} dbname"}),
                 "source.dsn: not a valid connection string", id="unparseable-dsn-with-password"),
    pytest.param(changed(source={"dsn": "postgresql://migrator:${PGPASS_MAIN}@db-main/app"}),
                 "source.dsn: environment variable PGPASS_MAIN is not set", id="unset-variable"),
    pytest.param(changed(target=GOOD["source"]),
                 "target.dsn: is the same database as source.dsn (db-main:5432/app)", id="same-database"),
    pytest.param(changed(pgbouncers=[{**GOOD["pgbouncers"][0], "database": None}]),
                 "pgbouncers[0].database: expected text, got nothing", id="pgbouncer-database-null"),
    pytest.param(changed(indexes={"defer": "yes please"}), "indexes.defer: expected true or false",
                 id="defer-not-a-bool"),
    pytest.param(f"name: x\nsource:\n  dsn: postgresql://m:{PASSWORD}@db/app\n  - oops\n",
                 "line 4, column 3:", id="yaml-error-on-a-line-with-a-password"),
    pytest.param("- public.files\n", "the playbook must be a mapping", id="not-a-mapping"),
]


@pytest.mark.parametrize(("text", "fragment"), BAD)
def test_an_invalid_playbook_is_exit_2_with_one_clean_line(tmp_path, monkeypatch, text, fragment):
    monkeypatch.delenv("PGPASS_MAIN", raising=False)
    path = tmp_path / "playbook.yaml"
    path.write_text(text)

    result = CliRunner().invoke(cli, ["plan", str(path)])

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: invalid playbook {path}: ")
    assert fragment in result.stderr
    assert "Traceback" not in result.output
    assert PASSWORD not in result.output
    assert result.stdout == ""


@pytest.mark.parametrize(("text", "fragment"), BAD[:4] + BAD[9:10] + BAD[-2:-1])
def test_an_invalid_playbook_with_json_is_one_document(tmp_path, text, fragment):
    path = tmp_path / "playbook.yaml"
    path.write_text(text)

    result = CliRunner().invoke(cli, ["plan", str(path), "--json"])

    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and fragment in doc["error"]
    assert PASSWORD not in result.output


def test_a_missing_playbook_file_is_exit_2(tmp_path):
    result = CliRunner().invoke(cli, ["plan", str(tmp_path / "nope.yaml")])

    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: invalid playbook {tmp_path / 'nope.yaml'}: file not found"


@pytest.mark.parametrize("rate", ["fast", "0MB/s", "-5MB/s", "10 parsecs/s"])
def test_a_bad_copy_rate_is_a_usage_error(tmp_path, rate):
    path = tmp_path / "playbook.yaml"
    path.write_text(changed())

    result = CliRunner().invoke(cli, ["plan", str(path), "--copy-rate", rate])

    assert result.exit_code == 2
    assert "Invalid value for '--copy-rate'" in result.output
    assert "Traceback" not in result.output


def test_an_unreachable_source_is_exit_1_naming_it(tmp_path):
    doc = copy.deepcopy(GOOD)
    doc["source"]["dsn"] = f"postgresql://migrator:{PASSWORD}@127.0.0.1:1/app?connect_timeout=2"
    path = tmp_path / "playbook.yaml"
    path.write_text(yaml.safe_dump(doc))

    result = CliRunner().invoke(cli, ["plan", str(path)])

    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot inspect the source: cannot connect to migrator@127.0.0.1:1/app")
    assert PASSWORD not in result.output and "Traceback" not in result.output


# --------------------------------------------------------------------------- the README


def readme_plan_section() -> str:
    text = README.read_text()
    match = re.search(r"^## Plan\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, "README.md has no '## Plan' section"
    return match.group(1)


def test_the_readme_documents_every_finding_code():
    section = readme_plan_section()
    missing = [code for code in CODES if f"`{code}`" not in section]
    assert missing == []


def test_the_readme_documents_every_key_of_the_json_document():
    from test_plan import ESTIMATE_KEYS, FINDING_KEYS, PLAN_KEYS, STEP_KEYS

    section = readme_plan_section()
    missing = [key for key in PLAN_KEYS | FINDING_KEYS | STEP_KEYS | ESTIMATE_KEYS
               if f'"{key}"' not in section]
    assert missing == []


def test_the_plan_section_comes_after_set_up_and_before_execute():
    headings = re.findall(r"^## (.+)$", README.read_text(), re.M)
    plan = headings.index("Plan")
    assert headings.index("Set up") < plan
    assert all(plan < i for i, h in enumerate(headings) if h.startswith("Execute"))
