"""The README is the front door: its references must match the code."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from migrator.playbook import CutoverSettings, IndexSettings, Playbook, RestartSettings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _reference_module():
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "scripts" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_matches_help():
    reference = _reference_module()
    assert reference.current(README) == reference.section(), (
        "the README's CLI reference is out of date: run `python scripts/cli_reference.py --write`")


def test_every_command_is_in_the_reference():
    from migrator.cli import cli

    for name in cli.commands:
        assert f"#### `migrator {name}`" in README, name


def test_playbook_reference_lists_every_key_with_its_default():
    keys = {f"`{k}`" for k in ("name", "source.dsn", "target.dsn", "tables", "app_roles",
                                "pgbouncers[].admin_dsn", "pgbouncers[].database",
                                "pgbouncers[].config_file", "indexes.defer", "objects.include",
                                "objects.exclude", "restarts.wait", "schemas")}
    keys |= {f"`cutover.{k}`" for k in CutoverSettings.model_fields}
    table = README[README.index("| key | required | default | meaning |"):]
    for key in keys:
        assert re.search(rf"^\| {re.escape(key)} \|", table, re.M), f"{key} missing from the playbook reference"
    assert set(Playbook.model_fields) - {"path", "group_read"} == {
        "name", "source", "target", "tables", "schemas", "app_roles", "pgbouncers", "cutover", "indexes",
        "objects", "restarts"}
    defaults = CutoverSettings()
    assert f"| `cutover.max_pause` | no | `{defaults.max_pause:g}s` |" in table
    assert f"| `cutover.grace` | no | `{defaults.grace * 1000:g}ms` |" in table
    assert f"| `cutover.max_lag` | no | `{defaults.max_lag // 2**20}MB` |" in table
    assert f"| `indexes.defer` | no | `{str(IndexSettings().defer).lower()}` |" in table
    assert f"| `restarts.wait` | no | `{RestartSettings().wait:g}s` |" in table


def test_the_two_setup_commands_are_there():
    assert "bash scripts/setup.sh && .venv/bin/migrator demo" in README
    assert "\nbash .ci/run\n" in README
    assert ".venv/bin/pytest" in (ROOT / ".ci" / "run").read_text()
