"""The same work on every PgBouncer of a move at once, on a bounded pool.

The pause lasts as long as its slowest PgBouncer, not as long as their sum: PAUSE,
the reroute, RELOAD and RESUME go to every PgBouncer in parallel. The pool is bounded
so that a fleet of hundreds does not open hundreds of threads and connections at the
same instant; a call still running at the deadline is reported as late, and its thread
is left to finish on its own (each console call has its own connect timeout).
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

POOL_SIZE = 32


@dataclass
class Outcome(Generic[T]):
    value: T | None = None
    error: BaseException | None = None
    late: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and not self.late


def run_all(calls: Sequence[Callable[[], T]], *, timeout: float | None = None,
            limit: int = POOL_SIZE) -> list[Outcome[T]]:
    """Run every call; wait until all are done or `timeout` seconds have passed."""
    if not calls:
        return []
    if len(calls) == 1 and timeout is None:
        try:
            return [Outcome(calls[0]())]
        except Exception as exc:  # noqa: BLE001 - reported to the caller as an outcome
            return [Outcome(error=exc)]
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(limit, len(calls)), thread_name_prefix="pgbouncer")
    try:
        futures = [pool.submit(call) for call in calls]
        concurrent.futures.wait(futures, timeout=timeout)
        out: list[Outcome[T]] = []
        for future in futures:
            if not future.done():
                future.cancel()
                out.append(Outcome(late=True))
            elif future.exception() is not None:
                out.append(Outcome(error=future.exception()))
            else:
                out.append(Outcome(future.result()))
        return out
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def all_or_raise(calls: Sequence[Callable[[], T]], *, timeout: float | None = None,
                 limit: int = POOL_SIZE) -> list[T]:
    """run_all, raising the first error (or a TimeoutError for a late call)."""
    outcomes = run_all(calls, timeout=timeout, limit=limit)
    for outcome in outcomes:
        if outcome.error is not None:
            raise outcome.error
        if outcome.late:
            raise TimeoutError(f"not done within {timeout:g}s")
    return [o.value for o in outcomes]  # type: ignore[misc]


def deadline_left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())
