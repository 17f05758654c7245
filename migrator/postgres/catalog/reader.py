"""The reader: runs the catalog queries and builds the facts, in the caller's
transaction, with search_path emptied so every deparsed name is schema-qualified."""

from __future__ import annotations

import concurrent.futures
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
    _DATABASE_OBJECTS,
    _EXTENSION_ROUTINES,
    _RELATIONS,
    _SCHEMA_SEQUENCES,
    _SCHEMA_TABLES,
    _TABLE_RELATIONS,
    _TYPE_NAMES,
    _USER_SCHEMAS,
    _VIEWS,
)
from migrator.postgres.catalog.dependents import Dependents, RoutineSource, TypeName, resolve, search_path
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
    Requirement,
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
    _NO_COMPRESSION,
    _COMMENTS,
    _CONSTRAINTS,
    _EXTENSIONS,
    _FOREIGN_KEYS,
    _INDEXES,
    _NAMED_TYPES,
    _NEEDED_ROUTINES,
    _PARTITION_TREE,
    _PARTITION_TREE_LEAVES,
    _RELATION_INDEXES,
    _POLICIES,
    _RELATION_GRANTS,
    _REQUIRED,
    _SCHEMA_COMMENTS,
    _SCHEMA_GRANTS,
    _SEQUENCE_DETAILS,
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
    """Empty search_path for the block, so pg_get_*def and format_type qualify names;
    and no JIT: the planner's cost estimates of catalog queries over a thousand tables
    pass jit_above_cost, and compiling them took longer than running them (0.3 s against
    0.02 s for one query).

    set_config(..., is_local => true) inside a transaction (or savepoint): an error
    rolls it back with the block, and on success the caller's values are put back.
    """
    with conn.transaction():
        old = conn.execute("SELECT pg_catalog.current_setting('search_path'), "
                           "pg_catalog.current_setting('jit', true)").fetchone()
        conn.execute("SELECT pg_catalog.set_config('search_path', '', true), "
                     "pg_catalog.set_config('jit', 'off', true)")
        yield
        conn.execute("SELECT pg_catalog.set_config('search_path', %s, true)", (old[0],))
        if old[1] is not None:
            conn.execute("SELECT pg_catalog.set_config('jit', %s, true)", (old[1],))


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
    return _table_facts(conn, tables)[0]


def _table_facts(
    conn: psycopg.Connection, tables: Iterable[TableName]
) -> tuple[dict[TableName, TableFacts], list[tuple]]:
    """table_facts, and the uses of the group's sequences by tables outside it."""
    tables = list(tables)
    params = _group_params(tables)
    with _qualified_names(conn):
        rows = conn.execute(_TABLES, params).fetchall()  # type: ignore[arg-type]
        by_table: dict[str, dict[TableName, list[Any]]] = {
            key: {} for key in ("columns", "constraints", "triggers", "types", "extensions")
        }
        for key, query, make in (
            ("columns", _columns_query(conn), _column),
            ("constraints", _CONSTRAINTS, _constraint),
            ("triggers", _TRIGGERS, _trigger),
            ("types", _TYPES, _types_once()),
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
        outside: list[tuple] = []
        for row in _sequence_rows(conn, tables):
            if row[15]:
                use = _sequence_use(row)
                sequences.setdefault(use.table, []).append(use)
            else:
                outside.append(row)
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
                     grants=_grants(column_grants.get((name, c.name))))
             if (name, "column", c.name) in comments or (name, c.name) in column_grants else c, is_lo)
            for c, is_lo in by_table["columns"].get(name, ())
        )

        def commented(items, kind, name=name):
            return tuple(replace(i, comment=comments[(name, kind, i.name)]) if (name, kind, i.name) in comments
                         else i for i in items)

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
    return facts, outside


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


def _columns_query(conn: psycopg.Connection) -> str:
    if conn.info.server_version >= 140000:
        return _COLUMNS
    return _COLUMNS.replace("/*compression*/ NULLIF(a.attcompression::text, '')", _NO_COMPRESSION)


def _types_once():
    """_type, made once per type however many tables use it."""
    made: dict[tuple[str, str], TypeFacts | None] = {}

    def make(row: tuple) -> TypeFacts | None:
        key = (row[2], row[3])
        if key not in made:
            made[key] = _type(row)
        return made[key]

    return make


def _type(row: tuple) -> TypeFacts | None:
    (schema, name, kind, extension, labels, base, is_array, not_null, default, checks, attributes,
     subtype, depends_on, comment, owner) = row[2:17]
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
        comment=comment, owner=owner,
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
    return _tree_facts(conn, tables)[0]


def _tree_facts(conn: psycopg.Connection, tables: Iterable[TableName]
                ) -> tuple[dict[TableName, TableFacts], list[tuple]]:
    tables = list(tables)
    tree = [_name(r[0], r[1]) for r in conn.execute(_PARTITION_TREE, _group_params(tables))]  # type: ignore[arg-type]
    return _table_facts(conn, tables + [t for t in tree if t not in tables])


def schema_tables(conn: psycopg.Connection, schemas: Iterable[str] | None) -> list[TableName]:
    """Whole-database mode: every table of `schemas` (None: every schema a user made),
    partitions coming with their root, in name order."""
    if schemas is None:
        schemas = [r[0] for r in conn.execute(_USER_SCHEMAS)]
    return [_name(r[0], r[1]) for r in conn.execute(_SCHEMA_TABLES, {"schemas": list(schemas)})]


def user_schemas(conn: psycopg.Connection) -> list[str]:
    """The schemas of the database a user made (`schemas: all`)."""
    return [r[0] for r in conn.execute(_USER_SCHEMAS)]


def read_group(conn: psycopg.Connection, tables: Iterable[TableName], *,
               include: Iterable[TableName] = (), exclude: Iterable[TableName] = (),
               schemas: Iterable[str] = ()) -> GroupCatalog:
    """The whole group on this server: one reading, for every question about it.
    `include`/`exclude`: views, routines and types to move, or leave, beyond what is
    detected; `schemas`: whole-database mode, everything of these schemas moves."""
    tables, schemas = list(tables), list(schemas)
    with _qualified_names(conn):
        routines = [_routine(r) for r in conn.execute(_ALL_ROUTINES)]
    # The bodies are parsed (CPU, here) while the group's catalogs are read (waiting on
    # the server): a database of a thousand tables and three hundred routines reads in
    # about a second less.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="migrator-bodies") as pool:
        parsing = pool.submit(lambda: {r.key: r.body() for r in routines})
        try:
            everything, outside = _tree_facts(conn, tables)
        finally:
            bodies = parsing.result()
    facts = {t: everything[t] for t in tables}
    partitions = {t: f for t, f in everything.items() if t not in facts}
    existing = [n for n, t in everything.items() if t.exists]
    if not existing:
        return GroupCatalog(tables=facts)
    params = _group_params(existing)
    with _qualified_names(conn):
        needed = [((_name(r[0], r[1]), r[2]), _reason(r)) for r in conn.execute(_NEEDED_ROUTINES, params)]  # type: ignore[arg-type]
        shared: dict[TableName, set[TableName]] = {}
        for row in outside:   # the group's sequences, used by tables outside it too
            shared.setdefault(_name(row[3], row[4]), set()).add(_name(row[0], row[1]))
        sequences = _sequences(everything) + _schema_sequences(conn, schemas, everything)
        sequences = _sequence_details(conn, sequences)
        group_names = set(existing) | {s.name for s in sequences}
        views = [_view(r) for r in conn.execute(_VIEWS)]
        dependents = resolve(
            group_names, needed, views, routines,
            {_name(r[0], r[1]): r[2] for r in conn.execute(_RELATIONS)},
            types={_name(r[0], r[1]): TypeName(r[2], r[3], r[4]) for r in conn.execute(_TYPE_NAMES)},
            extension_routines={_name(r[0], r[1]): r[2] for r in conn.execute(_EXTENSION_ROUTINES)},
            include=include, exclude=exclude, schemas=schemas, bodies=bodies,
        )
        routines_moving = dependents.routines
        named, extensions, requirements = _named_types(conn, dependents)
        if schemas:
            # A whole database: every extension it has, whatever the analysis saw use it
            # (a body that builds its SQL at run time may call any of them).
            for (extension,) in conn.execute("SELECT extname::text FROM pg_catalog.pg_extension "
                                             "WHERE extname <> 'plpgsql' ORDER BY 1"):
                extensions = {**extensions, extension: (*extensions.get(extension, ()), "the database (schemas:)")}
        types = _creation_order([*(t for table in everything.values() for t in table.types), *named])
        requirements += _required(conn, params, dependents)
        schema_names = sorted(
            {t.schema for t in existing} | {t.schema for t in types if t.movable}
            | {s.name.schema for s in sequences} | {r.name.schema for r in routines_moving}
            | {v.name.schema for v in dependents.views} | set(schemas)
        )
        schema_names = [s for s in schema_names if s != "public" or s in schemas]
        collations = tuple(
            CollationFacts(_name(r[0], r[1]), provider=r[2], collate=r[3], ctype=r[4], locale=r[5],
                           deterministic=r[6])
            for r in conn.execute(_COLLATIONS, _group_params(existing))  # type: ignore[arg-type]
        )
        schema_rows = {r[0]: (r[1], r[2]) for r in conn.execute(_SCHEMA_COMMENTS, (schema_names,))}
        schema_grants: dict[str, list[tuple[str, str, str]]] = {}
        for r in conn.execute(_SCHEMA_GRANTS, (schema_names,)):
            schema_grants.setdefault(r[0], []).append((r[1], r[2], r[3]))
        left_behind = list(dependents.left_behind)
        if schemas:
            left_behind += _staying(conn, schemas, everything, sequences, types, dependents)
    return GroupCatalog(
        tables=facts, partitions=partitions, types=types, sequences=sequences, routines=routines_moving,
        schemas=tuple(SchemaFacts(s, _grants(schema_grants.get(s)), schema_rows.get(s, (None, None))[0],
                                  owner=schema_rows.get(s, (None, None))[1], listed=s in schemas)
                      for s in schema_names),
        collations=collations,
        shared_sequences={seq: tuple(sorted(users)) for seq, users in sorted(shared.items())},
        views=dependents.views, crossings=dependents.crossings,
        name_searched=dependents.name_searched, left_behind=tuple(left_behind),
        unparsed=dependents.unparsed, extensions=extensions, requirements=tuple(requirements),
        unmatched=dependents.unmatched,
    )


def _reason(row: tuple) -> str:
    """Why the group needs a routine: 'trigger t on public.a', 'default of public.a.c'."""
    why, what, table = row[3], row[4], _name(row[5], row[6])
    if why == "default of column":
        return f"default of {table}.{sql.Identifier(what).as_string(None)}"
    return f"{why} {what} on {table}"


def _named_types(conn: psycopg.Connection, dependents: Dependents
                 ) -> tuple[list[TypeFacts], dict[str, tuple[str, ...]], list[Requirement]]:
    """The types moving routines and views name, followed down, with the extensions they
    come from (and who needs them), and those that neither move nor come with an extension."""
    extensions: dict[str, list[str]] = {e: list(users) for e, users in dependents.extensions.items()}
    requirements: list[Requirement] = []
    found: list[TypeFacts] = []
    if dependents.types:
        rows = conn.execute(_NAMED_TYPES, _group_params(dependents.types)).fetchall()  # type: ignore[arg-type]
        for row in rows:
            t = _type(row)
            if t is None:
                continue
            users = list(dependents.types.get(_name(row[0], row[1]), ()))
            if t.extension:
                extensions.setdefault(t.extension, []).extend(users)
            elif t.movable:
                found.append(t)
            elif t.kind not in ("table row", "multirange"):
                requirements.append(Requirement("type", f"type {t.qualified} ({t.kind})",
                                                ("type", (t.qualified,), ()), tuple(users)))
    return found, {e: tuple(dict.fromkeys(u)) for e, u in sorted(extensions.items())}, requirements


def _required(conn: psycopg.Connection, params: dict, dependents: Dependents) -> list[Requirement]:
    """Operators, casts, operator classes (...) a user made that the group's tables, moving
    views and moving routines use: the move does not make them, the target must have them."""
    views = {v.name for v in dependents.views}
    routines = {(r.name, r.arguments) for r in dependents.routines}
    found: dict[str, Requirement] = {}
    for kind, schema, name, args, typ, names, arguments, described in conn.execute(_REQUIRED, params):
        user = _name(schema, name)
        if kind == "view" and user not in views or kind == "routine" and (user, args) not in routines:
            continue
        who = f"{kind} {user}" + (f"({args})" if kind == "routine" else "")
        current = found.get(described)
        chain = (current.chain if current else ()) + (who,)
        found[described] = Requirement(typ, described, (typ, tuple(names or ()), tuple(arguments or ())), chain)
    return list(found.values())


def _schema_sequences(conn: psycopg.Connection, schemas: list[str],
                      tables: Mapping[TableName, TableFacts]) -> tuple[SequenceFacts, ...]:
    """Whole-database mode: the sequences of the schemas no table of the group uses."""
    if not schemas:
        return ()
    used = {u.sequence for t in tables.values() for u in t.sequences}
    return tuple(
        SequenceFacts(name=_name(r[0], r[1]), data_type=r[2], start=r[3], increment=r[4], minimum=r[5],
                      maximum=r[6], cache=r[7], cycle=r[8], identity=False, owned_by=None)
        for r in conn.execute(_SCHEMA_SEQUENCES, {"schemas": schemas}) if _name(r[0], r[1]) not in used
    )


def _sequence_details(conn: psycopg.Connection, sequences: tuple[SequenceFacts, ...]) -> tuple[SequenceFacts, ...]:
    """Each sequence with its privileges, comment, and owner where no column owns it."""
    params = _group_params(s.name for s in sequences)
    grants: dict[TableName, list[tuple[str, str, str]]] = {}
    for r in conn.execute(_RELATION_GRANTS, params):  # type: ignore[arg-type]
        grants.setdefault(_name(r[0], r[1]), []).append((r[2], r[3], r[4]))
    details = {_name(r[0], r[1]): r[2:] for r in conn.execute(_SEQUENCE_DETAILS, params)}  # type: ignore[arg-type]
    out = []
    for s in sequences:
        owner, comment, owned = details.get(s.name, (None, None, True))
        out.append(replace(s, grants=_grants(grants.get(s.name)), comment=comment,
                           owner=None if owned else owner))
    return tuple(sorted(out, key=lambda s: s.name))


def _staying(conn: psycopg.Connection, schemas: list[str], tables: Mapping[TableName, TableFacts],
             sequences: tuple[SequenceFacts, ...], types: tuple[TypeFacts, ...],
             dependents: Dependents) -> list[tuple[str, str]]:
    """Whole-database mode: every object of the database that does not move, by name, with why."""
    relations = {t for t, f in tables.items() if f.exists} | {s.name for s in sequences} | {
        v.name for v in dependents.views}
    routines = {(r.name.schema, r.name.name, r.arguments) for r in dependents.routines}
    moving_types = {t.identity for t in types if t.movable}
    listed = set(schemas)
    out = []
    for classid, kind, schema, name, identity, described in conn.execute(_DATABASE_OBJECTS):
        if classid == "pg_namespace":
            if identity not in listed:
                out.append((described, "not in schemas:"))
            continue
        if schema is not None and schema not in listed:
            out.append((described, f"schema {schema} is not in schemas:"))
            continue
        if classid == "pg_class" and _identity(identity) in relations:
            continue
        if classid == "pg_type" and _identity(identity) in moving_types:
            continue
        if classid == "pg_proc" and _routine_identity(identity) in routines:
            continue
        out.append((described, _why_staying(classid, kind)))
    return out


def _identity(identity: str) -> TableName | None:
    """pg_identify_object's identity of a relation or type: 'public.t', '"Shop"."Orders"'."""
    try:
        return TableName.parse(identity)
    except ValueError:
        return None


def _routine_identity(identity: str) -> tuple[str, str, str] | None:
    """pg_identify_object's 'public.f(integer,text)' as (schema, name, argument types
    as oidvectortypes spells them)."""
    name = _identity(identity[:identity.find("(")])
    if name is None:
        return None
    inside = identity[identity.find("(") + 1:identity.rfind(")")]
    arguments = (a.strip().removeprefix("pg_catalog.") for a in inside.split(","))
    return name.schema, name.name, ", ".join(a for a in arguments if a)


def _why_staying(classid: str, kind: str) -> str:
    if classid == "pg_class":
        return f"a {kind} the move cannot replicate" if kind == "foreign table" else f"a {kind} nothing moves"
    if classid in ("pg_proc", "pg_type"):
        return "not moved (see the findings)"
    return f"the move does not create {kind}s: make it on the target"


_ROUTINE_KIND = {"f": "function", "p": "procedure", "a": "aggregate", "w": "window"}


def _view(r: tuple) -> ViewFacts:
    (schema, name, kind, definition, options, reads, routines, comment, owner, grants, indexes, types,
     extensions) = r
    # A composite type has a pg_class row too: a view reading a field of a composite
    # column depends on it, and it is a type, not a relation the view reads.
    composite = {_name(s, n) for s, n, k in reads or () if k == "c"}
    return ViewFacts(
        name=_name(schema, name), materialized=kind == "m", definition=definition.strip().rstrip(";"),
        options=tuple(options or ()),
        reads=tuple(sorted({_name(s, n) for s, n, k in reads or () if k != "c"})),
        routines=tuple(sorted({(_name(s, n), args) for s, n, args in routines or ()})),
        comment=comment, owner=owner, grants=_grants(grants), indexes=tuple(indexes or ()),
        types=tuple(sorted(composite | {_name(s, n) for s, n in types or ()})),
        extensions=tuple(sorted(set(extensions or ()))),
    )


def _routine(r: tuple) -> RoutineSource:
    (schema, name, arguments, kind, language, source, definition, sql_body, depends_on, config,
     comment, owner, aggregate, types, extensions) = r
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
                         aggregate=parts, owner=owner)
    return RoutineSource(facts=facts, language=language, source=source or "",
                         depends_on=tuple(_name(s, n) for s, n in depends_on or ()),
                         search_path=search_path(config),
                         types=tuple(_name(s, n) for s, n in types or ()),
                         extensions=tuple(extensions or ()))


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


# Which of the named routines and types exist, by name in the catalogs: to_regprocedure()
# and to_regtype() raise on PostgreSQL 15 and older when a type they are given does not
# exist (a routine's argument type the move has yet to create).
_ROUTINES_PRESENT = """
SELECT g.s, g.n, g.a
FROM ROWS FROM (pg_catalog.unnest(%(schemas)s::text[]), pg_catalog.unnest(%(names)s::text[]),
                pg_catalog.unnest(%(arguments)s::text[])) AS g(s, n, a)
WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace ns ON ns.oid = p.pronamespace
              WHERE ns.nspname = g.s AND p.proname = g.n AND pg_catalog.oidvectortypes(p.proargtypes) = g.a)
"""

_TYPES_PRESENT = """
SELECT g.s, g.n
FROM ROWS FROM (pg_catalog.unnest(%(schemas)s::text[]), pg_catalog.unnest(%(names)s::text[])) AS g(s, n)
WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace ns ON ns.oid = t.typnamespace
              WHERE ns.nspname = g.s AND t.typname = g.n)
"""


def existing_objects(conn: psycopg.Connection, group: GroupCatalog) -> ExistingObjects:
    """Ask the other server, by name, for each object the group needs."""
    checks: list[tuple[str, object, str, str]] = []
    checks += [("schemas", s.name, "pg_catalog.to_regnamespace", s.name) for s in group.schemas]
    checks += [("sequences", s.name, "pg_catalog.to_regclass", s.name.qualified) for s in group.sequences]
    checks += [("tables", t, "pg_catalog.to_regclass", t.qualified) for t in group.tables]
    checks += [("views", v.name, "pg_catalog.to_regclass", v.name.qualified) for v in group.views]
    checks += [("collations", c.name, "pg_catalog.to_regcollation", c.name.qualified) for c in group.collations]
    owners = sorted({t.owner for t in group.relations if t.owner} | {v.owner for v in group.views if v.owner}
                    | {r.owner for r in group.routines if r.owner} | {t.owner for t in group.types if t.owner}
                    | {s.owner for s in group.sequences if s.owner} | {s.owner for s in group.schemas if s.owner})
    checks += [("roles", role, "pg_catalog.to_regrole", sql.Identifier(role).as_string(None)) for role in owners]
    out: dict[str, set] = {"schemas": set(), "types": set(), "sequences": set(), "routines": set(), "tables": set(),
                           "views": set(), "collations": set(), "roles": set()}
    if checks:
        query = sql.SQL("SELECT ARRAY[{}]").format(sql.SQL(", ").join(
            sql.SQL("{}({}) IS NOT NULL").format(sql.SQL(fn), sql.Literal(arg)) for _, _, fn, arg in checks))
        found = conn.execute(query).fetchone()[0]
        for (kind, key, _, _), present in zip(checks, found, strict=True):
            if present:
                out[kind].add(key)
    if group.routines:
        rows = conn.execute(_ROUTINES_PRESENT, {
            "schemas": [r.name.schema for r in group.routines], "names": [r.name.name for r in group.routines],
            "arguments": [r.arguments for r in group.routines]}).fetchall()
        out["routines"] = {f"{_name(s, n).qualified}({a})" for s, n, a in rows}
    if group.types:
        out["types"] = {_name(s, n) for s, n in conn.execute(_TYPES_PRESENT, _group_params(t.identity for t in group.types))}  # type: ignore[arg-type]
    user = conn.execute("SELECT current_user").fetchone()[0]
    return ExistingObjects(**{k: frozenset(v) for k, v in out.items()}, current_user=user,
                           requirements=frozenset(r.name for r in group.requirements if _present(conn, r)))


def _present(conn: psycopg.Connection, requirement: Requirement) -> bool:
    """Does this server have the object? pg_get_object_address raises when it does not,
    so each is asked inside a savepoint (the caller's transaction goes on)."""
    kind, names, arguments = requirement.address
    try:
        with conn.transaction():
            conn.execute("SELECT pg_catalog.pg_get_object_address(%s, %s::text[], %s::text[])",
                         (kind, list(names), list(arguments)))
        return True
    except psycopg.Error:
        return False


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
