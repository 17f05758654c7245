"""The group's schema: what the target needs, in creation order."""

from __future__ import annotations

import graphlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from psycopg import sql

from migrator.playbook import TableName
from migrator.postgres.catalog import (
    CollationFacts,
    ExistingObjects,
    Grant,
    GroupCatalog,
    IndexFacts,
    RoutineFacts,
    SchemaFacts,
    SequenceFacts,
    TableFacts,
    TypeFacts,
    ViewFacts,
)
from migrator.postgres.ddl.indexes import DeferredIndex
from migrator.postgres.ddl.objects import (
    create_collation,
    create_routine,
    create_sequence,
    create_type,
    create_view,
)
from migrator.postgres.ddl.privileges import (
    AppPrivilege,
    comment_statement,
    grant_statements,
)
from migrator.postgres.ddl.tables import (
    add_constraint,
    attachments,
    column_options,
    create_table,
    replica_identity,
    row_security,
    triggers,
)


@dataclass(frozen=True)
class GroupSchema:
    """The DDL the target needs for the group, minus what it has already."""

    schemas: tuple[SchemaFacts, ...]
    types: tuple[TypeFacts, ...]
    sequences: tuple[SequenceFacts, ...]       # to create (identity sequences: their table does)
    routines: tuple[RoutineFacts, ...]
    tables: tuple[TableFacts, ...]
    group: GroupCatalog
    views: tuple[ViewFacts, ...] = ()          # to create, in creation order
    collations: tuple[CollationFacts, ...] = ()
    owners: dict[TableName, str] = field(default_factory=dict)   # relation -> its owner, where not us
    existing: ExistingObjects = field(default_factory=ExistingObjects)   # what the target had
    app_roles: frozenset[str] = frozenset()
    app_privileges: tuple[AppPrivilege, ...] = field(default=())
    # Whole-database mode: the playbook's schemas the target has already (public): their
    # owner, privileges and comment become the source's.
    listed_schemas: tuple[SchemaFacts, ...] = ()

    def statements(self) -> list[sql.Composable]:
        """In an order where every object exists before what needs it (pg_dump's)."""
        out: list[sql.Composable] = []
        for schema in self.schemas:
            out.append(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema.name)))
        for schema in (*self.schemas, *self.listed_schemas):
            if self._owned(schema.owner):
                out.append(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(
                    sql.Identifier(schema.name), sql.Identifier(schema.owner)))
            out += grant_statements(schema.grants, sql.SQL("SCHEMA"), sql.Identifier(schema.name))
        out += [create_collation(c) for c in self.collations]
        out += [create_type(t) for t in self.types]
        out += [create_sequence(s) for s in self.sequences if not s.identity]
        if self.routines:
            # As pg_dump: a body may use tables and views made below (a SQL-standard body
            # is parsed at creation, a signature over a table's row type needs the table:
            # those are made after them).
            out.append(sql.SQL("SET LOCAL check_function_bodies = false"))
        out += [create_routine(r) for r in self.routines if not _late(r)]
        in_group = {t.name for t in self.tables}
        out += [create_table(t) for t in self.tables]
        for table in self.tables:
            out += column_options(table)
        for table in self.tables:
            out += [add_constraint(table, c) for c in table.constraints
                    # an inherited CHECK comes with the parent's; a partition's key is its own
                    # (attached to the parent's below), as pg_dump makes them
                    if not (c.inherited and c.kind == "check")]
        out += attachments(self.tables, constraints=True)
        # Plain indexes before foreign keys: a foreign key may reference a unique index
        # that no constraint owns.
        for table in self.tables:
            out += [sql.SQL(i.definition) for i in table.indexes if i.owner_constraint is None]
        out += attachments(self.tables, constraints=False)
        for table in self.tables:
            out += [add_constraint(table, fk)
                    for fk in table.foreign_keys
                    # a key to or from a table outside the group is a plan-time block
                    if fk.table == table.name and fk.references in in_group]
        for table in self.tables:
            out += replica_identity(table)
            out += triggers(table)
            out += row_security(table)
        out += [
            sql.SQL("ALTER SEQUENCE {} OWNED BY {}").format(
                s.name.identifier, sql.Identifier(s.owned_by[0].schema, s.owned_by[0].name, s.owned_by[1]))
            for s in self.sequences if s.owned_by is not None and not s.identity
        ]
        for item in _views_and_late_routines(self.views, [r for r in self.routines if _late(r)]):
            out += create_view(item) if isinstance(item, ViewFacts) else [create_routine(item)]
        out += self._owners()
        out += self._grants()
        out += self._comments()
        return out

    def _grants(self) -> list[sql.Composable]:
        out: list[sql.Composable] = []
        for table in self.tables:
            out += grant_statements(self._not_app(table.grants), sql.SQL("TABLE"), table.name.identifier)
            for column in table.columns:
                out += grant_statements(self._not_app(column.grants), sql.SQL("TABLE"),
                                         table.name.identifier, column=column.name)
        for sequence in self.group.sequences:
            out += grant_statements(self._not_app(sequence.grants), sql.SQL("SEQUENCE"),
                                     sequence.name.identifier)
        for view in self.views:
            out += grant_statements(self._not_app(view.grants), sql.SQL("TABLE"), view.name.identifier)
        return out

    def _owners(self) -> list[sql.Composable]:
        """The source's owners, where they exist on the target and are not the role that
        creates the objects there (a missing one is a plan finding)."""
        return [sql.SQL("ALTER {} {}{} OWNER TO {}").format(
                    sql.SQL(keyword), name.identifier, sql.SQL(f"({arguments})" if arguments is not None else ""),
                    sql.Identifier(role))
                for keyword, name, arguments, role in self._handed_over()]

    def new_owners(self) -> list[tuple[str | None, str]]:
        """(the schema an object is in, or None for a schema itself; the role it is handed
        to) of each ALTER ... OWNER TO the statements make: what those need of the tool's
        role (membership in the role; for a schema, CREATE on the database) and of the new
        owner (CREATE on the object's schema)."""
        handed = [(None, s.owner) for s in (*self.schemas, *self.listed_schemas) if self._owned(s.owner)]
        handed += [(name.schema, role) for _, name, _, role in self._handed_over()]
        return list(dict.fromkeys(handed))

    def _handed_over(self) -> list[tuple[str, TableName, str | None, str]]:
        """(ALTER's object keyword, the object, a routine's arguments, the new owner) of
        every object handed to its source owner, but the schemas themselves (statements()
        hands those over first)."""
        kinds = {t.name: "TABLE" for t in self.tables}
        kinds |= {v.name: "MATERIALIZED VIEW" if v.materialized else "VIEW" for v in self.views}
        out = [(kinds[name], name, None, role) for name, role in self.owners.items() if name in kinds]
        out += [("SEQUENCE", s.name, None, s.owner)
                for s in self.sequences if not s.identity and s.owned_by is None and self._owned(s.owner)]
        out += [("DOMAIN" if t.kind == "domain" else "TYPE", t.identity, None, t.owner)
                for t in self.types if self._owned(t.owner)]
        out += [(_ROUTINE_KEYWORD.get(r.kind, "FUNCTION"), r.name, r.arguments, r.owner)
                for r in self.routines if self._owned(r.owner)]
        return out

    def _owned(self, owner: str | None) -> bool:
        """Set this owner on the target? It exists there and is not the role that creates."""
        return bool(owner) and owner != self.existing.current_user and owner in self.existing.roles

    def _not_app(self, grants: Iterable[Grant]) -> list[Grant]:
        return [g for g in grants if g.grantee not in self.app_roles]

    def _comments(self) -> list[sql.Composable]:
        out: list[sql.Composable] = [comment_statement("SCHEMA", sql.Identifier(s.name), s.comment)
                                     for s in (*self.schemas, *self.listed_schemas) if s.comment is not None]
        out += [comment_statement("SEQUENCE", s.name.identifier, s.comment)
                for s in self.sequences if s.comment is not None and not s.identity]
        for t in self.types:
            if t.comment is not None:
                out.append(comment_statement("DOMAIN" if t.kind == "domain" else "TYPE", t.identity.identifier, t.comment))
        for r in self.routines:
            if r.comment is not None:
                out.append(comment_statement(
                    _ROUTINE_KEYWORD.get(r.kind, "FUNCTION"),
                    sql.SQL("{}({})").format(r.name.identifier, sql.SQL(r.arguments)), r.comment))
        for v in self.views:
            if v.comment is not None:
                out.append(comment_statement("MATERIALIZED VIEW" if v.materialized else "VIEW",
                                             v.name.identifier, v.comment))
        for table in self.tables:
            ident = table.name.identifier
            if table.comment is not None:
                out.append(comment_statement("TABLE", ident, table.comment))
            for c in table.columns:
                if c.comment is not None:
                    out.append(comment_statement("COLUMN", sql.Identifier(table.name.schema, table.name.name, c.name),
                                        c.comment))
            for constraint in (*table.constraints, *(fk for fk in table.foreign_keys if fk.table == table.name)):
                if constraint.comment is not None:
                    out.append(sql.SQL("COMMENT ON CONSTRAINT {} ON {} IS {}").format(
                        sql.Identifier(constraint.name), ident, sql.Literal(constraint.comment)))
            for index in table.indexes:
                if index.comment is not None:
                    out.append(comment_statement("INDEX", index.qualified.identifier, index.comment))
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


_ROUTINE_KEYWORD = {"procedure": "PROCEDURE", "aggregate": "AGGREGATE"}


def _late(r: RoutineFacts) -> bool:
    """Made after the tables: a SQL-standard body (parsed at creation) or a signature
    over a relation's row type."""
    return r.sql_body or bool(r.after)


def _views_and_late_routines(views: Iterable[ViewFacts], routines: Iterable[RoutineFacts]
                             ) -> list[ViewFacts | RoutineFacts]:
    """Views and late routines in one order, each after what it needs: a view after the
    views it reads and the late routines it calls, a routine after the views its
    signature or SQL-standard body uses (pg_dump sorts them the same way)."""
    views, routines = list(views), list(routines)
    view_names = {v.name for v in views}
    routine_keys = {(r.name, r.arguments) for r in routines}
    nodes: dict[object, ViewFacts | RoutineFacts] = {v.name: v for v in views}
    nodes |= {(r.name, r.arguments): r for r in routines}
    graph = graphlib.TopologicalSorter()
    for v in views:
        graph.add(v.name, *[r for r in v.reads if r in view_names], *[k for k in v.routines if k in routine_keys])
    for r in routines:
        graph.add((r.name, r.arguments), *[a for a in r.after if a in view_names])
    return [nodes[n] for n in graph.static_order() if n in nodes]


def group_schema(group: GroupCatalog, existing: ExistingObjects, app_roles: Iterable[str]) -> GroupSchema:
    """What the target must get, given what it has (a schema, type, sequence or function
    it has already is not ours to create, grant on or drop)."""
    roles = frozenset(app_roles)
    tables = tuple(group.relations)
    views = tuple(v for v in group.views if v.name not in existing.views)
    privileges = []
    for view in views:
        for g in view.grants:
            if g.grantee in roles:
                privileges += [AppPrivilege("TABLE", view.name.schema, view.name.name, g.grantee, p)
                               for p in g.privileges]
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
        listed_schemas=tuple(s for s in group.schemas if s.name in existing.schemas and s.listed),
        types=tuple(t for t in group.types if t.movable and t.identity not in existing.types),
        sequences=tuple(s for s in group.sequences if s.identity or s.name not in existing.sequences),
        routines=tuple(r for r in group.routines if r.signature not in existing.routines),
        tables=tables,
        group=group,
        views=views,
        collations=tuple(c for c in group.collations if c.name not in existing.collations),
        owners={name: owner for name, owner in
                [(t.name, t.owner) for t in tables] + [(v.name, v.owner) for v in views]
                if owner and owner != existing.current_user and owner in existing.roles},
        app_roles=roles,
        app_privileges=tuple(privileges),
        existing=existing,
    )
