"""`migrator demo`: the whole story, as a user runs it, in a real process."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

# The whole story (three cutovers, two verifies, an analyze) takes about 50 s on a quiet
# two-core machine and twice that on a busy one: a hang still fails, well before CI's end.
pytestmark = pytest.mark.timeout(300)


def test_demo_runs_the_whole_story_with_zero_failed_transactions(workdir):
    directory = workdir / "demo"  # reachable by the servers' OS user (tests may run as root)
    result = subprocess.run(
        [sys.executable, "-m", "migrator", "demo", "--scale", "2", "--dir", str(directory)],
        capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(r"failed: 0\b", output), output
    assert "demo passed" in output
    assert "analyze on the live load: 0 findings" in output
    assert output.count("identical,") == 2  # verify after each execute
    windows = re.findall(r"(forward|reverse)\s+completed\s+(\d+) ms", output)
    assert [w[0] for w in windows] == ["forward", "reverse", "forward"], output
    assert not directory.exists(), "the demo's sandbox was not taken down"


def test_demo_json_document(workdir):
    result = subprocess.run(
        [sys.executable, "-m", "migrator", "demo", "--scale", "1", "--dir", str(workdir / "demo-json"), "--json"],
        capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is True
    assert doc["group_load"]["failures"] == 0 and doc["group_load"]["transactions"] > 0
    assert [w["direction"] for w in doc["pause_windows"]] == ["forward", "reverse", "forward"]
    assert all(v["identical"] for v in doc["verified"])
    assert doc["analyzed"]["findings"] == [] and doc["analyzed"]["samples"] > 0
