"""What `plan` says about real fleets (issue 21), judged from hand-made snapshots with no
server: the pool mode of the group's entry, a source's standbys and whether they keep
the move's slots, a slot lost to a failover, a target DSN that lists several hosts."""

from __future__ import annotations

from dataclasses import replace

import pytest

from migrator.pgbouncer.console import DatabaseEntry
from migrator.plan.findings import BLOCK, OK, WARN, check
from migrator.plan.inspection import (
    FailoverFacts,
    LeftoverObject,
    PgBouncerFacts,
    RoleRights,
    ServerFacts,
    Snapshot,
    StandbyFacts,
)
from migrator.playbook import parse_playbook

PLAYBOOK = """\
name: files-partition
source: {dsn: "postgresql://migrator@db-1:5432,db-2:5432/app?target_session_attrs=read-write"}
target: {dsn: "postgresql://migrator@db-files:5432/app"}
tables: [public.files]
app_roles: [app]
pgbouncers:
  - {admin_dsn: "postgresql://pgbouncer@pgb-1:6432/pgbouncer", database: app_files,
     config_file: /etc/pgbouncer/pgbouncer.ini}
"""
SLOT = "migrator_files_partition"


def book(**cutover):
    text = PLAYBOOK + (f"cutover: {cutover}\n".replace("'", "") if cutover else "")
    return parse_playbook(text)


def server(side: str, major: int = 18, **changes) -> ServerFacts:
    facts = ServerFacts(
        side=side, display=f"migrator@{side}:5432/app", version=f"{major}.1", version_num=major * 10000 + 1,
        system_identifier=side, wal_level="logical",
        settings={"max_replication_slots": 10, "max_wal_senders": 10, "max_logical_replication_workers": 10,
                  "max_worker_processes": 20, "max_sync_workers_per_subscription": 2},
        in_use={}, rights=RoleRights("migrator", True, True, True, True, True), app_roles={"app": True})
    return replace(facts, **changes)


def pgbouncer(pool_mode: str = "transaction", why: str = "the global pool_mode = transaction") -> PgBouncerFacts:
    entry = DatabaseEntry("app_files", "db-1", 5432, "app", False, False, 0, pool_mode=None)
    return PgBouncerFacts(
        index=0, display="pgbouncer@pgb-1:6432/pgbouncer", database="app_files",
        config_file="/etc/pgbouncer/pgbouncer.ini", reachable=True, version="PgBouncer 1.18.0", entry=entry,
        entry_points_at_source=True, config_exists=True, config_readable=True, config_writable=True,
        config_entry="host=db-1 port=5432 dbname=app pool_size=30", config_points_at_source=True,
        pool_mode=pool_mode, pool_mode_from=why)


def findings(playbook=None, *, source=None, target=None, bouncer=None, code: str):
    snapshot = Snapshot(source=source or server("source"), target=target or server("target"), tables={},
                        pgbouncers=(bouncer or pgbouncer(),))
    return [f for f in check(snapshot, playbook or book()) if f.code == code]


# --------------------------------------------------------------------------- pool modes


def test_transaction_pooling_is_what_the_pause_needs():
    assert findings(code="pgbouncer.pool_mode") == []
    ok = [f for f in check(Snapshot(server("source"), server("target"), {}, (pgbouncer(),)), book())
          if f.code == "pgbouncer.unreachable"]
    assert [f.level for f in ok] == [OK] and "(transaction pooling)" in ok[0].message


def test_session_pooling_blocks_with_the_reason_and_both_ways_out():
    (found,) = findings(bouncer=pgbouncer("session", "the entry's own pool_mode=session"), code="pgbouncer.pool_mode")
    assert found.level == BLOCK
    assert "pools app_files in session mode (the entry's own pool_mode=session)" in found.message
    assert "PAUSE waits until every client of the entry has disconnected" in found.message
    assert "pool_mode=transaction" in found.hint and "cutover.session_clients: close" in found.hint


def test_session_pooling_with_the_opt_in_warns_what_the_application_must_tolerate():
    (found,) = findings(book(session_clients="close"), bouncer=pgbouncer("session", "user app's own pool_mode"),
                        code="pgbouncer.pool_mode")
    assert found.level == WARN
    assert "500 ms (grace) into the pause the entry's client connections are closed" in found.message
    assert "open transaction is rolled back" in found.message
    assert "reconnect" in found.hint and "retry" in found.hint


@pytest.mark.parametrize("session_clients", ["refuse", "close"])
def test_statement_pooling_blocks_whatever_the_opt_in(session_clients):
    (found,) = findings(book(session_clients=session_clients), bouncer=pgbouncer("statement", "the global pool_mode"),
                        code="pgbouncer.pool_mode")
    assert found.level == BLOCK and "in statement mode" in found.message
    assert "transaction pooling only" in found.message


# --------------------------------------------------------------------------- a target DSN with a host list


def test_a_target_dsn_listing_several_hosts_blocks_the_reroute():
    playbook = parse_playbook(PLAYBOOK.replace("postgresql://migrator@db-files:5432/app",
                                               "postgresql://migrator@db-files:5432,db-files-2:5432/app"))
    (found,) = findings(playbook, code="pgbouncer.target_host_list")
    assert found.level == BLOCK and "PgBouncer round-robins a host list" in found.message
    # The source's list is fine: the entry is the operator's, kept as it is.
    assert findings(code="pgbouncer.target_host_list") == []


# --------------------------------------------------------------------------- standbys and failover slots

SYNCING = StandbyFacts(name="standby", address="10.0.0.2", state="streaming", slot="standby", holds_xmin=True)


def failover(*standbys, listed=("standby",), slotsync=None, readable=True) -> FailoverFacts:
    return FailoverFacts(standbys=standbys, physical_slots=tuple(s.slot for s in standbys if s.slot),
                         synchronized_standby_slots=listed,
                         slotsync_workers=len(standbys) if slotsync is None else slotsync, readable=readable)


def test_no_standby_no_finding():
    assert findings(code="server.standby_slot_sync") == []


def test_a_standby_that_synchronises_the_slots_is_ok():
    (found,) = findings(source=server("source", failover=failover(SYNCING)), code="server.standby_slot_sync")
    assert found.level == OK and "standby@10.0.0.2 (slot standby)" in found.message


def test_a_standby_that_does_not_synchronise_slots_is_named_with_what_is_missing_and_how():
    plain = StandbyFacts(name="walreceiver", address="10.0.0.3", state="streaming", slot=None, holds_xmin=False)
    no_feedback = replace(SYNCING, name="standby2", slot="standby2", holds_xmin=False)
    facts = failover(plain, no_feedback, listed=(), slotsync=0)
    (found,) = findings(source=server("source", failover=facts), code="server.standby_slot_sync")
    assert found.level == WARN
    assert f"may not keep the move's failover slot {SLOT}" in found.message
    assert "walreceiver@10.0.0.3 streams without a physical slot (no primary_slot_name)" in found.message
    assert "standby2@10.0.0.2 (slot standby2) holds no xmin here: hot_standby_feedback looks off" in found.message
    assert "0 of 2 standbys have a slot sync worker connected" in found.message
    assert "synchronized_standby_slots does not list standby2" in found.message
    assert "rolled back and copied again" in found.message
    for setting in ("sync_replication_slots = on", "hot_standby_feedback = on", "primary_slot_name",
                    "a dbname in primary_conninfo", "synchronized_standby_slots = 'standby2'"):
        assert setting in found.hint
    assert (f"`SELECT slot_name, synced, temporary FROM pg_replication_slots` on a standby must show {SLOT} "
            "synced and not temporary") in found.hint


def test_a_standby_of_a_source_older_than_17_cannot_keep_a_logical_slot():
    (found,) = findings(source=server("source", major=15, failover=failover(SYNCING, listed=None)),
                        target=server("target", major=15), code="server.standby_slot_sync")
    assert found.level == WARN and "logical slots survive a failover only from PostgreSQL 17" in found.message


def test_the_targets_standbys_are_judged_for_the_reverse_slot():
    facts = failover(SYNCING, listed=())
    (found,) = findings(target=server("target", failover=facts), code="server.standby_slot_sync")
    assert found.level == WARN and f"failover slot {SLOT}_reverse" in found.message
    assert "after the cutover" in found.message


# --------------------------------------------------------------------------- a slot lost to a failover


def in_flight(*, slot_on_source: bool) -> tuple[ServerFacts, ServerFacts]:
    source = [LeftoverObject("source", "publication", SLOT)]
    if slot_on_source:
        source.append(LeftoverObject("source", "slot", SLOT, "logical slot in database app, in use"))
    target = [LeftoverObject("target", "subscription", SLOT, "in database app, enabled", slot=SLOT)]
    return server("source", leftovers=tuple(source)), server("target", leftovers=tuple(target))


def test_a_subscription_whose_slot_is_gone_is_a_lost_slot_not_leftovers():
    source, target = in_flight(slot_on_source=False)
    snapshot = Snapshot(source, target, {}, (pgbouncer(),))
    all_findings = check(snapshot, book())
    lost = [f for f in all_findings if f.code == "move.slot_lost"]
    assert [(f.level, f.subject) for f in lost] == [(BLOCK, f"source slot {SLOT}")]
    assert f"replication slot {SLOT} is missing on the source, probably a failover of the source" in lost[0].message
    assert f"subscription {SLOT} on the target still waits for it" in lost[0].message
    assert lost[0].hint == "`migrator rollback`, then `migrator execute` copies the group again"
    assert not [f for f in all_findings if f.code.startswith("move.leftover")]
    assert all_findings[0].code == "move.slot_lost"      # first: it explains the rest


def test_a_move_whose_slot_is_there_is_not_lost():
    source, target = in_flight(slot_on_source=True)
    assert findings(source=source, target=target, code="move.slot_lost") == []
