"""The CLI root: version, help with examples, exit codes, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import click
from click.testing import CliRunner

from migrator import __version__
from migrator.cli import cli


def all_commands(group=cli, prefix=()):
    for name, command in group.commands.items():
        path = (*prefix, name)
        yield path, command
        if isinstance(command, click.Group):
            yield from all_commands(command, path)


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"migrator, version {__version__}"


def test_every_command_has_help_with_an_example():
    for path, _command in all_commands():
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, path
        assert "Example:" in result.output, f"`migrator {' '.join(path)} --help` has no example"
        assert "migrator " + path[0] in result.output, path


def test_usage_error_exits_2():
    result = CliRunner().invoke(cli, ["sandbox", "up", "--scale", "-5"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_python_dash_m_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "migrator", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "Usage: migrator" in result.stdout


def test_errors_are_one_clean_line_and_debug_shows_traceback(tmp_path):
    runner = CliRunner()
    target = tmp_path / "busy"
    target.mkdir()
    (target / "file").write_text("x")
    plain = runner.invoke(cli, ["sandbox", "up", "--dir", str(target)])
    assert plain.exit_code == 1
    assert plain.output.startswith("error: ")
    assert "Traceback" not in plain.output
    debug = runner.invoke(cli, ["--debug", "sandbox", "up", "--dir", str(target)])
    assert debug.exit_code == 1
    assert "Traceback" in debug.output
