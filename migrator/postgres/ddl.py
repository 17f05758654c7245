"""The group's schema, read from the source catalogs and recreated on the target.

pg_dump's sections are the reference for fidelity, but pg_dump must be at least as
new as the server and cannot dump "these tables and exactly what they need". So the
definitions come from the server's own deparsers (format_type, pg_get_expr,
pg_get_constraintdef, pg_get_indexdef, pg_get_triggerdef, pg_get_functiondef), which
every supported major has, and identifiers are composed with psycopg.sql.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from migrator.playbook import TableName


@dataclass(frozen=True)
class IndexDef:
    table: str       # schema-qualified, as text
    schema: str
    name: str
    definition: str  # pg_get_indexdef: CREATE [UNIQUE] INDEX name ON schema.table ...
    secondary: bool  # not the primary key, not the replica identity, not a constraint's

    def create_if_missing(self) -> str:
        head, rest = self.definition.split(" INDEX ", 1)
        return f"{head} INDEX IF NOT EXISTS {rest}"


@dataclass(frozen=True)
class SequenceDef:
    schema: str
    name: str
    create: sql.Composable
    owned_by: tuple[str, str, str] | None  # (schema, table, column)
    identity: bool  # made by an identity column: the table creates it

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass
class GroupSchema:
    """Everything the target needs for the group, in creation order."""

    schemas: list[str] = field(default_factory=list)
    types: list[tuple[str, str, sql.Composable]] = field(default_factory=list)   # (schema, name, create)
    sequences: list[SequenceDef] = field(default_factory=list)
    functions: list[tuple[str, str, str]] = field(default_factory=list)          # (schema, signature, create)
    tables: list[tuple[TableName, sql.Composable]] = field(default_factory=list)
    constraints: list[sql.Composable] = field(default_factory=list)
    foreign_keys: list[sql.Composable] = field(default_factory=list)
    indexes: list[IndexDef] = field(default_factory=list)
    replica_identity: list[sql.Composable] = field(default_factory=list)
    triggers: list[sql.Composable] = field(default_factory=list)
    owned_by: list[sql.Composable] = field(default_factory=list)
    grants: list[sql.Composable] = field(default_factory=list)
    # The ACL of each schema in `schemas` (USAGE for the app above all): a schema made
    # on the target without it would refuse every query on the moved tables.
    schema_grants: dict[str, list[sql.Composable]] = field(default_factory=dict)
    # The app roles' privileges are granted on the target only at the cutover and
    # revoked on the source then: recorded here as (kind, schema, name, role, privilege).
    app_privileges: list[tuple[str, str, str, str, str]] = field(default_factory=list)

    def statements(self) -> list[sql.Composable]:
        """The DDL, in an order where every object exists before what needs it."""
        out: list[sql.Composable] = []
        for schema in self.schemas:
            out.append(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            out += self.schema_grants.get(schema, [])
        out += [create for _, _, create in self.types]
        out += [s.create for s in self.sequences if not s.identity]
        out += [sql.SQL(create) for _, _, create in self.functions]
        out += [create for _, create in self.tables]
        out += self.constraints + self.foreign_keys
        out += [sql.SQL(i.definition) for i in self.indexes]
        out += self.replica_identity + self.triggers + self.owned_by + self.grants
        return out

    @property
    def secondary_indexes(self) -> list[IndexDef]:
        return [i for i in self.indexes if i.secondary]


def table_oids(conn: psycopg.Connection, tables: list[TableName]) -> dict[TableName, int]:
    rows = conn.execute(
        """
        SELECT n.nspname, c.relname, c.oid
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
        """,
        ([t.schema for t in tables], [t.name for t in tables]),
    ).fetchall()
    found = {TableName(s, n): oid for s, n, oid in rows}
    return {t: found[t] for t in tables if t in found}


def read_group_schema(conn: psycopg.Connection, tables: list[TableName], app_roles: list[str]) -> GroupSchema:
    """Read the DDL of the group (and what it depends on) from one server."""
    # As pg_dump does: with an empty search_path every name the deparsers print is
    # schema-qualified, so the DDL means the same thing on the target.
    previous = conn.execute("SELECT pg_catalog.current_setting('search_path')").fetchone()[0]
    conn.execute("SELECT pg_catalog.set_config('search_path', '', false)")
    try:
        return _read(conn, tables, app_roles)
    finally:
        conn.execute("SELECT pg_catalog.set_config('search_path', %s, false)", (previous,))


def _read(conn: psycopg.Connection, tables: list[TableName], app_roles: list[str]) -> GroupSchema:
    oids = table_oids(conn, tables)
    group = list(oids.values())
    out = GroupSchema()
    out.schemas = sorted({t.schema for t in oids} - {"public"})
    _types(conn, group, out)
    _sequences(conn, group, out)
    _functions(conn, group, out)
    for table, oid in oids.items():
        out.tables.append((table, _create_table(conn, table, oid)))
    _constraints(conn, group, out)
    _indexes(conn, group, out)
    _replica_identity(conn, group, out)
    _triggers(conn, group, out)
    _grants(conn, group, out, set(app_roles))
    _schema_grants(conn, out)
    return out


def _schema_grants(conn: psycopg.Connection, out: GroupSchema) -> None:
    rows = conn.execute(
        """
        SELECT n.nspname, CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(x.grantee) END,
               x.privilege_type, x.is_grantable
        FROM pg_catalog.pg_namespace n CROSS JOIN LATERAL pg_catalog.aclexplode(n.nspacl) x
        WHERE n.nspname = ANY(%s) AND x.grantee <> n.nspowner
        ORDER BY 1, 2, 3
        """,
        (out.schemas,),
    ).fetchall()
    for schema, grantee, privilege, grantable in rows:
        who = sql.SQL("PUBLIC") if grantee == "PUBLIC" else sql.Identifier(grantee)
        out.schema_grants.setdefault(schema, []).append(sql.SQL("GRANT {} ON SCHEMA {} TO {}{}").format(
            sql.SQL(privilege), sql.Identifier(schema), who, sql.SQL(" WITH GRANT OPTION" if grantable else "")))


def _ident(schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name)


def _types(conn: psycopg.Connection, group: list[int], out: GroupSchema) -> None:
    # Enums and domains the columns use (directly or as arrays); the built-in and
    # extension types are the plan's business.
    rows = conn.execute(
        """
        SELECT DISTINCT t.oid, n.nspname, t.typname, t.typtype,
               pg_catalog.format_type(t.typbasetype, t.typtypmod), t.typnotnull, t.typdefault
        FROM pg_catalog.pg_attribute a
        JOIN pg_catalog.pg_type at ON at.oid = a.atttypid
        JOIN pg_catalog.pg_type t ON t.oid = CASE WHEN at.typelem <> 0 AND at.typlen = -1
                                                  THEN at.typelem ELSE at.oid END
        JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
        WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
          AND t.typtype IN ('e', 'd')
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                          WHERE d.objid = t.oid AND d.deptype = 'e')
        ORDER BY n.nspname, t.typname
        """,
        (group,),
    ).fetchall()
    for oid, schema, name, kind, base, notnull, default in rows:
        if schema not in out.schemas and schema != "public":
            out.schemas.append(schema)
        if kind == "e":
            labels = [r[0] for r in conn.execute(
                "SELECT enumlabel FROM pg_catalog.pg_enum WHERE enumtypid = %s ORDER BY enumsortorder", (oid,))]
            create = sql.SQL("CREATE TYPE {} AS ENUM ({})").format(
                _ident(schema, name), sql.SQL(", ").join(map(sql.Literal, labels)))
        else:
            checks = [r[0] for r in conn.execute(
                "SELECT pg_catalog.pg_get_constraintdef(oid) FROM pg_catalog.pg_constraint "
                "WHERE contypid = %s ORDER BY conname", (oid,))]
            parts = [sql.SQL("CREATE DOMAIN {} AS {}").format(_ident(schema, name), sql.SQL(base))]
            if default is not None:
                parts.append(sql.SQL("DEFAULT {}").format(sql.SQL(default)))
            if notnull:
                parts.append(sql.SQL("NOT NULL"))
            parts += [sql.SQL(c) for c in checks]
            create = sql.SQL(" ").join(parts)
        out.types.append((schema, name, create))


def _sequences(conn: psycopg.Connection, group: list[int], out: GroupSchema) -> None:
    # Owned sequences (serial: deptype 'a', identity: 'i') and sequences that a
    # column default merely references (a bare sequence: pg_attrdef depends on it).
    rows = conn.execute(
        """
        WITH used AS (
            SELECT d.objid AS seq, d.refobjid AS rel, d.refobjsubid AS col, d.deptype
            FROM pg_catalog.pg_depend d
            WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refobjid = ANY(%(group)s)
              AND d.deptype IN ('a', 'i')
            UNION
            SELECT d.refobjid, ad.adrelid, ad.adnum, 'n'
            FROM pg_catalog.pg_attrdef ad
            JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_attrdef'::regclass
                                       AND d.objid = ad.oid
                                       AND d.refclassid = 'pg_catalog.pg_class'::regclass
            WHERE ad.adrelid = ANY(%(group)s)
        )
        SELECT DISTINCT ON (s.oid) n.nspname, s.relname,
               pg_catalog.format_type(q.seqtypid, NULL), q.seqstart, q.seqincrement, q.seqmin,
               q.seqmax, q.seqcache, q.seqcycle,
               bool_or(u.deptype = 'i') OVER (PARTITION BY s.oid),
               (SELECT array[tn.nspname, t.relname, a.attname]
                  FROM pg_catalog.pg_depend o
                  JOIN pg_catalog.pg_class t ON t.oid = o.refobjid
                  JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
                  JOIN pg_catalog.pg_attribute a ON a.attrelid = o.refobjid AND a.attnum = o.refobjsubid
                 WHERE o.classid = 'pg_catalog.pg_class'::regclass AND o.objid = s.oid
                   AND o.deptype = 'a' AND o.refobjid = ANY(%(group)s))
        FROM used u
        JOIN pg_catalog.pg_class s ON s.oid = u.seq AND s.relkind = 'S'
        JOIN pg_catalog.pg_namespace n ON n.oid = s.relnamespace
        JOIN pg_catalog.pg_sequence q ON q.seqrelid = s.oid
        ORDER BY s.oid
        """,
        {"group": group},
    ).fetchall()
    for schema, name, typ, start, inc, smin, smax, cache, cycle, identity, owner in rows:
        create = sql.SQL(
            "CREATE SEQUENCE IF NOT EXISTS {} AS {} INCREMENT BY {} MINVALUE {} MAXVALUE {} START WITH {} CACHE {} {}"
        ).format(
            _ident(schema, name), sql.SQL(typ), sql.Literal(inc), sql.Literal(smin), sql.Literal(smax),
            sql.Literal(start), sql.Literal(cache), sql.SQL("CYCLE" if cycle else "NO CYCLE"),
        )
        owned = tuple(owner) if owner else None
        out.sequences.append(SequenceDef(schema, name, create, owned, bool(identity)))
        if owned and not identity:
            out.owned_by.append(sql.SQL("ALTER SEQUENCE {} OWNED BY {}").format(
                _ident(schema, name), sql.Identifier(*owned)))


def _functions(conn: psycopg.Connection, group: list[int], out: GroupSchema) -> None:
    # Every function the group's objects call: triggers, and through pg_depend, column
    # defaults and generated columns, constraints and index expressions. Built-ins and
    # extension members come with the server or the extension, not with the move.
    rows = conn.execute(
        """
        WITH used(fn) AS (
            SELECT tg.tgfoid FROM pg_catalog.pg_trigger tg
            WHERE tg.tgrelid = ANY(%(group)s) AND NOT tg.tgisinternal
            UNION
            SELECT d.refobjid FROM pg_catalog.pg_depend d
            JOIN pg_catalog.pg_attrdef ad ON ad.oid = d.objid
            WHERE d.classid = 'pg_catalog.pg_attrdef'::regclass AND ad.adrelid = ANY(%(group)s)
              AND d.refclassid = 'pg_catalog.pg_proc'::regclass
            UNION
            SELECT d.refobjid FROM pg_catalog.pg_depend d
            JOIN pg_catalog.pg_constraint k ON k.oid = d.objid
            WHERE d.classid = 'pg_catalog.pg_constraint'::regclass AND k.conrelid = ANY(%(group)s)
              AND d.refclassid = 'pg_catalog.pg_proc'::regclass
            UNION
            SELECT d.refobjid FROM pg_catalog.pg_depend d
            JOIN pg_catalog.pg_index i ON i.indexrelid = d.objid
            WHERE d.classid = 'pg_catalog.pg_class'::regclass AND i.indrelid = ANY(%(group)s)
              AND d.refclassid = 'pg_catalog.pg_proc'::regclass
        )
        SELECT DISTINCT n.nspname, p.oid::regprocedure::text, pg_catalog.pg_get_functiondef(p.oid)
        FROM used u
        JOIN pg_catalog.pg_proc p ON p.oid = u.fn
        JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND p.prokind = 'f'
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e
                          WHERE e.classid = 'pg_catalog.pg_proc'::regclass AND e.objid = p.oid
                            AND e.deptype = 'e')
        ORDER BY 2
        """,
        {"group": group},
    ).fetchall()
    out.functions = [(schema, signature, body) for schema, signature, body in rows]


def _create_table(conn: psycopg.Connection, table: TableName, oid: int) -> sql.Composable:
    columns = conn.execute(
        """
        SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attgenerated, a.attidentity,
               CASE WHEN a.attcollation <> t.typcollation THEN co.collname END,
               CASE WHEN a.attcollation <> t.typcollation THEN con.nspname END
        FROM pg_catalog.pg_attribute a
        JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation
        LEFT JOIN pg_catalog.pg_namespace con ON con.oid = co.collnamespace
        WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
        """,
        (oid,),
    ).fetchall()
    parts = []
    for name, typ, notnull, default, generated, identity, collation, collschema in columns:
        col = [sql.Identifier(name), sql.SQL(typ)]
        if collation:
            col.append(sql.SQL("COLLATE {}").format(sql.Identifier(collschema, collation)))
        if generated == "s":
            col.append(sql.SQL("GENERATED ALWAYS AS ({}) STORED").format(sql.SQL(default)))
        elif identity:
            col.append(sql.SQL("GENERATED ALWAYS AS IDENTITY" if identity == "a" else
                               "GENERATED BY DEFAULT AS IDENTITY"))
        elif default is not None:
            col.append(sql.SQL("DEFAULT {}").format(sql.SQL(default)))
        if notnull:
            col.append(sql.SQL("NOT NULL"))
        parts.append(sql.SQL(" ").join(col))
    return sql.SQL("CREATE TABLE {} ({})").format(table.identifier, sql.SQL(", ").join(parts))


def _constraints(conn: psycopg.Connection, group: list[int], out: GroupSchema) -> None:
    rows = conn.execute(
        """
        SELECT n.nspname, c.relname, k.conname, k.contype, pg_catalog.pg_get_constraintdef(k.oid),
               k.confrelid
        FROM pg_catalog.pg_constraint k
        JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE k.conrelid = ANY(%s) AND k.contype IN ('p', 'u', 'c', 'x', 'f')
        ORDER BY array_position(ARRAY['p','u','x','c','f']::"char"[], k.contype), k.conname
        """,
        (group,),
    ).fetchall()
    for schema, table, name, kind, definition, refers_to in rows:
        stmt = sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
            _ident(schema, table), sql.Identifier(name), sql.SQL(definition))
        if kind == "f":
            # A key to a table outside the group is a plan-time block; never half-copy it.
            if refers_to in group:
                out.foreign_keys.append(stmt)
        else:
            out.constraints.append(stmt)


def _indexes(conn: psycopg.Connection, group: list[int], out: GroupSchema) -> None:
    rows = conn.execute(
        """
        SELECT n.nspname, c.relname, ic.relname, pg_catalog.pg_get_indexdef(i.indexrelid),
               i.indisprimary, i.indisreplident,
               EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conindid = i.indexrelid
                       AND k.contype IN ('p', 'u', 'x'))
        FROM pg_catalog.pg_index i
        JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
        JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE i.indrelid = ANY(%s)
        ORDER BY n.nspname, c.relname, ic.relname
        """,
        (group,),
    ).fetchall()
    for schema, table, name, definition, primary, replident, constraint in rows:
        if constraint:
            continue  # made by its constraint
        out.indexes.append(IndexDef(
            table=f"{schema}.{table}", schema=schema, name=name, definition=definition,
            secondary=not (primary or replident),
        ))


def _replica_identity(conn: psycopg.Connection, group: list[int], out: GroupSchema) -> None:
    rows = conn.execute(
        """
        SELECT n.nspname, c.relname, c.relreplident,
               (SELECT ic.relname FROM pg_catalog.pg_index i
                  JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
                 WHERE i.indrelid = c.oid AND i.indisreplident)
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = ANY(%s) AND c.relreplident <> 'd'
        """,
        (group,),
    ).fetchall()
    for schema, table, kind, index in rows:
        what = {"f": sql.SQL("FULL"), "n": sql.SQL("NOTHING")}.get(
            kind, sql.SQL("USING INDEX {}").format(sql.Identifier(index or "")))
        out.replica_identity.append(
            sql.SQL("ALTER TABLE {} REPLICA IDENTITY {}").format(_ident(schema, table), what))


def _triggers(conn: psycopg.Connection, group: list[int], out: GroupSchema) -> None:
    rows = conn.execute(
        """
        SELECT n.nspname, c.relname, t.tgname, pg_catalog.pg_get_triggerdef(t.oid), t.tgenabled
        FROM pg_catalog.pg_trigger t
        JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE t.tgrelid = ANY(%s) AND NOT t.tgisinternal
        ORDER BY c.relname, t.tgname
        """,
        (group,),
    ).fetchall()
    for schema, table, name, definition, enabled in rows:
        out.triggers.append(sql.SQL(definition))
        state = {"D": "DISABLE", "A": "ENABLE ALWAYS", "R": "ENABLE REPLICA"}.get(enabled)
        if state:
            out.triggers.append(sql.SQL("ALTER TABLE {} {} TRIGGER {}").format(
                _ident(schema, table), sql.SQL(state), sql.Identifier(name)))


def _grants(conn: psycopg.Connection, group: list[int], out: GroupSchema, app_roles: set[str]) -> None:
    seq_names = [(s.schema, s.name) for s in out.sequences]
    rows = conn.execute(
        """
        SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, n.nspname, c.relname,
               CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(x.grantee) END,
               x.privilege_type, x.is_grantable, x.grantee = c.relowner
        FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) x
        WHERE c.relacl IS NOT NULL
          AND (c.oid = ANY(%s) OR (n.nspname, c.relname) IN
               (SELECT * FROM unnest(%s::text[], %s::text[])))
        ORDER BY 2, 3, 4, 5
        """,
        (group, [s for s, _ in seq_names], [n for _, n in seq_names]),
    ).fetchall()
    for kind, schema, name, grantee, privilege, grantable, is_owner in rows:
        if is_owner:
            continue  # the owner's own rights come with ownership on the target
        if grantee in app_roles:
            out.app_privileges.append((kind, schema, name, grantee, privilege))
            continue
        who = sql.SQL("PUBLIC") if grantee == "PUBLIC" else sql.Identifier(grantee)
        out.grants.append(sql.SQL("GRANT {} ON {} {} TO {}{}").format(
            sql.SQL(privilege), sql.SQL(kind), _ident(schema, name), who,
            sql.SQL(" WITH GRANT OPTION" if grantable else "")))


def privilege_statements(privileges, *, grant: bool) -> list[sql.Composable]:
    """GRANT (or REVOKE) the recorded app-role privileges, one statement per object and role."""
    by_object: dict[tuple[str, str, str, str], list[str]] = {}
    for kind, schema, name, role, privilege in privileges:
        by_object.setdefault((kind, schema, name, role), []).append(privilege)
    out = []
    for (kind, schema, name, role), privs in sorted(by_object.items()):
        template = "GRANT {} ON {} {} TO {}" if grant else "REVOKE {} ON {} {} FROM {}"
        out.append(sql.SQL(template).format(
            sql.SQL(", ").join(sql.SQL(p) for p in sorted(set(privs))), sql.SQL(kind),
            _ident(schema, name), sql.Identifier(role)))
    return out
