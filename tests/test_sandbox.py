"""`migrator sandbox up/status/down`, driven through the real CLI."""

from __future__ import annotations

import json

import psycopg
import yaml
from click.testing import CliRunner

from migrator.cli import cli
from migrator.lab.topology import Topology
from migrator.move.state import process_alive


def run(*args):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result


def test_sandbox_up_query_through_pgbouncer_then_down_leaves_nothing(workdir):
    directory = workdir / "sandbox-cli"
    up = run("sandbox", "up", "--dir", str(directory), "--scale", "1", "--json")
    assert up.exit_code == 0, up.output
    info = json.loads(up.output)
    pids = info["processes"]
    try:
        assert len(pids) == 3 and all(process_alive(p) for p in pids)
        playbook = yaml.safe_load((directory / "playbook.yaml").read_text())
        assert playbook["tables"] == ["public.files", "public.file_versions", "public.file_comments"]
        assert playbook["pgbouncers"][0]["database"] == "app_files"
        # No secret in the playbook: libpq takes passwords from the sandbox's passfile.
        for dsn in (playbook["source"]["dsn"], playbook["target"]["dsn"], playbook["pgbouncers"][0]["admin_dsn"]):
            assert "passfile=" in dsn and ":" not in dsn.split("@")[0].split("//")[1]

        with psycopg.connect(info["group_url"], prepare_threshold=None) as conn:
            assert conn.execute("SELECT count(*) FROM files").fetchone() == (1000,)
            assert conn.execute("SELECT count(*) FROM file_versions").fetchone() == (3000,)
        with psycopg.connect(info["app_url"], prepare_threshold=None) as conn:
            assert conn.execute("SELECT count(*) FROM users").fetchone() == (500,)

        again = run("sandbox", "up", "--dir", str(directory), "--json")
        assert again.exit_code == 0, again.output
        assert json.loads(again.output)["created"] is False
        assert sorted(json.loads(again.output)["processes"]) == sorted(pids)

        status = run("sandbox", "status", "--dir", str(directory), "--json")
        assert status.exit_code == 0, status.output
        assert json.loads(status.output)["group_url"] == info["group_url"]
        assert "app_files" in run("sandbox", "status", "--dir", str(directory)).output
    finally:
        down = run("sandbox", "down", "--dir", str(directory))
    assert down.exit_code == 0, down.output
    assert not any(process_alive(p) for p in pids), "sandbox down left a process running"
    assert not directory.exists(), "sandbox down left files behind"


def test_sandbox_up_restarts_a_stopped_sandbox(workdir):
    directory = workdir / "sandbox-restart"
    first = json.loads(run("sandbox", "up", "--dir", str(directory), "--scale", "0", "--json").output)
    try:
        topo, _ = Topology.load(directory / "sandbox.json")
        topo.stop()  # a reboot, as far as the sandbox can tell
        assert not any(process_alive(p) for p in first["processes"])
        second = run("sandbox", "up", "--dir", str(directory), "--json")
        assert second.exit_code == 0, second.output
        with psycopg.connect(json.loads(second.output)["group_url"], prepare_threshold=None) as conn:
            assert conn.execute("SELECT count(*) FROM files").fetchone() == (0,)
    finally:
        assert run("sandbox", "down", "--dir", str(directory)).exit_code == 0
    assert not directory.exists()


def test_sandbox_refuses_a_directory_that_is_not_its_own(workdir):
    directory = workdir / "not-a-sandbox"
    directory.mkdir()
    (directory / "precious.txt").write_text("keep me")
    up = run("sandbox", "up", "--dir", str(directory))
    assert up.exit_code == 1
    assert "not empty" in up.output
    down = run("sandbox", "down", "--dir", str(directory))
    assert down.exit_code == 1
    assert (directory / "precious.txt").read_text() == "keep me"


def test_sandbox_status_without_sandbox_says_how_to_start_one(workdir):
    result = run("sandbox", "status", "--dir", str(workdir / "nothing-here"))
    assert result.exit_code == 1
    assert "migrator sandbox up --dir" in result.output
    assert "Traceback" not in result.output
