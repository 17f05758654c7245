"""The cutover (DESIGN section 4): the client-visible pause, in either direction, written once.

`cutover_sequence` is the whole protocol as actions (migrator.move.actions), in the
order they run. Every reader reads that one sequence: `plan`, `plan --sql` and
`rollback --dry-run` print it (`render`); `Cutover.run` below runs it and records each
action in the event log exactly as rendered (a run-time value as `<name>`); the
inverses of its actions are the undo log (migrator.move.undo) that the abort, the
watchdog and recovery run. The reverse cutover (rollback after a move) is the same
sequence with the sides swapped.

The pause window is the product's headline number, so everything slow stays outside
it: the lag gate and a warm-up marker, the routes written beside the config, the
sequences copied once, the app's privileges granted early where the write fence
covers the group, the watchdog started and briefed. Inside it nothing grows with the
group or the fleet: PAUSE to every PgBouncer at once, one transaction on the old side
(its fence up, the sync marker committed), the new side's fence lifted and the
sequences that moved copied while the marker is awaited, forward replication stopped
and the reverse slot made, the point of no return recorded, the reroute, RESUME.

Before the point of no return any failure, or an overrun of max_pause, aborts: the
undo log runs (traffic first), replication is as it was. After it the tool only
finishes forward. A watchdog process resumes PgBouncer if the tool dies or hangs
while it is paused.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace

import psycopg
from psycopg import sql

from migrator import names, waiting
from migrator.errors import OperationFailed
from migrator.move.actions import (
    Action,
    ConsoleCommand,
    Recorded,
    RouteChange,
    Statement,
    Transaction,
    inverse_records,
    record,
    render,
    run_statement,
)
from migrator.move.context import MoveContext
from migrator.move.guarding import Guards
from migrator.move.phases import CutoverPhase, DirectionName, PauseOutcome
from migrator.move.undo import resume_with_fresh_consoles, run_undo
from migrator.move.watchdog import Watchdog, WatchdogOrders
from migrator.pgbouncer.config import entry_for_side
from migrator.pgbouncer.console import PgBouncerConsole, already_resumed
from migrator.pgbouncer.fleet import all_or_raise, command_all, run_all
from migrator.pgbouncer.route import original_entries, route_for
from migrator.playbook import Playbook, TableName, format_duration, format_size
from migrator.postgres import replication
from migrator.postgres.catalog import guarded_objects
from migrator.postgres.connection import Side, SideConnection, connect, describe, describe_error
from migrator.postgres.ddl import AppPrivilege
from migrator.postgres.grants import inside_and_outside_the_pause, switch_statements
from migrator.postgres.statement import Privilege, RunValue, attribute, bound, may, member_of, owns
from migrator.postgres.subscription_health import SubscriptionWatch
from migrator.testhooks import hold

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


class PauseStuck(CutoverAborted):
    """Some PgBouncers did not pause within max_pause (`late`: their indexes)."""

    def __init__(self, message: str, late: list[int]) -> None:
        super().__init__(message)
        self.late = late


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


@dataclass(frozen=True)
class CutoverFacts:
    """What the cutover's statements depend on: read from the plan's snapshot for `plan`,
    from the checkpoint for `execute`, `rollback` and the dry run."""

    app_privileges: tuple[AppPrivilege, ...]
    sequences: tuple[TableName, ...]
    entries: Mapping[str, str]          # each PgBouncer's group entry before the move, by route_key
    source_version: int                 # server_version_num
    target_version: int
    # Does the write fence cover every relation of the group on both sides? Then the
    # app's table privileges switch around the pause, not inside it. A move begun by
    # this version always has it (the replicate step makes it); the run checks.
    fenced: bool = True

    def version(self, side: Side) -> int:
        return self.source_version if side == Side.SOURCE else self.target_version


# --------------------------------------------------------------------------- the sequence


@dataclass(frozen=True)
class CutoverSequence:
    """The cutover in one direction, as the actions that run, stage by stage."""

    direction: Direction
    # before the pause
    lag_gate: Statement
    warm_up: Transaction
    warm_up_applied: Statement
    prepare_routes: tuple[RouteChange, ...]
    early_sequences: tuple[Statement, ...]         # read, write; () when the group uses none
    early_grants: Transaction | None
    # the pause
    pause: tuple[ConsoleCommand, ...]
    cancel: Statement | None
    # cutover.session_clients: close: after grace, the server connections the group's
    # entry holds for its session clients (SHOW SERVERS), ended on the old side.
    session_servers: tuple[ConsoleCommand, ...]
    close_sessions: Statement | None
    old_switch: Transaction
    new_switch: Transaction
    marker_applied: Statement
    sequences: tuple[Statement, ...]               # read, write
    stop_forward: Statement
    reverse_slot: Statement
    # the point of no return, then
    reroute: tuple[RouteChange, ...]
    reload: tuple[ConsoleCommand, ...]
    resume: tuple[ConsoleCommand, ...]
    # after RESUME
    check_routes: tuple[ConsoleCommand, ...]
    late_revokes: Transaction | None
    reverse_subscription: Statement
    drop_forward: Statement

    def stages(self) -> list[tuple[str, tuple[Action, ...]]]:
        def some(*actions: Action | None) -> tuple[Action, ...]:
            return tuple(a for a in actions if a is not None)

        return [
            ("before the pause", some(self.lag_gate, self.warm_up, self.warm_up_applied, *self.prepare_routes,
                                      *self.early_sequences, self.early_grants)),
            ("pause", some(*self.pause, self.cancel, *self.session_servers, self.close_sessions)),
            ("old side's switch", (self.old_switch,)),
            ("catch up", some(self.new_switch, self.marker_applied, *self.sequences)),
            ("replication switch", (self.stop_forward, self.reverse_slot)),
            ("reroute", (*self.reroute, *self.reload)),
            ("resume", self.resume),
            ("after resume", some(*self.check_routes, self.late_revokes, self.reverse_subscription,
                                  self.drop_forward)),
        ]

    def actions(self) -> list[Action]:
        return [a for _, stage in self.stages() for a in stage]

    def render(self) -> list[Statement]:
        return render(self.actions())

    def before_the_point_of_no_return(self) -> list[Action]:
        stages = self.stages()
        reroute = [name for name, _ in stages].index("reroute")
        return [a for _, stage in stages[:reroute] for a in stage]

    def undo_log(self) -> list[dict]:
        """The inverses of what runs before the point of no return, in order."""
        return inverse_records(self.before_the_point_of_no_return())

    def finish_log(self) -> list[dict]:
        """What finishes the cutover forward once its point of no return is recorded, as
        plain records (the watchdog's orders): each route written, RELOAD, RESUME."""
        out = [{"kind": "route", "bouncer": r.bouncer, "value": r.value} for r in self.reroute]
        return out + [record(c) for c in (*self.reload, *self.resume)]


def cutover_sequence(playbook: Playbook, d: Direction, facts: CutoverFacts) -> CutoverSequence:
    """The protocol, in its order. Everything that runs in a cutover is here."""
    cut = playbook.cutover
    old, new = str(d.old_label), str(d.new_label)
    guards = Guards(playbook)
    inside, outside = inside_and_outside_the_pause(facts.app_privileges, fenced=facts.fenced)
    consoles = [(i, f"pgbouncers[{i}] {describe(b.admin_dsn)}", b) for i, b in enumerate(playbook.pgbouncers)]
    routes = [(i, route_for(b), _new_entry(playbook, facts, b, d.new_label)) for i, b in enumerate(playbook.pgbouncers)]

    def statements(on: str, composed: list[sql.Composable], note: str = "",
                   needs: tuple[Privilege, ...] = ()) -> tuple[Statement, ...]:
        return tuple(Statement(on, q, note if i == 0 else "", needs=needs if i == 0 else ())
                     for i, q in enumerate(composed))

    def console(verb: str, note: str = "", *, entry: bool = True, inverse: str | None = None) -> tuple:
        return tuple(ConsoleCommand(
            i, f"{verb} {b.database}" if entry else verb, where, note,
            ConsoleCommand(i, f"{inverse} {b.database}", where) if inverse else None) for i, where, b in consoles)

    sequences = list(facts.sequences)
    read = replication.read_sequences_statement(replication.sequences_array(sequences)) if sequences else None

    def copy_sequences(note: str) -> tuple[Statement, ...]:
        if read is None:
            return ()
        return (Statement(old, read, note, needs=tuple(may("SELECT", "SEQUENCE", q.qualified, "role.sequence")
                                                       for q in sequences)),
                Statement(new, replication.write_sequences_statement(), "the values just read, of those that moved",
                          needs=tuple(may("UPDATE", "SEQUENCE", q.qualified, "role.sequence") for q in sequences)))

    grants_early = switch_statements(outside, grant=True)
    revokes_late = switch_statements(outside, grant=False)
    fence_old, unfence_old = guards.fence(d.old_label, serving=d.new_label), guards.fence(d.old_label, serving=d.old_label)
    fence_new, unfence_new = guards.fence(d.new_label, serving=d.old_label), guards.fence(d.new_label, serving=d.new_label)
    subscriber_version = facts.version(d.old_label)
    closing = cut.session_clients == "close"
    return CutoverSequence(
        direction=d,
        lag_gate=Statement(old, replication.slot_lag_statement(d.old_slot),
                           f"before the pause, until the lag is under max_lag ({format_size(cut.max_lag)})"),
        warm_up=Transaction(old, statements(old, replication.marker_statements(playbook, f"{d.name}-warmup")),
                            "a warm-up marker, until the " + new + " applies one quickly"),
        warm_up_applied=Statement(new, replication.marker_arrived_statement(playbook), "until it has arrived"),
        prepare_routes=tuple(RouteChange(i, r.entry, value, r.where, "prepare",
                                         "written beside the file before the pause, put in place at the reroute")
                             for i, r, value in routes),
        early_sequences=copy_sequences("before the pause, every sequence once; inside it, those that moved since"),
        early_grants=Transaction(new, statements(new, grants_early, f"before the pause: the {new}'s write fence "
                                                 "refuses the app's writes until the pause lifts it",
                                                 _owners(outside, "role.grant")),
                                 inverse=Transaction(new, statements(new, revokes_late))) if grants_early else None,
        pause=console("PAUSE", inverse="RESUME"),
        session_servers=console("SHOW SERVERS", "after grace, if the PAUSE still waits, on a console of its own: "
                                "the server connections the entry's session clients hold", entry=False)
        if closing else (),
        close_sessions=Statement(
            old, sql.SQL("SELECT pg_catalog.pg_terminate_backend(p) FROM unnest({}::int[]) AS p").format(
                RunValue("server_pids")),
            "cutover.session_clients: close: the session clients lose their connection and reconnect to the new "
            "route once RESUMEd", needs=(member_of("pg_signal_backend", "role.signal_backend"),))
        if closing else None,
        cancel=(Statement(old, _cancel_statement(playbook), f"after grace ({format_duration(cut.grace)}), "
                          "if the PAUSE still waits: the app roles' queries on the group",
                          needs=(member_of("pg_signal_backend", "role.signal_backend", level="warn"),))
                if playbook.app_roles else None),
        old_switch=Transaction(
            old,
            (Statement(old, sql.SQL("SET LOCAL lock_timeout = {}").format(RunValue("lock_timeout")),
                       "what is left of max_pause; one round trip, one transaction to the marker's commit"),
             *statements(old, switch_statements(inside, grant=False), needs=_owners(inside, "role.revoke")),
             Statement(old, fence_old.sql, "the write fence moves to the " + old),
             *statements(old, replication.marker_statements(playbook, d.name),
                         "the sync marker, in the fence's commit: no write on the group commits after it")),
            inverse=Transaction(old, (*statements(old, switch_statements(inside, grant=True)), unfence_old))),
        new_switch=Transaction(
            new, (*statements(new, switch_statements(inside, grant=True), needs=_owners(inside, "role.grant")),
                  unfence_new),
            "on a connection of its own, while the marker is awaited; the point of no return waits for it",
            inverse=Transaction(new, (*statements(new, switch_statements(inside, grant=False)), fence_new))),
        marker_applied=Statement(new, replication.marker_arrived_statement(playbook), "until the marker has arrived"),
        sequences=copy_sequences("one statement for every sequence, while the marker is awaited"),
        stop_forward=Statement(new, replication.set_subscription_statement(d.old_subscription, False), "",
                               Statement(new, replication.set_subscription_statement(d.old_subscription, True),
                                         op=("enable_subscription", d.old_subscription)),
                               op=("disable_subscription", d.old_subscription)),
        reverse_slot=Statement(new, replication.create_slot_statement(
                                   d.new_slot, failover=replication.slot_failover(facts.version(d.new_label))),
                               f"from here on the {new} keeps its changes for the {old}",
                               Statement(new, replication.drop_slot_statement(d.new_slot), op=("drop_slot", d.new_slot)),
                               needs=(attribute("REPLICATION", "role.replication"),), op=("create_slot", d.new_slot)),
        reroute=tuple(RouteChange(i, r.entry, value, r.where, "commit", "put in place: the point of no return is passed")
                      for i, r, value in routes),
        reload=console("RELOAD", entry=False),
        resume=console("RESUME"),
        check_routes=console("SHOW DATABASES", f"checks that the entry routes to the {new}", entry=False),
        late_revokes=Transaction(old, statements(old, revokes_late, "after RESUME",
                                                 _owners(outside, "role.revoke", level="warn"))) if revokes_late else None,
        reverse_subscription=Statement(old, replication.subscription_statement(
            d.new_subscription, d.new_dsn, d.new_publication, d.new_slot, copy_data=False, create_slot=False,
            run_as_owner=replication.runs_as_owner(subscriber_version)), "after RESUME, on the slot made in the pause",
            needs=subscription_needs(subscriber_version, publisher=new)),
        drop_forward=Statement(new, replication.drop_subscription_statement(d.old_subscription),
                               "after RESUME; drops its slot on the " + old + " too"),
    )


def _owners(privileges, code: str, *, level: str = "block") -> tuple[Privilege, ...]:
    """To GRANT or REVOKE the app's privileges on an object: its owner's privileges (a
    REVOKE by anyone else revokes only what they granted, and says nothing)."""
    objects = sorted({(p.kind, TableName(p.schema, p.name).qualified) for p in privileges})
    return tuple(owns(kind, name, code, level=level) for kind, name in objects)


def subscription_needs(subscriber_version: int, *, publisher: str) -> tuple[Privilege, ...]:
    """To create a subscription: before PostgreSQL 16 a superuser; from 16 the privileges
    of pg_create_subscription and CREATE on the database. Its connections to the
    publisher log in as the publisher's DSN role, which needs REPLICATION there."""
    if subscriber_version >= 160000:
        create = (member_of("pg_create_subscription", "role.create_subscription"),
                  may("CREATE", "DATABASE", "", "role.create_objects"))
    else:
        create = (attribute("SUPERUSER", "role.create_subscription"),)
    return (*create, attribute("REPLICATION", "role.replication", on=publisher))


def _new_entry(playbook: Playbook, facts: CutoverFacts, bouncer, side: Side) -> str:
    """The group entry's value routing to `side`, from the entry before the move (its own
    options kept); what `plan` cannot read yet (a PgBouncer down) is named, not guessed."""
    original = facts.entries.get(bouncer.route_key)
    if original is None:
        return f"<the entry routed to the {side}>"
    try:
        return entry_for_side(original, playbook, side)
    except ValueError:  # an entry shlex cannot split: the cutover says so when it reads it
        return f"<the entry routed to the {side}>"


def _cancel_statement(playbook: Playbook) -> sql.Composable:
    return sql.SQL(
        "SELECT pg_catalog.pg_cancel_backend(a.pid) FROM pg_catalog.pg_stat_activity a "
        "WHERE a.usename = ANY({}) AND a.state = 'active' AND a.pid <> pg_catalog.pg_backend_pid() "
        "AND EXISTS (SELECT 1 FROM pg_catalog.pg_locks l WHERE l.pid = a.pid AND l.relation = ANY("
        "SELECT pg_catalog.to_regclass(t)::oid FROM unnest({}::text[]) t))"
    ).format(sql.Literal(list(playbook.app_roles)), sql.Literal([t.qualified for t in playbook.tables]))


def cutover_notes(playbook: Playbook, facts: CutoverFacts) -> list[str]:
    cut = playbook.cutover
    count = len(facts.sequences)
    return [
        f"starts only when the lag is under max_lag ({format_size(cut.max_lag)}) and a marker "
        "row crosses quickly",
        f"the application sees one pause, at most max_pause ({format_duration(cut.max_pause)}); "
        f"the app roles' queries still running after grace ({format_duration(cut.grace)}) are cancelled",
        f"{count} sequence{'' if count == 1 else 's'} copied during the pause",
        "the point of no return is the reroute: before it any failure or a pause past max_pause "
        "aborts (privileges restored, RESUME on the old side, replication as it was); after it the "
        "move finishes forward",
        "a watchdog process resumes PgBouncer if the tool dies or hangs during the pause",
    ]


# --------------------------------------------------------------------------- the facts and the record of a running move


def server_versions(ctx: MoveContext) -> tuple[int, int]:
    """(source, target) server_version_num as the preflight recorded them; a move begun
    by an earlier version asks the servers."""
    pre = ctx.data("preflight")
    if pre.source_version and pre.target_version:
        return pre.source_version, pre.target_version
    versions = []
    for dsn, side in ((ctx.playbook.source.dsn, Side.SOURCE), (ctx.playbook.target.dsn, Side.TARGET)):
        with connect(dsn, side=side, purpose="status") as conn:
            versions.append(conn.info.server_version)
    return versions[0], versions[1]


def cutover_facts(ctx: MoveContext, *, fenced: bool = True) -> CutoverFacts:
    """What the cutover's statements depend on, from the checkpoint."""
    schema = ctx.data("schema")
    source_version, target_version = server_versions(ctx)
    return CutoverFacts(
        app_privileges=tuple(schema.privileges),
        sequences=tuple(schema.sequence_names),
        entries=ctx.data("preflight").original_entries or original_entries(ctx.playbook),
        source_version=source_version,
        target_version=target_version,
        fenced=fenced,
    )


def record_action(ctx: MoveContext, d: Direction, who: str = "cutover"):
    """The event log's record of one action, each of its statements as rendered."""
    def record(item: Recorded) -> None:
        what = f"{d.name} {who}: {item.outcome}" + (f" ({item.detail})" if item.detail else "")
        for statement in item.statements:
            where = "" if statement.on in ("source", "target") else f" on {statement.on}"
            ctx.store.log(ctx.move, "sql", what + where, step="cutover", seconds=item.seconds, sql=statement.text)
    return record


# --------------------------------------------------------------------------- the window


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


@dataclass
class Sessions:
    """The cutover's connections, each with one job (opened before the pause)."""

    old: SideConnection            # the gate, the grace cancel, the after-RESUME work
    new: SideConnection            # the marker's wait, the replication switch
    old_switch: SideConnection     # the fence and the marker's commit; the sequences read
    new_switch: SideConnection     # the new side's fence lifted, while the marker is awaited
    new_sequences: SideConnection  # setval, while the marker is awaited
    consoles: list[PgBouncerConsole] = field(default_factory=list)
    # cutover.session_clients: close: a second console each, for SHOW SERVERS while the
    # first one waits for its PAUSE.
    spare_consoles: list[PgBouncerConsole] = field(default_factory=list)


class Cutover:
    """One cutover attempt. `run()` returns the PauseWindow or raises CutoverAborted."""

    def __init__(
        self,
        playbook: Playbook,
        direction: Direction,
        facts: CutoverFacts,
        *,
        checkpoint: Callable[..., None],
        log: Callable[[str], None],
        record: Callable[[Recorded], None],
        state_url: str | None = None,
        wait_lag_timeout: float = 300,
    ) -> None:
        self.playbook = playbook
        self.d = direction
        self.facts = facts
        self.settings = playbook.cutover
        self.checkpoint = checkpoint      # (**fields): durable; the point of no return by compare-and-set
        self.log = log                    # a sentence for the event log and the person watching
        self.record = record              # an action as it ran, for the event log
        self.state_url = state_url
        self.wait_lag_timeout = wait_lag_timeout
        self.window = PauseWindow(direction.name)
        self.seq = cutover_sequence(playbook, direction, facts)
        self.rewrites: list = []          # the routes prepared before the pause
        self.paused = False               # the first PAUSE was sent
        self._early: list[dict] = []      # the undo of what ran before the pause (early grants, files)
        self._copied: dict[TableName, tuple[int, bool]] = {}   # sequence values copied before the pause
        self._ran: dict[int, Recorded] = {}
        self._flushed: set[int] = set()
        self._said: list[str] = []        # the pause's sentences, logged after it

    def _hold(self, point: str) -> None:
        hold("cutover", f"{self.d.name}-{point}")

    # -- the protocol ------------------------------------------------------------

    def run(self) -> PauseWindow:
        """The stages, top to bottom; every resource is released whatever stage fails."""
        with contextlib.ExitStack() as stack:
            stack.callback(self._flush)     # whatever stage fails, the event log gets what ran
            s = self._open(stack)
            self._check_fence(s)
            self.log(self._gate(s))
            self._hold("gated")
            self.log(self._prepare(stack, s))
            self._hold("prepared")
            watchdog = self._start_watchdog(stack, s)
            self._hold("briefed")
            self._flush()
            self._pause_window(s, watchdog)
            self._flush()
            self.log(self._after_resume(s))
            self._hold("finished")
        return self.window

    def _open(self, stack: contextlib.ExitStack) -> Sessions:
        def side(dsn: str, label: Side, purpose: str) -> SideConnection:
            conn = connect(dsn, side=label, purpose=purpose)
            stack.callback(conn.close)
            return conn

        return Sessions(
            old=side(self.d.old_dsn, self.d.old_label, "cutover old"),
            new=side(self.d.new_dsn, self.d.new_label, "cutover new"),
            old_switch=side(self.d.old_dsn, self.d.old_label, "cutover privileges"),
            new_switch=side(self.d.new_dsn, self.d.new_label, "cutover switch"),
            new_sequences=side(self.d.new_dsn, self.d.new_label, "cutover sequences"))

    def _check_fence(self, s: Sessions) -> None:
        """Does each side carry the move's write fence on every relation of the group?
        Then the fence alone keeps the old side's rows still from the pause on, and the
        table privileges switch around the pause, not inside it (the replicate step
        makes the fence; only a move started by an earlier version can lack it)."""
        relations, _ = guarded_objects(s.old_switch, list(self.playbook.tables))
        guards = Guards(self.playbook)
        fenced = True
        for label, conn in ((self.d.old_label, s.old_switch), (self.d.new_label, s.new)):
            missing, function = guards.unfenced(conn, relations)
            if missing or not function:
                self.log(f"the write fence is missing on the {label} "
                         f"({f'{len(missing)} relations' if missing else 'its function'}): "
                         "the app's table privileges switch inside the pause")
                fenced = False
                break
        self.facts = replace(self.facts, fenced=fenced)
        self.seq = cutover_sequence(self.playbook, self.d, self.facts)

    # -- before the pause ----------------------------------------------------------

    def _gate(self, s: Sessions) -> str:
        """Gate on lag, then prove with a marker that the apply worker is caught up:
        every second of apply backlog would otherwise be a second of pause."""
        lag_limit = self.settings.max_lag
        deadline = time.monotonic() + self.wait_lag_timeout
        # An apply worker failing on every attempt would leave the lag small and the
        # warm-up marker unapplied: stop with the server's words instead.
        watch = SubscriptionWatch(s.new, self.d.old_subscription, side=str(self.d.new_label), verb=self.d.verb)
        started = time.monotonic()
        lag: list[int] = []

        def lag_under_limit() -> bool | None:
            watch.check()
            row = s.old.execute(self.seq.lag_gate.sql).fetchone()
            if row is None or row[0] is None:
                raise replication.slot_lost(self.d.old_slot, str(self.d.old_label),
                                            after_cutover=self.d.old_label == Side.TARGET)
            lag[:] = [int(row[0])]
            return True if lag[0] <= lag_limit else None

        waiting.poll(lag_under_limit, every=0.2, deadline=deadline, timed_out=lambda: OperationFailed(
            f"replication lag stayed above {lag_limit} bytes for {self.wait_lag_timeout:.0f}s; "
            "not starting the cutover"))
        self._did(self.seq.lag_gate, time.monotonic() - started, detail=f"lag {lag[0]} bytes")
        started = time.monotonic()
        for attempt in range(1, 21):
            marker = replication.commit_marker(s.old, self.playbook, f"{self.d.name}-warmup",
                                               [q.sql for q in self.seq.warm_up.statements])
            try:
                waited = replication.wait_for_marker(s.new, self.playbook, marker, deadline=time.monotonic() + 5)
            except replication.MarkerTimeout:
                watch.check()
                continue
            if waited < self.settings.max_pause / 4:
                detail = f"applied in {waited * 1000:.0f} ms" + (f" (marker {attempt})" if attempt > 1 else "")
                self._did(self.seq.warm_up, time.monotonic() - started)
                self._did(self.seq.warm_up_applied, waited, detail=detail)
                return f"lag {format_size(lag[0])}, under max_lag; a warm-up marker {detail}"
        raise OperationFailed(
            f"the {self.d.new_label} applies changes too slowly to start a pause "
            f"shorter than max_pause ({self.settings.max_pause}s); try again when load is lower")

    def _prepare(self, stack: contextlib.ExitStack, s: Sessions) -> str:
        """Everything that can be done before the pause is: the consoles open, the new
        entries written beside the old config (which proves they can be written) or
        handed to each PgBouncer's prepare command, the sequences copied once, the app's
        privileges granted on the new side where its fence still refuses their writes.
        Should the pause never begin, the new side gets back what it had."""
        connected = run_all([lambda b=b: PgBouncerConsole(b.admin_dsn) for b in self.playbook.pgbouncers])
        for outcome in connected:
            if outcome.value is not None:
                s.consoles.append(outcome.value)
                stack.callback(outcome.value.close)
        for outcome in connected:
            if outcome.error is not None:
                raise outcome.error
        if self.seq.session_servers:
            for console in all_or_raise([lambda b=b: PgBouncerConsole(b.admin_dsn) for b in self.playbook.pgbouncers]):
                s.spare_consoles.append(console)
                stack.callback(console.close)
        routes = [route_for(b) for b in self.playbook.pgbouncers]
        started = time.monotonic()
        prepared = run_all([lambda r=r, c=c: r.prepare(c.value)
                            for r, c in zip(routes, self.seq.prepare_routes, strict=True)])
        self.rewrites = [o.value for o in prepared if o.value is not None]
        for rewrite in self.rewrites:
            stack.callback(rewrite.discard)   # once renamed into place there is nothing left to discard
            if getattr(rewrite, "temporary", None) is not None:
                self._early.append({"kind": "discard", "path": str(rewrite.temporary)})
        failed = next((o.error for o in prepared if o.error is not None), None)
        if failed is not None:
            message = failed.message if isinstance(failed, OperationFailed) else describe_error(failed)
            raise OperationFailed(f"the cutover did not start: {message}; nothing was paused",
                                  hint=getattr(failed, "hint", None)) from failed
        for change in self.seq.prepare_routes:
            self._did(change, time.monotonic() - started)
        copied = self._copy_sequences(s, self.seq.early_sequences, before=True)
        grants = 0
        if self.seq.early_grants is not None:
            self._early += inverse_records([self.seq.early_grants])
            stack.callback(self._unless_paused, s)
            self._run(s.new, self.seq.early_grants)
            grants = len(self.seq.early_grants.statements)
        entries = len(self.rewrites)
        return (f"{entries} PgBouncer entr{'y' if entries == 1 else 'ies'} prepared; {copied} sequence "
                f"value{'' if copied == 1 else 's'} copied; {grants} early grant{'' if grants == 1 else 's'} "
                f"on the {self.d.new_label}")

    def _unless_paused(self, s: Sessions) -> None:
        """A pause that never began: the new side's early grants taken back."""
        if self.paused:
            return
        outcome = run_undo([r for r in self._early if r["kind"] == "sql"], old_side=str(self.d.old_label),
                           connection=lambda _: s.new, consoles=lambda _: {})
        if outcome.problems:
            self.log("could not take the early grants back: " + "; ".join(outcome.problems))

    def _start_watchdog(self, stack: contextlib.ExitStack, s: Sessions) -> Watchdog:
        """The watchdog process, with its orders read and the state store open: inside the
        pause it only learns its deadline (`arm`). Never armed, it exits when released."""
        watchdog = Watchdog()
        stack.callback(watchdog.release)
        watchdog.brief(WatchdogOrders(
            move=self.playbook.name, deadline=0, old_dsn=self.d.old_dsn, new_dsn=self.d.new_dsn,
            old_side=str(self.d.old_label), back=self.seq.undo_log() + self._early, forward=self.seq.finish_log(),
            pgbouncers=[{"admin_dsn": b.admin_dsn, "entry": b.database, "route": route_for(b).orders()}
                        for b in self.playbook.pgbouncers],
            state_url=self.state_url,
            old_backend_pids=[s.old.info.backend_pid, s.old_switch.info.backend_pid],
        ))
        watchdog.wait_ready()
        return watchdog

    # -- the pause window --------------------------------------------------------

    def _pause_window(self, s: Sessions, watchdog: Watchdog) -> None:
        settings = self.settings
        work = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="cutover")
        granting: concurrent.futures.Future | None = None
        # The undo log, durable before the first PAUSE: from here on whoever gives the
        # traffic back (this run, the watchdog, the next run) runs it.
        self.checkpoint(phase=CutoverPhase.PAUSING, pause_started=time.time(), fenced=self.facts.fenced,
                        undo=self.seq.undo_log() + self._early, watchdog=watchdog.identity())
        start = mark = time.monotonic()
        pnr_deadline = start + settings.max_pause - REROUTE_BUDGET

        def lap(part: str) -> None:
            nonlocal mark
            now = time.monotonic()
            self.window.parts[part] = round(now - mark, 4)
            mark = now

        try:
            try:
                self._hold(str(CutoverPhase.PAUSING))
                watchdog.arm(time.time() + settings.max_pause + WATCHDOG_MARGIN)
                self.paused = True
                start = mark = time.monotonic()
                pnr_deadline = start + settings.max_pause - REROUTE_BUDGET
                self._say(self._pause_all(s, start, pnr_deadline))
                lap("pause")
                self._hold("paused")
                # A tool descheduled (or stopped) after PAUSE may find the watchdog has
                # already resumed the old side: fencing it now would fail live clients.
                if time.monotonic() > pnr_deadline or watchdog.fired():
                    raise CutoverAborted(f"max_pause ({settings.max_pause}s) was used up by the PAUSE itself")
                marker = self._switch_old(s, pnr_deadline)
                lap("old_switch")
                self._hold("old-switched")
                # Only now, with the old side fenced, the new side's fence is lifted (and its
                # table privileges granted, when the fence does not cover the group): never
                # both sides open to a client that bypasses PgBouncer. It runs while the
                # marker is awaited; the point of no return waits for it.
                granting = work.submit(self._switch_new, s)
                # Every client is paused and the old side fenced: the sequences are final
                # there (for every row that can still commit), and copying them needs
                # nothing from the marker's wait.
                copying = work.submit(self._copy_sequences, s, self.seq.sequences)
                # Polled every millisecond: the clients wait, the servers have little else to do.
                waited = replication.wait_for_marker(s.new, self.playbook, marker, deadline=pnr_deadline, poll=0.001)
                self.window.marker_wait = round(waited, 4)
                self._did(self.seq.marker_applied, waited)
                copying.result()
                lap("sync_marker")
                self._hold("caught-up")
                self._run(s.new, self.seq.stop_forward)
                # Only the slot is needed inside the pause: from its creation on, the new
                # side's changes are kept for the reverse subscription, which attaches
                # to it after RESUME (a subscription costs a walsender start-up here).
                self._run(s.new, self.seq.reverse_slot)
                granting.result()
                lap("replication_switch")
                self._hold("replication-switched")
                if time.monotonic() > pnr_deadline:
                    raise CutoverAborted(f"max_pause ({settings.max_pause}s) would be exceeded before the reroute")
                if watchdog.fired():
                    raise CutoverAborted("the watchdog resumed traffic before the reroute")
                # Recorded before it is crossed, and last in this block: should the
                # watchdog have given traffic back first, the record refuses it and this
                # run aborts like any other before the point of no return.
                self.checkpoint(phase=CutoverPhase.POINT_OF_NO_RETURN)
            except Exception as exc:  # noqa: BLE001 - every failure before the PNR aborts the same way
                if granting is not None:
                    concurrent.futures.wait([granting])  # its switch is undone below, once done
                self._abort(s, watchdog, start, exc)

            # ---- the point of no return --------------------------------------------
            watchdog.crossing_point_of_no_return()
            try:
                self._hold(str(CutoverPhase.POINT_OF_NO_RETURN))
                self._say(self._reroute(s))
                lap("reroute")
                self._hold("rerouted")
                self._command_all(s, self.seq.resume, tolerate=already_resumed)
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
        self.window.outcome = PauseOutcome.COMPLETED
        self.checkpoint(phase=CutoverPhase.RESUMED, last_window=self.window.to_dict())
        self._hold(str(CutoverPhase.RESUMED))
        self.log("; ".join(self._said))
        self.log(f"traffic resumed on the {self.d.new_label} after a pause of {self.window.total * 1000:.0f} ms")

    def _say(self, sentence: str) -> None:
        """A stage's sentence inside the pause: kept in memory, logged after it."""
        self._said.append(sentence)

    def _pause_all(self, s: Sessions, start: float, deadline: float) -> str:
        """PAUSE every entry at once; after `grace`, cancel the app's queries on the
        group; past the deadline, give up (the caller aborts)."""
        cancelled: list[int] = []
        closed: list[int] = []

        def after_grace() -> None:
            if cancelled or time.monotonic() - start < self.settings.grace:
                return
            began = time.monotonic()
            if self.seq.cancel is not None:
                cancelled.append(len(s.old.execute(self.seq.cancel.sql).fetchall()))
                self._did(self.seq.cancel, time.monotonic() - began, detail=f"cancelled {cancelled[0]} app queries")
            else:
                cancelled.append(0)
            if self.seq.close_sessions is not None:
                closed.append(self._close_sessions(s))

        outcomes = command_all(s.consoles, [c.command for c in self.seq.pause], deadline=deadline,
                               every=after_grace, stop_on_error=True)
        seconds = time.monotonic() - start
        for command, outcome in zip(self.seq.pause, outcomes, strict=True):
            self._did(command, seconds, outcome="ran" if outcome.ok else
                      f"failed: {'no answer' if outcome.late else describe_error(outcome.error)}")
        if not cancelled:
            for action in (self.seq.cancel, *self.seq.session_servers, self.seq.close_sessions):
                if action is not None:
                    self._did(action, None, outcome="skipped: every PgBouncer paused within grace")
        failed = next((o.error for o in outcomes if o.error is not None), None)
        if failed is not None:
            raise failed  # a failed PAUSE aborts now
        late = [i for i, o in enumerate(outcomes) if o.late]
        if late:
            raise PauseStuck(
                f"PgBouncer did not pause within max_pause ({self.settings.max_pause}s): "
                f"{', '.join(s.consoles[i].display for i in late)}", late)
        cancel = f", cancelled {cancelled[0]} app queries after grace" if cancelled and self.seq.cancel else ""
        close = f", closed {closed[0]} session clients' connections" if closed else ""
        return (f"paused {len(outcomes)} PgBouncer{'' if len(outcomes) == 1 else 's'} in {seconds * 1000:.0f} ms"
                f"{cancel}{close}")

    def _close_sessions(self, s: Sessions) -> int:
        """cutover.session_clients: close. In session pooling PAUSE waits for the entry's
        clients to let go of their server connections, which they do only when they
        disconnect: end those server connections on the old side (PgBouncer then closes
        their clients, and the PAUSE completes); the clients reconnect, wait for RESUME
        and reach the new route."""
        began = time.monotonic()
        pids = []
        for console, command, bouncer in zip(s.spare_consoles, self.seq.session_servers, self.playbook.pgbouncers,
                                             strict=True):
            pids += [int(r["remote_pid"]) for r in console.show("SERVERS")
                     if r.get("database") == bouncer.database and r.get("remote_pid")]
            self._did(command, time.monotonic() - began)
        with bound({"server_pids": pids}):
            s.old.execute(self.seq.close_sessions.sql)
        self._did(self.seq.close_sessions, time.monotonic() - began, detail=f"{len(pids)} server connections")
        return len(pids)

    def _switch_old(self, s: Sessions, deadline: float) -> replication.SyncMarker:
        """Raise the old side's write fence (and revoke the app's table privileges there
        when the fence does not cover the group) and commit the sync marker: one round
        trip, one commit. No write on the group can commit there after the marker.

        A lock_timeout bounds it: a long transaction from another entry holding a lock
        on a group table must not stretch the pause."""
        started = time.monotonic()
        with bound({"lock_timeout": f"{max(1, int((deadline - started) * 1000))}ms"}):
            marker = replication.commit_marker(s.old_switch, self.playbook, self.d.name,
                                               [q.sql for q in self.seq.old_switch.statements])
        self.window.old_switch = round(time.monotonic() - started, 4)
        self._did(self.seq.old_switch, self.window.old_switch)
        self._say(f"the {self.d.old_label} fenced and the sync marker committed in {self.window.old_switch * 1000:.0f} ms")
        return marker

    def _switch_new(self, s: Sessions) -> None:
        started = time.monotonic()
        self._run(s.new_switch, self.seq.new_switch, record=False)
        self.window.new_switch = round(time.monotonic() - started, 4)
        self._did(self.seq.new_switch, self.window.new_switch)

    def _copy_sequences(self, s: Sessions, actions: tuple[Statement, ...], *, before: bool = False) -> int:
        """Read every sequence on the old side, write those that moved on the new one
        (all of them the first time, before the pause). The new side's only ever go up:
        nothing but this copy and a client bypassing PgBouncer moves them, and a gap
        harms no key."""
        if not actions:
            return 0
        read, write = actions
        started = time.monotonic()
        values = replication.read_sequences(s.old_switch, list(self.facts.sequences), read.sql)
        self._did(read, time.monotonic() - started)
        moved = values if before else [v for v in values if self._copied.get(v.name) != v.state]
        if before:
            self._copied = {v.name: v.state for v in values}
        began = time.monotonic()
        replication.write_sequences(s.new_sequences, moved, write.sql)
        self._did(write, time.monotonic() - began, detail=f"{len(moved)} of {len(values)}")
        if not before:
            self.window.sequences = len(values)
            self.window.sequences_moved = len(moved)
            self.window.sequences_copy = round(time.monotonic() - started, 4)
        return len(moved)

    def _reroute(self, s: Sessions) -> str:
        """Every new entry made live (a rename each, or the user's commands in parallel),
        then RELOAD on every PgBouncer at once."""
        started = time.monotonic()
        for rewrite in self.rewrites:
            if not rewrite.remote:
                rewrite.commit()
        all_or_raise([w.commit for w in self.rewrites if w.remote])
        for change in self.seq.reroute:
            self._did(change, time.monotonic() - started)
        self._command_all(s, self.seq.reload)
        count = len(self.seq.reroute)
        return f"rerouted {count} entr{'y' if count == 1 else 'ies'} to the {self.d.new_label}"

    def _command_all(self, s: Sessions, commands: tuple[ConsoleCommand, ...],
                     tolerate: Callable[[BaseException], bool] | None = None) -> None:
        """One admin command on every console at once (after the point of no return: an
        error or a PgBouncer that does not answer in time is for the watchdog)."""
        started = time.monotonic()
        outcomes = command_all(s.consoles, [c.command for c in commands],
                               deadline=started + self.settings.max_pause)
        for command, outcome in zip(commands, outcomes, strict=True):
            self._did(command, time.monotonic() - started)
        verb = commands[0].command.split()[0] if commands else ""
        errors = [f"PgBouncer {c.display}: no answer to {verb}" if o.late else
                  o.error.message if isinstance(o.error, OperationFailed) else describe_error(o.error)
                  for c, o in zip(s.consoles, outcomes, strict=True)
                  if o.late or (o.error is not None and not (tolerate and tolerate(o.error)))]
        if errors:
            raise OperationFailed("; ".join(errors) + " (the watchdog retries)")

    def _abort(self, s: Sessions, watchdog: Watchdog, start: float, exc: Exception) -> None:
        """Undo what the pause did, from its undo log, traffic first: the old side's fence
        lifted and privileges back, RESUME, then the new side and replication as before."""
        reason = exc.message if isinstance(exc, OperationFailed) else describe_error(exc)
        sides = {str(self.d.old_label): s.old, str(self.d.new_label): s.new}
        undone = run_undo(
            self.seq.undo_log() + self._early, old_side=str(self.d.old_label), connection=lambda side: sides[side],
            consoles=resume_with_fresh_consoles([b.admin_dsn for b in self.playbook.pgbouncers],
                                                timeout=ABORT_RESUME_WAIT))
        self.window.total = round(time.monotonic() - start, 4)
        if isinstance(exc, PauseStuck):
            # Traffic is back: now there is time to ask what held the PAUSE.
            reason += ": " + "; ".join(self._why_stuck(i) for i in exc.late)
        if undone.unresumed:
            watchdog.take_over(resume_only=True)    # it keeps trying them after this process is gone
        else:
            watchdog.stand_down()
        self.window.outcome = PauseOutcome.ABORTED
        self.window.reason = reason
        self.checkpoint(phase=CutoverPhase.ABORTED, last_window=self.window.to_dict())
        if self._said:
            self.log("; ".join(self._said))
        if undone.problems:
            self.log("abort left work for the next run: " + "; ".join(undone.problems))
        self._hold(str(CutoverPhase.ABORTED))
        raise CutoverAborted(
            f"cutover aborted before the point of no return: {reason}; traffic resumed on the "
            f"{self.d.old_label}, replication left running, nothing lost "
            f"(paused {self.window.total * 1000:.0f} ms)",
            hint=f"run `migrator {self.d.verb}` again to retry",
        ) from exc

    def _why_stuck(self, index: int) -> str:
        """What a PgBouncer that did not pause showed of the group's entry (SHOW POOLS)."""
        bouncer = self.playbook.pgbouncers[index]
        try:
            with PgBouncerConsole(bouncer.admin_dsn, connect_timeout=1) as console:
                pools = [r for r in console.show("POOLS") if r.get("database") == bouncer.database]
        except Exception:  # noqa: BLE001 - the cause is what we could not reach
            return f"{describe(bouncer.admin_dsn)} does not answer its console"
        clients = sum(int(r.get("cl_active") or 0) for r in pools)
        servers = sum(int(r.get("sv_active") or 0) for r in pools)
        modes = sorted({r.get("pool_mode") for r in pools if r.get("pool_mode")})
        if "session" in modes:
            return (f"{describe(bouncer.admin_dsn)} pools {bouncer.database} in session mode and {clients} "
                    f"client{'' if clients == 1 else 's'} kept their connection: PAUSE waits for them to disconnect "
                    "(cutover.session_clients: close closes them after grace)")
        return (f"{describe(bouncer.admin_dsn)}: {servers} server connection{'' if servers == 1 else 's'} of "
                f"{bouncer.database} still in a transaction after grace (a transaction held open longer than "
                "max_pause, by a role the grace cancel does not reach?)")

    # -- after RESUME --------------------------------------------------------------

    def _after_resume(self, s: Sessions) -> str:
        """Outside the pause: the routes checked, the app's privileges left for after
        the pause revoked on the old side, the reverse subscription attached to the slot
        made inside it, the old subscription (whose slot would retain WAL) dropped."""
        started = time.monotonic()
        found = all_or_raise([c.databases for c in s.consoles])
        for command in self.seq.check_routes:
            self._did(command, time.monotonic() - started)
        for console, bouncer, databases in zip(s.consoles, self.playbook.pgbouncers, found, strict=True):
            current = databases.get(bouncer.database)
            if current is None or not current.points_at(self.d.new_dsn):
                raise OperationFailed(
                    f"PgBouncer {console.display}: entry {bouncer.database} does not point at the "
                    f"{self.d.new_label} ({describe(self.d.new_dsn)}) after RELOAD")
        if self.seq.late_revokes is not None:
            self._run(s.old, self.seq.late_revokes)
        finish_switch(self.seq, s.old, s.new, did=self._did)
        return (f"subscription {self.d.new_subscription} streams back to the {self.d.old_label}; "
                f"dropped {self.d.old_subscription} and its slot")

    # -- running and recording actions ----------------------------------------------

    def _run(self, conn: psycopg.Connection, action: Statement | Transaction, *, record: bool = True) -> None:
        started = time.monotonic()
        if isinstance(action, Transaction):
            with conn.transaction():
                conn.execute(action.sql)
        else:
            run_statement(conn, action)
        if record:
            self._did(action, time.monotonic() - started)

    def _did(self, action: Action, seconds: float | None, *, outcome: str = "ran", detail: str = "") -> None:
        self._ran[id(action)] = Recorded(action, seconds, outcome, detail)

    def _flush(self) -> None:
        """The actions run so far into the event log, in the sequence's order (inside the
        pause nothing is written: they follow it)."""
        for action in self.seq.actions():
            if id(action) in self._ran and id(action) not in self._flushed:
                self._flushed.add(id(action))
                self.record(self._ran[id(action)])


def finish_switch(seq: CutoverSequence, old: psycopg.Connection, new: psycopg.Connection, *,
                  did: Callable[..., None] = lambda *a, **k: None) -> None:
    """After a cutover (or a crash after its point of no return): subscribe the old side
    to the new one on the slot made in the pause, and drop the old subscription."""
    d = seq.direction
    started = time.monotonic()
    if replication.subscription(old, d.new_subscription) is None:
        if not replication.slot_exists(new, d.new_slot):
            raise OperationFailed(f"replication slot {d.new_slot} is missing on the {d.new_label}; "
                                  "the changes since the cutover cannot be replicated back")
        old.execute(seq.reverse_subscription.sql)
    did(seq.reverse_subscription, time.monotonic() - started)
    started = time.monotonic()
    replication.drop_subscription(new, d.old_subscription, old)
    did(seq.drop_forward, time.monotonic() - started)
    # A side that crashed while a table was copying can leave that copy's slot behind
    # on the publisher, with no subscription to drop it: it would retain WAL forever.
    try:
        replication.drop_orphaned_tablesync_slots(old, new)
    except psycopg.Error:
        pass  # reading the subscriber's system identifier needs rights the role may lack
