"""The checkpoint store: step states, their data, the event log and the run lock.

SQLAlchemy Core over a local SQLite file by default, or any SQLAlchemy URL (a
Postgres database) given by `--state` or MIGRATOR_STATE, so a team can resume a run
from another machine. Every write is its own committed transaction: a step's status
is durable before its side effects start and after they end.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from migrator.errors import OperationFailed
from migrator.masking import mask_secrets
from migrator.move import checkpoint
from migrator.move.statuses import STATE_ENV, MoveStatus, SampleKind, StepStatus

metadata = sa.MetaData()

moves = sa.Table(
    "migrator_moves", metadata,
    sa.Column("move", sa.String(64), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("data", sa.Text, nullable=False, default="{}"),
)

steps = sa.Table(
    "migrator_steps", metadata,
    sa.Column("move", sa.String(64), primary_key=True),
    sa.Column("step", sa.String(32), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("error", sa.Text),
    sa.Column("data", sa.Text, nullable=False, default="{}"),
)

events = sa.Table(
    "migrator_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("move", sa.String(64), nullable=False, index=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("step", sa.String(32)),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("seconds", sa.Float),
    sa.Column("sql", sa.Text),
)

# Lag and progress over time, for `status --watch` and `report`. Bounded: each move keeps
# its newest SAMPLES_KEPT samples of each kind, so an hours-long copy cannot grow the store.
SAMPLES_KEPT = 5000

samples = sa.Table(
    "migrator_samples", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("move", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),       # a SampleKind
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("step", sa.String(32)),
    sa.Column("data", sa.Text, nullable=False, default="{}"),
    sa.Index("migrator_samples_move_kind", "move", "kind", "id"),
)


locks = sa.Table(
    "migrator_locks", metadata,
    sa.Column("move", sa.String(64), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("since", sa.Float, nullable=False),
    sa.Column("command", sa.String(32), nullable=False),
)


@dataclass(frozen=True)
class StepRecord:
    step: str
    status: StepStatus
    started_at: float | None
    finished_at: float | None
    error: str | None
    data: Any                      # the step's checkpoint model (migrator.move.checkpoint)

    @property
    def seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


@dataclass(frozen=True)
class Event:
    at: float
    step: str | None
    kind: str
    message: str
    seconds: float | None
    sql: str | None


@dataclass(frozen=True)
class LockHolder:
    host: str
    pid: int
    since: float
    command: str

    def describe(self) -> str:
        when = datetime.fromtimestamp(self.since, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"{self.command} by pid {self.pid} on {self.host} since {when}"


class StateStore:
    """The checkpoints of every move recorded at one URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.display = mask_secrets(url)
        self._known_moves: set[str] = set()
        try:
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
                # Several processes (the tool, its watchdog, `status`) share the file:
                # wait for a writer instead of failing with "database is locked".
                self.engine = sa.create_engine(url, connect_args={"timeout": 30})
                sa.event.listen(self.engine, "connect", _sqlite_durable_and_fast)
            else:
                self.engine = sa.create_engine(url, pool_pre_ping=True)
            metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise OperationFailed(
                f"cannot open the state store {self.display}: {mask_secrets(str(exc.orig or exc)).splitlines()[0]}",
                hint=f"check --state / {STATE_ENV}",
            ) from exc

    def close(self) -> None:
        self.engine.dispose()

    # moves ------------------------------------------------------------------

    def move_status(self, move: str) -> MoveStatus | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(moves.c.status).where(moves.c.move == move)).first()
        return MoveStatus(row.status) if row else None

    def ensure_move(self, move: str) -> None:
        if move in self._known_moves:
            return
        with self.engine.begin() as conn:
            exists = conn.execute(sa.select(moves.c.move).where(moves.c.move == move)).first()
            if not exists:
                conn.execute(moves.insert().values(
                    move=move, status=MoveStatus.ACTIVE.value, created_at=time.time(), data="{}"))
        self._known_moves.add(move)

    def move_data(self, move: str) -> dict:
        """The move's own data (not a step's): the whole-database group it works on."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(moves.c.data).where(moves.c.move == move)).first()
        return json.loads(row.data or "{}") if row else {}

    def update_move_data(self, move: str, **data: Any) -> dict:
        self.ensure_move(move)
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(moves.c.data).where(moves.c.move == move)).first()
            merged = {**json.loads(row.data or "{}"), **data}
            conn.execute(moves.update().where(moves.c.move == move).values(data=json.dumps(merged)))
        return merged

    def set_move_status(self, move: str, status: MoveStatus) -> None:
        self.ensure_move(move)
        with self.engine.begin() as conn:
            conn.execute(moves.update().where(moves.c.move == move).values(status=status.value))

    # steps ------------------------------------------------------------------

    def steps(self, move: str) -> dict[str, StepRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(steps).where(steps.c.move == move)).all()
        return {
            r.step: StepRecord(r.step, StepStatus(r.status), r.started_at, r.finished_at, r.error,
                               checkpoint.load(r.step, json.loads(r.data or "{}")))
            for r in rows
        }

    def step(self, move: str, step: str) -> StepRecord:
        return self.steps(move).get(step) or StepRecord(step, StepStatus.PENDING, None, None, None,
                                                        checkpoint.load(step, {}))

    def set_step(self, move: str, step: str, status: StepStatus, *, error: str | None = None,
                 started: bool = False, finished: bool = False) -> None:
        now = time.time()
        values: dict[str, Any] = {"status": status.value, "error": mask_secrets(error) if error else None}
        if started:
            values["started_at"] = now
            values["finished_at"] = None
        if finished:
            values["finished_at"] = now
        self._upsert_step(move, step, values)

    def update_data(self, move: str, step: str, *, event: str | None = None, **data: Any) -> dict:
        """Merge fields into a step's data (and log an event), durably, in one transaction:
        the cutover writes its point of no return inside the pause. The result is checked
        by the step's model (migrator.move.checkpoint) before it is written."""
        self.ensure_move(move)
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(steps.c.data).where(
                steps.c.move == move, steps.c.step == step)).first()
            merged = checkpoint.merged(step, json.loads(row.data or "{}") if row else {}, data)
            self._upsert_step_in(conn, move, step, {"data": json.dumps(merged)})
            if event:
                conn.execute(events.insert().values(
                    move=move, at=time.time(), step=step, kind="info", message=mask_secrets(event)))
        return merged

    def update_data_if(self, move: str, step: str, *, phase_in: tuple[str | None, ...],
                       event: str | None = None, **data: Any) -> bool:
        """Merge keys into a step's data only if its `phase` is one of phase_in; False if not.

        A compare-and-set, for two processes that must not both decide: the tool crossing
        the point of no return and its watchdog giving traffic back to the old side. The
        UPDATE matches the exact text read, so a concurrent writer makes it match nothing
        (then read again), on SQLite and Postgres alike."""
        while True:
            with self.engine.connect() as conn:
                row = conn.execute(sa.select(steps.c.data).where(
                    steps.c.move == move, steps.c.step == step)).first()
            if row is None:
                return False
            current = json.loads(row.data or "{}")
            if current.get("phase") not in phase_in:
                return False
            merged = json.dumps(checkpoint.merged(step, current, data))
            with self.engine.begin() as conn:
                won = conn.execute(steps.update().where(
                    steps.c.move == move, steps.c.step == step, steps.c.data == row.data,
                ).values(data=merged)).rowcount == 1
                if won and event:
                    conn.execute(events.insert().values(
                        move=move, at=time.time(), step=step, kind="info", message=mask_secrets(event)))
            if won:
                return True

    def _upsert_step(self, move: str, step: str, values: dict) -> None:
        self.ensure_move(move)
        with self.engine.begin() as conn:
            self._upsert_step_in(conn, move, step, values)

    @staticmethod
    def _upsert_step_in(conn, move: str, step: str, values: dict) -> None:
        updated = conn.execute(
            steps.update().where(steps.c.move == move, steps.c.step == step).values(**values)
        ).rowcount
        if not updated:
            conn.execute(steps.insert().values(
                move=move, step=step, **{"status": StepStatus.PENDING.value, "data": "{}", **values}))

    # events -----------------------------------------------------------------

    def log(self, move: str, kind: str, message: str, *, step: str | None = None,
            seconds: float | None = None, sql: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(events.insert().values(
                move=move, at=time.time(), step=step, kind=kind, message=mask_secrets(message),
                seconds=seconds, sql=mask_secrets(sql) if sql else None))

    def events(self, move: str, limit: int = 200) -> list[Event]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(events).where(events.c.move == move).order_by(events.c.id.desc()).limit(limit)
            ).all()
        return [Event(r.at, r.step, r.kind, r.message, r.seconds, r.sql) for r in reversed(rows)]

    # samples ----------------------------------------------------------------

    def record_sample(self, move: str, kind: SampleKind, data: dict, *, step: str | None = None,
                      at: float | None = None, keep: int = SAMPLES_KEPT) -> None:
        """One sample, durably; the oldest beyond `keep` of that kind are dropped."""
        with self.engine.begin() as conn:
            new_id = conn.execute(samples.insert().values(
                move=move, kind=SampleKind(kind).value, at=at or time.time(), step=step,
                data=mask_secrets(json.dumps(data, default=str)))).inserted_primary_key[0]
            if new_id % 100 == 0 or keep < 100:
                conn.execute(samples.delete().where(
                    samples.c.move == move, samples.c.kind == SampleKind(kind).value,
                    samples.c.id <= sa.select(samples.c.id).where(
                        samples.c.move == move, samples.c.kind == SampleKind(kind).value,
                    ).order_by(samples.c.id.desc()).offset(keep).limit(1).scalar_subquery()))

    def samples(self, move: str, kind: SampleKind | None = None, *, since: float | None = None) -> list[dict]:
        """[{"kind", "at", "step", **data}] oldest first."""
        query = sa.select(samples).where(samples.c.move == move).order_by(samples.c.id)
        if kind is not None:
            query = query.where(samples.c.kind == SampleKind(kind).value)
        if since is not None:
            query = query.where(samples.c.at >= since)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [{"kind": r.kind, "at": r.at, "step": r.step, **json.loads(r.data or "{}")} for r in rows]

    # the lock ---------------------------------------------------------------

    @contextmanager
    def lock(self, move: str, command: str):
        """Hold the move's lock for one execute/rollback/complete; a second one is refused."""
        self.acquire(move, command)
        try:
            yield
        finally:
            self.release(move)

    def acquire(self, move: str, command: str) -> None:
        host, pid = socket.gethostname(), os.getpid()
        for _ in range(2):
            try:
                with self.engine.begin() as conn:
                    conn.execute(locks.insert().values(
                        move=move, host=host, pid=pid, since=time.time(), command=command))
                return
            except IntegrityError:
                holder = self.lock_holder(move)
                if holder is None:
                    continue
                if holder.host == host and not process_alive(holder.pid):
                    # The holder died (SIGKILL, reboot): its lock is stale, take it over.
                    self.log(move, "lock", f"took over the stale lock of {holder.describe()}")
                    with self.engine.begin() as conn:
                        conn.execute(locks.delete().where(locks.c.move == move, locks.c.pid == holder.pid))
                    continue
                raise OperationFailed(
                    f"move {move!r} is locked: {holder.describe()}",
                    hint="wait for it to finish; if that process is gone for good on another machine, "
                    f"delete the row of {move!r} from migrator_locks in the state store",
                ) from None
        raise OperationFailed(f"could not take the lock of move {move!r}")

    def release(self, move: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(locks.delete().where(locks.c.move == move, locks.c.pid == os.getpid()))

    def lock_holder(self, move: str) -> LockHolder | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(locks).where(locks.c.move == move)).first()
        return LockHolder(row.host, row.pid, row.since, row.command) if row else None



def _sqlite_durable_and_fast(dbapi_connection, _record) -> None:
    # WAL: a commit is one fsync of the log instead of several of the database and
    # its journal, and readers (`status`) never block the writer. synchronous=FULL
    # keeps every commit durable: a checkpoint must survive a crash right after it.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True
