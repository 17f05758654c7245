"""The product's bounded waits (migrator.waiting), without a server."""

import time

import pytest

from migrator.errors import OperationFailed
from migrator.waiting import poll


def test_poll_returns_the_first_answer_that_is_not_none():
    answers = iter([None, None, 0, 7])
    assert poll(lambda: next(answers), every=0.001, deadline=time.monotonic() + 5,
                timed_out=lambda: AssertionError("timed out")) == 0


def test_an_error_from_the_check_ends_the_wait_at_once():
    calls = []

    def check():
        calls.append(1)
        raise OperationFailed("the apply worker keeps failing")

    with pytest.raises(OperationFailed, match="keeps failing"):
        poll(check, every=0.001, deadline=time.monotonic() + 5, timed_out=lambda: AssertionError("timed out"))
    assert len(calls) == 1


def test_past_the_deadline_the_wait_raises_what_timed_out_makes():
    calls = []
    started = time.monotonic()
    with pytest.raises(OperationFailed, match="lag stayed above"):
        poll(lambda: calls.append(1), every=0.01, deadline=started + 0.1,
             timed_out=lambda: OperationFailed("lag stayed above max_lag"))
    assert 0.1 <= time.monotonic() - started < 2 and len(calls) >= 5
