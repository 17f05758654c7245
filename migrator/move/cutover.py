"""The cutover (DESIGN section 4): the client-visible pause, in either direction.

Forward moves traffic from the source to the target; the reverse cutover (rollback
after a move) is the same protocol with the sides swapped. The pause window is the
product's headline number, so the order below keeps everything slow outside it:
the lag gate and a pre-pause marker run before PAUSE, dropping the old subscription
runs after RESUME.

Points of no return are recorded durably before they are crossed. Before the
reroute any failure or an overrun of max_pause aborts: privileges restored, RESUME
on the old side, replication as it was. After it the tool only finishes forward.
A watchdog process resumes PgBouncer if the tool dies or hangs while it is paused.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import psycopg
from psycopg import sql

from migrator import names, waiting
from migrator.errors import OperationFailed
from migrator.move.phases import CutoverPhase, DirectionName, PauseOutcome
from migrator.move.watchdog import Watchdog, WatchdogOrders
from migrator.pgbouncer.config import entry_for_side
from migrator.pgbouncer.console import PgBouncerConsole, already_resumed, pause_command, resume_command
from migrator.pgbouncer.fleet import all_or_raise, command_all, run_all
from migrator.pgbouncer.route import route_for
from migrator.playbook import Playbook
from migrator.postgres import guards, replication
from migrator.postgres.catalog import guarded_objects
from migrator.postgres.connection import Side, connect, describe, describe_error
from migrator.postgres.grants import inside_and_outside_the_pause, switch_statements
from migrator.postgres.subscription_health import SubscriptionWatch

# Room the reroute and RESUME need after the point of no return; the tool refuses
# to cross it later than max_pause minus this, so the pause stays within max_pause.
REROUTE_BUDGET = 0.25
# How far past max_pause the watchdog waits for a live tool before acting itself.
WATCHDOG_MARGIN = 0.5
# How long an abort waits for its RESUMEs; a PgBouncer that does not answer by then
# is left to the watchdog, which keeps trying, so the others are not kept waiting.
ABORT_RESUME_WAIT = 0.4


class CutoverAborted(OperationFailed):
    """The cutover stopped before the point of no return; traffic is back on the old side."""


@dataclass(frozen=True)
class Direction:
    """Which side serves now and which will serve; named replication objects for both."""

    name: DirectionName
    old_dsn: str
    new_dsn: str
    old_label: Side           # which side serves before the cutover
    new_label: Side
    old_subscription: str     # on the new side, replicating old -> new (stopped here)
    old_slot: str             # its slot, on the old side
    new_publication: str      # on the new side
    new_subscription: str     # created on the old side, replicating new -> old
    new_slot: str             # its slot, on the new side

    @classmethod
    def named(cls, name: str, playbook: Playbook) -> Direction:
        """The direction a checkpoint's `direction` names."""
        return cls.reverse(playbook) if name == DirectionName.REVERSE else cls.forward(playbook)

    @property
    def verb(self) -> str:
        """The command that runs (and retries) a cutover this way."""
        return "execute" if self.name == DirectionName.FORWARD else "rollback"

    @classmethod
    def forward(cls, playbook: Playbook) -> Direction:
        return cls(
            DirectionName.FORWARD, playbook.source.dsn, playbook.target.dsn, Side.SOURCE, Side.TARGET,
            names.subscription(playbook), names.slot(playbook),
            names.reverse_publication(playbook), names.reverse_subscription(playbook),
            names.reverse_slot(playbook),
        )

    @classmethod
    def reverse(cls, playbook: Playbook) -> Direction:
        return cls(
            DirectionName.REVERSE, playbook.target.dsn, playbook.source.dsn, Side.TARGET, Side.SOURCE,
            names.reverse_subscription(playbook), names.reverse_slot(playbook),
            names.publication(playbook), names.subscription(playbook), names.slot(playbook),
        )


@dataclass
class PauseWindow:
    """What the clients saw: from the first PAUSE to the last RESUME, and its parts."""

    direction: DirectionName
    outcome: PauseOutcome = PauseOutcome.RUNNING
    total: float = 0.0
    parts: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    marker_wait: float | None = None
    sequences: int = 0
    sequences_copy: float | None = None    # seconds, overlapped with the marker's wait
    sequences_moved: int = 0               # of `sequences`, set inside the pause
    # Seconds of each side's switch inside the pause: the old side's (its write fence up,
    # the sync marker in the same commit; the table privileges too where a relation lacks
    # the fence) is the part `old_switch`; the new side's (its fence lifted) runs while
    # the marker is awaited.
    old_switch: float | None = None
    new_switch: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class Cutover:
    """One cutover attempt. `run()` returns the PauseWindow or raises CutoverAborted."""

    def __init__(
        self,
        playbook: Playbook,
        direction: Direction,
        *,
        app_privileges: list,
        sequences: list[tuple[str, str]],
        original_entries: dict[str, str],
        checkpoint: Callable[..., None],
        log: Callable[[str, str | None], None],
        state_url: str | None = None,
        wait_lag_timeout: float = 300,
    ) -> None:
        self.playbook = playbook
        self.d = direction
        self.settings = playbook.cutover
        self.app_privileges = [tuple(p) for p in app_privileges]
        # Until _pause_window has seen every relation fenced on both sides, the table
        # privileges switch inside the pause.
        self.inside, self.outside = inside_and_outside_the_pause(self.app_privileges, fenced=False)
        self.sequences = sequences
        self.original_entries = original_entries
        self.checkpoint = checkpoint
        self.log = log
        self.state_url = state_url
        self.wait_lag_timeout = wait_lag_timeout
        self.window = PauseWindow(direction.name)
        self.consoles: list[PgBouncerConsole] = []
        # The write fence's four positions: each side's goes up or down in one statement.
        self.fence_old, self.unfence_old, self.fence_new, self.unfence_new = fence_switch(playbook, direction)

    # -- the values of each side -------------------------------------------------

    def _old_privileges_sql(self, *, grant: bool) -> list[sql.Composable]:
        """The privileges switched on the old side inside the pause, and its fence."""
        return [*switch_statements(self.inside, grant=grant), self.unfence_old if grant else self.fence_old]

    def _new_entry(self, bouncer) -> str:
        return entry_for_side(self.original_entries[bouncer.route_key], self.playbook, self.d.new_label)

    # -- the protocol ------------------------------------------------------------

    def run(self) -> PauseWindow:
        old = connect(self.d.old_dsn, side=self.d.old_label, purpose="cutover old")
        new = connect(self.d.new_dsn, side=self.d.new_label, purpose="cutover new")
        try:
            self._before_pause(old, new)
            return self._pause_window(old, new)
        finally:
            old.close()
            new.close()
            for console in self.consoles:
                console.close()

    def _before_pause(self, old: psycopg.Connection, new: psycopg.Connection) -> None:
        """Gate on lag, then prove with a marker that the apply worker is caught up:
        every second of apply backlog would otherwise be a second of pause."""
        lag_limit = self.settings.max_lag
        deadline = time.monotonic() + self.wait_lag_timeout
        # An apply worker failing on every attempt would leave the lag small and the
        # warm-up marker unapplied: stop with the server's words instead.
        watch = SubscriptionWatch(new, self.d.old_subscription, side=str(self.d.new_label), verb=self.d.verb)

        def lag_under_limit() -> bool | None:
            watch.check()
            lag = replication.slot_lag_bytes(old, self.d.old_slot)
            if lag is None:
                raise replication.slot_lost(self.d.old_slot, str(self.d.old_label),
                                            after_cutover=self.d.old_label == Side.TARGET)
            return True if lag <= lag_limit else None

        waiting.poll(lag_under_limit, every=0.2, deadline=deadline, timed_out=lambda: OperationFailed(
            f"replication lag stayed above {lag_limit} bytes for {self.wait_lag_timeout:.0f}s; "
            "not starting the cutover"))
        for _ in range(20):
            marker = replication.commit_marker(old, self.playbook, f"{self.d.name}-warmup")
            try:
                waited = replication.wait_for_marker(new, marker, deadline=time.monotonic() + 5)
            except replication.MarkerTimeout:
                watch.check()
                continue
            if waited < self.settings.max_pause / 4:
                return
        raise OperationFailed(
            f"the {self.d.new_label} applies changes too slowly to start a pause "
            f"shorter than max_pause ({self.settings.max_pause}s); try again when load is lower")

    def _pause_window(self, old: psycopg.Connection, new: psycopg.Connection) -> PauseWindow:
        s = self.settings
        entries = [(b, b.database) for b in self.playbook.pgbouncers]
        routes = [route_for(b) for b, _ in entries]
        connected = run_all([lambda b=b: PgBouncerConsole(b.admin_dsn) for b, _ in entries])
        self.consoles = [o.value for o in connected if o.value is not None]
        for outcome in connected:
            if outcome.error is not None:
                raise outcome.error
        # Everything that can be done before the pause is: the new entries are written
        # beside the old config (which also proves they can be written) or handed to
        # each PgBouncer's prepare command, a second connection to each side is open,
        # the watchdog process is running.
        prepared = run_all([lambda r=r, b=b: r.prepare(self._new_entry(b))
                            for r, (b, _) in zip(routes, entries, strict=True)])
        rewrites = [o.value for o in prepared if o.value is not None]
        failed = next((o.error for o in prepared if o.error is not None), None)
        if failed is not None:
            for rewrite in rewrites:
                rewrite.discard()
            message = failed.message if isinstance(failed, OperationFailed) else describe_error(failed)
            raise OperationFailed(f"the cutover did not start: {message}; nothing was paused",
                                  hint=getattr(failed, "hint", None)) from failed
        old_side = connect(self.d.old_dsn, side=self.d.old_label, purpose="cutover privileges")
        fenced = self._fenced(old_side, new)
        self.inside, self.outside = inside_and_outside_the_pause(self.app_privileges, fenced=fenced)
        # The watchdog's orders: all of the new side's privileges (granting twice is
        # harmless), and on the old side what the pause may have taken away.
        grant_new = [q.as_string(new) for q in [*switch_statements(self.app_privileges, grant=True),
                                                 self.unfence_new]]
        restore_old = [q.as_string(old) for q in self._old_privileges_sql(grant=True)]
        self.sequence_names = replication.regclass_names(old_side, self.sequences)
        new_side = connect(self.d.new_dsn, side=self.d.new_label, purpose="cutover sequences")
        # The new side's switch (its fence lifted) on a connection of its own: it overlaps
        # the marker's wait.
        switch_side = connect(self.d.new_dsn, side=self.d.new_label, purpose="cutover switch")
        # Copied once before the pause too: inside it, only the sequences the clients
        # moved since then need a setval (the new side's only ever go up: nothing but
        # this copy and a client bypassing PgBouncer moves them, and a gap harms no key).
        early_values = replication.read_sequences(old_side, self.sequences, self.sequence_names)
        replication.write_sequences(new_side, early_values)
        self.copied_before = {(v[0], v[1]): (v[2], v[3]) for v in early_values}
        early = switch_statements(self.outside, grant=True)
        if early:
            with new.transaction():
                new.execute(sql.SQL("; ").join(early))
        try:
            watchdog = self._start_watchdog(new, old, old_side, routes, entries, restore_old, grant_new)
        except BaseException:
            if early:  # nothing was paused: the new side gets back what it had
                with new.transaction():
                    new.execute(sql.SQL("; ").join(switch_statements(self.outside, grant=False)))
            raise
        changed = {"revoked": False, "granted": False, "forward_stopped": False, "slot_created": False,
                   "granted_early": bool(early)}
        work = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="cutover")
        granting: concurrent.futures.Future | None = None
        self.checkpoint(phase=CutoverPhase.PAUSING, pause_started=time.time())
        watchdog.arm(time.time() + s.max_pause + WATCHDOG_MARGIN)
        start = time.monotonic()
        pnr_deadline = start + s.max_pause - REROUTE_BUDGET
        mark = start

        def lap(part: str) -> None:
            nonlocal mark
            now = time.monotonic()
            self.window.parts[part] = round(now - mark, 4)
            mark = now

        try:
            try:
                self._pause_all(entries, old, start, pnr_deadline)
                lap("pause")
                # A tool descheduled (or stopped) after PAUSE may find the watchdog has
                # already resumed the old side: fencing it now would fail live clients.
                if time.monotonic() > pnr_deadline or watchdog.fired():
                    raise CutoverAborted(f"max_pause ({s.max_pause}s) was used up by the PAUSE itself")
                marker = self._switch_old(old_side, pnr_deadline, changed)
                lap("old_switch")
                # Only now, with the old side fenced, the new side's fence is lifted (and its
                # table privileges granted, when the fence does not cover the group): never
                # both sides open to a client that bypasses PgBouncer. It runs while the
                # marker is awaited; the point of no return waits for it.
                granting = work.submit(self._grant_new, switch_side,
                                       [*switch_statements(self.inside, grant=True), self.unfence_new], changed)
                # Every client is paused and the old side fenced: the sequences are final
                # there (for every row that can still commit), and copying them needs
                # nothing from the marker's wait.
                copying = work.submit(self._copy_sequences, old_side, new_side)
                # Polled every millisecond: the clients wait, the servers have little else to do.
                self.window.marker_wait = round(
                    replication.wait_for_marker(new, marker, deadline=pnr_deadline, poll=0.001), 4)
                copying.result()
                lap("sync_marker")
                replication.set_subscription_enabled(new, self.d.old_subscription, False)
                changed["forward_stopped"] = True
                # Only the slot is needed inside the pause: from its creation on, the new
                # side's changes are kept for the reverse subscription, which attaches
                # to it after RESUME (a subscription costs a walsender start-up here).
                replication.create_slot(new, self.d.new_slot)
                changed["slot_created"] = True
                granting.result()
                lap("replication_switch")
                if time.monotonic() > pnr_deadline:
                    raise CutoverAborted(f"max_pause ({s.max_pause}s) would be exceeded before the reroute")
                if watchdog.fired():
                    raise CutoverAborted("the watchdog resumed traffic before the reroute")
                # Recorded before it is crossed, and last in this block: should the
                # watchdog have given traffic back first, the record refuses it and this
                # run aborts like any other before the point of no return.
                self.checkpoint(phase=CutoverPhase.POINT_OF_NO_RETURN)
            except Exception as exc:  # noqa: BLE001 - every failure before the PNR aborts the same way
                reason = exc.message if isinstance(exc, OperationFailed) else describe_error(exc)
                if granting is not None:
                    concurrent.futures.wait([granting])  # its GRANT is undone below, once done
                unresumed = self._abort(old, new, entries, **changed)
                self.window.total = round(time.monotonic() - start, 4)
                if unresumed:
                    # It keeps trying them after this process is gone.
                    watchdog.take_over()
                else:
                    watchdog.stand_down()
                self.window.outcome = PauseOutcome.ABORTED
                self.window.reason = reason
                self.checkpoint(phase=CutoverPhase.ABORTED, last_window=self.window.to_dict())
                raise CutoverAborted(
                    f"cutover aborted before the point of no return: {reason}; traffic resumed on the "
                    f"{self.d.old_label}, replication left running, nothing lost "
                    f"(paused {self.window.total * 1000:.0f} ms)",
                    hint=f"run `migrator {self.d.verb}` again to retry",
                ) from exc

            # ---- the point of no return --------------------------------------------
            watchdog.crossing_point_of_no_return()
            try:
                # Every new entry made live (a rename each, or the user's commands in
                # parallel), then RELOAD on every PgBouncer at once.
                for rewrite in rewrites:
                    if not rewrite.remote:
                        rewrite.commit()
                all_or_raise([w.commit for w in rewrites if w.remote])
                self._command_all("RELOAD", deadline=time.monotonic() + s.max_pause)
                lap("reroute")
                self._resume_all(entries)
                lap("resume")
                self.window.total = round(time.monotonic() - start, 4)
            except BaseException as exc:
                # Only forward is right now and the clients are waiting: the watchdog
                # routes to the new side and RESUMEs at once; the next run finishes.
                watchdog.take_over()
                if not isinstance(exc, Exception):
                    raise
                reason = exc.message if isinstance(exc, OperationFailed) else describe_error(exc)
                raise OperationFailed(
                    f"the cutover passed its point of no return but could not finish the reroute: "
                    f"{reason}; the watchdog routes traffic to the {self.d.new_label} and resumes it",
                    hint=f"fix the cause, then run `migrator {self.d.verb}` again: it finishes the cutover",
                ) from exc
            watchdog.stand_down()
        finally:
            work.shutdown(wait=False)
            for rewrite in rewrites:
                rewrite.discard()
            old_side.close()
            new_side.close()
            switch_side.close()
        self.window.outcome = PauseOutcome.COMPLETED
        self.checkpoint(phase=CutoverPhase.RESUMED, last_window=self.window.to_dict())
        self._check_routes(entries)
        self.log(f"traffic resumed on the {self.d.new_label} after a pause of "
                 f"{self.window.total * 1000:.0f} ms", None)
        self._after_resume(old, new)
        return self.window

    def _start_watchdog(self, new, old, old_side, routes, entries, restore_old: list[str],
                        grant_new: list[str]) -> Watchdog:
        """The watchdog process, with its orders read and the state store open: inside the
        pause it only learns its deadline (`arm`)."""
        watchdog = Watchdog()
        watchdog.brief(WatchdogOrders(
            move=self.playbook.name, deadline=0,
            old_dsn=self.d.old_dsn, new_dsn=self.d.new_dsn,
            restore_old=restore_old, grant_new=grant_new, fence_new=[self.fence_new.as_string(new)],
            pgbouncers=[{"admin_dsn": b.admin_dsn, "entry": entry, "route": r.orders(),
                         "new_value": self._new_entry(b)} for r, (b, entry) in zip(routes, entries, strict=True)],
            state_url=self.state_url,
            old_backend_pids=[old.info.backend_pid, old_side.info.backend_pid],
        ))
        watchdog.wait_ready()
        return watchdog

    def _fenced(self, old_side: psycopg.Connection, new: psycopg.Connection) -> bool:
        """Does each side carry the move's write fence on every relation of the group?
        Then the fence alone keeps the old side's rows still from the pause on, and the
        table privileges switch around the pause, not inside it (the replicate step
        makes the fence; only a move started by an earlier version can lack it)."""
        relations, _ = guarded_objects(old_side, self.playbook.tables)
        for label, conn in ((self.d.old_label, old_side), (self.d.new_label, new)):
            missing = set(relations) - set(guards.fenced_relations(conn, self.playbook, enabled=True))
            if missing or guards.read_state(conn, self.playbook).fence is None:
                self.log(f"the write fence is missing on the {label} "
                         f"({len(missing) or 'its function'}{' relations' if missing else ''}): "
                         "the app's table privileges switch inside the pause", None)
                return False
        return True

    def _switch_old(self, old_side: psycopg.Connection, deadline: float, changed: dict) -> replication.SyncMarker:
        """Raise the old side's write fence (and revoke the app's table privileges there
        when the fence does not cover the group) and commit the sync marker: one round
        trip, one commit. No write on the group can commit there after the marker.

        A lock_timeout bounds it: a long transaction from another entry holding a lock
        on a group table must not stretch the pause."""
        lock_timeout = sql.SQL("SET LOCAL lock_timeout = {}").format(
            sql.Literal(f"{max(1, int((deadline - time.monotonic()) * 1000))}ms"))
        started = time.monotonic()
        marker = replication.commit_marker(old_side, self.playbook, self.d.name,
                                           before=[lock_timeout, *self._old_privileges_sql(grant=False)])
        changed["revoked"] = True
        self.window.old_switch = round(time.monotonic() - started, 4)
        return marker

    def _grant_new(self, new: psycopg.Connection, statements: list[sql.Composable], changed: dict) -> None:
        started = time.monotonic()
        if statements:
            with new.transaction():
                new.execute(sql.SQL("; ").join(statements))
        changed["granted"] = True
        self.window.new_switch = round(time.monotonic() - started, 4)

    def _copy_sequences(self, old_side: psycopg.Connection, new_side: psycopg.Connection) -> None:
        started = time.monotonic()
        values = replication.read_sequences(old_side, self.sequences, self.sequence_names)
        moved = [v for v in values if self.copied_before.get((v[0], v[1])) != (v[2], v[3])]
        replication.write_sequences(new_side, moved)
        self.window.sequences = len(values)
        self.window.sequences_moved = len(moved)
        self.window.sequences_copy = round(time.monotonic() - started, 4)

    # -- pieces ------------------------------------------------------------------

    def _pause_all(self, entries, old: psycopg.Connection, start: float, deadline: float) -> None:
        """PAUSE every entry at once; after `grace`, cancel the app's queries on the
        group; past the deadline, give up (the caller RESUMEs)."""
        cancelled = False

        def after_grace() -> None:
            nonlocal cancelled
            if not cancelled and time.monotonic() - start >= self.settings.grace:
                cancelled = True
                self._cancel_app_queries(old)

        outcomes = command_all(self.consoles, [pause_command(e) for _, e in entries],
                               deadline=deadline, every=after_grace, stop_on_error=True)
        failed = next((o.error for o in outcomes if o.error is not None), None)
        if failed is not None:
            raise failed  # a failed PAUSE aborts now
        late = [c.display for c, o in zip(self.consoles, outcomes, strict=True) if o.late]
        if late:
            raise CutoverAborted(
                f"PgBouncer did not pause within max_pause ({self.settings.max_pause}s): "
                f"{', '.join(late)} (a transaction stayed open on the group's entry, "
                "or the PgBouncer does not answer)")

    def _cancel_app_queries(self, old: psycopg.Connection) -> None:
        roles = list(self.playbook.app_roles)
        if not roles:
            return
        tables = [t.qualified for t in self.playbook.tables]
        rows = old.execute(
            """
            SELECT pg_catalog.pg_cancel_backend(a.pid)
            FROM pg_catalog.pg_stat_activity a
            WHERE a.usename = ANY(%s) AND a.state = 'active' AND a.pid <> pg_catalog.pg_backend_pid()
              AND EXISTS (SELECT 1 FROM pg_catalog.pg_locks l
                          WHERE l.pid = a.pid AND l.relation = ANY(
                              SELECT to_regclass(t)::oid FROM unnest(%s::text[]) t))
            """,
            (roles, tables),
        ).fetchall()
        self.log(f"grace of {self.settings.grace}s over: cancelled {len(rows)} app queries on the group", None)

    def _resume_all(self, entries) -> None:
        self._command_all([resume_command(e) for _, e in entries],
                          deadline=time.monotonic() + self.settings.max_pause, tolerate=already_resumed)

    def _command_all(self, commands: str | list[str], *, deadline: float,
                     tolerate: Callable[[BaseException], bool] | None = None) -> None:
        """One admin command on every console at once (after the point of no return: an
        error or a PgBouncer that does not answer in time is for the watchdog)."""
        if isinstance(commands, str):
            commands = [commands] * len(self.consoles)
        outcomes = command_all(self.consoles, commands, deadline=deadline)
        verb = commands[0].split()[0] if commands else ""
        errors = [f"PgBouncer {c.display}: no answer to {verb}" if o.late else
                  o.error.message if isinstance(o.error, OperationFailed) else describe_error(o.error)
                  for c, o in zip(self.consoles, outcomes, strict=True)
                  if o.late or (o.error is not None and not (tolerate and tolerate(o.error)))]
        if errors:
            raise OperationFailed("; ".join(errors) + " (the watchdog retries)")

    def _abort(self, old, new, entries, *, revoked: bool, granted: bool, forward_stopped: bool,
               slot_created: bool, granted_early: bool) -> list[str]:
        """Undo what the pause did, traffic first: privileges and RESUME on the old side.
        Returns the PgBouncers not resumed (unreachable, or too slow to answer)."""
        problems = []
        if revoked:
            try:
                restore = self._old_privileges_sql(grant=True)
                if restore:
                    with old.transaction():
                        old.execute(sql.SQL("; ").join(restore))
            except Exception as exc:  # noqa: BLE001
                problems.append(f"restoring privileges: {describe_error(exc)}")

        def resume(bouncer, entry: str) -> None:
            # The console that issued a PAUSE still waits for it: use a new one.
            with PgBouncerConsole(bouncer.admin_dsn) as console:
                console.resume(entry)

        outcomes = run_all([lambda b=b, e=e: resume(b, e) for b, e in entries], timeout=ABORT_RESUME_WAIT)
        unresumed = []
        for (bouncer, entry), outcome in zip(entries, outcomes, strict=True):
            if not outcome.ok:
                why = "no answer" if outcome.late else describe_error(outcome.error)
                unresumed.append(f"{describe(bouncer.admin_dsn)}")
                problems.append(f"RESUME {entry} on {describe(bouncer.admin_dsn)}: {why} (the watchdog keeps trying)")
        try:
            undo = [*switch_statements(self.inside, grant=False), self.fence_new] if granted else []
            undo += switch_statements(self.outside, grant=False) if granted_early else []
            if undo:
                with new.transaction():
                    new.execute(sql.SQL("; ").join(undo))
            if slot_created:
                replication.drop_slot(new, self.d.new_slot)
            if forward_stopped:
                replication.set_subscription_enabled(new, self.d.old_subscription, True)
        except Exception as exc:  # noqa: BLE001 - the next run reconciles replication
            problems.append(f"restoring replication: {describe_error(exc)}")
        if problems:
            self.log("abort left work for the next run: " + "; ".join(problems), None)
        return unresumed

    def _check_routes(self, entries) -> None:
        found = all_or_raise([c.databases for c in self.consoles])
        for console, (_, entry), databases in zip(self.consoles, entries, found, strict=True):
            current = databases.get(entry)
            if current is None or not current.points_at(self.d.new_dsn):
                raise OperationFailed(
                    f"PgBouncer {console.display}: entry {entry} does not point at the "
                    f"{self.d.new_label} ({describe(self.d.new_dsn)}) after RELOAD")

    def _after_resume(self, old: psycopg.Connection, new: psycopg.Connection) -> None:
        """Outside the pause: the reverse subscription attaches to the slot made inside
        it, the old subscription (whose slot would retain WAL forever) goes, and the
        privileges left for after the pause are revoked on the old side."""
        late = switch_statements(self.outside, grant=False)
        if late:
            with old.transaction():
                old.execute(sql.SQL("; ").join(late))
        finish_switch(self.d, old, new)
        self.log(f"subscription {self.d.new_subscription} streams back to the {self.d.old_label}; "
                 f"dropped {self.d.old_subscription} and its slot", None)


def fence_switch(playbook: Playbook, d: Direction) -> tuple[sql.Composable, ...]:
    """(fence the old side, lift it, fence the new side, lift it): the four positions of
    the write fence a cutover in direction `d` may put each side in."""
    def fence(serving: bool, serving_side: Side) -> sql.Composable:
        return guards.fence_function_statement(playbook, playbook.name, serving=serving,
                                               serving_side=str(serving_side))
    return (fence(False, d.new_label), fence(True, d.old_label),
            fence(False, d.old_label), fence(True, d.new_label))


def finish_switch(d: Direction, old: psycopg.Connection, new: psycopg.Connection) -> None:
    """After a cutover (or a crash after its point of no return): subscribe the old side
    to the new one on the slot made in the pause, and drop the old subscription."""
    replication.create_subscription(
        old, new, name=d.new_subscription, publisher_dsn=d.new_dsn, publication=d.new_publication,
        slot=d.new_slot, copy_data=False, create_slot=False)
    replication.drop_subscription(new, d.old_subscription, old)
    # A side that crashed while a table was copying can leave that copy's slot behind
    # on the publisher, with no subscription to drop it: it would retain WAL forever.
    try:
        replication.drop_orphaned_tablesync_slots(old, new)
    except psycopg.Error:
        pass  # reading the subscriber's system identifier needs rights the role may lack

