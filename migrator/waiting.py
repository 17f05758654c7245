"""Bounded waits: a check polled until it has an answer or a deadline passes.

Every wait of the product for the servers (the initial copy, lag, a sync marker, a
slot let go) is one of these, on tenacity: the check runs, then again every `every`
seconds, until it returns something other than None. An exception from the check (a
subscription whose worker keeps failing, a slot gone missing) ends the wait at once;
the deadline passing raises what `timed_out` makes, which can name what was awaited.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

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
