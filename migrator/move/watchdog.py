"""The watchdog: a separate process that un-pauses PgBouncer if the tool cannot.

It is started before the first PAUSE and gets its orders on stdin (never argv, which
`ps` shows); it says "ready" once it has read them and opened the state store, so
that inside the pause it has nothing to do but wait. "arm <deadline>" comes just
before the first PAUSE; from then on it waits for one of:
- "done": the cutover finished; exit quietly;
- "pnr": the tool is crossing the point of no return; from now on, finishing means
  routing to the new side;
- end of input (the tool died) or the deadline (the tool hangs): act at once.

Which way to act is what the durable checkpoint says (the tool records the point of
no return before it tells the watchdog "pnr", and can die in between), and going back
is itself recorded first, so the tool and the next run never decide otherwise.
Going back runs the cutover's undo log (migrator.move.undo: the tool's sessions on the
old side ended first, then traffic first); going forward runs what finishes the
cutover (each route written, RELOAD, RESUME). Both are the orders' plain records, made
from the cutover's one sequence, and every record is safe to run twice, so the tool
and the watchdog may both run them. The next `execute`/`rollback` reconciles the rest.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

from migrator.errors import OperationFailed
from migrator.move.phases import CutoverPhase
from migrator.postgres.connection import connect


@dataclass
class WatchdogOrders:
    move: str
    deadline: float                 # time.time() after which the watchdog acts anyway
    old_dsn: str
    new_dsn: str
    old_side: str = "source"        # the side that served before the cutover
    back: list[dict] = field(default_factory=list)     # the undo log: traffic back to the old side
    forward: list[dict] = field(default_factory=list)  # the cutover finished: routes, RELOAD, RESUME
    pgbouncers: list[dict] = field(default_factory=list)  # by index: admin_dsn, entry, route (route.orders())
    state_url: str | None = None
    old_backend_pids: list[int] = field(default_factory=list)  # the tool's sessions on the old side


class Watchdog:
    """The tool's handle on its watchdog process."""

    def __init__(self) -> None:
        # Started before the pause: a Python start-up costs far more than the pause.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "migrator.move.watchdog"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a SIGKILL or Ctrl-C of the tool's group must not reach it
            text=True,
        )

    def wait_ready(self, timeout: float = 30) -> None:
        """Until the process has started, imported what acting needs and read its orders.
        On a busy machine that takes seconds, and a watchdog still starting up could not
        resume a pause whose tool died: no PAUSE before it says "ready"."""
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready or self.process.stdout.readline().strip() != "ready":
            self.process.kill()
            raise OperationFailed(f"the watchdog process did not start within {timeout:.0f}s; "
                                  "nothing was paused", hint="try again when the machine is less busy")

    def brief(self, orders: WatchdogOrders) -> None:
        """Its orders, before the pause (their deadline is set by `arm`); it says "ready"
        once it has read them and opened the state store."""
        self._send(json.dumps(asdict(orders)))

    def arm(self, deadline: float) -> None:
        """From now on the watchdog resumes traffic unless told "done" by `deadline`
        (time.time()); sent just before the first PAUSE."""
        self._send(f"arm {deadline!r}")

    def _send(self, line: str) -> None:
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def crossing_point_of_no_return(self) -> None:
        self._send("pnr")

    def stand_down(self) -> None:
        """Tell it the cutover is over; it exits on its own (no wait: the pause is over
        but the caller is still measuring it)."""
        self._send("done")
        try:
            assert self.process.stdin is not None
            self.process.stdin.close()
        except OSError:
            pass

    def release(self) -> None:
        """The tool is done with it: never armed, it exits doing nothing; armed and not
        told "done", it acts now (as if the tool had died)."""
        self.take_over()

    def identity(self) -> dict:
        """Where it runs, for the checkpoint: the next run waits for a live one."""
        return {"pid": self.process.pid, "host": socket.gethostname()}

    def take_over(self, *, resume_only: bool = False) -> None:
        """Make it act now (as if the tool had died): past the point of no return,
        when the tool cannot finish the reroute itself; `resume_only` after an abort that
        ran the undo log itself but could not RESUME every PgBouncer."""
        if resume_only:
            self._send("resume-only")
        try:
            assert self.process.stdin is not None
            self.process.stdin.close()
        except OSError:
            pass

    def fired(self) -> bool:
        """Did the watchdog act (exit code 3) instead of standing down?"""
        return self.process.poll() == 3


def decide(orders: WatchdogOrders, store, told_forward: bool) -> bool:
    """Forward (route to the new side) or back? The durable checkpoint decides, not the
    "pnr" line: the tool records the point of no return before it tells us, and may die
    in between; the next run then finishes forward, so must we. Going back is recorded
    first, with a compare-and-set on the phase, so a tool that is alive but late cannot
    record the point of no return after we gave the old side its traffic back.

    Going back is recorded as WATCHDOG_REVERTED; the next run reads it like any phase
    before the point of no return, and reverts the rest."""
    if store is None:
        return told_forward
    try:
        if store.update_data_if(orders.move, "cutover", phase_in=(CutoverPhase.PAUSING,),
                                phase=CutoverPhase.WATCHDOG_REVERTED,
                                event="watchdog: gave traffic back to the old side"):
            return False
        return store.step(orders.move, "cutover").data.phase == CutoverPhase.POINT_OF_NO_RETURN
    except Exception:  # noqa: BLE001 - an unreadable store must not stop the RESUME
        return told_forward


def decide_within(orders: WatchdogOrders, store, told_forward: bool, timeout: float = 1.0) -> bool:
    """decide(), but never longer than timeout: a tool hung in the middle of a write to
    the state store holds its lock, and traffic must not wait for that."""
    decision = [told_forward]

    def run() -> None:
        decision[0] = decide(orders, store, told_forward)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    return decision[0]


def _open_store(orders: WatchdogOrders):
    if not orders.state_url:
        return None
    try:
        from migrator.move.state import StateStore

        return StateStore(orders.state_url)
    except Exception:  # noqa: BLE001
        return None


# After acting, the watchdog keeps trying a PgBouncer that did not answer (a host that
# dropped off the network inside the pause) for this long: it must not stay paused.
RESUME_RETRY_WINDOW = 60.0


def _route_of(bouncer: dict):
    from migrator.pgbouncer.route import route_from_orders

    return route_from_orders(bouncer["route"])


def act(orders: WatchdogOrders, forward: bool, why: str, *, resume_only: bool = False) -> None:
    from migrator.move.undo import run_undo

    errors: list[str] = []
    if forward:
        pending = _per_bouncer(orders, orders.forward, errors)
    elif resume_only:
        pending = _per_bouncer(orders, [r for r in orders.back if r["kind"] == "console"], errors)
    else:
        # The tool may be alive, only late (or stopped) in the middle of its own
        # transaction: its sessions on the old side go first, so nothing of it commits
        # once clients are back there, and the tool, finding them gone, aborts.
        _run_sql(orders.old_dsn, [f"SELECT pg_catalog.pg_terminate_backend({int(pid)})"
                                  for pid in orders.old_backend_pids], errors)
        pending = []
        opened: dict[str, object] = {}

        def connection(side: str):
            if side not in opened:
                opened[side] = connect(orders.old_dsn if side == orders.old_side else orders.new_dsn,
                                       purpose="watchdog")
            return opened[side]

        def consoles(records: list[dict]) -> dict[int, str]:
            pending.extend(_per_bouncer(orders, records, errors))
            return {i: "not reached" for i in pending}

        try:
            errors += run_undo(orders.back, old_side=orders.old_side, connection=connection,
                               consoles=consoles).problems
        finally:
            for conn in opened.values():
                conn.close()  # type: ignore[attr-defined]
    left = f"; not reached in {RESUME_RETRY_WINDOW:.0f}s: {pending}" if pending else ""
    _log(orders, f"watchdog acted ({why}): traffic resumed on the "
                 f"{'new' if forward else 'old'} side" + (f"; errors: {errors}" if errors else "") + left)


def _per_bouncer(orders: WatchdogOrders, records: list[dict], errors: list[str]) -> list[int]:
    """Run each PgBouncer's records (a route written, then its commands), every
    PgBouncer at once, retrying those that fail for RESUME_RETRY_WINDOW; returns the
    indexes never reached."""
    from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

    from migrator.pgbouncer.console import PgBouncerConsole, already_resumed
    from migrator.pgbouncer.fleet import run_all

    mine: dict[int, list[dict]] = {}
    for r in records:
        mine.setdefault(r["bouncer"], []).append(r)

    def one(index: int) -> None:
        bouncer = orders.pgbouncers[index]
        for r in mine[index]:
            if r["kind"] == "route":
                _route_of(bouncer).write(r["value"])
        with PgBouncerConsole(bouncer["admin_dsn"], connect_timeout=2) as console:
            for r in mine[index]:
                if r["kind"] == "console":
                    try:
                        console.command(r["command"])
                    except Exception as exc:  # noqa: BLE001
                        if not already_resumed(exc):
                            raise

    pending = sorted(mine)

    def attempt() -> list[int]:
        outcomes = run_all([lambda i=i: one(i) for i in pending], timeout=5)
        failed = [i for i, o in zip(pending, outcomes, strict=True) if not o.ok]
        if not errors:
            errors.extend(f"{orders.pgbouncers[i]['entry']}: {o.error or 'no answer'}"
                          for i, o in zip(pending, outcomes, strict=True) if not o.ok)
        pending[:] = failed
        return failed

    Retrying(stop=stop_after_delay(RESUME_RETRY_WINDOW), wait=wait_fixed(0.5), retry=retry_if_result(bool),
             retry_error_callback=lambda state: state.outcome.result())(attempt)
    return pending


def _run_sql(dsn: str, statements: list[str], errors: list[str]) -> None:
    if not statements:
        return
    try:
        # Bounded (the "watchdog" row of TIMEOUTS): a tool that hangs inside its own
        # privilege transaction holds the rows these GRANTs need, and the RESUME that
        # follows must not wait for it (its uncommitted REVOKE hides nothing anyway).
        with connect(dsn, purpose="watchdog") as conn:
            for statement in statements:
                conn.execute(statement)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001
        errors.append(str(exc))


def _log(orders: WatchdogOrders, message: str) -> None:
    if not orders.state_url:
        return
    try:
        from migrator.move.state import StateStore

        store = StateStore(orders.state_url)
        store.log(orders.move, "watchdog", message, step="cutover")
        store.close()
    except Exception:  # noqa: BLE001 - logging must never stop the watchdog
        pass


def main() -> int:
    # Imported now, while the tool is still before its pause: acting must not wait for it.
    import tenacity  # noqa: F401

    import migrator.move.state  # noqa: F401
    import migrator.move.undo  # noqa: F401
    import migrator.pgbouncer.console  # noqa: F401
    import migrator.pgbouncer.fleet  # noqa: F401
    import migrator.pgbouncer.route  # noqa: F401

    # One reader for every line, on the raw descriptor: a buffered readline() for
    # the orders would swallow the "pnr"/"done" lines that follow them.
    fd = sys.stdin.fileno()
    buffer = ""
    orders: WatchdogOrders | None = None
    store = None
    forward = False
    armed = False
    resume_only = False
    while True:
        if not armed or orders is None:
            timeout = None
        else:
            timeout = orders.deadline - time.time()
            if timeout <= 0:
                act(orders, decide_within(orders, store, forward), "deadline passed")
                return 3
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            continue
        chunk = os.read(fd, 65536).decode()
        if not chunk:
            if not armed or orders is None:
                return 0  # never armed: nothing was paused
            if resume_only:
                act(orders, False, "the tool aborted, some PgBouncers did not answer", resume_only=True)
            else:
                act(orders, decide_within(orders, store, forward), "the tool exited during the cutover")
            return 3
        buffer += chunk
        while "\n" in buffer:
            line, buffer = buffer.split("\n", 1)
            if orders is None:
                orders = WatchdogOrders(**json.loads(line))
                store = _open_store(orders)
                print("ready", flush=True)
            elif line.startswith("arm "):
                orders.deadline = float(line.split()[1])
                armed = True
            elif line == "pnr":
                forward = True
            elif line == "resume-only":
                resume_only = True
            elif line == "done":
                return 0


if __name__ == "__main__":
    sys.exit(main())
