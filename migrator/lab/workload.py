"""A write load through PgBouncer: what the application does while its tables move.

The integration tests, the cutover benchmark and `migrator demo` all measure the move
by what a client sees: transactions that failed (the product promises none) and the
longest stretch without a completed transaction (the client-visible pause).

Each client thread holds one connection to a PgBouncer entry and runs short
transactions on a fixed schedule, so the rate is the same whatever the latency and a
pause shows up as a gap, not as a slower busy loop.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections import Counter
from collections.abc import Callable

import psycopg

from migrator.errors import ServerUnreachable
from migrator.postgres.connection import connect, first_line

__all__ = ["MIXES", "Workload", "WorkloadResult"]

Mix = Callable[[psycopg.Connection, random.Random, "_Shared"], None]


@dataclasses.dataclass
class WorkloadResult:
    """What the clients saw during a window of a workload's run."""

    mix: str
    clients: int
    target_tps: float
    seconds: float
    transactions: int
    failures: int
    failure_kinds: dict[str, int]
    reconnects: int
    tps: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    longest_gap_s: float
    longest_gap_at_s: float | None   # when that gap began, seconds after the start

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class _Shared:
    """What the clients of one workload know together: the range of file ids."""

    def __init__(self) -> None:
        self.max_file_id = 0
        self.lock = threading.Lock()

    def saw_file(self, file_id: int) -> None:
        with self.lock:
            self.max_file_id = max(self.max_file_id, file_id)

    def random_file(self, rng: random.Random) -> int:
        # An id at or below which a file probably exists; queries take the next one.
        return rng.randint(1, max(self.max_file_id, 1))


# --------------------------------------------------------------------------- mixes
# Every statement touches one existing files row at most, so concurrent clients
# cannot deadlock; none can fail on a row another client deleted meanwhile.

_NEXT_FILE = "(SELECT id FROM public.files WHERE id >= %s ORDER BY id LIMIT 1)"


def _group_mix(conn: psycopg.Connection, rng: random.Random, shared: _Shared) -> None:
    """The moved group only: new files with versions, edits, comments, deletions."""
    if shared.max_file_id == 0:
        shared.saw_file(conn.execute("SELECT coalesce(max(id), 0) FROM public.files").fetchone()[0])
    roll = rng.random()
    if roll < 0.30:
        kind = rng.choice(("document", "image", "video", "other"))
        file_id = conn.execute(
            "INSERT INTO public.files (owner_id, kind, name, size_bytes, metadata) "
            "VALUES (%s, %s, %s, %s, jsonb_build_object('load', true, 'n', %s)) RETURNING id",
            (rng.randint(1, 500), kind, f"load-{rng.getrandbits(32):08x}", rng.randint(0, 10**7),
             rng.randint(0, 99)),
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO public.file_versions (file_id, version, content_hash, size_bytes) "
            "SELECT %s, v, sha256(convert_to(%s || v, 'UTF8')), %s FROM generate_series(1, %s) v",
            (file_id, str(file_id), rng.randint(0, 10**6), rng.randint(1, 2)),
        )
        shared.saw_file(file_id)
    elif roll < 0.65:
        conn.execute(
            "UPDATE public.files SET updated_at = now(), "
            f"metadata = metadata || jsonb_build_object('rev', %s) WHERE id = {_NEXT_FILE}",
            (rng.randint(0, 10**6), shared.random_file(rng)),
        )
    elif roll < 0.90:
        # FOR KEY SHARE: a file deleted meanwhile gives no row instead of a foreign key error.
        conn.execute(
            "INSERT INTO public.file_comments (file_id, author_id, body) "
            "SELECT id, %s, %s FROM public.files WHERE id >= %s ORDER BY id LIMIT 1 FOR KEY SHARE",
            (rng.randint(1, 500), f"comment {rng.getrandbits(24)}", shared.random_file(rng)),
        )
    else:
        conn.execute(f"DELETE FROM public.files WHERE id = {_NEXT_FILE}", (shared.random_file(rng),))


def _app_mix(conn: psycopg.Connection, rng: random.Random, shared: _Shared) -> None:
    """The rest of the application (outside the group): read a user, sometimes write it."""
    user_id = rng.randint(1, 500)
    conn.execute(
        "SELECT u.email, t.name FROM public.users u JOIN public.teams t ON t.id = u.team_id "
        "WHERE u.id = %s", (user_id,),
    ).fetchall()
    if rng.random() < 0.5:
        conn.execute("UPDATE public.users SET email = email WHERE id = %s", (user_id,))


def _linger(conn: psycopg.Connection) -> None:
    """Keep the transaction (and its relation locks) a little longer, as real work does:
    a 10 ms sampler then sees most of these transactions, not one in ten, and a short
    observation names them every time."""
    conn.execute("SELECT pg_catalog.pg_sleep(0.02)")


# Traffic that `migrator analyze` must catch; each is wrong in its own way. Which entry
# (or none) a mix runs through is the DSN's business: misrouted reads are `file-reads`
# through the whole application's entry, a direct writer is `file-writes` on the source
# itself under its own role.


def _file_reads(conn: psycopg.Connection, rng: random.Random, shared: _Shared) -> None:
    """Read a file with its versions (group tables only): a page of the files UI."""
    conn.execute(
        "SELECT f.name, v.version, v.size_bytes FROM public.files f "
        "JOIN public.file_versions v ON v.file_id = f.id WHERE f.id = (SELECT max(id) - %s FROM public.files)",
        (rng.randint(0, 50),),
    ).fetchall()
    _linger(conn)


def _file_writes(conn: psycopg.Connection, rng: random.Random, shared: _Shared) -> None:
    """A batch job's write to the group: sweep the metadata of a run of recent files."""
    conn.execute(
        "UPDATE public.files SET metadata = metadata || jsonb_build_object('swept', %s) "
        "WHERE id > (SELECT max(id) - 200 FROM public.files) AND id %% 10 = %s",
        (rng.randint(0, 10**6), rng.randint(0, 9)),
    )
    _linger(conn)


def _crossing_mix(conn: psycopg.Connection, rng: random.Random, shared: _Shared) -> None:
    """One transaction across the boundary: a new file and its owner's row, together."""
    user_id = rng.randint(1, 500)
    conn.execute(
        "INSERT INTO public.files (owner_id, name) VALUES (%s, %s)",
        (user_id, f"crossing-{rng.getrandbits(32):08x}"),
    )
    conn.execute("UPDATE public.users SET email = email WHERE id = %s", (user_id,))
    _linger(conn)


MIXES: dict[str, Mix] = {
    "group": _group_mix,
    "app": _app_mix,
    "file-reads": _file_reads,
    "file-writes": _file_writes,
    "crossing": _crossing_mix,
}


# --------------------------------------------------------------------------- the load


class Workload:
    """N clients running a mix of short transactions at a total rate, until stopped.

    with Workload(move.app_dsn("app_files"), rate=600) as load:
        ...                          # pause, cut over, ...
    print(load.stop().longest_gap_s)
    """

    def __init__(
        self,
        dsn: str,
        *,
        mix: str | Mix = "group",
        clients: int = 16,
        rate: float = 600.0,
        duration: float | None = None,
        seed: int = 1,
        connect_timeout: int = 5,
    ) -> None:
        if not callable(mix) and mix not in MIXES:
            raise ValueError(f"unknown mix {mix!r}; choose one of {', '.join(MIXES)}")
        self._mix = mix if callable(mix) else MIXES[mix]
        mix = getattr(mix, "__name__", "custom") if callable(mix) else mix
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self.mix = mix
        self.clients = clients
        self.rate = rate
        self.duration = duration
        self.seed = seed
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._connections: list[psycopg.Connection | None] = [None] * clients
        self._done: list[list[tuple[float, float]]] = [[] for _ in range(clients)]
        self._failures: list[tuple[float, str]] = []
        self._reconnects = 0
        self._lock = threading.Lock()
        self._shared = _Shared()
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self._result: WorkloadResult | None = None

    # lifecycle ----------------------------------------------------------------

    def start(self) -> Workload:
        self.started_at = time.monotonic()
        for index in range(self.clients):
            thread = threading.Thread(target=self._client, args=(index,), daemon=True,
                                      name=f"workload-{self.mix}-{index}")
            thread.start()
            self._threads.append(thread)
        return self

    def wait(self) -> WorkloadResult:
        """Until the duration has passed (or stop() was called), then stop."""
        for thread in self._threads:
            thread.join()
        return self.stop()

    def stop(self, timeout: float = 10.0) -> WorkloadResult:
        """Stop every client; one still held after timeout (a paused PgBouncer) is cut off."""
        if self._result is not None:
            return self._result
        self._stop.set()
        self.stopped_at = self._end()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [i for i, thread in enumerate(self._threads) if thread.is_alive()]
        for index in stuck:
            # Held by a PAUSE that nobody resumes: closing the socket wakes the client
            # (a cancel request would wait behind the same PAUSE).
            conn = self._connections[index]
            if conn is not None:
                conn.close()
        for index in stuck:
            self._threads[index].join(2)
        self._result = self.result()
        return self._result

    @property
    def running(self) -> bool:
        """Is any client thread still alive?"""
        return any(thread.is_alive() for thread in self._threads)

    def __enter__(self) -> Workload:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # the clients --------------------------------------------------------------

    def _client(self, index: int) -> None:
        rng = random.Random(self.seed * 10_007 + index)
        mix = self._mix
        interval = self.clients / self.rate
        next_at = self.started_at + rng.random() * interval
        deadline = self.started_at + self.duration if self.duration else None
        conn: psycopg.Connection | None = None
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                if next_at > now:
                    if self._stop.wait(next_at - now) or (deadline is not None and next_at >= deadline):
                        break
                elif now - next_at > interval:
                    next_at = now  # behind (after a pause): carry on, without a burst
                next_at += interval
                began = time.monotonic()
                try:
                    if conn is None:
                        conn = self._connect(index)
                    mix(conn, rng, self._shared)
                    conn.commit()
                except (psycopg.Error, ServerUnreachable) as exc:
                    self._failed(exc)
                    conn = self._recover(index, conn)
                    continue
                finished = time.monotonic()
                self._done[index].append((finished, finished - began))
        finally:
            if conn is not None:
                conn.close()

    def _connect(self, index: int) -> psycopg.Connection:
        # Transaction pooling: a server connection is not ours between transactions,
        # so it cannot keep a prepared statement.
        conn = connect(self.dsn, purpose=f"workload {self.mix}", connect_timeout=self.connect_timeout,
                       autocommit=False, prepare_threshold=None)
        self._connections[index] = conn
        return conn

    def _recover(self, index: int, conn: psycopg.Connection | None) -> psycopg.Connection | None:
        if conn is None:
            return None
        if not conn.broken and not conn.closed:
            try:
                conn.rollback()
                return conn
            except psycopg.Error:
                pass
        conn.close()
        self._connections[index] = None
        with self._lock:
            self._reconnects += 1
        return None

    def _failed(self, exc: psycopg.Error | ServerUnreachable) -> None:
        with self._lock:
            self._failures.append((time.monotonic(), f"{type(exc).__name__}: {first_line(exc)}"))

    # results ------------------------------------------------------------------

    def _end(self) -> float:
        if self.stopped_at is not None:
            return self.stopped_at
        now = time.monotonic()
        if self.duration is not None and self.started_at is not None:
            return min(now, self.started_at + self.duration)
        return now

    def result(self, since: float | None = None, until: float | None = None) -> WorkloadResult:
        """What clients saw between two time.monotonic() instants (default: the whole run).

        The longest gap is measured from the first completed transaction in the window
        (connecting is not a stall) to its end, so a pause still going on counts.
        """
        start = since if since is not None else self.started_at or time.monotonic()
        end = until if until is not None else self._end()
        done = sorted(item for per_client in self._done for item in list(per_client)
                      if start <= item[0] <= end)
        with self._lock:
            failures = [kind for at, kind in self._failures if start <= at <= end]
            reconnects = self._reconnects
        times = [at for at, _ in done]
        latencies = sorted(latency for _, latency in done)
        gap, gap_at = 0.0, None
        for earlier, later in zip(times, [*times[1:], end]):
            if later - earlier > gap:
                gap, gap_at = later - earlier, earlier - (self.started_at or start)
        seconds = max(end - start, 1e-9)
        return WorkloadResult(
            mix=self.mix,
            clients=self.clients,
            target_tps=self.rate,
            seconds=round(seconds, 3),
            transactions=len(done),
            failures=len(failures),
            failure_kinds=dict(Counter(failures)),
            reconnects=reconnects,
            tps=round(len(done) / seconds, 1),
            latency_p50_ms=_percentile_ms(latencies, 0.50),
            latency_p99_ms=_percentile_ms(latencies, 0.99),
            longest_gap_s=round(gap, 4),
            longest_gap_at_s=round(gap_at, 3) if gap_at is not None else None,
        )


def _percentile_ms(ordered: list[float], fraction: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000, 2)
