"""`migrator demo`: the whole story on a fresh sandbox, under a write load.

sandbox up → load through PgBouncer → plan → execute → verify → rollback → execute
→ verify → complete → the figures → sandbox down. The load runs from before the
first step to after the last, so the figures are what an application would have seen.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from migrator.errors import OperationFailed
from migrator.lab.sandbox import (
    GROUP_ENTRY,
    STATE_FILE,
    WHOLE_ENTRY,
    sandbox_down,
    sandbox_up,
)
from migrator.move.state import StateStore
from migrator.move.statuses import default_url
from migrator.output import Output
from migrator.playbook import load_playbook


@dataclass
class DemoFigures:
    directory: str
    timeline: list[dict] = field(default_factory=list)        # phase, seconds
    pause_windows: list[dict] = field(default_factory=list)   # from the cutover history
    group_load: dict = field(default_factory=dict)
    other_load: dict = field(default_factory=dict)
    verified: list[dict] = field(default_factory=list)        # per verify run: identical, rows
    analyzed: dict = field(default_factory=dict)              # analyze on the clean load
    ok: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def run_demo(out: Output, *, directory: Path | None = None, scale: int = 20, keep: bool = False,
             clients: int = 16, rate: float = 400) -> DemoFigures:
    from migrator.analyze.observe import analyze_playbook
    from migrator.lab.workload import Workload
    from migrator.move import runner
    from migrator.move.complete import complete
    from migrator.plan.build import make_plan, preflight_checks
    from migrator.verify.compare import verify

    if directory is None:
        parent = Path(tempfile.mkdtemp(prefix="migrator-demo-"))
        parent.chmod(0o755)  # the servers run as another OS user when we are root
        directory = parent / "sandbox"
    directory = Path(directory)
    figures = DemoFigures(directory=str(directory))
    started = time.monotonic()

    def phase(name: str, since: float) -> None:
        figures.timeline.append({"phase": name, "seconds": round(time.monotonic() - since, 2)})
        out.demo_phase(name, time.monotonic() - since)

    try:
        t = time.monotonic()
        out.demo_heading(f"1. sandbox up in {directory} (scale {scale}: {scale}k files)")
        info = sandbox_up(directory, scale=scale)
        phase("sandbox up", t)
        playbook = load_playbook(info.playbook)
        store = StateStore(default_url(info.playbook))

        out.demo_heading(f"2. the application: {clients} clients at {rate:.0f} tx/s through PgBouncer "
                         f"entry {GROUP_ENTRY}, light traffic on {WHOLE_ENTRY}")
        group = Workload(info.group_url, mix="group", clients=clients, rate=rate).start()
        other = Workload(info.app_url, mix="app", clients=2, rate=20).start()
        try:
            time.sleep(1)
            t = time.monotonic()
            out.demo_heading("3. plan (read-only)")
            plan = make_plan(playbook)
            out.plan_summary(plan)
            if plan.blocking:
                raise OperationFailed(f"the demo's plan is blocked: {plan.blocking[0].message}")
            phase("plan", t)
            t = time.monotonic()
            out.demo_heading("3b. analyze (read-only): 3 s of the live traffic")
            report = analyze_playbook(playbook, duration=3.0)
            figures.analyzed = {"findings": [f.to_dict() for f in report.findings], "samples": report.samples,
                                "transactions_observed": report.coverage.transactions_observed,
                                "group_aas": round(report.group_impact.aas, 4) if report.group_impact else None}
            out.analyze_summary(report)
            phase("analyze", t)

            for number, (verb, action) in enumerate([
                ("execute", lambda: runner.execute(playbook, store, checks=preflight_checks, reporter=out.step_reporter())),
                ("verify", lambda: _verify(out, playbook, figures, verify)),
                ("rollback", lambda: runner.rollback(playbook, store, reporter=out.step_reporter())),
                ("execute again", lambda: runner.execute(playbook, store, checks=preflight_checks, reporter=out.step_reporter())),
                ("verify", lambda: _verify(out, playbook, figures, verify)),
            ], start=4):
                out.demo_heading(f"{number}. {verb}")
                t = time.monotonic()
                action()
                phase(verb, t)
                time.sleep(0.5)
        finally:
            figures.group_load = group.stop().to_dict()
            figures.other_load = other.stop().to_dict()
        out.demo_heading("9. complete")
        t = time.monotonic()
        complete(playbook, store)
        phase("complete", t)
        figures.pause_windows = store.step(playbook.name, "cutover").data.history
        store.close()
    finally:
        if not keep and (directory / STATE_FILE).exists():
            sandbox_down(directory)
    figures.timeline.append({"phase": "total", "seconds": round(time.monotonic() - started, 2)})
    figures.ok = (
        figures.group_load.get("failures") == 0
        and figures.other_load.get("failures") == 0
        and all(v["identical"] for v in figures.verified)
        and all(w["outcome"] == "completed" for w in figures.pause_windows)
        and figures.analyzed.get("findings") == []
    )
    out.demo_figures(figures, kept=keep)
    return figures


def _verify(out: Output, playbook, figures: DemoFigures, verify) -> None:
    report = verify(playbook)
    doc = report.to_dict() if hasattr(report, "to_dict") else {}
    rows = sum(t.get("source_rows", 0) or 0 for t in doc.get("tables", []))
    figures.verified.append({"identical": bool(report.identical), "rows_compared": rows})
    out.line(f"  verify: {'identical' if report.identical else 'DIFFERENT'} ({rows} rows compared per side)")
    if not report.identical:
        raise OperationFailed("verify found a difference between the sides")
