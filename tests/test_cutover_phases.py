"""The cutover's phases and directions are stored in the checkpoint store, read by the
next run, the watchdog process and `status`: their values never change."""

from __future__ import annotations

import json

from migrator.move.cutover import CutoverPhase, DirectionName, PauseOutcome
from migrator.postgres.connection import Side


def test_the_phase_values_are_exactly_the_stored_strings():
    assert {p.name: p.value for p in CutoverPhase} == {
        "PAUSING": "pausing",
        "POINT_OF_NO_RETURN": "point_of_no_return",
        "WATCHDOG_REVERTED": "watchdog_reverted",
        "ABORTED": "aborted",
        "RESUMED": "resumed",
    }


def test_directions_outcomes_and_sides_keep_their_stored_strings():
    assert [d.value for d in DirectionName] == ["forward", "reverse"]
    assert [o.value for o in PauseOutcome] == ["running", "completed", "aborted"]
    assert [s.value for s in Side] == ["source", "target"]


def test_a_stored_phase_reads_back_as_the_same_member():
    stored = json.loads(json.dumps({"phase": CutoverPhase.POINT_OF_NO_RETURN, "direction": DirectionName.REVERSE}))
    assert stored == {"phase": "point_of_no_return", "direction": "reverse"}
    assert CutoverPhase(stored["phase"]) is CutoverPhase.POINT_OF_NO_RETURN
    assert stored["phase"] == CutoverPhase.POINT_OF_NO_RETURN


def test_a_phase_reads_as_its_value_in_text():
    # Event lines and test hooks ("cutover:forward-point_of_no_return") are built with f-strings.
    assert f"{DirectionName.FORWARD}-{CutoverPhase.POINT_OF_NO_RETURN}" == "forward-point_of_no_return"
    assert str(Side.TARGET) == "target"
