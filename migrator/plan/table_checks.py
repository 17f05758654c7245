"""Checks of the group's tables: that each can be published and replicated, what the
copy will not carry (large objects, generated values, sequences), its foreign keys and
indexes, and what already exists on the target.
"""

from __future__ import annotations

from collections.abc import Iterator

from migrator.plan.finding import BLOCK, OK, WARN, Finding, codes, listing, plural
from migrator.plan.inspection import Snapshot, TableFacts
from migrator.playbook import Playbook, format_size


def _existing(snapshot: Snapshot) -> list[TableFacts]:
    return [t for t in snapshot.tables.values() if t.exists]


@codes(
    ("table.missing", "every table of the group exists on the source"),
    ("table.not_a_table", "every name in the group is a table (not a view, sequence, ...)"),
    ("table.unlogged", "no table is UNLOGGED (logical replication cannot publish it)"),
    ("table.partitioned", "a partitioned table is named by its root, and its tree holds only tables"),
)
def tables(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
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
        elif table.partition_of:
            bad += 1
            yield Finding(
                BLOCK, "table.partitioned", name,
                f"{name} is a partition of {table.partition_of}: a partition moves with its whole tree",
                f"name the partitioned table at the top of its tree in tables: instead of {name}",
            )
        if table.exists and table.unlogged:
            bad += 1
            yield Finding(
                BLOCK, "table.unlogged", name,
                f"{name} is UNLOGGED: its changes are not in the WAL, so it cannot be published",
                f"ALTER TABLE {name} SET LOGGED (rewrites the table), or leave it out of the group",
            )
    catalog = snapshot.catalog
    for partition in (catalog.partitions.values() if catalog is not None else ()):
        if partition.kind != "table" and partition.kind != "partitioned table":
            bad += 1
            yield Finding(
                BLOCK, "table.partitioned", str(partition.name),
                f"{partition.name}, a partition of {partition.partition_of}, is a {partition.kind}: "
                "only tables can be replicated",
                f"detach {partition.name} (ALTER TABLE {partition.partition_of} DETACH PARTITION "
                f"{partition.name}) or move it another way",
            )
    if not bad:
        partitions = len(catalog.partitions) if catalog is not None else 0
        more = f" (and {plural(partitions, 'partition')} under them)" if partitions else ""
        yield Finding(OK, "table.missing", "tables",
                      f"all {plural(len(snapshot.tables), 'table')} of the group exist and are tables{more}")



@codes(
    ("table.no_replica_identity", "every table has a primary key or a replica identity"),
    ("table.replica_identity_full", "REPLICA IDENTITY FULL makes every replicated UPDATE/DELETE scan the table"),
)
def replica_identity(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    bad = 0
    for table in _existing(snapshot):
        if table.kind not in ("table", "partitioned table") or table.partition_of:
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


@codes(("fk.crosses_group", "no foreign key links a group table with a table outside the group"))
def foreign_keys(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
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
                      f"{plural(inside, 'foreign key')} inside the group, none crossing it")


@codes(
    ("table.extension_missing", "extensions the tables' types, defaults and indexes need are on the target"),
    ("table.large_objects", "no column refers to large objects (logical replication does not copy them)"),
    ("table.generated_columns", "generated columns are computed on the target, not copied"),
    ("table.triggers", "user triggers do not fire for replicated rows"),
    ("table.row_security", "row-level security on a table the target's apply worker writes"),
)
def table_contents(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    target = snapshot.target
    needed: dict[str, list[str]] = {}
    for table in _existing(snapshot):
        for extension in table.extensions:
            needed.setdefault(extension, []).append(str(table.name))
    for extension, users in sorted(needed.items()):
        if extension in target.extensions:
            continue
        available = extension in target.available_extensions
        others = list(snapshot.catalog.extensions.get(extension, ())) if snapshot.catalog else []
        users = [*users, *others]
        yield Finding(
            BLOCK, "table.extension_missing", extension,
            f"{listing(users)} need{'s' if len(users) == 1 else ''} extension {extension}, "
            f"which is not installed on the target {target.display}",
            f'CREATE EXTENSION "{extension}" in the target database'
            if available else f"install the {extension} extension's package on the target server, "
            f'then CREATE EXTENSION "{extension}"',
            noun="extension",
        )
    for table in _existing(snapshot):
        name = str(table.name)
        if table.large_object_columns:
            columns = listing(table.large_object_columns)
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
                f"{name} has generated columns {listing(c.name for c in table.generated_columns)}: "
                "they are not replicated but computed again on the target",
                "nothing to do unless the expression depends on server settings",
            )
        active = [t for t in table.triggers if t.enabled != "disabled"]
        if active:
            yield Finding(
                WARN, "table.triggers", name,
                f"{name} has triggers {listing(t.name for t in active)}: they are created on the "
                "target but do not fire for replicated rows (only after the cutover, for the "
                "application's own writes)",
                "nothing to do: their functions move with them, and what those write outside the "
                "group is a routine.crosses_group finding",
            )
        if table.row_security:
            subject_to = _row_security_applies(snapshot, table)
            if subject_to:
                yield Finding(
                    WARN, "table.row_security", name,
                    f"{name} has row-level security {'forced' if table.row_security_forced else 'enabled'}: "
                    f"replication writes it on the {' and the '.join(subject_to)} as the DSN role, which "
                    "is neither a superuser, nor BYPASSRLS, nor its owner there, so its policies filter "
                    "the rows replication writes",
                    f"run the move with a superuser or BYPASSRLS DSN role on the {' and the '.join(subject_to)}",
                )


def _row_security_applies(snapshot: Snapshot, table: TableFacts) -> list[str]:
    """The sides where replication's writes to a table with row security are filtered by
    it: the apply worker writes as the subscription's owner (the DSN role of the side it
    writes), and a superuser, a BYPASSRLS role or the table's owner (unless FORCE ROW LEVEL
    SECURITY) is not subject to it. On the target the table is owned by the source's
    owner where that role exists, else by the DSN role that creates it."""
    existing = snapshot.existing
    owner_on_target = (table.owner if existing is not None and table.owner in existing.roles
                       else snapshot.target.rights.name)
    sides = []
    for server, owner in ((snapshot.target, owner_on_target), (snapshot.source, table.owner)):
        rights = server.rights
        if rights.superuser or rights.bypass_rls:
            continue
        if table.row_security_forced or owner != rights.name:
            sides.append(server.side)
    return sides


@codes(
    ("sequence.copied_at_cutover", "sequences the group uses are copied at the cutover"),
    ("sequence.shared", "a sequence the group uses is also used by tables outside the group"),
)
def sequences(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    sequences = snapshot.distinct_sequences
    if sequences:
        yield Finding(
            WARN, "sequence.copied_at_cutover", "sequences",
            f"{plural(len(sequences), 'sequence')} ({listing(sequences)}) are not replicated: "
            "the cutover copies their values to the target during the pause",
            "nothing to do; do not call nextval() on the target before the cutover",
        )
    for sequence, users in snapshot.shared_sequences.items():
        yield Finding(
            WARN, "sequence.shared", str(sequence),
            f"sequence {sequence} is also used by {listing(users)}, outside the group: after the "
            "move each server hands out values from its own copy, so values can repeat across "
            "the two sides",
            "give the tables outside the group their own sequence, or add them to the group",
        )


@codes(
    ("index.deferred", "secondary indexes dropped for the bulk copy and rebuilt after"),
    ("index.invalid", "an invalid index (a failed CREATE INDEX CONCURRENTLY) on the source"),
)
def indexes(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    secondary = [i for t in _existing(snapshot) for i in t.secondary_indexes]
    if playbook.indexes.defer and secondary:
        yield Finding(
            OK, "index.deferred", "indexes",
            f"{plural(len(secondary), 'secondary index', 'secondary indexes')} "
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


# --------------------------------------------------------------------------- the target


@codes(
    ("target.table_not_empty", "the group's tables are absent or empty on the target"),
    ("target.table_exists", "no group table exists (even empty) on the target: the schema step creates them"),
)
def target_tables(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    for table in snapshot.tables.values():
        name = str(table.name)
        if name in expected or snapshot.in_flight:
            continue  # made by the run being resumed, or by this move, which is under way
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


@codes(("schema.unreadable", "the schema step can read the group's definitions on the source"))
def schema(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    if snapshot.schema_error:
        yield Finding(
            BLOCK, "schema.unreadable", "schema",
            f"the group's definitions could not be read on the source: {snapshot.schema_error}",
            "the schema step would fail the same way; fix the cause above, or report it",
        )


@codes(("schema.drift", "while this move is in flight, the group's columns and constraints are the same on both sides"))
def drift(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    if snapshot.drift is None:
        return  # the target's copy of the group is not this move's (yet, or any more)
    path = playbook.path or "PLAYBOOK"
    for difference in snapshot.drift:
        yield Finding(
            WARN, "schema.drift", str(difference.table),
            difference.sentence,
            "make the sides the same (change one back, or make the change on the other side too); "
            f"while a move is in flight, change the group with migrator ddl {path} \"SQL\", which applies "
            "it to both sides in an order that keeps replication running",
        )
    if not snapshot.drift:
        yield Finding(OK, "schema.drift", "drift",
                      "the group's columns and constraints are the same on the source and the target")
