"""The move's record, for a change ticket or a postmortem (`migrator report`): the steps
with their times, every pause window with its parts, lag and progress over time, the
verify results, the findings at execute time and the event log. Read from the state
store only: it needs no server, so it works after the servers are gone."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from migrator.move.state import StateStore
from migrator.move.statuses import SampleKind, StepStatus
from migrator.move.steps import STEP_NAMES
from migrator.playbook import Playbook


@dataclass
class MoveRecord:
    move: str
    generated_at: str
    status: str | None                        # a MoveStatus value, None when never run
    steps: list[dict]                          # step, status, started_at, finished_at, seconds, error
    pause_windows: list[dict]                  # the cutover history: direction, outcome, total, parts...
    lag: list[dict]                            # at, bytes, seconds?, step
    copy: list[dict]                           # at, done, total
    indexes: list[dict]                        # at, done, total
    verify: list[dict]                         # at, identical, seconds, bytes, tables
    findings: list[dict]                       # the last preflight's
    events: list[dict]
    tables: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def span(self) -> tuple[float, float] | None:
        """(first, last) timestamp of anything recorded."""
        times = [t for s in self.steps for t in (s["started_at"], s["finished_at"]) if t]
        times += [e["at"] for e in self.events] + [s["at"] for s in self.lag + self.copy]
        return (min(times), max(times)) if times else None


def move_record(playbook: Playbook, store: StateStore, *, events: int = 500) -> MoveRecord:
    name = playbook.name
    records = store.steps(name)
    steps = []
    for step in STEP_NAMES:
        r = records.get(step)
        steps.append({
            "step": step,
            "status": r.status.value if r else StepStatus.PENDING.value,
            "started_at": r.started_at if r else None,
            "finished_at": r.finished_at if r else None,
            "seconds": round(r.seconds, 3) if r and r.seconds else None,
            "error": r.error if r else None,
        })
    cutover = records.get("cutover")
    history = list(cutover.data.history) if cutover else []
    last = cutover.data.last_window if cutover else None
    if last and (not history or history[-1] != last):
        history.append(last)
    samples = store.samples(name)

    def of(kind: SampleKind) -> list[dict]:
        return [{k: v for k, v in s.items() if k != "kind"} for s in samples if s["kind"] == kind.value]

    found = of(SampleKind.FINDINGS)
    status = store.move_status(name)
    return MoveRecord(
        move=name,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        status=status.value if status else None,
        steps=steps,
        pause_windows=history,
        lag=of(SampleKind.LAG),
        copy=of(SampleKind.COPY),
        indexes=of(SampleKind.INDEXES),
        verify=of(SampleKind.VERIFY),
        findings=found[-1]["findings"] if found else [],
        events=[{"at": e.at, "step": e.step, "kind": e.kind, "message": e.message, "seconds": e.seconds,
                 "sql": e.sql} for e in store.events(name, limit=events)],
        tables=[t.qualified for t in playbook.tables],
    )
