"""The same work on every PgBouncer of a move at once.

The pause lasts as long as its slowest PgBouncer, not as long as their sum: PAUSE,
the reroute, RELOAD and RESUME go to every PgBouncer in parallel, two ways:

- `command_all`: one admin command on consoles already open, all sent at once and
  their answers read as they come on one thread (PAUSE, RELOAD, RESUME inside the
  pause). No thread is started or woken per PgBouncer: with sixteen of them on two
  cores, a thread each made PAUSE and RESUME twice as long.
- `run_all`: any blocking call (connecting, a reroute command over ssh) on a bounded
  pool, so that a fleet of hundreds does not open hundreds of threads and connections
  at the same instant. A call still running at the deadline is reported as late, and
  its thread is left to finish on its own (each console call has its own connect
  timeout).
"""

from __future__ import annotations

import concurrent.futures
import selectors
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from migrator.pgbouncer.console import PgBouncerConsole

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


def command_all(consoles: Sequence[PgBouncerConsole], commands: Sequence[str], *,
                deadline: float | None = None, every: Callable[[], None] | None = None,
                stop_on_error: bool = False, tick: float = 0.005) -> list[Outcome[None]]:
    """Send consoles[i] commands[i], all at once, and read the answers as they arrive.

    Until every answer is in, or `deadline` (time.monotonic()) has passed: the consoles
    still waiting then are reported late, their command left running. `every` is called
    at least each `tick` seconds while waiting (the cutover cancels queries after its
    grace there); with `stop_on_error` the first error ends the wait."""
    outcomes: list[Outcome[None]] = [Outcome() for _ in consoles]
    waiting: dict[int, int] = {}
    with selectors.DefaultSelector() as selector:
        for i, (console, text) in enumerate(zip(consoles, commands, strict=True)):
            try:
                console.send(text)
                selector.register(console.fileno(), selectors.EVENT_READ, i)
                waiting[i] = console.fileno()
            except Exception as exc:  # noqa: BLE001 - reported as this console's outcome
                outcomes[i].error = exc
        while waiting and not (stop_on_error and any(o.error for o in outcomes)):
            timeout = tick if every is not None else None
            if deadline is not None:
                left = max(0.0, deadline - time.monotonic())
                timeout = left if timeout is None else min(timeout, left)
            for key, _ in selector.select(timeout):
                i = key.data
                try:
                    finished = consoles[i].receive()
                except Exception as exc:  # noqa: BLE001
                    outcomes[i].error = exc
                    finished = True
                if finished:
                    selector.unregister(waiting.pop(i))
            if every is not None and waiting:
                every()
            if waiting and deadline is not None and time.monotonic() >= deadline:
                break
    for i in waiting:
        outcomes[i].late = True
    return outcomes
