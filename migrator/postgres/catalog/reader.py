"""The reader: runs the catalog queries and builds the facts, in the caller's
transaction, with search_path emptied so every deparsed name is schema-qualified."""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import psycopg
from psycopg import sql

from migrator.playbook import TableName
from migrator.postgres.catalog.database_queries import (
    _ALL_ROUTINES,
    _RELATIONS,
    _TABLE_RELATIONS,
    _VIEWS,
)
from migrator.postgres.catalog.dependents import RoutineSource, resolve, search_path
from migrator.postgres.catalog.facts import (
    AggregateParts,
    CollationFacts,
    ColumnFacts,
    ConstraintFacts,
    ExistingObjects,
    ForeignKey,
    Grant,
    GroupCatalog,
    IndexFacts,
    PolicyFacts,
    RoutineFacts,
    SchemaFacts,
    SequenceFacts,
    SequenceUse,
    TableFacts,
    TableRelation,
    TriggerFacts,
    TypeFacts,
    ViewFacts,
)
from migrator.postgres.catalog.queries import (
    _COLLATIONS,
    _COLUMN_GRANTS,
    _COLUMNS,
    _COMMENTS,
    _CONSTRAINTS,
    _EXTENSIONS,
    _FOREIGN_KEYS,
    _INDEXES,
    _PARTITION_TREE,
    _PARTITION_TREE_LEAVES,
    _RELATION_INDEXES,
    _POLICIES,
    _RELATION_GRANTS,
    _ROUTINES,
    _SCHEMA_COMMENTS,
    _SCHEMA_GRANTS,
    _SEQUENCE_USES,
    _TABLES,
    _TARGET_TABLES,
    _TRIGGERS,
    _TYPES,
)

_KIND = {
    "r": "table", "p": "partitioned table", "v": "view", "m": "materialized view",
    "f": "foreign table", "S": "sequence", "c": "composite type", "i": "index",
    "I": "partitioned index", "t": "TOAST table",
}


_IDENTITY = {"d": "default", "n": "nothing", "f": "full", "i": "index"}


@contextmanager
def _qualified_names(conn: psycopg.Connection) -> Iterator[None]:
    """Empty search_path for the block, so pg_get_*def and format_type qualify names.

    set_config(..., is_local => true) inside a transaction (or savepoint): an error
    rolls it back with the block, and on success the caller's value is put back.
    """
    with conn.transaction():
        old = conn.execute("SELECT pg_catalog.current_setting('search_path')").fetchone()[0]
        conn.execute("SELECT pg_catalog.set_config('search_path', '', true)")
        yield
        conn.execute("SELECT pg_catalog.set_config('search_path', %s, true)", (old,))


def _group_params(tables: Iterable[TableName]) -> dict[str, list[str]]:
    tables = list(tables)
    return {"schemas": [t.schema for t in tables], "names": [t.name for t in tables]}


def _name(schema: str, name: str) -> TableName:
    return TableName(schema, name)


def _sequence_rows(conn: psycopg.Connection, tables: Iterable[TableName]) -> list[tuple]:
    return conn.execute(_SEQUENCE_USES, _group_params(tables)).fetchall()  # type: ignore[arg-type]


def _sequence_use(row: tuple) -> SequenceUse:
    return SequenceUse(
        table=_name(row[0], row[1]), column=row[2], sequence=_name(row[3], row[4]),
        owned=row[5], identity=row[6], in_default=row[7], data_type=row[8], start=row[9],
        increment=row[10], minimum=row[11], maximum=row[12], cache=row[13], cycle=row[14],
    )


def sequences_used(
    conn: psycopg.Connection, tables: Iterable[TableName]
) -> dict[TableName, list[SequenceUse]]:
    """Every sequence each table uses: owned (serial, OWNED BY), identity, or called
    from a column default (a bare sequence counts). Tables using none are absent.

    A default that names its sequence as text (nextval('s'::text)) records no
    dependency in pg_depend and cannot be found; Postgres itself writes regclass.
    """
    found: dict[TableName, list[SequenceUse]] = {}
    with _qualified_names(conn):
        for row in _sequence_rows(conn, tables):
            if row[15]:
                use = _sequence_use(row)
                found.setdefault(use.table, []).append(use)
    return found


def _index_rows(conn: psycopg.Connection, tables: Iterable[TableName]) -> list[IndexFacts]:
    return [
        IndexFacts(
            table=_name(r[0], r[1]), name=r[2], definition=r[3], is_primary=r[4],
            is_replica_identity=r[5], is_constraint=bool(r[8]), constraints=tuple(r[8]),
            is_unique=r[6], is_valid=r[7], size_bytes=r[9], owner_constraint=r[10], columns=tuple(r[11] or ()),
            parent_index=_name(*r[12]) if r[12] else None,
        )
        for r in conn.execute(_INDEXES, _group_params(tables))  # type: ignore[arg-type]
    ]


def secondary_indexes(
    conn: psycopg.Connection, tables: Iterable[TableName], *, include_kept: bool = False
) -> list[IndexFacts]:
    """The indexes of tables that can be dropped for the bulk copy and rebuilt after:
    not the primary key, not the replica identity index, no constraint depending on it.

    With include_kept, every index, each flagged with why it must stay.
    """
    with _qualified_names(conn):
        indexes = _index_rows(conn, tables)
    return indexes if include_kept else [i for i in indexes if i.secondary]


def foreign_keys(conn: psycopg.Connection, tables: Iterable[TableName]) -> list[ForeignKey]:
    """Every foreign key from or to a table of the group, and whether it crosses the
    group's boundary (one end inside, the other outside)."""
    with _qualified_names(conn):
        return _foreign_key_rows(conn, _group_params(tables))


def table_facts(
    conn: psycopg.Connection, tables: Iterable[TableName]
) -> dict[TableName, TableFacts]:
    """Everything about each table of the group on this server, in playbook order."""
    tables = list(tables)
    params = _group_params(tables)
    with _qualified_names(conn):
        rows = conn.execute(_TABLES, params).fetchall()  # type: ignore[arg-type]
        by_table: dict[str, dict[TableName, list[Any]]] = {
            key: {} for key in ("columns", "constraints", "triggers", "types", "extensions")
        }
        for key, query, make in (
            ("columns", _COLUMNS, _column),
            ("constraints", _CONSTRAINTS, _constraint),
            ("triggers", _TRIGGERS, _trigger),
            ("types", _TYPES, _type),
            ("extensions", _EXTENSIONS, lambda r: r[2]),
        ):
            for row in conn.execute(query, params):  # type: ignore[arg-type]
                item = make(row)
                if item is not None:
                    by_table[key].setdefault(_name(row[0], row[1]), []).append(item)
        indexes: dict[TableName, list[IndexFacts]] = {}
        for index in _index_rows(conn, tables):
            indexes.setdefault(index.table, []).append(index)
        sequences: dict[TableName, list[SequenceUse]] = {}
        for row in _sequence_rows(conn, tables):
            if row[15]:
                use = _sequence_use(row)
                sequences.setdefault(use.table, []).append(use)
        comments: dict[tuple[TableName, str, str | None], str] = {
            (_name(r[0], r[1]), r[2], r[3]): r[4]
            for r in conn.execute(_COMMENTS, params)  # type: ignore[arg-type]
        }
        policies: dict[TableName, list[PolicyFacts]] = {}
        for r in conn.execute(_POLICIES, params):  # type: ignore[arg-type]
            policies.setdefault(_name(r[0], r[1]), []).append(PolicyFacts(
                name=r[2], command=r[3], permissive=r[4], roles=tuple(r[5]), using=r[6], check=r[7]))
        column_grants: dict[tuple[TableName, str], list[tuple[str, str, str]]] = {}
        for r in conn.execute(_COLUMN_GRANTS, params):  # type: ignore[arg-type]
            column_grants.setdefault((_name(r[0], r[1]), r[2]), []).append((r[3], r[4], r[5]))
        foreign_keys_of: dict[TableName, list[ForeignKey]] = {}
        for fk in _foreign_key_rows(conn, params):
            fk = replace(fk, comment=comments.get((fk.table, "constraint", fk.name)))
            for end in {fk.table, fk.references}:
                foreign_keys_of.setdefault(end, []).append(fk)

    facts: dict[TableName, TableFacts] = {}
    for row in rows:
        name = _name(row[1], row[2])
        if row[3] is None:
            facts[name] = TableFacts(name=name, exists=False)
            continue
        columns = tuple(
            (replace(c, comment=comments.get((name, "column", c.name)),
                     grants=_grants(column_grants.get((name, c.name)))), is_lo)
            for c, is_lo in by_table["columns"].get(name, ())
        )

        def commented(items, kind, name=name):
            return tuple(replace(i, comment=comments.get((name, kind, i.name))) for i in items)

        facts[name] = TableFacts(
            name=name,
            exists=True,
            kind=_KIND.get(row[4], row[4]),
            unlogged=row[5] == "u",
            partition_of=_name(*row[15]) if row[15] else None,
            partitions=tuple(_name(*p) for p in row[16] or ()),
            owner=row[7],
            owned_by_dsn_role=row[8],
            replica_identity=_IDENTITY.get(row[9], row[9]),
            row_security=row[10],
            heap_bytes=row[11],
            toast_bytes=row[12],
            index_bytes=row[13],
            estimated_rows=None if row[14] is None or row[14] < 0 else round(row[14]),
            columns=tuple(c for c, _ in columns),
            constraints=commented(by_table["constraints"].get(name, ()), "constraint"),
            indexes=commented(indexes.get(name, ()), "index"),
            sequences=tuple(sequences.get(name, ())),
            foreign_keys=tuple(foreign_keys_of.get(name, ())),
            triggers=commented(by_table["triggers"].get(name, ()), "trigger"),
            types=tuple(by_table["types"].get(name, ())),
            extensions=tuple(by_table["extensions"].get(name, ())),
            grants=_grants(row[17]),
            partition_key=row[18],
            partition_bound=row[19],
            options=tuple(row[20] or ()),
            row_security_forced=row[21],
            policies=tuple(policies.get(name, ())),
            large_object_columns=tuple(c.name for c, is_lo in columns if is_lo),
            comment=comments.get((name, "table", None)),
        )
    return facts


def _foreign_key_rows(conn: psycopg.Connection, params: dict) -> list[ForeignKey]:
    rows = conn.execute(_FOREIGN_KEYS, params).fetchall()  # type: ignore[arg-type]
    return [
        ForeignKey(
            name=r[0], table=_name(r[1], r[2]), columns=tuple(r[3]),
            references=_name(r[4], r[5]), referenced_columns=tuple(r[6]),
            definition=r[7], crosses_group=r[8] != r[9],
        )
        for r in rows
    ]


def _column(row: tuple) -> tuple[ColumnFacts, bool]:
    generated = row[7] or None
    return (
        ColumnFacts(
            name=row[2], type=row[3], not_null=row[4],
            default=None if generated else row[5],
            identity={"a": "always", "d": "by default"}.get(row[6] or ""),
            generated=row[5] if generated else None,
            generated_kind={"s": "stored", "v": "virtual"}.get(generated) if generated else None,
            collation=row[8], type_oid=row[10], statistics=row[11], compression=row[12],
            storage=row[13], local=row[14],
        ),
        bool(row[9]),
    )


def _constraint(row: tuple) -> ConstraintFacts:
    kind = {"p": "primary key", "u": "unique", "x": "exclusion", "c": "check"}[row[3]]
    return ConstraintFacts(name=row[2], kind=kind, definition=row[4], inherited=row[5])


def _trigger(row: tuple) -> TriggerFacts:
    enabled = {"O": "origin", "A": "always", "R": "replica", "D": "disabled"}.get(row[4], row[4])
    return TriggerFacts(name=row[2], definition=row[3], enabled=enabled, function=row[5], inherited=row[6])


_TYPE_KIND = {"e": "enum", "d": "domain", "c": "composite", "r": "range", "b": "base", "m": "multirange",
              "t": "table row"}


_BUILTIN_SCHEMAS = ("pg_catalog", "information_schema")


def _type(row: tuple) -> TypeFacts | None:
    (schema, name, kind, extension, labels, base, is_array, not_null, default, checks, attributes,
     subtype, depends_on, comment) = row[2:16]
    if is_array and kind == "b":
        return None  # the array type of a type listed on its own
    if schema in _BUILTIN_SCHEMAS and extension is None:
        return None
    return TypeFacts(
        schema=schema, name=name, kind=_TYPE_KIND.get(kind, kind), extension=extension,
        labels=tuple(labels or ()), base=base, not_null=bool(not_null), default=default,
        checks=tuple((c[0], c[1]) for c in checks or ()),
        attributes=tuple((a[0], a[1], a[2]) for a in attributes or ()),
        subtype=subtype,
        depends_on=tuple(TableName(s, n) for s, n in depends_on or ()
                         if s not in _BUILTIN_SCHEMAS and (s, n) != (schema, name)),
        comment=comment,
    )


def _grants(rows: Iterable[Iterable[str]] | None) -> tuple[Grant, ...]:
    """(grantee, privilege[, 'true'|'false' grantable]) rows, one Grant per grantee."""
    privileges: dict[str, list[str]] = {}
    grantable: dict[str, list[str]] = {}
    for grantee, privilege, *option in rows or ():
        privileges.setdefault(grantee, []).append(privilege)
        if option and str(option[0]).lower() in ("true", "t"):
            grantable.setdefault(grantee, []).append(privilege)
    return tuple(Grant(grantee=g, privileges=tuple(p), grantable=tuple(grantable.get(g, ())))
                 for g, p in privileges.items())


def target_tables(conn: psycopg.Connection, tables: Iterable[TableName]) -> dict[TableName, str]:
    """For each table: 'absent', 'empty', 'has rows' or 'unknown' (no right to read it)."""
    tables = list(tables)
    state: dict[TableName, str] = {}
    readable = []
    for schema, name, exists, can_read in conn.execute(_TARGET_TABLES, _group_params(tables)):  # type: ignore[arg-type]
        table = _name(schema, name)
        state[table] = "absent" if not exists else ("empty" if can_read else "unknown")
        if can_read:
            readable.append(table)
    if readable:
        query = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}::int, EXISTS (SELECT FROM {})").format(sql.Literal(i), t.identifier)
            for i, t in enumerate(readable)
        )
        for i, has_rows in conn.execute(query):
            if has_rows:
                state[readable[i]] = "has rows"
    return state


def tree_facts(conn: psycopg.Connection, tables: Iterable[TableName]) -> dict[TableName, TableFacts]:
    """`table_facts` of the tables and of every partition under them, at every level
    (parents before children): a partitioned table comes with its whole tree, whose
    partitions are created, copied, granted and compared like the tables named."""
    tables = list(tables)
    tree = [_name(r[0], r[1]) for r in conn.execute(_PARTITION_TREE, _group_params(tables))]  # type: ignore[arg-type]
    return table_facts(conn, tables + [t for t in tree if t not in tables])


def read_group(conn: psycopg.Connection, tables: Iterable[TableName], *,
               include: Iterable[TableName] = (), exclude: Iterable[TableName] = ()) -> GroupCatalog:
    """The whole group on this server: one reading, for every question about it.
    `include`/`exclude`: views and routines to move, or leave, beyond what is detected."""
    tables = list(tables)
    everything = tree_facts(conn, tables)
    facts = {t: everything[t] for t in tables}
    partitions = {t: f for t, f in everything.items() if t not in facts}
    existing = [n for n, t in everything.items() if t.exists]
    if not existing:
        return GroupCatalog(tables=facts)
    params = _group_params(existing)
    with _qualified_names(conn):
        needed = tuple(
            RoutineFacts(name=_name(r[0], r[1]), arguments=r[2], definition=r[3], comment=r[4],
                         why="the group's defaults, constraints, indexes or triggers call it")
            for r in conn.execute(_ROUTINES, params)  # type: ignore[arg-type]
        )
        shared: dict[TableName, set[TableName]] = {}
        for row in _sequence_rows(conn, existing):
            if not row[15]:
                shared.setdefault(_name(row[3], row[4]), set()).add(_name(row[0], row[1]))
        sequences = _sequences(everything)
        grants: dict[TableName, list[tuple[str, str, str]]] = {}
        for r in conn.execute(_RELATION_GRANTS, _group_params(s.name for s in sequences)):  # type: ignore[arg-type]
            grants.setdefault(_name(r[0], r[1]), []).append((r[2], r[3], r[4]))
        sequences = tuple(replace(s, grants=_grants(grants.get(s.name))) for s in sequences)
        group_names = set(existing) | {s.name for s in sequences}
        dependents = resolve(
            group_names, needed, [_view(r) for r in conn.execute(_VIEWS)],
            [_routine(r) for r in conn.execute(_ALL_ROUTINES)],
            {_name(r[0], r[1]): r[2] for r in conn.execute(_RELATIONS)},
            include=include, exclude=exclude,
        )
        routines = dependents.routines
        types = _creation_order(t for table in everything.values() for t in table.types)
        schema_names = sorted(
            {t.schema for t in existing} | {t.schema for t in types if t.movable}
            | {s.name.schema for s in sequences} | {r.name.schema for r in routines}
        )
        schema_names = [s for s in schema_names if s != "public"]
        collations = tuple(
            CollationFacts(_name(r[0], r[1]), provider=r[2], collate=r[3], ctype=r[4], locale=r[5],
                           deterministic=r[6])
            for r in conn.execute(_COLLATIONS, _group_params(existing))  # type: ignore[arg-type]
        )
        schema_comments = {r[0]: r[1] for r in conn.execute(_SCHEMA_COMMENTS, (schema_names,))}
        schema_grants: dict[str, list[tuple[str, str, str]]] = {}
        for r in conn.execute(_SCHEMA_GRANTS, (schema_names,)):
            schema_grants.setdefault(r[0], []).append((r[1], r[2], r[3]))
    return GroupCatalog(
        tables=facts, partitions=partitions, types=types, sequences=sequences, routines=routines,
        schemas=tuple(SchemaFacts(s, _grants(schema_grants.get(s)), schema_comments.get(s)) for s in schema_names),
        collations=collations,
        shared_sequences={seq: tuple(sorted(users)) for seq, users in sorted(shared.items())},
        views=dependents.views, crossings=dependents.crossings,
        name_searched=dependents.name_searched, left_behind=dependents.left_behind,
    )


_ROUTINE_KIND = {"f": "function", "p": "procedure", "a": "aggregate", "w": "window"}


def _view(r: tuple) -> ViewFacts:
    (schema, name, kind, definition, options, reads, routines, comment, owner, grants, indexes) = r
    return ViewFacts(
        name=_name(schema, name), materialized=kind == "m", definition=definition.strip().rstrip(";"),
        options=tuple(options or ()), reads=tuple(sorted({_name(s, n) for s, n, _ in reads or ()})),
        routines=tuple(sorted({(_name(s, n), args) for s, n, args in routines or ()})),
        comment=comment, owner=owner, grants=_grants(grants), indexes=tuple(indexes or ()),
    )


def _routine(r: tuple) -> RoutineSource:
    (schema, name, arguments, kind, language, source, definition, sql_body, depends_on, config,
     comment, owner, aggregate) = r
    parts = None
    if aggregate:
        transition, state_type, final, combine, initial, aggkind, args = aggregate
        parts = AggregateParts(
            arguments=args, transition=transition, state_type=state_type, final=final, combine=combine,
            initial=initial,
            functions=tuple(TableName.parse(f) for f in (transition, final, combine)
                            if f and "." in f and not f.startswith("pg_catalog.")),
        )
    facts = RoutineFacts(name=_name(schema, name), arguments=arguments, definition=definition or "",
                         comment=comment, kind=_ROUTINE_KIND.get(kind, kind), sql_body=sql_body,
                         aggregate=parts)
    return RoutineSource(facts=facts, language=language, source=source or "",
                         depends_on=tuple(_name(s, n) for s, n in depends_on or ()),
                         search_path=search_path(config))


def guarded_objects(conn: psycopg.Connection, tables: Iterable[TableName]) -> tuple[list[TableName], list[TableName]]:
    """(every relation of the group: its tables and their whole partition trees; every
    index on them): what the guards protect on this server."""
    tables = list(tables)
    tree = [_name(r[0], r[1]) for r in conn.execute(_PARTITION_TREE, _group_params(tables))]  # type: ignore[arg-type]
    relations = tables + [t for t in tree if t not in tables]
    indexes = [_name(r[0], r[1]) for r in conn.execute(_RELATION_INDEXES, _group_params(relations))]  # type: ignore[arg-type]
    return relations, indexes


def leaf_tables(conn: psycopg.Connection, tables: Iterable[TableName]) -> list[TableName]:
    """Where the rows are: each table, or for a partitioned one its leaf partitions."""
    tables = list(tables)
    leaves: dict[TableName, list[TableName]] = {}
    rows = conn.execute(_PARTITION_TREE_LEAVES, _group_params(tables)).fetchall()  # type: ignore[arg-type]
    for root_schema, root_name, schema, name in rows:
        leaves.setdefault(_name(root_schema, root_name), []).append(_name(schema, name))
    return [leaf for t in tables for leaf in leaves.get(t, [t])]


def _sequences(tables: Mapping[TableName, TableFacts]) -> tuple[SequenceFacts, ...]:
    out: dict[TableName, SequenceFacts] = {}
    for table in tables.values():
        for use in table.sequences:
            current = out.get(use.sequence)
            owned_by = (use.table, use.column) if use.owned and not use.identity else None
            if current is None:
                out[use.sequence] = SequenceFacts(
                    name=use.sequence, data_type=use.data_type, start=use.start,
                    increment=use.increment, minimum=use.minimum, maximum=use.maximum,
                    cache=use.cache, cycle=use.cycle, identity=use.identity, owned_by=owned_by,
                )
            else:
                out[use.sequence] = replace(
                    current, identity=current.identity or use.identity,
                    owned_by=current.owned_by or owned_by,
                )
    return tuple(out[name] for name in sorted(out))


def _creation_order(types: Iterable[TypeFacts]) -> tuple[TypeFacts, ...]:
    """Each type once, after the types it is made of (an enum before the composite that
    holds it, a composite before the domain over it)."""
    by_name: dict[TableName, TypeFacts] = {}
    for t in types:
        by_name.setdefault(t.identity, t)
    order = graphlib.TopologicalSorter(
        {name: [d for d in t.depends_on if d in by_name] for name, t in sorted(by_name.items())}
    )
    return tuple(by_name[name] for name in order.static_order())


def existing_objects(conn: psycopg.Connection, group: GroupCatalog) -> ExistingObjects:
    """Ask the other server, by name, for each object the group needs."""
    checks: list[tuple[str, object, str, str]] = []
    checks += [("schemas", s.name, "pg_catalog.to_regnamespace", s.name) for s in group.schemas]
    checks += [("types", t.identity, "pg_catalog.to_regtype", t.qualified) for t in group.types]
    checks += [("sequences", s.name, "pg_catalog.to_regclass", s.name.qualified) for s in group.sequences]
    checks += [("routines", r.signature, "pg_catalog.to_regprocedure", r.signature) for r in group.routines]
    checks += [("tables", t, "pg_catalog.to_regclass", t.qualified) for t in group.tables]
    checks += [("views", v.name, "pg_catalog.to_regclass", v.name.qualified) for v in group.views]
    checks += [("collations", c.name, "pg_catalog.to_regcollation", c.name.qualified) for c in group.collations]
    owners = sorted({t.owner for t in group.relations if t.owner} | {v.owner for v in group.views if v.owner})
    checks += [("roles", role, "pg_catalog.to_regrole", sql.Identifier(role).as_string(None)) for role in owners]
    if not checks:
        return ExistingObjects()
    query = sql.SQL("SELECT ARRAY[{}]").format(sql.SQL(", ").join(
        sql.SQL("{}({}) IS NOT NULL").format(sql.SQL(fn), sql.Literal(arg)) for _, _, fn, arg in checks))
    found = conn.execute(query).fetchone()[0]
    out: dict[str, set] = {"schemas": set(), "types": set(), "sequences": set(), "routines": set(), "tables": set(),
                           "views": set(), "collations": set(), "roles": set()}
    for (kind, key, _, _), present in zip(checks, found, strict=True):
        if present:
            out[kind].add(key)
    user = conn.execute("SELECT current_user").fetchone()[0]
    return ExistingObjects(**{k: frozenset(v) for k, v in out.items()}, current_user=user)


def table_relations(conn: psycopg.Connection) -> dict[int, TableRelation]:
    """Every relation of this database that serves an ordinary table, by oid: the
    tables themselves (kind 'table'), their indexes, TOAST tables and TOAST indexes,
    and the sequences their columns use, each with the table(s) it serves. System
    schemas are left out. What `analyze` needs to read pg_locks by table."""
    served: dict[int, tuple[str, list[TableName]]] = {}
    for relid, kind, schema, name in conn.execute(_TABLE_RELATIONS):
        entry = served.setdefault(relid, (kind, []))
        entry[1].append(_name(schema, name))
    return {relid: TableRelation(relid=relid, kind=kind, tables=tuple(tables))
            for relid, (kind, tables) in served.items()}
