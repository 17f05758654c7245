"""Test hooks: hold the process at a named point so a fault test can kill it there, or
fail there.

The fault tests must SIGKILL the tool at precise points (inside a step, inside the
cutover before and after the point of no return), which polling from outside cannot
hit reliably. With MIGRATOR_TEST_PAUSE_AT=<step>:<point> set, the process prints one
line to stderr when it reaches that point and then waits there until it receives
SIGUSR1 (carry on) or is killed. Unset, which is always the case outside the tests,
`hold` returns at once and does nothing.

Points: `<step>:start` and `<step>:end` (the step is recorded running; its `do` has
not started / has finished but `done` is not recorded yet), the same with `undo-`
for a rollback (`cutover:undo-start`), `replicate:copying` (the subscription exists,
the initial copy runs), `rebuild-indexes:lag` (its connections open, before the lag wait) and `cutover:<direction>-<phase>` for each recorded cutover
phase (`cutover:forward-point_of_no_return`); around the guards: `replicate:guarded-target`,
`replicate:guarded-source`, `replicate:undo-unguarded-source`, `complete:unguarded`, and
`ddl:applied-<n>` after a `migrator ddl`'s n-th statement. The cutover's stages each have
one too, in their order: `cutover:<direction>-gated` (lag and warm-up marker),
`-prepared` (routes, sequences, early grants), `-briefed` (the watchdog ready),
`-pausing` (recorded, before PAUSE), `-paused`, `-old-switched`, `-caught-up`,
`-replication-switched`, `-point_of_no_return`, `-rerouted`, `-resumed`, `-finished`.

With MIGRATOR_TEST_FAIL_AT=<step>:<point> the process raises InjectedFailure there
instead, as a failure of whatever runs at that point would.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from migrator.errors import OperationFailed

PAUSE_AT_ENV = "MIGRATOR_TEST_PAUSE_AT"
FAIL_AT_ENV = "MIGRATOR_TEST_FAIL_AT"


class InjectedFailure(OperationFailed):
    """The failure a test asked for at a named point."""


_HELD: set[str] = set()


def hold(step: str, point: str) -> None:
    """Hold (or fail) at a named point, the first time the process reaches it: a step
    done again (a server it lost answers again) passes it the second time."""
    here = f"{step}:{point}"
    if here in _HELD:
        return
    if os.environ.get(FAIL_AT_ENV) == here:
        _HELD.add(here)
        raise InjectedFailure(f"injected failure at {here}")
    wanted = os.environ.get(PAUSE_AT_ENV)
    if not wanted or wanted != here:
        return
    _HELD.add(here)
    released: list[int] = []
    try:
        signal.signal(signal.SIGUSR1, lambda *_: released.append(1))
    except ValueError:  # not the main thread: only a kill ends the hold
        pass
    print(f"{PAUSE_AT_ENV}: holding at {wanted} (pid {os.getpid()})", file=sys.stderr, flush=True)
    while not released:
        time.sleep(0.02)
