"""`migrator report` of a demo move: the record as one self-contained HTML page and its
JSON twin, lag and progress samples in the state store, and the page seen in headless
Chromium (the README's picture comes from scripts/report_screenshot.py)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import PASSWORD
from movekit import demo_move

from migrator.move.state import SAMPLES_KEPT, StateStore
from migrator.move.statuses import SampleKind
from migrator.move.status import live_view

ROOT = Path(__file__).resolve().parent.parent


def _screenshot_module():
    spec = importlib.util.spec_from_file_location("report_screenshot", ROOT / "scripts" / "report_screenshot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_samples_are_bounded_per_move_and_kind(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    for n in range(250):
        store.record_sample("m", SampleKind.LAG, {"bytes": n}, at=1000.0 + n, keep=40)
    store.record_sample("m", SampleKind.COPY, {"done": 1, "total": 2})
    lag = store.samples("m", SampleKind.LAG)
    assert len(lag) == 40 and lag[-1]["bytes"] == 249 and lag[0]["bytes"] == 210
    assert len(store.samples("m", SampleKind.COPY)) == 1
    assert SAMPLES_KEPT <= 10_000


def test_the_report_of_a_demo_move_shows_timeline_pauses_lag_verify_findings_events(move, tmp_path):
    demo = demo_move(move, tmp_path, scale=2)
    ran = demo.cli("execute")
    assert ran.exit_code == 0, ran.output
    assert demo.cli("verify").exit_code == 0
    live_view(demo.playbook, StateStore(demo.state_url))   # what `status --watch` does each second
    html = tmp_path / "report.html"

    result = demo.cli("report", "--html", str(html))
    code, doc = demo.cli_json("report")

    assert result.exit_code == 0, result.output
    assert code == 0 and doc["ok"]
    assert [s["status"] for s in doc["steps"]] == ["done"] * 7
    assert all(s["started_at"] <= s["finished_at"] for s in doc["steps"])
    assert len(doc["pause_windows"]) == 1 and doc["pause_windows"][0]["outcome"] == "completed"
    assert doc["pause_windows"][0]["parts"]
    assert doc["copy"] and doc["copy"][-1]["done"] == doc["copy"][-1]["total"]
    assert doc["lag"] and any(s["step"] == "watch" and s["direction"] == "reverse" for s in doc["lag"])
    assert doc["verify"][-1]["identical"] is True
    assert {f["code"] for f in doc["findings"]} >= {"server.wal_level", "table.no_replica_identity"}
    assert any(e["message"] == "execute finished" for e in doc["events"])

    page = html.read_text()
    assert "Timeline of the steps" in page and "Pause windows (1), to scale" in page
    assert page.count("<svg") >= 4
    for step in ("preflight", "replicate", "cutover"):
        assert f">{step}</text>" in page
    for part in doc["pause_windows"][0]["parts"]:
        assert part in page
    # Self-contained: nothing to fetch, no script; the only URL is SVG's namespace name.
    assert not re.search(r"<script|<link|src=|href=|@import|url\(", page)
    assert set(re.findall(r"https?://[^\"' <]+", page)) <= {"http://www.w3.org/2000/svg"}
    assert PASSWORD not in page and PASSWORD not in result.output

    shot = _screenshot_module()
    if shot.chromium() is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; scripts/setup.sh does it)")
    png = shot.screenshot(html, tmp_path / "report.png")
    seen = shot.ink(png)
    assert seen["drawn"] > 0.02 and seen["coloured"] > 0.005, seen   # not blank: text and bars
    if os.environ.get("MIGRATOR_REPORT_PICTURE"):                      # refresh the README's picture
        shutil.copy(png, os.environ["MIGRATOR_REPORT_PICTURE"])
