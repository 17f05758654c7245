"""A table of the group (or a partition of one) as statements: CREATE TABLE, column
options, constraints, index attachments, replica identity, triggers, row security."""

from __future__ import annotations

from collections.abc import Iterable

from psycopg import sql

from migrator.postgres.catalog import ColumnFacts, TableFacts
from migrator.postgres.ddl.objects import identity_sequence, sequence_options
from migrator.postgres.ddl.privileges import grantee


def create_table(table: TableFacts) -> sql.Composable:
    tail: list[sql.Composable] = []
    if table.partition_key:
        tail.append(sql.SQL("PARTITION BY {}").format(sql.SQL(table.partition_key)))
    if table.options:
        tail.append(sql.SQL("WITH ({})").format(sql.SQL(", ").join(sql.SQL(o) for o in table.options)))
    end = sql.SQL("").join(sql.SQL(" ") + t for t in tail)
    if table.partition_of is not None and table.partition_bound:
        # Columns, NOT NULL and defaults come with the parent.
        return sql.SQL("CREATE TABLE {} PARTITION OF {} {}{}").format(
            table.name.identifier, table.partition_of.identifier, sql.SQL(table.partition_bound), end)
    identity_sequences = {u.column: u for u in table.sequences if u.identity}
    return sql.SQL("CREATE {}TABLE {} ({}){}").format(
        sql.SQL("UNLOGGED " if table.unlogged else ""), table.name.identifier,
        sql.SQL(", ").join(_column(c, identity_sequences) for c in table.columns), end)


def _partitioned(table: TableFacts) -> bool:
    return table.partition_key is not None or table.partition_of is not None


def _only(table: TableFacts) -> sql.Composable:
    """ALTER TABLE ONLY for a partition tree (each member gets its own), plain otherwise."""
    return sql.SQL("ONLY {}").format(table.name.identifier) if _partitioned(table) else table.name.identifier


_STORAGE = {"p": "PLAIN", "e": "EXTERNAL", "m": "MAIN", "x": "EXTENDED"}


_COMPRESSION = {"p": "pglz", "l": "lz4"}


def column_options(table: TableFacts) -> list[sql.Composable]:
    out: list[sql.Composable] = []
    for c in table.columns:
        if c.statistics is None and c.storage not in _STORAGE and c.compression not in _COMPRESSION:
            continue
        column = sql.SQL("ALTER TABLE {} ALTER COLUMN {} ").format(_only(table), sql.Identifier(c.name))
        if c.statistics is not None:
            out.append(column + sql.SQL("SET STATISTICS {}").format(sql.Literal(c.statistics)))
        if c.storage in _STORAGE:
            out.append(column + sql.SQL("SET STORAGE {}").format(sql.SQL(_STORAGE[c.storage])))
        if c.compression in _COMPRESSION:
            out.append(column + sql.SQL("SET COMPRESSION {}").format(sql.SQL(_COMPRESSION[c.compression])))
    return out


def attachments(tables: Iterable[TableFacts], *, constraints: bool) -> list[sql.Composable]:
    """ALTER INDEX parent ATTACH PARTITION child: a partition's index joins its parent's
    (a key's index with its constraint, others after their CREATE INDEX)."""
    return [
        sql.SQL("ALTER INDEX {} ATTACH PARTITION {}").format(i.parent_index.identifier, i.qualified.identifier)
        for t in tables for i in t.indexes
        if i.parent_index is not None and (i.owner_constraint is not None) == constraints
    ]


_POLICY_COMMAND = {"*": "ALL", "r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE"}


def row_security(table: TableFacts) -> list[sql.Composable]:
    out: list[sql.Composable] = []
    if table.row_security:
        out.append(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(_only(table)))
    if table.row_security_forced:
        out.append(sql.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY").format(_only(table)))
    for p in table.policies:
        parts = [sql.SQL("CREATE POLICY {} ON {}").format(sql.Identifier(p.name), table.name.identifier)]
        if not p.permissive:
            parts.append(sql.SQL("AS RESTRICTIVE"))
        parts.append(sql.SQL("FOR {}").format(sql.SQL(_POLICY_COMMAND.get(p.command, "ALL"))))
        parts.append(sql.SQL("TO {}").format(sql.SQL(", ").join(grantee(r) for r in p.roles)))
        if p.using is not None:
            parts.append(sql.SQL("USING ({})").format(sql.SQL(p.using)))
        if p.check is not None:
            parts.append(sql.SQL("WITH CHECK ({})").format(sql.SQL(p.check)))
        out.append(sql.SQL(" ").join(parts))
    return out


def _column(c: ColumnFacts, identity_sequences: dict) -> sql.Composable:
    parts: list[sql.Composable] = [sql.Identifier(c.name), sql.SQL(c.type)]
    if c.collation:
        parts.append(sql.SQL("COLLATE {}").format(sql.SQL(c.collation)))
    if c.generated is not None:
        parts.append(sql.SQL("GENERATED ALWAYS AS ({}) {}").format(
            sql.SQL(c.generated), sql.SQL("VIRTUAL" if c.generated_kind == "virtual" else "STORED")))
    elif c.identity:
        use = identity_sequences.get(c.name)
        # The sequence keeps its name, so the cutover's copy of its value finds it.
        options = sql.SQL(" (SEQUENCE NAME {} {})").format(
            use.sequence.identifier, sequence_options(identity_sequence(use))) if use else sql.SQL("")
        parts.append(sql.SQL("GENERATED {} AS IDENTITY{}").format(
            sql.SQL("ALWAYS" if c.identity == "always" else "BY DEFAULT"), options))
    elif c.default is not None:
        parts.append(sql.SQL("DEFAULT {}").format(sql.SQL(c.default)))
    if c.not_null:
        parts.append(sql.SQL("NOT NULL"))
    return sql.SQL(" ").join(parts)


def add_constraint(table: TableFacts, constraint) -> sql.Composable:
    # Keys are made per member and attached (ONLY); a CHECK or a foreign key on a
    # partitioned table reaches its partitions by itself (Postgres refuses ONLY there).
    keyed = getattr(constraint, "kind", None) in ("primary key", "unique", "exclusion")
    target = _only(table) if keyed else table.name.identifier
    return sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
        target, sql.Identifier(constraint.name), sql.SQL(constraint.definition))


def replica_identity(table: TableFacts) -> list[sql.Composable]:
    if table.replica_identity == "default":
        return []
    if table.replica_identity == "index":
        index = table.replica_identity_index
        what = sql.SQL("USING INDEX {}").format(sql.Identifier(index.name if index else ""))
    else:
        what = sql.SQL(table.replica_identity.upper())
    return [sql.SQL("ALTER TABLE {} REPLICA IDENTITY {}").format(table.name.identifier, what)]


_TRIGGER_STATE = {"disabled": "DISABLE", "always": "ENABLE ALWAYS", "replica": "ENABLE REPLICA"}


def triggers(table: TableFacts) -> list[sql.Composable]:
    out: list[sql.Composable] = []
    for trigger in table.triggers:
        if trigger.inherited:
            continue  # the partitioned parent's trigger makes it
        out.append(sql.SQL(trigger.definition))
        state = _TRIGGER_STATE.get(trigger.enabled)
        if state:
            out.append(sql.SQL("ALTER TABLE {} {} TRIGGER {}").format(
                table.name.identifier, sql.SQL(state), sql.Identifier(trigger.name)))
    return out
