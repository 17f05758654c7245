"""Types and sequences (what the tables are made of), routines and views (what the
application calls)."""

from __future__ import annotations

from psycopg import sql

from migrator.postgres.catalog import (
    CollationFacts,
    RoutineFacts,
    SequenceFacts,
    TypeFacts,
    ViewFacts,
)


def create_type(t: TypeFacts) -> sql.Composable:
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


def sequence_options(s: SequenceFacts) -> sql.Composable:
    return sql.SQL("INCREMENT BY {} MINVALUE {} MAXVALUE {} START WITH {} CACHE {} {}").format(
        sql.Literal(s.increment), sql.Literal(s.minimum), sql.Literal(s.maximum),
        sql.Literal(s.start), sql.Literal(s.cache), sql.SQL("CYCLE" if s.cycle else "NO CYCLE"))


def create_sequence(s: SequenceFacts) -> sql.Composable:
    # An identity column's sequence takes the column's type; a sequence of its own says it.
    return sql.SQL("CREATE SEQUENCE IF NOT EXISTS {} AS {} {}").format(
        s.name.identifier, sql.SQL(s.data_type), sequence_options(s))


def identity_sequence(use) -> SequenceFacts:
    return SequenceFacts(name=use.sequence, data_type=use.data_type, start=use.start, increment=use.increment,
                         minimum=use.minimum, maximum=use.maximum, cache=use.cache, cycle=use.cycle,
                         identity=True, owned_by=None)


def create_routine(r: RoutineFacts) -> sql.Composable:
    """pg_get_functiondef's text; an aggregate composed from pg_aggregate."""
    if r.aggregate is None:
        return sql.SQL(r.definition)
    a = r.aggregate
    parts = [sql.SQL("SFUNC = {}").format(sql.SQL(a.transition)), sql.SQL("STYPE = {}").format(sql.SQL(a.state_type))]
    if a.final:
        parts.append(sql.SQL("FINALFUNC = {}").format(sql.SQL(a.final)))
    if a.combine:
        parts.append(sql.SQL("COMBINEFUNC = {}").format(sql.SQL(a.combine)))
    if a.initial is not None:
        parts.append(sql.SQL("INITCOND = {}").format(sql.Literal(a.initial)))
    return sql.SQL("CREATE AGGREGATE {}({}) ({})").format(
        r.name.identifier, sql.SQL(a.arguments), sql.SQL(", ").join(parts))


def create_view(v: ViewFacts) -> list[sql.Composable]:
    """A view, or a materialized view made empty (its contents are computed on the target
    by REFRESH before the cutover) with its indexes."""
    options = (sql.SQL(" WITH ({})").format(sql.SQL(", ").join(sql.SQL(o) for o in v.options))
               if v.options else sql.SQL(""))
    if not v.materialized:
        return [sql.SQL("CREATE VIEW {}{} AS {}").format(v.name.identifier, options, sql.SQL(v.definition))]
    return [sql.SQL("CREATE MATERIALIZED VIEW {}{} AS {} WITH NO DATA").format(
        v.name.identifier, options, sql.SQL(v.definition))] + [sql.SQL(i) for i in v.indexes]


def refresh_view(v: ViewFacts) -> sql.Composable:
    return sql.SQL("REFRESH MATERIALIZED VIEW {}").format(v.name.identifier)


def create_collation(c: CollationFacts) -> sql.Composable:
    options = [sql.SQL("provider = {}").format(sql.SQL({"i": "icu", "b": "builtin"}.get(c.provider, "libc")))]
    if c.provider in ("i", "b"):
        options.append(sql.SQL("locale = {}").format(sql.Literal(c.locale or "")))
    else:
        options += [sql.SQL("lc_collate = {}").format(sql.Literal(c.collate or "")),
                    sql.SQL("lc_ctype = {}").format(sql.Literal(c.ctype or ""))]
    if not c.deterministic:
        options.append(sql.SQL("deterministic = false"))
    return sql.SQL("CREATE COLLATION {} ({})").format(c.name.identifier, sql.SQL(", ").join(options))
