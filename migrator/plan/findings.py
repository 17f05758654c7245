"""Findings: what the snapshot means for the move, each ok, warn or block with a fix.

`check(snapshot, playbook)` runs one small function per concern, in the order a
person fixes things (servers, rights, tables, PgBouncer, leftovers). A `code` names
the condition and never changes once published, so scripts may match on it; the
message names the object, the hint says what to do.

A blocking finding stops `plan` (exit 3) and `execute`'s preflight. A warning is
something the tool handles but a person should know before the move starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from migrator import names
from migrator.plan.inspection import ServerFacts, Snapshot, TableFacts
from migrator.playbook import Playbook, format_duration, format_size

Level = Literal["ok", "warn", "block"]
OK: Level = "ok"
WARN: Level = "warn"
BLOCK: Level = "block"

# Logical replication arrived in PostgreSQL 10; the catalogs read here (attgenerated,
# conparentid, pg_sequence) are those of 12 and later.
MIN_MAJOR = 12

__all__ = ["BLOCK", "CODES", "Finding", "OK", "WARN", "blocking", "check"]


@dataclass(frozen=True)
class Finding:
    level: Level
    code: str
    subject: str
    message: str
    hint: str = ""

    def to_dict(self) -> dict[str, str]:
        return {
            "level": self.level, "code": self.code, "subject": self.subject,
            "message": self.message, "hint": self.hint,
        }

    def __str__(self) -> str:
        text = f"{self.level}: {self.message}"
        return f"{text} — {self.hint}" if self.hint else text


def blocking(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.level == BLOCK]


Check = Callable[[Snapshot, Playbook, frozenset[str]], Iterator[Finding]]
_CHECKS: list[Check] = []

# code -> one line on what it checks; the README's list is tested against this.
CODES: dict[str, str] = {}


def _check(*codes: tuple[str, str]) -> Callable[[Check], Check]:
    def register(function: Check) -> Check:
        _CHECKS.append(function)
        for code, meaning in codes:
            CODES[code] = meaning
        return function

    return register


def check(
    snapshot: Snapshot, playbook: Playbook, *, expected_objects: Iterable[str] = frozenset()
) -> list[Finding]:
    """Judge a snapshot. expected_objects: what the run's checkpoint says it created
    (publication, subscription and slot names; qualified table names on the target), so
    the preflight of a resumed run does not block on its own work."""
    expected = frozenset(expected_objects)
    return [finding for function in _CHECKS for finding in function(snapshot, playbook, expected)]


def _sides(snapshot: Snapshot) -> tuple[ServerFacts, ServerFacts]:
    return snapshot.source, snapshot.target


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


def _listing(items: Iterable[object], limit: int = 6) -> str:
    items = [str(i) for i in items]
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


# --------------------------------------------------------------------------- servers


@_check(
    ("server.version", f"both servers run PostgreSQL {MIN_MAJOR} or newer"),
    ("server.version_order", "the target's major version is not older than the source's"),
    ("server.same_cluster", "source and target are different clusters"),
)
def _versions(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    source, target = _sides(snapshot)
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


@_check(("server.wal_level", "wal_level = logical on both servers (forward and reverse replication)"))
def _wal_level(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    for server in _sides(snapshot):
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


@_check(
    ("server.slots_headroom", "free max_replication_slots for the move's slots and table-sync slots"),
    ("server.wal_senders_headroom", "free max_wal_senders for those slots"),
    ("server.logical_workers_headroom", "free max_logical_replication_workers for apply and sync workers"),
    ("server.worker_processes_headroom", "free max_worker_processes for those workers"),
)
def _headroom(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    for server in _sides(snapshot):
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


# --------------------------------------------------------------------------- rights


@_check(
    ("role.replication", "the DSN roles may open replication connections (REPLICATION or superuser)"),
    ("role.create_subscription", "the DSN roles may create subscriptions"),
    ("role.create_objects", "the DSN roles have CREATE on their database"),
    ("role.table_owner", "the source DSN role owns the group's tables (to publish them and revoke on them)"),
    ("role.signal_backend", "the source DSN role may cancel the app roles' queries at the cutover"),
)
def _rights(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    problems = 0
    for server in _sides(snapshot):
        rights = server.rights
        other = "target" if server.side == "source" else "source"
        subject = f"{server.side} role {rights.name}"
        if not rights.replication:
            problems += 1
            yield Finding(
                BLOCK, "role.replication", subject,
                f"the {server.side} DSN role {rights.name} has no REPLICATION attribute: the "
                f"subscription on the {other} connects as it",
                f"ALTER ROLE {rights.name} REPLICATION on the {server.side}",
            )
        if not rights.create_subscription:
            problems += 1
            grant = ("GRANT pg_create_subscription TO " + rights.name
                     if server.major >= 16 else "make it a superuser (PostgreSQL < 16)")
            yield Finding(
                BLOCK, "role.create_subscription", subject,
                f"the {server.side} DSN role {rights.name} cannot create subscriptions "
                f"({'forward' if server.side == 'target' else 'reverse'} replication runs one here)",
                f"{grant} on the {server.side}",
            )
        if not rights.create_on_database:
            problems += 1
            yield Finding(
                BLOCK, "role.create_objects", subject,
                f"the {server.side} DSN role {rights.name} has no CREATE privilege on its database "
                "(publications and the migrator schema need it)",
                f"GRANT CREATE ON DATABASE ... TO {rights.name} on the {server.side}",
            )
    not_owned = [t for t in snapshot.tables.values() if t.exists and not t.owned_by_dsn_role]
    for table in not_owned:
        problems += 1
        yield Finding(
            BLOCK, "role.table_owner", str(table.name),
            f"{table.name} is owned by {table.owner}, not by the source DSN role "
            f"{snapshot.source.rights.name}: only its owner can publish it",
            f"ALTER TABLE {table.name} OWNER TO {snapshot.source.rights.name}, or use the owner's DSN",
        )
    if playbook.app_roles and not snapshot.source.rights.signal_backend:
        yield Finding(
            WARN, "role.signal_backend", f"source role {snapshot.source.rights.name}",
            f"the source DSN role {snapshot.source.rights.name} cannot cancel other roles' "
            f"queries: after cutover.grace the app roles' queries still running hold the pause "
            "until max_pause aborts it",
            f"GRANT pg_signal_backend TO {snapshot.source.rights.name} on the source",
        )
    if not problems:
        yield Finding(OK, "role.replication", "roles",
                      f"DSN roles {snapshot.source.rights.name} (source) and "
                      f"{snapshot.target.rights.name} (target) have the rights a move needs")


@_check(("role.missing", "every app role exists on both servers"))
def _app_roles(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    missing = False
    for server in _sides(snapshot):
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
                      f"app roles {_listing(playbook.app_roles)} exist on both servers")


# --------------------------------------------------------------------------- tables


def _existing(snapshot: Snapshot) -> list[TableFacts]:
    return [t for t in snapshot.tables.values() if t.exists]


@_check(
    ("table.missing", "every table of the group exists on the source"),
    ("table.not_a_table", "every name in the group is a table (not a view, sequence, ...)"),
    ("table.unlogged", "no table is UNLOGGED (logical replication cannot publish it)"),
    ("table.partitioned", "no partitioned table or partition is in the group (not supported yet)"),
)
def _tables(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    bad = 0
    for table in snapshot.tables.values():
        name = str(table.name)
        if not table.exists:
            bad += 1
            yield Finding(
                BLOCK, "table.missing", name,
                f"{name} does not exist on the source {snapshot.source.display}",
                "check the name in tables: (schema.table, case-sensitive only when quoted)",
            )
        elif table.kind not in ("table", "partitioned table"):
            bad += 1
            yield Finding(
                BLOCK, "table.not_a_table", name,
                f"{name} is a {table.kind}, not a table: only tables can be replicated",
                f"remove {name} from tables: and recreate it on the target yourself",
            )
        elif table.kind == "partitioned table" or table.partition_of:
            bad += 1
            detail = (
                f"a partitioned table with partitions {_listing(table.partitions)}"
                if table.kind == "partitioned table"
                else f"a partition of {table.partition_of}"
            )
            yield Finding(
                BLOCK, "table.partitioned", name,
                f"{name} is {detail}: migrator does not move partitioned tables yet",
                "move partitioned tables another way, or leave them out of the group",
            )
        if table.exists and table.unlogged:
            bad += 1
            yield Finding(
                BLOCK, "table.unlogged", name,
                f"{name} is UNLOGGED: its changes are not in the WAL, so it cannot be published",
                f"ALTER TABLE {name} SET LOGGED (rewrites the table), or leave it out of the group",
            )
    if not bad:
        yield Finding(OK, "table.missing", "tables",
                      f"all {_plural(len(snapshot.tables), 'table')} of the group exist and are plain tables")


@_check(
    ("table.no_replica_identity", "every table has a primary key or a replica identity"),
    ("table.replica_identity_full", "REPLICA IDENTITY FULL makes every replicated UPDATE/DELETE scan the table"),
)
def _replica_identity(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    bad = 0
    for table in _existing(snapshot):
        if table.kind != "table" or table.partition_of:
            continue  # reported as not movable already
        name = str(table.name)
        if not table.identifies_rows:
            bad += 1
            why = ("REPLICA IDENTITY NOTHING" if table.replica_identity == "nothing"
                   else "no primary key or replica identity")
            yield Finding(
                BLOCK, "table.no_replica_identity", name,
                f"{name} has {why}: UPDATE/DELETE would fail once it is published",
                f"add a primary key, or ALTER TABLE {name} REPLICA IDENTITY FULL "
                "(or USING INDEX a unique index on NOT NULL columns)",
            )
        elif table.replica_identity == "full":
            yield Finding(
                WARN, "table.replica_identity_full", name,
                f"{name} has REPLICA IDENTITY FULL: each replicated UPDATE or DELETE makes the "
                "target search the row, slow on a large table",
                "add a primary key if the table has a unique NOT NULL key",
            )
    if not bad:
        yield Finding(OK, "table.no_replica_identity", "tables",
                      "every table has a primary key or a replica identity")


@_check(("fk.crosses_group", "no foreign key links a group table with a table outside the group"))
def _foreign_keys(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    seen = set()
    for table in _existing(snapshot):
        for fk in table.foreign_keys:
            if not fk.crosses_group or (fk.table, fk.name) in seen:
                continue
            seen.add((fk.table, fk.name))
            inside = fk.table in snapshot.tables
            outside = fk.references if inside else fk.table
            direction = (
                f"{fk.table} references {fk.references} (outside the group)"
                if inside else
                f"{fk.table} (outside the group) references {fk.references}"
            )
            yield Finding(
                BLOCK, "fk.crosses_group", f"{fk.table} -> {fk.references}",
                f"foreign key {fk.name}: {direction}; after the move one of them would live on "
                "another server and the key could not be enforced",
                f"add {outside} to tables:, or drop foreign key {fk.name} on {fk.table}",
            )
    if not seen:
        inside = sum(1 for t in _existing(snapshot) for fk in t.foreign_keys if fk.table == t.name)
        yield Finding(OK, "fk.crosses_group", "foreign keys",
                      f"{_plural(inside, 'foreign key')} inside the group, none crossing it")


@_check(
    ("table.extension_missing", "extensions the tables' types, defaults and indexes need are on the target"),
    ("table.large_objects", "no column refers to large objects (logical replication does not copy them)"),
    ("table.generated_columns", "generated columns are computed on the target, not copied"),
    ("table.triggers", "user triggers do not fire for replicated rows"),
    ("table.row_security", "row-level security on a table the target's apply worker writes"),
)
def _table_contents(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    target = snapshot.target
    needed: dict[str, list[str]] = {}
    for table in _existing(snapshot):
        for extension in table.extensions:
            needed.setdefault(extension, []).append(str(table.name))
    for extension, users in sorted(needed.items()):
        if extension in target.extensions:
            continue
        available = extension in target.available_extensions
        yield Finding(
            BLOCK, "table.extension_missing", extension,
            f"{_listing(users)} need{'s' if len(users) == 1 else ''} extension {extension}, "
            f"which is not installed on the target {target.display}",
            f'CREATE EXTENSION "{extension}" in the target database'
            if available else f"install the {extension} extension's package on the target server, "
            f'then CREATE EXTENSION "{extension}"',
        )
    for table in _existing(snapshot):
        name = str(table.name)
        if table.large_object_columns:
            columns = _listing(table.large_object_columns)
            if snapshot.source.large_objects:
                yield Finding(
                    BLOCK, "table.large_objects", name,
                    f"{name}.{columns} may refer to large objects ({snapshot.source.large_objects} "
                    "exist on the source): logical replication does not copy large objects",
                    "move the large objects' contents into bytea columns first",
                )
            else:
                yield Finding(
                    WARN, "table.large_objects", name,
                    f"{name}.{columns} has type oid; no large objects exist on the source now, "
                    "but any created during the move would not be copied",
                    "make sure the application does not store large objects in it",
                )
        if table.generated_columns:
            yield Finding(
                WARN, "table.generated_columns", name,
                f"{name} has generated columns {_listing(c.name for c in table.generated_columns)}: "
                "they are not replicated but computed again on the target",
                "nothing to do unless the expression depends on server settings",
            )
        active = [t for t in table.triggers if t.enabled != "disabled"]
        if active:
            yield Finding(
                WARN, "table.triggers", name,
                f"{name} has triggers {_listing(t.name for t in active)}: they are created on the "
                "target but do not fire for replicated rows (only after the cutover, for the "
                "application's own writes)",
                "check that they write only to tables of the group; their functions must exist on "
                "the target",
            )
        if table.row_security:
            yield Finding(
                WARN, "table.row_security", name,
                f"{name} has row-level security enabled: the target's apply worker writes as the "
                "subscription's owner, which must bypass it",
                "run the move with a superuser or BYPASSRLS DSN role on the target",
            )


@_check(
    ("sequence.copied_at_cutover", "sequences the group uses are copied at the cutover"),
    ("sequence.shared", "a sequence the group uses is also used by tables outside the group"),
)
def _sequences(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    sequences = snapshot.distinct_sequences
    if sequences:
        yield Finding(
            WARN, "sequence.copied_at_cutover", "sequences",
            f"{_plural(len(sequences), 'sequence')} ({_listing(sequences)}) are not replicated: "
            "the cutover copies their values to the target during the pause",
            "nothing to do; do not call nextval() on the target before the cutover",
        )
    for sequence, users in snapshot.shared_sequences.items():
        yield Finding(
            WARN, "sequence.shared", str(sequence),
            f"sequence {sequence} is also used by {_listing(users)}, outside the group: after the "
            "move each server hands out values from its own copy, so values can repeat across "
            "the two sides",
            "give the tables outside the group their own sequence, or add them to the group",
        )


@_check(
    ("index.deferred", "secondary indexes dropped for the bulk copy and rebuilt after"),
    ("index.invalid", "an invalid index (a failed CREATE INDEX CONCURRENTLY) on the source"),
)
def _indexes(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    secondary = [i for t in _existing(snapshot) for i in t.secondary_indexes]
    if playbook.indexes.defer and secondary:
        yield Finding(
            OK, "index.deferred", "indexes",
            f"{_plural(len(secondary), 'secondary index', 'secondary indexes')} "
            f"({format_size(sum(i.size_bytes for i in secondary))} on the source) are dropped on the "
            "target for the copy and rebuilt after",
        )
    for table in _existing(snapshot):
        for index in table.indexes:
            if not index.is_valid:
                yield Finding(
                    WARN, "index.invalid", str(index.qualified),
                    f"index {index.qualified} on {table.name} is invalid on the source; it will be "
                    "built (valid) on the target",
                    f"DROP INDEX {index.qualified} or REINDEX it on the source if it is still wanted",
                )


# --------------------------------------------------------------------------- the target and leftovers


@_check(
    ("target.table_not_empty", "the group's tables are absent or empty on the target"),
    ("target.table_exists", "no group table exists (even empty) on the target: the schema step creates them"),
)
def _target_tables(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    for table in snapshot.tables.values():
        name = str(table.name)
        if name in expected:
            continue  # made by the run being resumed
        if table.on_target == "has rows":
            yield Finding(
                BLOCK, "target.table_not_empty", name,
                f"{name} already holds rows on the target {snapshot.target.display}: the initial "
                "copy would add the source's rows to them",
                f"empty it (TRUNCATE {name}) or drop it on the target if those rows are not needed",
            )
        elif table.on_target == "unknown":
            yield Finding(
                BLOCK, "target.table_not_empty", name,
                f"{name} exists on the target and the target DSN role cannot read it to see "
                "whether it holds rows",
                f"GRANT SELECT ON {name} to the target DSN role, or drop the table on the target",
            )
        elif table.on_target == "empty":
            yield Finding(
                BLOCK, "target.table_exists", name,
                f"{name} already exists (empty) on the target {snapshot.target.display}: the "
                "schema step creates the group's tables itself, from the source's definitions",
                f"DROP TABLE {name} on the target",
            )


@_check(("schema.unreadable", "the schema step can read the group's definitions on the source"))
def _schema(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    if snapshot.schema_error:
        yield Finding(
            BLOCK, "schema.unreadable", "schema",
            f"the group's definitions could not be read on the source: {snapshot.schema_error}",
            "the schema step would fail the same way; fix the cause above, or report it",
        )


@_check(
    ("move.leftover_slot", "no replication slot with this move's name exists (orphaned slots retain WAL)"),
    ("move.leftover_publication", "no publication with this move's name exists"),
    ("move.leftover_subscription", "no subscription with this move's name exists"),
)
def _leftovers(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    found = False
    for server in _sides(snapshot):
        for obj in server.leftovers:
            if obj.name in expected:
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
                "left by an earlier run of this move",
                f"if that run is abandoned, `migrator rollback` it or {drop} on the {server.side}",
            )
    if not found:
        yield Finding(OK, "move.leftover_slot", "leftovers",
                      f"no publication, subscription or slot named {names.publication(playbook)}* exists")


@_check(("source.long_transaction", "no long-running transaction on the source (slot creation waits for it)"))
def _long_transactions(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
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


@_check(
    ("pgbouncer.none", "at least one PgBouncer routes the group (the cutover reroutes through it)"),
    ("pgbouncer.unreachable", "every PgBouncer's admin console answers"),
    ("pgbouncer.entry_missing", "the group's [databases] entry exists in every PgBouncer"),
    ("pgbouncer.entry_not_on_source", "that entry routes to the source now"),
    ("pgbouncer.entry_paused", "that entry is not paused or disabled now"),
    ("pgbouncer.config_not_writable", "every config file is readable and replaceable by the tool"),
    ("pgbouncer.config_entry_missing", "every config file holds the entry"),
    ("pgbouncer.config_entry_not_on_source", "the entry in every config file routes to the source"),
)
def _pgbouncers(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    if not snapshot.pgbouncers:
        yield Finding(
            WARN, "pgbouncer.none", "pgbouncers",
            "the playbook lists no PgBouncer: the cutover cannot pause or reroute the application",
            "list every PgBouncer that routes the group under pgbouncers:",
        )
        return
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
        elif bouncer.config_entry is None:
            bad = True
            yield Finding(
                BLOCK, "pgbouncer.config_entry_missing", subject,
                f"config file {bouncer.config_file} has no {entry} entry under [databases]",
                "point config_file at the file this PgBouncer was started with",
            )
        elif not bouncer.config_points_at_source:
            bad = True
            yield Finding(
                BLOCK, "pgbouncer.config_entry_not_on_source", subject,
                f"config file {bouncer.config_file} routes {entry} to '{bouncer.config_entry}', not "
                f"to the source: a RELOAD would send the application elsewhere",
                "make the file agree with what the PgBouncer routes to now, then plan again",
            )
        if not bad:
            yield Finding(
                OK, "pgbouncer.unreachable", subject,
                f"PgBouncer {bouncer.display} ({bouncer.version}) routes {entry} to the source; "
                f"{bouncer.config_file} is writable",
            )
