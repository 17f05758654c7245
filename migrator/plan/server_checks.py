"""Checks of the two servers and the PgBouncers: versions, settings, the DSN roles'
rights, the app roles, what earlier runs left, open transactions, and the PgBouncer
entries and config files the cutover pauses and rewrites.
"""

from __future__ import annotations

from collections.abc import Iterator

from migrator import names
from migrator.plan.finding import BLOCK, OK, WARN, Finding, codes, listing, plural, sides
from migrator.plan.inspection import FailoverFacts, PgBouncerFacts, Snapshot, StandbyFacts
from migrator.plan.privileges import Gap, passwordless_subscriptions
from migrator.playbook import Playbook, format_duration, format_size
from migrator.postgres import replication
from migrator.postgres.connection import server_addresses

# Logical replication arrived in PostgreSQL 10; the catalogs read here (attgenerated,
# conparentid, pg_sequence) are those of 12 and later.
MIN_MAJOR = 12


@codes(
    ("server.version", f"both servers run PostgreSQL {MIN_MAJOR} or newer"),
    ("server.version_order", "the target's major version is not older than the source's"),
    ("server.same_cluster", "source and target are different clusters"),
)
def versions(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    source, target = sides(snapshot)
    old = [s for s in (source, target) if s.major < MIN_MAJOR]
    for server in old:
        yield Finding(
            BLOCK, "server.version", server.side,
            f"the {server.side} {server.display} runs PostgreSQL {server.version.split()[0]}; "
            f"migrator needs {MIN_MAJOR} or newer",
            f"upgrade the {server.side} first",
        )
    if not old:
        yield Finding(OK, "server.version", "servers",
                      f"source runs PostgreSQL {source.version.split()[0]}, "
                      f"target {target.version.split()[0]}")
    if target.major < source.major:
        yield Finding(
            BLOCK, "server.version_order", "target",
            f"the target runs PostgreSQL {target.major}, older than the source's {source.major}: "
            "rows and schema from a newer major may not load into an older one, and the "
            "reverse replication would run from old to new",
            f"move to a server running PostgreSQL {source.major} or newer",
        )
    else:
        yield Finding(OK, "server.version_order", "target",
                      f"target major {target.major} >= source major {source.major}")
    if source.system_identifier and source.system_identifier == target.system_identifier:
        yield Finding(
            BLOCK, "server.same_cluster", "target",
            f"source {source.display} and target {target.display} are the same cluster: "
            "CREATE SUBSCRIPTION to the cluster it runs in waits forever for its own slot",
            "move the group to a database on another server",
        )


@codes(("server.wal_level", "wal_level = logical on both servers (forward and reverse replication)"))
def wal_level(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    for server in sides(snapshot):
        why = "the forward publication" if server.side == "source" else "the reverse replication"
        if server.wal_level != "logical":
            yield Finding(
                BLOCK, "server.wal_level", server.side,
                f"the {server.side} {server.display} has wal_level = {server.wal_level}; "
                f"{why} needs logical",
                f"set wal_level = logical on the {server.side} (ALTER SYSTEM SET wal_level = "
                "logical) and restart it",
            )
        else:
            yield Finding(OK, "server.wal_level", server.side, f"{server.side} wal_level = logical")


def _sync_workers(snapshot: Snapshot, playbook: Playbook) -> int:
    """Table-sync workers the initial copy can run at once: each holds a slot and a WAL
    sender on the source and a logical replication worker on the target."""
    existing = sum(1 for t in snapshot.tables.values() if t.exists)
    return max(1, min(existing, snapshot.target.settings["max_sync_workers_per_subscription"]))


# What each side must have free. (needed to work at all, needed for a full-speed copy)
# source: the forward slot + table-sync slots, one WAL sender each; after the cutover
#         the reverse subscription's apply worker runs here.
# target: the reverse slot and its WAL sender; the forward apply worker + table-sync
#         workers run here.
def _needs(snapshot: Snapshot, playbook: Playbook, side: str) -> dict[str, tuple[int, int, str]]:
    sync = _sync_workers(snapshot, playbook)
    if side == "source":
        return {
            "max_replication_slots": (2, 1 + sync, f"slot {names.slot(playbook)} and table-sync slots"),
            "max_wal_senders": (2, 1 + sync, "one WAL sender per slot in use"),
            "max_logical_replication_workers": (1, 1, "the reverse subscription's apply worker"),
            "max_worker_processes": (1, 1, "the reverse subscription's apply worker"),
        }
    return {
        "max_replication_slots": (1, 1, f"the reverse slot {names.reverse_slot(playbook)}"),
        "max_wal_senders": (1, 1, "the reverse replication's WAL sender"),
        "max_logical_replication_workers": (2, 1 + sync, "the apply worker and table-sync workers"),
        "max_worker_processes": (2, 1 + sync, "the apply worker and table-sync workers"),
    }


_HEADROOM_CODES = {
    "max_replication_slots": "server.slots_headroom",
    "max_wal_senders": "server.wal_senders_headroom",
    "max_logical_replication_workers": "server.logical_workers_headroom",
    "max_worker_processes": "server.worker_processes_headroom",
}


@codes(
    ("server.slots_headroom", "free max_replication_slots for the move's slots and table-sync slots"),
    ("server.wal_senders_headroom", "free max_wal_senders for those slots"),
    ("server.logical_workers_headroom", "free max_logical_replication_workers for apply and sync workers"),
    ("server.worker_processes_headroom", "free max_worker_processes for those workers"),
)
def headroom(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    for server in sides(snapshot):
        # A resumed run's own slot is already counted as in use.
        own = sum(1 for o in server.leftovers if o.kind == "slot" and o.name in expected)
        enough = []
        for setting, (minimum, full, what) in _needs(snapshot, playbook, server.side).items():
            code = _HEADROOM_CODES[setting]
            free = server.free(setting) + (own if setting == "max_replication_slots" else 0)
            value = server.settings[setting]
            state = f"{server.side} {setting} = {value}, {value - server.free(setting)} in use, {free} free"
            if free < minimum:
                yield Finding(
                    BLOCK, code, server.side,
                    f"{state}; the move needs {minimum} ({what})",
                    f"raise {setting} to at least {value - free + full} on the {server.side} "
                    "(takes a restart), or free some",
                )
            elif free < full:
                yield Finding(
                    WARN, code, server.side,
                    # Only the settings that also bound table-sync workers get here.
                    f"{state}; the initial copy would sync {free - 1} table(s) at a time "
                    f"instead of {full - 1}",
                    f"raise {setting} to {value - free + full} on the {server.side} for a faster copy",
                )
            else:
                enough.append(f"{setting} {free} free of {value} (needs {full})")
        if enough:
            yield Finding(OK, "server.slots_headroom", server.side,
                          f"{server.side}: " + ", ".join(enough))


# --------------------------------------------------------------------------- failover


@codes(("server.standby_slot_sync", "a server's physical standbys keep the move's slots across a failover"))
def standbys(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    """A physical standby promoted while the move runs has the move's logical slot only
    if it synchronised it (PostgreSQL 17+: a failover slot, and slot sync set up on the
    standby); otherwise the slot is gone and the move must be copied again."""
    for server in sides(snapshot):
        facts = server.failover
        if not facts.standbys:
            continue
        slot = names.slot(playbook) if server.side == "source" else names.reverse_slot(playbook)
        when = "while the move replicates" if server.side == "source" else "after the cutover"
        listed = ", ".join(_standby_name(s) for s in facts.standbys)
        subject = f"{server.side} standbys"
        if server.major < 17:
            yield Finding(
                WARN, "server.standby_slot_sync", subject,
                f"the {server.side} has {plural(len(facts.standbys), 'physical standby', 'physical standbys')} "
                f"({listed}) and runs PostgreSQL {server.major}: logical slots survive a failover only from "
                f"PostgreSQL 17, so if a standby is promoted {when} the move's slot {slot} is lost and the move "
                "must be rolled back and copied again",
                "plan the move for a time no failover is expected, or upgrade the "
                f"{server.side} to PostgreSQL 17 or newer first",
            )
            continue
        problems = _slot_sync_problems(facts)
        if not problems:
            yield Finding(OK, "server.standby_slot_sync", subject,
                          f"the {server.side}'s standbys ({listed}) synchronise its failover slots")
            continue
        slots = [s.slot for s in facts.standbys if s.slot] or ["<its physical slot>"]
        yield Finding(
            WARN, "server.standby_slot_sync", subject,
            f"the {server.side}'s {plural(len(facts.standbys), 'physical standby', 'physical standbys')} "
            f"({listed}) may not keep the move's failover slot {slot}: " + "; ".join(problems)
            + f". If such a standby is promoted {when}, the slot is lost (or behind what was applied) and "
            "the move must be rolled back and copied again",
            f"on each standby: sync_replication_slots = on, hot_standby_feedback = on, primary_slot_name set, "
            f"a dbname in primary_conninfo; on the {server.side}: synchronized_standby_slots = "
            f"'{','.join(slots)}'. Once replication runs, `SELECT slot_name, synced, temporary FROM "
            f"pg_replication_slots` on a standby must show {slot} synced and not temporary (what a standby has "
            f"set is not visible from the {server.side})",
        )


def _standby_name(standby: StandbyFacts) -> str:
    where = f"@{standby.address}" if standby.address else ""
    return standby.name + where + (f" (slot {standby.slot})" if standby.slot else "")


def _slot_sync_problems(facts: FailoverFacts) -> list[str]:
    problems = []
    if not facts.readable:
        problems.append("the DSN role may not read the standbys' details (grant it pg_read_all_stats to check)")
    no_slot = [s for s in facts.standbys if s.slot is None]
    if no_slot:
        problems.append(", ".join(_standby_name(s) for s in no_slot)
                        + (" streams" if len(no_slot) == 1 else " stream")
                        + " without a physical slot (no primary_slot_name): slot sync needs one")
    no_xmin = [s for s in facts.standbys if s.slot is not None and not s.holds_xmin and facts.readable]
    if no_xmin:
        problems.append(", ".join(_standby_name(s) for s in no_xmin)
                        + (" holds" if len(no_xmin) == 1 else " hold") + " no xmin here: hot_standby_feedback looks off")
    if facts.slotsync_workers < len(facts.standbys):
        problems.append(f"{facts.slotsync_workers} of {len(facts.standbys)} standbys have a slot sync worker "
                        "connected (sync_replication_slots = on and a dbname in primary_conninfo on the standby)")
    unlisted = [s.slot for s in facts.standbys if s.slot and s.slot not in (facts.synchronized_standby_slots or ())]
    if unlisted:
        problems.append(f"synchronized_standby_slots does not list {', '.join(unlisted)}: the subscriber may "
                        "receive changes such a standby does not have yet")
    return problems


# --------------------------------------------------------------------------- rights


_CODES = (
    ("role.replication", "the DSN roles may open replication connections and make slots (REPLICATION)"),
    ("role.create_subscription", "the DSN roles may create the subscriptions of both directions "
                                 "(pg_create_subscription from 16, superuser before)"),
    ("role.create_objects", "the DSN roles have CREATE on their database (publications, schemas, subscriptions)"),
    ("role.create_in_schema", "the target's DSN role may create the group's objects in the schemas it has"),
    ("role.set_owner", "the target's DSN role may give an object to its owner (ALTER ... OWNER TO)"),
    ("role.table_owner", "the DSN roles have the privileges of the group's owners (publish, fence)"),
    ("role.sequence", "the DSN roles may read and set every sequence the cutover copies, on both sides"),
    ("role.grant", "the DSN roles may grant the app roles' privileges on the side that starts serving"),
    ("role.revoke", "the DSN roles may revoke the app roles' privileges on the side that stops serving"),
    ("role.signal_backend", "the DSN roles may cancel the app roles' queries at the cutover"),
    ("subscription.password", "each subscription's connection string carries a password where PostgreSQL "
                              "requires one (16+, an owner that is not superuser)"),
)


@codes(*_CODES)
def privileges(snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    gaps = list(snapshot.privilege_gaps)
    for gap in gaps:
        yield _finding(snapshot, gap)
    servers = {"source": snapshot.source, "target": snapshot.target}
    passwordless = passwordless_subscriptions(
        playbook, {s: f.version_num for s, f in servers.items()}, {s: f.rights.superuser for s, f in servers.items()})
    for subscriber, publisher in passwordless:
        role = servers[subscriber].rights.name
        yield Finding(
            BLOCK, "subscription.password", f"{publisher} DSN",
            f"the subscription on the {subscriber} connects to the {publisher} with the {publisher}'s DSN, which "
            f"carries no password: from PostgreSQL 16 a subscription whose owner ({role}) is not a superuser must "
            "have the password in its connection string (a passfile or PGPASSWORD is this tool's, not the server's)",
            f"put the password in the {publisher} DSN from an environment variable, e.g. "
            f"postgresql://user:${{PASSWORD_VAR}}@host/db (the playbook interpolates it; no secret is stored)")
    if not gaps and not passwordless:
        yield Finding(OK, "role.replication", "roles",
                      f"DSN roles {snapshot.source.rights.name} (source) and {snapshot.target.rights.name} (target) "
                      "have every privilege the move and its rollback need")


def _finding(snapshot, gap: Gap) -> Finding:
    p = gap.privilege
    level = WARN if p.level == "warn" else BLOCK
    subject = f"{gap.side} role {gap.role}" if p.kind in ("attribute", "member") or p.object_type == "DATABASE" \
        else p.name
    statement = gap.statement
    if p.kind == "attribute" and p.name == "SUPERUSER":
        version = (snapshot.source if gap.side == "source" else snapshot.target).version
        return Finding(
            level, p.code, subject,
            f"the {gap.side} DSN role {gap.role} is not a superuser, and PostgreSQL {version} lets only a superuser "
            f"create a subscription ({gap.why})",
            f"use a superuser's DSN for the {gap.side}, or run the {gap.side} on PostgreSQL 16 or newer, where "
            "pg_create_subscription is enough")
    if p.kind == "owner":
        what = {"role.table_owner": "only its owner can publish it and put the write fence on it",
                "role.grant": "only its owner's GRANT gives the app roles their privileges there",
                "role.revoke": "a REVOKE by another role takes away only what that role granted, silently: "
                               "the app roles would keep their privileges on the old copy"}.get(p.code, gap.why)
        message = (f"{p.name} is owned by {gap.owner}, not by the {gap.side} DSN role {gap.role} nor a role it "
                   f"has the privileges of: {what} ({gap.why})")
    elif p.role is not None:
        message = (f"the role {gap.role} lacks {p.describe()} on the {gap.side}: the move gives it objects there, "
                   f"and a new owner needs it ({gap.why})")
    else:
        message = f"the {gap.side} DSN role {gap.role} lacks {p.describe()} ({gap.why})"
    return Finding(level, p.code, subject, message, f"run on the {gap.side}: {statement}" if statement else "")


@codes(("guard.ddl_unavailable", "the DSN roles may create the DDL guard's event triggers (superuser)"))
def ddl_guard(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    missing = [s for s in sides(snapshot) if not s.rights.superuser]
    for server in missing:
        yield Finding(
            WARN, "guard.ddl_unavailable", f"{server.side} role {server.rights.name}",
            f"the {server.side} DSN role {server.rights.name} is not a superuser, and only a superuser may "
            f"create an event trigger: the {server.side} gets no DDL guard, so a schema change to the group "
            "there goes unrefused (and stops replication); the write fence is made all the same",
            f"use a superuser's DSN for the {server.side}, or change the group only with `migrator ddl`",
        )
    if not missing:
        yield Finding(OK, "guard.ddl_unavailable", "roles",
                      "the DDL guard can be made on both servers")


@codes(("role.missing", "every app role exists on both servers"))
def app_roles(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    missing = False
    for server in sides(snapshot):
        for role, exists in server.app_roles.items():
            if not exists:
                missing = True
                yield Finding(
                    BLOCK, "role.missing", f"{server.side} role {role}",
                    f"app role {role} does not exist on the {server.side} {server.display}: its "
                    f"privileges on the group are {'revoked' if server.side == 'source' else 'granted'} "
                    "there at the cutover",
                    f"CREATE ROLE {role} on the {server.side}, or remove it from app_roles",
                )
    if not missing and playbook.app_roles:
        yield Finding(OK, "role.missing", "app roles",
                      f"app roles {listing(playbook.app_roles)} exist on both servers")


# --------------------------------------------------------------------------- leftovers and open transactions


def lost_slots(snapshot: Snapshot, playbook: Playbook) -> list[tuple[str, str, str]]:
    """(subscriber side, subscription, slot) of each of the move's subscriptions whose slot
    is missing on its publisher: a failover of the publisher (the slot was not kept by
    the standby promoted), or a slot dropped by hand. Replication through it is over."""
    found = []
    for subscriber, publisher in ((snapshot.target, snapshot.source), (snapshot.source, snapshot.target)):
        slots = {o.name for o in publisher.leftovers if o.kind == "slot"}
        for sub in subscriber.leftovers:
            if sub.kind == "subscription" and sub.slot and sub.slot not in slots:
                found.append((subscriber.side, sub.name, sub.slot))
    return found


@codes(("move.slot_lost", "the move's subscriptions still have their slots on the publisher"))
def slots_lost(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    for side, subscription, slot in lost_slots(snapshot, playbook):
        publisher = "source" if side == "target" else "target"
        lost = replication.slot_lost(slot, publisher, after_cutover=publisher == "target")
        yield Finding(
            BLOCK, "move.slot_lost", f"{publisher} slot {slot}",
            f"{lost.message} (subscription {subscription} on the {side} still waits for it)",
            lost.hint or "",
        )


@codes(
    ("move.leftover_slot", "no replication slot with this move's name exists (orphaned slots retain WAL)"),
    ("move.leftover_publication", "no publication with this move's name exists"),
    ("move.leftover_subscription", "no subscription with this move's name exists"),
    ("move.in_flight", "this move is under way: its objects are its own, and where it stands is said"),
)
def leftovers(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    if snapshot.in_flight:
        yield _in_flight(snapshot, playbook)
    if lost_slots(snapshot, playbook):
        return  # a move in flight whose replication broke (move.slot_lost): not an earlier run's leftovers
    orphans: set[tuple[str, str]] = set()
    if snapshot.in_flight:
        # Its objects are its own; a slot whose subscription is gone is still one that
        # retains WAL (a rollback or an execute stopped half way): said as before.
        orphans = _orphaned_slots(snapshot, playbook)
        if not orphans:
            return
    found = False
    for server in sides(snapshot):
        for obj in server.leftovers:
            if obj.name in expected and (server.side, obj.name) not in orphans:
                continue
            found = True
            retained = (
                f", retaining {format_size(obj.retained_wal_bytes)} of WAL"
                if obj.retained_wal_bytes is not None else ""
            )
            drop = {
                "slot": f"SELECT pg_drop_replication_slot('{obj.name}')",
                "publication": f"DROP PUBLICATION {obj.name}",
                "subscription": f"DROP SUBSCRIPTION {obj.name}",
            }[obj.kind]
            yield Finding(
                BLOCK, f"move.leftover_{obj.kind}", f"{server.side} {obj.kind} {obj.name}",
                f"{obj.kind} {obj.name} already exists on the {server.side} ({obj.detail}{retained}): "
                + ("this move's, and no subscription uses it any more (a rollback or execute stopped half way)"
                   if (server.side, obj.name) in orphans else "left by an earlier run of this move"),
                f"if that run is abandoned, `migrator rollback` it or {drop} on the {server.side}",
            )
    if not found:
        yield Finding(OK, "move.leftover_slot", "leftovers",
                      f"no publication, subscription or slot named {names.publication(playbook)}* exists")


def _orphaned_slots(snapshot: Snapshot, playbook: Playbook) -> set[tuple[str, str]]:
    """(side, slot) of this move's slots no subscription of it uses any more."""
    present = {(server.side, o.kind, o.name) for server in sides(snapshot) for o in server.leftovers}
    subscriber = {("source", names.slot(playbook)): ("target", "subscription", names.subscription(playbook)),
                  ("target", names.reverse_slot(playbook)): ("source", "subscription",
                                                             names.reverse_subscription(playbook))}
    return {(side, name) for side, kind, name in present
            if kind == "slot" and (side, name) in subscriber and subscriber[(side, name)] not in present}


def _in_flight(snapshot: Snapshot, playbook: Playbook) -> Finding:
    """Where the move stands, from its checkpoint (steps done) and the servers (its
    replication objects), instead of calling its own objects leftovers of an earlier run."""
    path = playbook.path or "PLAYBOOK"
    own = {(server.side, o.kind, o.name) for server in sides(snapshot) for o in server.leftovers}
    reverse = ("source", "subscription", names.reverse_subscription(playbook)) in own
    forward = ("target", "subscription", names.subscription(playbook)) in own
    if reverse:
        where = ("past the cutover: the target serves the group and reverse replication "
                 f"({names.reverse_subscription(playbook)} on the source) keeps the old copy current")
    elif forward:
        where = (f"replicating to the target ({names.subscription(playbook)}), before the cutover: "
                 "the source serves the group")
    else:
        where = "the group is on the target (its schema step ran); no replication runs now"
    done = f"; steps done: {', '.join(snapshot.steps_done)}" if snapshot.steps_done else ""
    objects = sorted(f"{kind} {name} on the {side}" for side, kind, name in own)
    return Finding(
        WARN, "move.in_flight", playbook.name,
        f"move {playbook.name} is in flight, {where}{done}"
        + (f"; {listing(objects)} are its own" if objects else "")
        + ": this plan describes a move already under way",
        f"`migrator status {path}` follows it; `migrator execute {path}` resumes it, "
        f"`migrator rollback {path}` undoes it, `migrator complete {path}` ends it",
        noun="move",
    )


@codes(("source.long_transaction", "no long-running transaction on the source (slot creation waits for it)"))
def long_transactions(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    for tx in snapshot.source.long_transactions:
        who = f"{tx.user or '?'}" + (f" ({tx.application_name})" if tx.application_name else "")
        consequence = ("creating the replication slot waits for it to end" if tx.has_xid
                       else "it holds back vacuum while the copy runs")
        yield Finding(
            WARN, "source.long_transaction", f"source pid {tx.pid}",
            f"transaction of pid {tx.pid} by {who} on the source has been open for "
            f"{format_duration(tx.seconds)} ({tx.state}): {consequence}",
            f"let it finish, or SELECT pg_terminate_backend({tx.pid}) on the source",
        )


# --------------------------------------------------------------------------- PgBouncer


@codes(
    ("pgbouncer.none", "at least one PgBouncer routes the group (the cutover reroutes through it)"),
    ("pgbouncer.unreachable", "every PgBouncer's admin console answers"),
    ("pgbouncer.entry_missing", "the group's [databases] entry exists in every PgBouncer"),
    ("pgbouncer.entry_not_on_source", "that entry routes to the source now"),
    ("pgbouncer.entry_paused", "that entry is not paused or disabled now"),
    ("pgbouncer.config_not_writable", "every config file is readable and replaceable by the tool"),
    ("pgbouncer.include_missing", "the config %includes the include_file the tool rewrites"),
    ("pgbouncer.config_entry_missing", "every config file holds the entry"),
    ("pgbouncer.config_entry_not_on_source", "the entry in every config file routes to the source"),
    ("pgbouncer.pool_mode", "the entry pools in transaction mode (or session clients may be closed)"),
    ("pgbouncer.target_host_list", "the target DSN names one address an entry can route to"),
)
def pgbouncers(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    if not snapshot.pgbouncers:
        yield Finding(
            WARN, "pgbouncer.none", "pgbouncers",
            "the playbook lists no PgBouncer: the cutover cannot pause or reroute the application",
            "list every PgBouncer that routes the group under pgbouncers:",
        )
        return
    hosts = server_addresses(playbook.target.dsn)
    if len(hosts) > 1:
        yield Finding(
            BLOCK, "pgbouncer.target_host_list", "target.dsn",
            f"the target DSN lists {len(hosts)} hosts ({', '.join(f'{h}:{p}' for h, p in hosts)}): the reroute "
            "writes the target's address into each PgBouncer entry, and PgBouncer round-robins a host list "
            "instead of following the primary, so some of the application's connections would reach a standby",
            "give target.dsn one address that always reaches the target's primary (a DNS name or a virtual IP "
            "that moves on failover); the source DSN may list several hosts",
        )
    for bouncer in snapshot.pgbouncers:
        subject = f"pgbouncers[{bouncer.index}] {bouncer.display}"
        entry = bouncer.database
        bad = False
        if not bouncer.reachable:
            bad = True
            yield Finding(
                BLOCK, "pgbouncer.unreachable", subject,
                f"{bouncer.error or 'PgBouncer admin console unreachable'}",
                "start PgBouncer, and check admin_dsn and that its user is in admin_users",
            )
        elif bouncer.entry is None:
            bad = True
            yield Finding(
                BLOCK, "pgbouncer.entry_missing", subject,
                f"PgBouncer {bouncer.display} has no [databases] entry {entry} (SHOW DATABASES)",
                f"add {entry} to its config file and RELOAD, or fix pgbouncers[{bouncer.index}].database",
            )
        elif snapshot.in_flight and bouncer.entry_points_at_target:
            pass  # past this move's cutover: the target serves (move.in_flight says so)
        elif not bouncer.entry_points_at_source:
            bad = True
            now = f"{bouncer.entry.host}:{bouncer.entry.port}/{bouncer.entry.database}"
            where = " (the target: already moved?)" if bouncer.entry_points_at_target else ""
            yield Finding(
                BLOCK, "pgbouncer.entry_not_on_source", subject,
                f"PgBouncer {bouncer.display} routes {entry} to {now}{where}, not to the source "
                f"{snapshot.source.display}",
                "check the playbook's source DSN, or `migrator status` for a move already done",
            )
        elif bouncer.entry.paused or bouncer.entry.disabled:
            state = "paused" if bouncer.entry.paused else "disabled"
            yield Finding(
                WARN, "pgbouncer.entry_paused", subject,
                f"PgBouncer {bouncer.display} has {entry} {state} right now: its clients are waiting",
                f"RESUME {entry} (or ENABLE {entry}) on its admin console unless someone is at work",
            )
        if not bouncer.config_readable or not bouncer.config_writable:
            bad = True
            yield Finding(
                BLOCK, "pgbouncer.config_not_writable", subject,
                f"config file {bouncer.config_file} {bouncer.config_problem}: the reroute rewrites "
                f"the {entry} entry in it",
                "run migrator where that file is, as a user who may replace it "
                f"(check pgbouncers[{bouncer.index}].config_file)",
            )
        elif bouncer.include_problem is not None:
            bad = True
            yield Finding(
                BLOCK, "pgbouncer.include_missing", subject,
                f"{bouncer.include_problem}; the reroute rewrites {bouncer.config_file}",
                f"add `%include {bouncer.config_file}` to the [databases] section of PgBouncer's config, "
                f"RELOAD, then plan again (check pgbouncers[{bouncer.index}].include_file)",
            )
        elif bouncer.config_entry is None:
            bad = True
            yield Finding(
                BLOCK, "pgbouncer.config_entry_missing", subject,
                f"config file {bouncer.config_file} has no {entry} entry under [databases]",
                "point config_file at the file this PgBouncer was started with",
            )
        elif snapshot.in_flight and bouncer.config_points_at_target:
            pass
        elif not bouncer.config_points_at_source:
            bad = True
            yield Finding(
                BLOCK, "pgbouncer.config_entry_not_on_source", subject,
                f"config file {bouncer.config_file} routes {entry} to '{bouncer.config_entry}', not "
                f"to the source: a RELOAD would send the application elsewhere",
                "make the file agree with what the PgBouncer routes to now, then plan again",
            )
        if bouncer.pool_mode is not None and bouncer.pool_mode != "transaction":
            finding = _pool_mode(bouncer, subject, playbook)
            bad = bad or finding.level == BLOCK
            yield finding
        if not bad:
            mode = f" ({bouncer.pool_mode} pooling)" if bouncer.pool_mode else ""
            side = "target" if snapshot.in_flight and bouncer.entry_points_at_target else "source"
            yield Finding(
                OK, "pgbouncer.unreachable", subject,
                f"PgBouncer {bouncer.display} ({bouncer.version}) routes {entry} to the {side}{mode}; "
                f"{bouncer.config_file} is writable",
            )


def _pool_mode(bouncer: PgBouncerFacts, subject: str, playbook: Playbook) -> Finding:
    entry, mode, why = bouncer.database, bouncer.pool_mode, bouncer.pool_mode_from
    grace = format_duration(playbook.cutover.grace)
    if mode == "session" and playbook.cutover.session_clients == "close":
        return Finding(
            WARN, "pgbouncer.pool_mode", subject,
            f"PgBouncer {bouncer.display} pools {entry} in session mode ({why}), and the playbook says "
            f"cutover.session_clients: close: {grace} (grace) into the pause the entry's client connections "
            "are closed; each client's open transaction is rolled back and its session state (prepared "
            "statements, temporary tables, SET, advisory locks, LISTEN) is gone",
            "the application must reconnect after a lost connection (to the new route) and retry what failed",
        )
    if mode == "session":
        return Finding(
            BLOCK, "pgbouncer.pool_mode", subject,
            f"PgBouncer {bouncer.display} pools {entry} in session mode ({why}): PAUSE waits until every client "
            "of the entry has disconnected, so with clients that keep their connections the cutover waits "
            "max_pause, aborts, and every later attempt does the same",
            f"pool {entry} in transaction mode (pool_mode=transaction in its [databases] entry, then RELOAD), "
            "or, when the application reconnects after a lost connection, set cutover.session_clients: close "
            "(its clients are disconnected after grace, inside the pause)",
        )
    return Finding(
        BLOCK, "pgbouncer.pool_mode", subject,
        f"PgBouncer {bouncer.display} pools {entry} in {mode} mode ({why}): the cutover's pause (PAUSE waits "
        "for the transactions in flight, the app roles' queries are cancelled after grace) is built and "
        "proven for transaction pooling only",
        f"pool {entry} in transaction mode (pool_mode=transaction in its [databases] entry, then RELOAD)",
    )
