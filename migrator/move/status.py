"""Where a move stands: step states, replication lag, where traffic points, what next.

Read-only, and tolerant: an unreachable server or PgBouncer is reported as such
rather than failing the whole report, because `status` is what a person runs when
something is wrong.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from migrator import names
from migrator.errors import OperationFailed
from migrator.move.checkpoint import CutoverData
from migrator.move.phases import CutoverPhase, DirectionName
from migrator.move.drift import report_drift
from migrator.move.guarding import Guards
from migrator.move.state import StateStore
from migrator.move.statuses import MoveStatus, StepStatus
from migrator.move.steps import STEP_NAMES
from migrator.pgbouncer.config import EntryRoute
from migrator.pgbouncer.console import PgBouncerConsole
from migrator.pgbouncer.route import route_for
from migrator.playbook import Playbook
from migrator.postgres import replication
from migrator.postgres.connection import Side, connect, describe, describe_error


@dataclass
class Route:
    pgbouncer: str
    entry: str
    points_to: str        # source / target / elsewhere / unknown
    paused: bool | None
    config_points_to: str
    error: str | None = None


@dataclass
class Replication:
    direction: str        # a DirectionName, or "none"
    slot: str | None
    lag_bytes: int | None
    lag_seconds: float | None
    orphaned_slots: list[str] = field(default_factory=list)
    error: str | None = None
    # The slot is gone from its publisher while the subscription still waits for it (a
    # failover the standby did not keep the slot through): what that means, in words.
    broken: str | None = None


@dataclass
class MoveReport:
    move: str
    state: str                                   # not started / in progress / moved / rolled back / completed
    steps: list[dict]
    replication: Replication
    routes: list[Route]
    last_cutover: dict | None
    next_command: str
    events: list[dict]
    # Per side: the move's guards there (guards.GuardState as a dict), or {"error": ...}.
    guards: dict[str, dict] = field(default_factory=dict)
    # The group's columns and constraints compared on both sides (migrator.move.drift):
    # None when not compared (the group is not the move's on the target, or drift_error).
    drift: list[dict] | None = None
    drift_error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _side(entry_points_at_source: bool, entry_points_at_target: bool) -> str:
    if entry_points_at_target:
        return Side.TARGET
    if entry_points_at_source:
        return Side.SOURCE
    return "elsewhere"


def routes(playbook: Playbook) -> list[Route]:
    out = []
    for bouncer in playbook.pgbouncers:
        name = describe(bouncer.admin_dsn)
        try:
            value = route_for(bouncer).read() or ""
            config_side = _config_side(value, playbook, bouncer.database)
        except OSError as exc:
            config_side = f"unreadable ({exc.strerror})"
        except OperationFailed as exc:
            config_side = f"unreadable ({exc.message})"
        try:
            with PgBouncerConsole(bouncer.admin_dsn, connect_timeout=2) as console:
                entry = console.databases().get(bouncer.database)
            if entry is None:
                out.append(Route(name, bouncer.database, "missing", None, config_side))
                continue
            side = _side(entry.points_at(playbook.source.dsn), entry.points_at(playbook.target.dsn))
            out.append(Route(name, bouncer.database, side, entry.paused, config_side))
        except OperationFailed as exc:
            out.append(Route(name, bouncer.database, "unknown", None, config_side, error=exc.message))
    return out


def _config_side(value: str, playbook: Playbook, entry: str = "") -> str:
    """Where a [databases] value routes, read as PgBouncer reads it (its own settings
    such as pool_size or quoted values are no reason to say elsewhere)."""
    route = EntryRoute.of(entry, value)
    return _side(route.points_at(playbook.source.dsn), route.points_at(playbook.target.dsn))


def _replication(playbook: Playbook, serving: str) -> Replication:
    reverse = serving == Side.TARGET
    slot = names.reverse_slot(playbook) if reverse else names.slot(playbook)
    publisher, publisher_dsn = (Side.TARGET, playbook.target.dsn) if reverse else (Side.SOURCE, playbook.source.dsn)
    subscriber, subscriber_dsn = (Side.SOURCE, playbook.source.dsn) if reverse else (Side.TARGET, playbook.target.dsn)
    subscription = names.reverse_subscription(playbook) if reverse else names.subscription(playbook)
    result = Replication(DirectionName.REVERSE if reverse else DirectionName.FORWARD, slot, None, None)
    try:
        with connect(publisher_dsn, side=publisher, purpose="status") as conn:
            result.lag_bytes = replication.slot_lag_bytes(conn, slot)
            result.lag_seconds = replication.replay_lag_seconds(conn, subscription)
        if result.lag_bytes is None:
            with connect(subscriber_dsn, side=subscriber, purpose="status") as conn:
                found = replication.subscription(conn, subscription)
            if found is not None and found.slot == slot:
                result.broken = replication.slot_lost(slot, str(publisher), after_cutover=reverse).message
            else:
                result.direction, result.slot = "none", None
        for side, dsn in ((Side.SOURCE, playbook.source.dsn), (Side.TARGET, playbook.target.dsn)):
            with connect(dsn, side=side, purpose="status") as conn:
                rows = conn.execute(
                    "SELECT slot_name FROM pg_catalog.pg_replication_slots WHERE NOT active "
                    "AND (slot_name = ANY(%s) OR slot_name LIKE 'pg\\_%%\\_sync\\_%%')",
                    (sorted(names.all_objects(playbook)),),
                ).fetchall()
                result.orphaned_slots += [f"{r[0]} on {describe(dsn)}" for r in rows]
    except OperationFailed as exc:
        result.error = exc.message
    except Exception as exc:  # noqa: BLE001 - status reports, it does not fail
        result.error = describe_error(exc)
    return result


def _guards(playbook: Playbook) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for side, dsn in ((Side.SOURCE, playbook.source.dsn), (Side.TARGET, playbook.target.dsn)):
        try:
            with connect(dsn, side=side, purpose="status") as conn:
                out[str(side)] = Guards(playbook).state(conn).to_dict()
        except OperationFailed as exc:
            out[str(side)] = {"error": exc.message}
        except Exception as exc:  # noqa: BLE001 - status reports, it does not fail
            out[str(side)] = {"error": describe_error(exc)}
    return out


def move_report(playbook: Playbook, store: StateStore, *, drift: bool = True, guards: bool = True) -> MoveReport:
    records = store.steps(playbook.name)
    move_status = store.move_status(playbook.name)
    steps = []
    for name in STEP_NAMES:
        record = records.get(name)
        steps.append({
            "step": name,
            "status": record.status.value if record else StepStatus.PENDING.value,
            "seconds": round(record.seconds, 3) if record and record.seconds else None,
            "error": record.error if record else None,
        })
    cutover = records.get("cutover")
    cut_data = cutover.data if cutover else CutoverData()
    serving = cut_data.serving
    rep = _replication(playbook, serving)
    state, next_command = _verdict(playbook, move_status, steps, cut_data, rep)
    differences, drift_error = report_drift(playbook, records.get("schema"), move_status) if drift else (None, None)
    return MoveReport(
        move=playbook.name,
        state=state,
        steps=steps,
        replication=rep,
        routes=routes(playbook),
        last_cutover=cut_data.last_window,
        next_command=next_command,
        events=[
            {"at": e.at, "step": e.step, "kind": e.kind, "message": e.message, "seconds": e.seconds}
            for e in store.events(playbook.name, limit=15)
        ],
        guards=_guards(playbook) if guards else {},
        drift=differences,
        drift_error=drift_error,
    )


def _verdict(playbook: Playbook, move_status, steps: list[dict], cut_data: CutoverData,
             rep: Replication | None = None) -> tuple[str, str]:
    path = str(playbook.path) if playbook.path else "PLAYBOOK"
    statuses = {s["step"]: s["status"] for s in steps}
    if move_status == MoveStatus.COMPLETED:
        return "completed", "nothing: the move is finished"
    if move_status is None or all(s == "pending" for s in statuses.values()):
        return "not started", f"migrator plan {path}, then migrator execute {path}"
    settled = cut_data.phase in (None, CutoverPhase.RESUMED, CutoverPhase.ABORTED)
    if rep is not None and rep.broken and settled:
        # A move that can never go on: no `execute` would get anywhere.
        if rep.direction == DirectionName.REVERSE:
            return ("replication broken: slot missing on the target, probably a failover",
                    f"migrator complete {path} (the group stays on the target: a rollback could not carry "
                    "the target's changes back)")
        return ("replication broken: slot missing on the source, probably a failover",
                f"migrator rollback {path}, then migrator execute {path} (copies the group again)")
    if not settled:
        phase, direction = cut_data.phase, cut_data.direction
        old, new = (Side.TARGET, Side.SOURCE) if direction == DirectionName.REVERSE else (Side.SOURCE, Side.TARGET)
        if phase == CutoverPhase.POINT_OF_NO_RETURN:
            what = f"past its point of no return: the next run finishes it (traffic to the {new})"
        elif phase == CutoverPhase.WATCHDOG_REVERTED:
            what = f"the watchdog gave traffic back to the {old}; the next run reverts the rest"
        else:
            what = f"before its point of no return: the next run reverts it (traffic on the {old})"
        return (f"interrupted inside a cutover ({direction}, phase {phase}): {what}",
                f"migrator execute {path} (finishes or reverts it) or migrator rollback {path}")
    failed = [s for s in steps if s["status"] in ("failed", "undoing", "running")]
    if failed:
        s = failed[0]
        if s["status"] == "undoing":
            next_command = f"migrator rollback {path} (resumes)"
        else:
            next_command = f"migrator execute {path} (resumes), or migrator rollback {path}"
        return (f"{s['step']} {s['status']}" + (f": {s['error']}" if s["error"] else ""), next_command)
    if all(s == "undone" or s == "pending" for s in statuses.values()):
        return "rolled back", f"migrator execute {path} to start again"
    if statuses["cutover"] == "done":
        return "moved: traffic on the target, reverse replication running", \
            f"migrator verify {path}, then migrator complete {path} (or migrator rollback {path})"
    last_done = [s["step"] for s in steps if s["status"] == "done"]
    return (f"in progress: done up to {last_done[-1] if last_done else 'nothing'}",
            f"migrator execute {path}")


@dataclass
class TableCopy:
    table: str
    done: int
    total: int
    rate: float | None         # bytes per second over the last samples
    eta: float | None          # seconds left at that rate


@dataclass
class LiveView:
    """What `status --watch` shows each second: the report, plus what the samples say."""

    report: MoveReport
    running: str | None        # the step recorded running (or undoing), if any
    cutover_phase: str | None
    copy: list[TableCopy]
    copy_done: int
    copy_total: int
    lag_bytes: int | None
    at: float
    # The servers and PgBouncers that do not answer now, each a sentence saying since
    # when and how long the watch waits for it (Outages).
    waiting: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Outages:
    """What `status --watch` waits out: a server or PgBouncer that stops answering (a
    restart, a failover) is shown as awaited, for at most `bound` seconds (the playbook's
    restarts.wait); past that the watch ends with the cause."""

    bound: float
    since: dict[str, float] = field(default_factory=dict)

    def look(self, playbook: Playbook, report: MoveReport, now: float) -> list[str]:
        down: dict[str, str] = {}
        if report.replication.error:
            for side, dsn in ((Side.SOURCE, playbook.source.dsn), (Side.TARGET, playbook.target.dsn)):
                try:
                    connect(dsn, side=side, purpose="probe", connect_timeout=2).close()
                except OperationFailed as exc:
                    down[f"the {side} ({describe(dsn)})"] = exc.message.split(": ", 1)[-1]
        for route in report.routes:
            if route.error:
                down[f"PgBouncer {route.pgbouncer}"] = route.error.split(": ", 1)[-1]
        self.since = {name: self.since.get(name, now) for name in down}
        for name, cause in down.items():
            if now - self.since[name] > self.bound:
                raise OperationFailed(f"{name} has not answered for {self.bound:g} s (restarts.wait): {cause}",
                                      hint="start it (or raise restarts.wait), then watch again")
        return [f"{name} does not answer ({cause}): waiting, {now - self.since[name]:.0f} s of "
                f"{self.bound:g} s (restarts.wait)" for name, cause in down.items()]


def live_view(playbook: Playbook, store: StateStore, *, window: float = 15.0,
              outages: Outages | None = None) -> LiveView:
    import time

    from migrator.move.statuses import SampleKind

    report = move_report(playbook, store, drift=False, guards=False)  # every second: those are `status`'s
    waiting = outages.look(playbook, report, time.monotonic()) if outages is not None else []
    rep = report.replication
    if rep.lag_bytes is not None and store.move_status(playbook.name) is not None:
        # Reverse replication runs with no process of ours: a watcher, every second, is
        # what samples its lag for the report. A plain `status` records nothing.
        try:
            store.record_sample(playbook.name, SampleKind.LAG, {
                "bytes": rep.lag_bytes, "seconds": rep.lag_seconds, "direction": rep.direction}, step="watch")
        except Exception:  # noqa: BLE001 - the view reports, it does not fail
            pass
    running = next((s["step"] for s in report.steps if s["status"] in ("running", "undoing")), None)
    phase = store.step(playbook.name, "cutover").data.phase
    copies = store.samples(playbook.name, SampleKind.COPY)
    copy, done, total = [], 0, 0
    if copies:
        last = copies[-1]
        done, total = last.get("done") or 0, last.get("total") or 0
        earlier = next((s for s in copies if s["at"] >= last["at"] - window), last)
        span = last["at"] - earlier["at"]
        for table, (t_done, t_total) in sorted((last.get("tables") or {}).items()):
            before = (earlier.get("tables") or {}).get(table, [t_done, t_total])[0]
            rate = (t_done - before) / span if span > 0 else None
            eta = (t_total - t_done) / rate if rate and t_done < t_total else (0.0 if t_done >= t_total else None)
            copy.append(TableCopy(table, t_done, t_total, rate, eta))
    return LiveView(report, running, phase, copy, done, total, report.replication.lag_bytes, time.time(), waiting)
