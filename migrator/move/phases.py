"""Where a cutover stands, which way it goes, how a pause ended: the values stored
in the checkpoint, in one place. The cutover, the recovery, the watchdog and `status`
all read them; they never change."""

from __future__ import annotations

import enum


class CutoverPhase(str, enum.Enum):
    """Where a cutover stands, in the checkpoint's `phase`. The values are stored (the
    next run, the watchdog and `status` read them): they never change."""

    PAUSING = "pausing"                        # PAUSE issued; before the point of no return
    POINT_OF_NO_RETURN = "point_of_no_return"  # recorded before the reroute: only forward now
    WATCHDOG_REVERTED = "watchdog_reverted"    # the watchdog gave traffic back to the old side
    ABORTED = "aborted"                        # the tool gave traffic back itself
    RESUMED = "resumed"                        # traffic flows on the new side

    def __str__(self) -> str:
        return self.value


class DirectionName(str, enum.Enum):
    """Which way a cutover goes; stored in the checkpoint's `direction`."""

    FORWARD = "forward"   # source -> target (execute)
    REVERSE = "reverse"   # target -> source (rollback after a move)

    def __str__(self) -> str:
        return self.value


class PauseOutcome(str, enum.Enum):
    """How a pause window ended; stored in the cutover's history and `last_window`."""

    RUNNING = "running"
    COMPLETED = "completed"
    ABORTED = "aborted"

    def __str__(self) -> str:
        return self.value
