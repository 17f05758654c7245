"""The `plan --json` document's parts (README "Plan"): scripts rely on its keys, so
they are only ever added."""

from __future__ import annotations

from typing import Any

from migrator import names
from migrator.pgbouncer.route import route_for
from migrator.plan.inspection import ServerFacts, Snapshot
from migrator.playbook import Playbook
from migrator.postgres.catalog import TableFacts
from migrator.postgres.connection import describe


def why_kept(index: Any) -> str:
    if index.is_primary:
        return "primary key"
    if index.is_replica_identity:
        return "replica identity"
    return "constraint " + ", ".join(index.constraints)


def objects_created(snapshot: Snapshot) -> dict[str, list[str]]:
    """What the schema step creates on the target besides the named tables, by kind."""
    schema = snapshot.schema
    if schema is None:
        return {}
    views = [v for v in schema.views if not v.materialized]
    return {
        "schemas": [s.name for s in schema.schemas],
        "types": [t.qualified for t in schema.types],
        "sequences": [str(s.name) for s in schema.sequences if not s.identity],
        "routines": [f"{r.name}({r.arguments})" for r in schema.routines],
        "partitions": [str(t.name) for t in schema.tables if t.partition_of is not None],
        "views": [str(v.name) for v in views],
        "materialized views": [str(v.name) for v in schema.views if v.materialized],
    }


def objects_dict(snapshot: Snapshot) -> dict[str, Any]:
    catalog = snapshot.catalog
    return {
        "creates": objects_created(snapshot),
        "left_behind": [{"object": name, "why": why} for name, why in (catalog.left_behind if catalog else ())],
        "crossing": [{"kind": c.kind, "name": c.name, "inside": [str(t) for t in c.inside],
                      "outside": [str(t) for t in c.outside], "writes_outside": c.writes_outside,
                      "chain": list(c.chain), "moves": c.moves}
                     for c in (catalog.crossings if catalog else ())],
        "extensions": {e: list(users) for e, users in (catalog.extensions.items() if catalog else ())},
        "unparsed": [{"routine": name, "why": why} for name, why in (catalog.unparsed if catalog else ())],
        "requirements": [{"kind": r.kind, "name": r.name, "needed_by": list(r.chain)}
                         for r in (catalog.requirements if catalog else ())],
    }


def playbook_dict(playbook: Playbook) -> dict[str, Any]:
    return {
        "name": playbook.name,
        "path": str(playbook.path) if playbook.path else None,
        "source": playbook.source.display,
        "target": playbook.target.display,
        "tables": [str(t) for t in playbook.tables],
        "schemas": list(playbook.schema_names) if playbook.whole_database else None,
        "app_roles": list(playbook.app_roles),
        "pgbouncers": [
            {"admin": describe(b.admin_dsn), "database": b.database, "config_file": route_for(b).where}
            for b in playbook.pgbouncers
        ],
        "cutover": {
            "max_pause_s": playbook.cutover.max_pause,
            "grace_s": playbook.cutover.grace,
            "max_lag_bytes": playbook.cutover.max_lag,
            "session_clients": playbook.cutover.session_clients,
        },
        "indexes": {"defer": playbook.indexes.defer},
        "restarts": {"wait_s": playbook.restarts.wait},
        "objects": {
            "publication": names.publication(playbook),
            "subscription": names.subscription(playbook),
            "slot": names.slot(playbook),
            "reverse_publication": names.reverse_publication(playbook),
            "reverse_subscription": names.reverse_subscription(playbook),
            "reverse_slot": names.reverse_slot(playbook),
        },
    }


def server_dict(server: ServerFacts) -> dict[str, Any]:
    rights = server.rights
    return {
        "display": server.display,
        "version": server.version,
        "major": server.major,
        "wal_level": server.wal_level,
        "settings": dict(server.settings),
        "in_use": dict(server.in_use),
        "role": {
            "name": rights.name, "superuser": rights.superuser, "replication": rights.replication,
            "create_on_database": rights.create_on_database,
            "create_subscription": rights.create_subscription,
            "signal_backend": rights.signal_backend,
        },
        "app_roles": dict(server.app_roles),
        "leftovers": [
            {"kind": o.kind, "name": o.name, "detail": o.detail, "retained_wal_bytes": o.retained_wal_bytes}
            for o in server.leftovers
        ],
        "long_transactions": [
            {"pid": t.pid, "user": t.user, "application_name": t.application_name, "state": t.state,
             "seconds": round(t.seconds, 1), "has_xid": t.has_xid}
            for t in server.long_transactions
        ],
        "extensions": dict(server.extensions),
        "failover": {
            "standbys": [{"name": s.name, "address": s.address, "state": s.state, "slot": s.slot,
                          "holds_xmin": s.holds_xmin} for s in server.failover.standbys],
            "physical_slots": list(server.failover.physical_slots),
            "synchronized_standby_slots": (list(server.failover.synchronized_standby_slots)
                                           if server.failover.synchronized_standby_slots is not None else None),
            "slotsync_workers": server.failover.slotsync_workers,
        },
    }


def table_dict(table: TableFacts) -> dict[str, Any]:
    return {
        "name": str(table.name),
        "exists": table.exists,
        "kind": table.kind,
        "size": {
            "heap_bytes": table.heap_bytes, "toast_bytes": table.toast_bytes,
            "index_bytes": table.index_bytes, "copy_bytes": table.copy_bytes,
        },
        "estimated_rows": table.estimated_rows,
        "replica_identity": table.replica_identity,
        "primary_key": table.primary_key.name if table.primary_key else None,
        "on_target": table.on_target,
        "columns": [c.name for c in table.columns],
        "indexes": [
            {"name": i.name, "definition": i.definition, "secondary": i.secondary,
             "kept_for": None if i.secondary else why_kept(i), "size_bytes": i.size_bytes}
            for i in table.indexes
        ],
        "sequences": [
            {"sequence": str(u.sequence), "column": u.column, "owned": u.owned,
             "identity": u.identity, "in_default": u.in_default}
            for u in table.sequences
        ],
        "foreign_keys": [
            {"name": fk.name, "table": str(fk.table), "columns": list(fk.columns),
             "references": str(fk.references), "referenced_columns": list(fk.referenced_columns),
             "crosses_group": fk.crosses_group}
            for fk in table.foreign_keys
        ],
        "triggers": [t.name for t in table.triggers],
        "generated_columns": [c.name for c in table.generated_columns],
        "types": [t.qualified for t in table.types],
        "extensions": list(table.extensions),
    }


def pgbouncer_dict(bouncer: Any) -> dict[str, Any]:
    entry = bouncer.entry
    return {
        "admin": bouncer.display,
        "database": bouncer.database,
        "reachable": bouncer.reachable,
        "error": bouncer.error,
        "version": bouncer.version,
        "routes_to": f"{entry.host}:{entry.port}/{entry.database}" if entry else None,
        "paused": entry.paused if entry else None,
        "points_at_source": bouncer.entry_points_at_source,
        "config_file": str(bouncer.config_file),
        "config_writable": bouncer.config_readable and bouncer.config_writable,
        "config_entry": bouncer.config_entry,
        "pool_mode": bouncer.pool_mode,
        "pool_mode_from": bouncer.pool_mode_from,
    }
