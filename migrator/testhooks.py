"""A test hook: hold the process at a named point so a fault test can kill it there.

The fault tests must SIGKILL the tool at precise points (inside a step, inside the
cutover before and after the point of no return), which polling from outside cannot
hit reliably. With MIGRATOR_TEST_PAUSE_AT=<step>:<point> set, the process prints one
line to stderr when it reaches that point and then waits there until it receives
SIGUSR1 (carry on) or is killed. Unset, which is always the case outside the tests,
`hold` returns at once and does nothing.

Points: `<step>:start` and `<step>:end` (the step is recorded running; its `do` has
not started / has finished but `done` is not recorded yet), the same with `undo-`
for a rollback (`cutover:undo-start`), `replicate:copying` (the subscription exists,
the initial copy runs) and `cutover:<direction>-<phase>` for each recorded cutover
phase (`cutover:forward-point_of_no_return`); around the guards: `replicate:guarded-target`,
`replicate:guarded-source`, `replicate:undo-unguarded-source`, `complete:unguarded`, and
`ddl:applied-<n>` after a `migrator ddl`'s n-th statement.
"""

from __future__ import annotations

import os
import signal
import sys
import time

PAUSE_AT_ENV = "MIGRATOR_TEST_PAUSE_AT"


def hold(step: str, point: str) -> None:
    wanted = os.environ.get(PAUSE_AT_ENV)
    if not wanted or wanted != f"{step}:{point}":
        return
    released: list[int] = []
    try:
        signal.signal(signal.SIGUSR1, lambda *_: released.append(1))
    except ValueError:  # not the main thread: only a kill ends the hold
        pass
    print(f"{PAUSE_AT_ENV}: holding at {wanted} (pid {os.getpid()})", file=sys.stderr, flush=True)
    while not released:
        time.sleep(0.02)
