"""The group's schema as statements: catalog facts in, `sql.Composable`s out.

Nothing here reads a server: `migrator.postgres.catalog` reads the source once and
this module turns what it read into the DDL the target needs, in an order where every
object exists before what needs it (pg_dump's sections are the reference: schemas,
types, sequences, functions, tables, constraints, indexes, foreign keys, triggers,
ownership, grants, comments). The plan prints these statements and the schema step
runs them, so what a person approves is what runs.

Definitions are the server's own deparsed text (format_type, pg_get_expr,
pg_get_constraintdef, pg_get_indexdef, pg_get_triggerdef, pg_get_functiondef), read
with an empty search_path; every identifier is composed with `sql.Identifier`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from psycopg import sql

from migrator.playbook import TableName
from migrator.postgres.catalog import (
    ColumnFacts,
    ExistingObjects,
    Grant,
    GroupCatalog,
    IndexFacts,
    RoutineFacts,
    SchemaFacts,
    SequenceFacts,
    TableFacts,
    TypeFacts,
)

__all__ = [
    "AppPrivilege",
    "DeferredIndex",
    "GroupSchema",
    "group_schema",
    "privilege_statements",
]


@dataclass(frozen=True)
class AppPrivilege:
    """One privilege of an app role on a group object, switched at the cutover: revoked
    on the side that stops serving, granted on the side that starts."""

    kind: str                      # 'TABLE' | 'SEQUENCE'
    schema: str
    name: str
    role: str
    privilege: str                 # 'SELECT', 'INSERT', ...
    column: str | None = None      # a column-level privilege

    def to_list(self) -> list:
        return [self.kind, self.schema, self.name, self.role, self.privilege, self.column]

    @classmethod
    def from_list(cls, item: Sequence) -> AppPrivilege:
        return cls(*item)


@dataclass(frozen=True)
class DeferredIndex:
    """A secondary index dropped for the bulk copy and rebuilt after it, as recorded in
    the checkpoint (so a crash in between still knows what to rebuild)."""

    table: TableName
    name: str
    definition: str                # pg_get_indexdef: CREATE [UNIQUE] INDEX name ON [ONLY] ...
    comment: str | None = None
    # On a partitioned table: the partitions' indexes attached to it (any depth), each
    # built on its own and attached, as pg_dump makes them: (index, its parent index).
    attached: tuple[tuple[DeferredIndex, TableName], ...] = ()
    # The group table whose initial copy brings this index's rows (a partition's root):
    # the index can be built as soon as that copy is done.
    copied_with: TableName | None = None

    @classmethod
    def of(cls, index: IndexFacts, children: Iterable[tuple[IndexFacts, TableName]] = (),
           copied_with: TableName | None = None) -> DeferredIndex:
        return cls(index.table, index.name, index.definition, index.comment,
                   tuple((cls.of(child), parent) for child, parent in children), copied_with)

    @property
    def identity(self) -> TableName:
        return TableName(self.table.schema, self.name)

    def drop(self) -> sql.Composable:
        return sql.SQL("DROP INDEX IF EXISTS {}").format(self.identity.identifier)

    def build(self) -> list[sql.Composable]:
        """CREATE INDEX IF NOT EXISTS (safe to run again) and the index's comment, which
        went with the DROP; on a partitioned table, then each partition's index and its
        ATTACH (a no-op when attached already)."""
        head, rest = self.definition.split(" INDEX ", 1)
        out: list[sql.Composable] = [sql.SQL(f"{head} INDEX IF NOT EXISTS {rest}")]
        if self.comment is not None:
            out.append(_comment("INDEX", self.identity.identifier, self.comment))
        for child, _ in self.attached:
            out += child.build()
        out += [sql.SQL("ALTER INDEX {} ATTACH PARTITION {}").format(parent.identifier, child.identity.identifier)
                for child, parent in self.attached]
        return out

    def to_dict(self) -> dict:
        return {"table": [self.table.schema, self.table.name], "name": self.name,
                "definition": self.definition, "comment": self.comment,
                "attached": [[child.to_dict(), [parent.schema, parent.name]] for child, parent in self.attached],
                "copied_with": [self.copied_with.schema, self.copied_with.name] if self.copied_with else None}

    @classmethod
    def from_dict(cls, data: dict) -> DeferredIndex:
        return cls(TableName(*data["table"]), data["name"], data["definition"], data.get("comment"),
                   tuple((cls.from_dict(child), TableName(*parent)) for child, parent in data.get("attached", ())),
                   TableName(*data["copied_with"]) if data.get("copied_with") else None)


@dataclass(frozen=True)
class GroupSchema:
    """The DDL the target needs for the group, minus what it has already."""

    schemas: tuple[SchemaFacts, ...]
    types: tuple[TypeFacts, ...]
    sequences: tuple[SequenceFacts, ...]       # to create (identity sequences: their table does)
    routines: tuple[RoutineFacts, ...]
    tables: tuple[TableFacts, ...]
    group: GroupCatalog
    app_roles: frozenset[str] = frozenset()
    app_privileges: tuple[AppPrivilege, ...] = field(default=())

    def statements(self) -> list[sql.Composable]:
        """In an order where every object exists before what needs it (pg_dump's)."""
        out: list[sql.Composable] = []
        for schema in self.schemas:
            out.append(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema.name)))
            out += _grant_statements(schema.grants, sql.SQL("SCHEMA"), sql.Identifier(schema.name))
        out += [_create_type(t) for t in self.types]
        out += [_create_sequence(s) for s in self.sequences if not s.identity]
        out += [sql.SQL(r.definition) for r in self.routines]
        in_group = {t.name for t in self.tables}
        out += [_create_table(t) for t in self.tables]
        for table in self.tables:
            out += _column_options(table)
        for table in self.tables:
            out += [_add_constraint(table, c) for c in table.constraints
                    # an inherited CHECK comes with the parent's; a partition's key is its own
                    # (attached to the parent's below), as pg_dump makes them
                    if not (c.inherited and c.kind == "check")]
        out += _attachments(self.tables, constraints=True)
        # Plain indexes before foreign keys: a foreign key may reference a unique index
        # that no constraint owns.
        for table in self.tables:
            out += [sql.SQL(i.definition) for i in table.indexes if i.owner_constraint is None]
        out += _attachments(self.tables, constraints=False)
        for table in self.tables:
            out += [_add_constraint(table, fk)
                    for fk in table.foreign_keys
                    # a key to or from a table outside the group is a plan-time block
                    if fk.table == table.name and fk.references in in_group]
        for table in self.tables:
            out += _replica_identity(table)
            out += _triggers(table)
            out += _row_security(table)
        out += [
            sql.SQL("ALTER SEQUENCE {} OWNED BY {}").format(
                s.name.identifier, sql.Identifier(s.owned_by[0].schema, s.owned_by[0].name, s.owned_by[1]))
            for s in self.sequences if s.owned_by is not None and not s.identity
        ]
        out += self._grants()
        out += self._comments()
        return out

    def _grants(self) -> list[sql.Composable]:
        out: list[sql.Composable] = []
        for table in self.tables:
            out += _grant_statements(self._not_app(table.grants), sql.SQL("TABLE"), table.name.identifier)
            for column in table.columns:
                out += _grant_statements(self._not_app(column.grants), sql.SQL("TABLE"),
                                         table.name.identifier, column=column.name)
        for sequence in self.group.sequences:
            out += _grant_statements(self._not_app(sequence.grants), sql.SQL("SEQUENCE"),
                                     sequence.name.identifier)
        return out

    def _not_app(self, grants: Iterable[Grant]) -> list[Grant]:
        return [g for g in grants if g.grantee not in self.app_roles]

    def _comments(self) -> list[sql.Composable]:
        out: list[sql.Composable] = []
        for t in self.types:
            if t.comment is not None:
                out.append(_comment("DOMAIN" if t.kind == "domain" else "TYPE", t.identity.identifier, t.comment))
        for r in self.routines:
            if r.comment is not None:
                out.append(_comment("FUNCTION", sql.SQL("{}({})").format(r.name.identifier, sql.SQL(r.arguments)),
                                    r.comment))
        for table in self.tables:
            ident = table.name.identifier
            if table.comment is not None:
                out.append(_comment("TABLE", ident, table.comment))
            for c in table.columns:
                if c.comment is not None:
                    out.append(_comment("COLUMN", sql.Identifier(table.name.schema, table.name.name, c.name),
                                        c.comment))
            for constraint in (*table.constraints, *(fk for fk in table.foreign_keys if fk.table == table.name)):
                if constraint.comment is not None:
                    out.append(sql.SQL("COMMENT ON CONSTRAINT {} ON {} IS {}").format(
                        sql.Identifier(constraint.name), ident, sql.Literal(constraint.comment)))
            for index in table.indexes:
                if index.comment is not None:
                    out.append(_comment("INDEX", index.qualified.identifier, index.comment))
            for trigger in table.triggers:
                if trigger.comment is not None:
                    out.append(sql.SQL("COMMENT ON TRIGGER {} ON {} IS {}").format(
                        sql.Identifier(trigger.name), ident, sql.Literal(trigger.comment)))
        return out

    @property
    def secondary_indexes(self) -> list[DeferredIndex]:
        """The indexes deferred for the copy; a partitioned table's with the partitions'
        indexes attached to it."""
        by_parent: dict[TableName, list[IndexFacts]] = {}
        for t in self.tables:
            for i in t.indexes:
                if i.parent_index is not None:
                    by_parent.setdefault(i.parent_index, []).append(i)

        def attached(index: IndexFacts) -> list[tuple[IndexFacts, TableName]]:
            out = []
            for child in by_parent.get(index.qualified, []):
                out += [(child, index.qualified), *attached(child)]
            return out

        parent_of = {t.name: t.partition_of for t in self.tables}

        def root(table: TableName) -> TableName:
            return root(parent_of[table]) if parent_of.get(table) in parent_of else table

        return [DeferredIndex.of(i, attached(i), root(t.name)) for t in self.tables for i in t.secondary_indexes
                if i.parent_index is None]

    @property
    def sequence_names(self) -> list[TableName]:
        """Every sequence the group uses: the cutover copies each one's value."""
        return [s.name for s in self.group.sequences]


def group_schema(group: GroupCatalog, existing: ExistingObjects, app_roles: Iterable[str]) -> GroupSchema:
    """What the target must get, given what it has (a schema, type, sequence or function
    it has already is not ours to create, grant on or drop)."""
    roles = frozenset(app_roles)
    tables = tuple(group.relations)
    privileges = []
    for table in tables:
        for g in table.grants:
            if g.grantee in roles:
                privileges += [AppPrivilege("TABLE", table.name.schema, table.name.name, g.grantee, p)
                               for p in g.privileges]
        for column in table.columns:
            for g in column.grants:
                if g.grantee in roles:
                    privileges += [AppPrivilege("TABLE", table.name.schema, table.name.name, g.grantee, p,
                                                column.name) for p in g.privileges]
    for sequence in group.sequences:
        for g in sequence.grants:
            if g.grantee in roles:
                privileges += [AppPrivilege("SEQUENCE", sequence.name.schema, sequence.name.name, g.grantee, p)
                               for p in g.privileges]
    return GroupSchema(
        schemas=tuple(s for s in group.schemas if s.name not in existing.schemas),
        types=tuple(t for t in group.types if t.movable and t.identity not in existing.types),
        sequences=tuple(s for s in group.sequences if s.identity or s.name not in existing.sequences),
        routines=tuple(r for r in group.routines if r.signature not in existing.routines),
        tables=tables,
        group=group,
        app_roles=roles,
        app_privileges=tuple(privileges),
    )


# --------------------------------------------------------------------------- pieces


def _create_type(t: TypeFacts) -> sql.Composable:
    name = t.identity.identifier
    if t.kind == "enum":
        return sql.SQL("CREATE TYPE {} AS ENUM ({})").format(name, sql.SQL(", ").join(map(sql.Literal, t.labels)))
    if t.kind == "composite":
        attributes = [
            sql.SQL(" ").join([sql.Identifier(a), sql.SQL(typ)]
                              + ([sql.SQL("COLLATE {}").format(sql.SQL(coll))] if coll else []))
            for a, typ, coll in t.attributes
        ]
        return sql.SQL("CREATE TYPE {} AS ({})").format(name, sql.SQL(", ").join(attributes))
    if t.kind == "range":
        return sql.SQL("CREATE TYPE {} AS RANGE (subtype = {})").format(name, sql.SQL(t.subtype or ""))
    parts = [sql.SQL("CREATE DOMAIN {} AS {}").format(name, sql.SQL(t.base or ""))]
    if t.default is not None:
        parts.append(sql.SQL("DEFAULT {}").format(sql.SQL(t.default)))
    if t.not_null:
        parts.append(sql.SQL("NOT NULL"))
    parts += [sql.SQL("CONSTRAINT {} {}").format(sql.Identifier(n), sql.SQL(d)) for n, d in t.checks]
    return sql.SQL(" ").join(parts)


def _sequence_options(s: SequenceFacts) -> sql.Composable:
    return sql.SQL("INCREMENT BY {} MINVALUE {} MAXVALUE {} START WITH {} CACHE {} {}").format(
        sql.Literal(s.increment), sql.Literal(s.minimum), sql.Literal(s.maximum),
        sql.Literal(s.start), sql.Literal(s.cache), sql.SQL("CYCLE" if s.cycle else "NO CYCLE"))


def _create_sequence(s: SequenceFacts) -> sql.Composable:
    # An identity column's sequence takes the column's type; a sequence of its own says it.
    return sql.SQL("CREATE SEQUENCE IF NOT EXISTS {} AS {} {}").format(
        s.name.identifier, sql.SQL(s.data_type), _sequence_options(s))


def _create_table(table: TableFacts) -> sql.Composable:
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


def _column_options(table: TableFacts) -> list[sql.Composable]:
    out: list[sql.Composable] = []
    for c in table.columns:
        column = sql.SQL("ALTER TABLE {} ALTER COLUMN {} ").format(_only(table), sql.Identifier(c.name))
        if c.statistics is not None:
            out.append(column + sql.SQL("SET STATISTICS {}").format(sql.Literal(c.statistics)))
        if c.storage in _STORAGE:
            out.append(column + sql.SQL("SET STORAGE {}").format(sql.SQL(_STORAGE[c.storage])))
        if c.compression in _COMPRESSION:
            out.append(column + sql.SQL("SET COMPRESSION {}").format(sql.SQL(_COMPRESSION[c.compression])))
    return out


def _attachments(tables: Iterable[TableFacts], *, constraints: bool) -> list[sql.Composable]:
    """ALTER INDEX parent ATTACH PARTITION child: a partition's index joins its parent's
    (a key's index with its constraint, others after their CREATE INDEX)."""
    return [
        sql.SQL("ALTER INDEX {} ATTACH PARTITION {}").format(i.parent_index.identifier, i.qualified.identifier)
        for t in tables for i in t.indexes
        if i.parent_index is not None and (i.owner_constraint is not None) == constraints
    ]


_POLICY_COMMAND = {"*": "ALL", "r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE"}


def _row_security(table: TableFacts) -> list[sql.Composable]:
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
        parts.append(sql.SQL("TO {}").format(sql.SQL(", ").join(_grantee(r) for r in p.roles)))
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
            use.sequence.identifier, _sequence_options(_as_sequence(use))) if use else sql.SQL("")
        parts.append(sql.SQL("GENERATED {} AS IDENTITY{}").format(
            sql.SQL("ALWAYS" if c.identity == "always" else "BY DEFAULT"), options))
    elif c.default is not None:
        parts.append(sql.SQL("DEFAULT {}").format(sql.SQL(c.default)))
    if c.not_null:
        parts.append(sql.SQL("NOT NULL"))
    return sql.SQL(" ").join(parts)


def _as_sequence(use) -> SequenceFacts:
    return SequenceFacts(name=use.sequence, data_type=use.data_type, start=use.start, increment=use.increment,
                         minimum=use.minimum, maximum=use.maximum, cache=use.cache, cycle=use.cycle,
                         identity=True, owned_by=None)


def _add_constraint(table: TableFacts, constraint) -> sql.Composable:
    # A CHECK on a partitioned table must reach its partitions: no ONLY for it.
    target = table.name.identifier if getattr(constraint, "kind", None) == "check" else _only(table)
    return sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
        target, sql.Identifier(constraint.name), sql.SQL(constraint.definition))


def _replica_identity(table: TableFacts) -> list[sql.Composable]:
    if table.replica_identity == "default":
        return []
    if table.replica_identity == "index":
        index = table.replica_identity_index
        what = sql.SQL("USING INDEX {}").format(sql.Identifier(index.name if index else ""))
    else:
        what = sql.SQL(table.replica_identity.upper())
    return [sql.SQL("ALTER TABLE {} REPLICA IDENTITY {}").format(table.name.identifier, what)]


_TRIGGER_STATE = {"disabled": "DISABLE", "always": "ENABLE ALWAYS", "replica": "ENABLE REPLICA"}


def _triggers(table: TableFacts) -> list[sql.Composable]:
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


def _grantee(role: str) -> sql.Composable:
    return sql.SQL("PUBLIC") if role == "PUBLIC" else sql.Identifier(role)


def _grant_statements(grants: Iterable[Grant], kind: sql.Composable, target: sql.Composable, *,
                      column: str | None = None) -> list[sql.Composable]:
    out: list[sql.Composable] = []
    columns = sql.SQL(" ({})").format(sql.Identifier(column)) if column else sql.SQL("")
    for g in grants:
        for privilege in g.privileges:
            out.append(sql.SQL("GRANT {}{} ON {} {} TO {}{}").format(
                sql.SQL(privilege), columns, kind, target, _grantee(g.grantee),
                sql.SQL(" WITH GRANT OPTION" if privilege in g.grantable else "")))
    return out


def _comment(kind: str, target: sql.Composable, text: str) -> sql.Composable:
    return sql.SQL("COMMENT ON {} {} IS {}").format(sql.SQL(kind), target, sql.Literal(text))


def privilege_statements(privileges: Iterable, *, grant: bool) -> list[sql.Composable]:
    """GRANT (or REVOKE) the recorded app-role privileges, one statement per object, role
    and column. Takes AppPrivilege values or their checkpoint lists."""
    by_object: dict[tuple[str, str, str, str, str | None], set[str]] = {}
    for item in privileges:
        p = item if isinstance(item, AppPrivilege) else AppPrivilege.from_list(item)
        by_object.setdefault((p.kind, p.schema, p.name, p.role, p.column), set()).add(p.privilege)
    out = []
    for (kind, schema, name, role, column), privs in sorted(by_object.items(), key=lambda kv: (
            kv[0][0], kv[0][1], kv[0][2], kv[0][3], kv[0][4] or "")):
        # A column list belongs to each privilege: "SELECT (c), UPDATE (c)".
        columns = sql.SQL(" ({})").format(sql.Identifier(column)) if column else sql.SQL("")
        template = "GRANT {} ON {} {} TO {}" if grant else "REVOKE {} ON {} {} FROM {}"
        out.append(sql.SQL(template).format(
            sql.SQL(", ").join(sql.SQL("{}{}").format(sql.SQL(p), columns) for p in sorted(privs)),
            sql.SQL(kind), sql.Identifier(schema, name), sql.Identifier(role)))
    return out
