"""The product's bounded waits (migrator.waiting), without a server."""

import time

import pytest

from migrator.errors import OperationFailed
from migrator.waiting import poll, ride_out


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


# --------------------------------------------------------------------------- ride_out


class Lost(Exception):
    pass


def test_ride_out_runs_the_work_again_once_the_server_answers():
    failures = [Lost("terminating connection due to administrator command")]
    answers = iter([False, False, True])
    said: list[str] = []

    def work() -> str:
        if failures:
            raise failures.pop()
        return "done"

    result = ride_out(work, bound=5, lost=lambda exc: "the target" if isinstance(exc, Lost) else None,
                      back=lambda name: next(answers), say=said.append)
    assert result == "done"
    assert said[0] == ("lost the target (terminating connection due to administrator command); "
                       "waiting up to 5 s (restarts.wait) for it to answer again")
    assert said[1].startswith("the target answers again after ") and said[1].endswith("starting over")


def test_ride_out_lets_any_other_failure_through_at_once():
    def work():
        raise ValueError("a statement failed")

    with pytest.raises(ValueError, match="a statement failed"):
        ride_out(work, bound=5, lost=lambda exc: None, back=lambda name: True, say=lambda text: None)


def test_ride_out_gives_up_past_the_bound_and_after_too_many_losses():
    def work():
        raise Lost("connection refused")

    started = time.monotonic()
    with pytest.raises(OperationFailed, match=r"the source did not answer again within 0.3 s \(restarts.wait\): "
                                              "connection refused"):
        ride_out(work, bound=0.3, lost=lambda exc: "the source", back=lambda name: False, say=lambda text: None)
    assert time.monotonic() - started < 2
    with pytest.raises(OperationFailed, match="lost the source 3 times: connection refused"):
        ride_out(work, bound=1, lost=lambda exc: "the source", back=lambda name: True, say=lambda text: None,
                 times=2)
