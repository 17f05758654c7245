"""Bounded waits: a check polled until it has an answer or a deadline passes.

Every wait of the product for the servers (the initial copy, lag, a sync marker, a
slot let go) is one of these, on tenacity: the check runs, then again every `every`
seconds, until it returns something other than None. An exception from the check (a
subscription whose worker keeps failing, a slot gone missing) ends the wait at once;
the deadline passing raises what `timed_out` makes, which can name what was awaited.

`ride_out` runs read-only work again once a server it lost (a restart, a failover)
answers again, within a bound (the playbook's restarts.wait).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from migrator.errors import OperationFailed

from tenacity import RetryCallState, Retrying, retry_if_result, wait_fixed

T = TypeVar("T")


def poll(check: Callable[[], T | None], *, every: float, deadline: float,
         timed_out: Callable[[], BaseException]) -> T:
    """check()'s first answer that is not None; `deadline` is a time.monotonic() instant."""

    def past_deadline(_: RetryCallState) -> bool:
        return time.monotonic() >= deadline

    def give_up(_: RetryCallState) -> T:
        raise timed_out()

    retrying = Retrying(retry=retry_if_result(lambda answer: answer is None), wait=wait_fixed(every),
                        stop=past_deadline, retry_error_callback=give_up)
    return retrying(check)  # type: ignore[return-value]


def ride_out(work: Callable[[], T], *, bound: float, lost: Callable[[BaseException], str | None],
             back: Callable[[str], bool], say: Callable[[str], None], times: int = 5) -> T:
    """work(), done again from the start once a server it lost answers again.

    lost(exc) names the server a failure of work() lost ("the target (u@db:5432/app)"),
    or None for any other failure, which goes up as it is; back(name) says whether it
    answers now. Each loss is waited out for at most `bound` seconds, saying so; past
    it, or after `times` losses, OperationFailed carries the cause. Only for work that
    may simply run again (it changes nothing)."""
    for attempt in range(times + 1):
        try:
            return work()
        except Exception as exc:  # noqa: BLE001 - lost() decides; anything else is re-raised
            name = lost(exc)
            if name is None:
                raise
            words = getattr(exc, "message", None) or str(exc)   # the tool's own error: without its hint
            cause = words.strip().splitlines()[0] if words.strip() else type(exc).__name__
            if attempt == times:
                raise OperationFailed(f"lost {name} {times + 1} times: {cause}",
                                      hint="check why it keeps restarting, then run the command again") from exc
            say(f"lost {name} ({cause}); waiting up to {bound:g} s (restarts.wait) for it to answer again")
            started = time.monotonic()
            poll(lambda name=name: True if back(name) else None, every=0.5, deadline=started + bound,
                 timed_out=lambda name=name, cause=cause: OperationFailed(
                     f"{name} did not answer again within {bound:g} s (restarts.wait): {cause}",
                     hint="start it (or raise restarts.wait), then run the command again"))
            say(f"{name} answers again after {time.monotonic() - started:.1f} s; starting over")
    raise AssertionError("unreachable")
