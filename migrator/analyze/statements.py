"""pg_stat_statements over the window: every statement, not a sample of them.

Where the extension is installed (and loaded), its calls are read at both ends of the
window, and each statement that ran in between is parsed with pglast (the server's own
grammar) into the tables it names: a join across the group's boundary is seen however
short it was. A statement is one part of a transaction, so what it shows is a lower
bound on what crosses; the sampler's accumulated locks add the multi-statement ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import psycopg
from pglast import parse_sql
from pglast.parser import ParseError
from pglast.visitors import Visitor
from psycopg import sql

from migrator.playbook import TableName
from migrator.postgres.connection import first_line

_EXTENSION = """
SELECT n.nspname FROM pg_catalog.pg_extension e
JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'pg_stat_statements'
"""

_HIDDEN = "<insufficient privilege>"


@dataclass(frozen=True)
class StatementSnapshot:
    available: bool
    reason: str = ""                                   # why not, when not
    calls: Mapping[tuple, tuple[str, int]] | None = None   # (userid, queryid, toplevel) -> (query, calls)


@dataclass(frozen=True)
class StatementUse:
    """One normalised statement that ran in the window, and the tables it names."""

    query: str
    calls: int
    tables: frozenset[TableName]

    def to_dict(self) -> dict:
        return {"query": self.query, "calls": self.calls, "tables": sorted(map(str, self.tables))}


def snapshot(conn: psycopg.Connection, db_oid: int) -> StatementSnapshot:
    row = conn.execute(_EXTENSION).fetchone()
    if row is None:
        return StatementSnapshot(False, "pg_stat_statements is not installed in this database")
    query = sql.SQL(
        "SELECT userid, queryid, toplevel, query, calls FROM {}.pg_stat_statements WHERE dbid = %s"
    ).format(sql.Identifier(row[0]))
    try:
        with conn.transaction():
            rows = conn.execute(query, (db_oid,)).fetchall()
    except psycopg.Error as exc:
        return StatementSnapshot(False, f"pg_stat_statements cannot be read: {first_line(exc)}")
    return StatementSnapshot(True, calls={(u, q, t): (text, calls) for u, q, t, text, calls in rows})


class _Names(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[tuple[str | None, str]] = set()
        self.ctes: set[str] = set()

    def visit_RangeVar(self, ancestors, node) -> None:
        self.names.add((node.schemaname, node.relname))

    def visit_CommonTableExpr(self, ancestors, node) -> None:
        self.ctes.add(node.ctename)


def statement_tables(query: str, known: Iterable[TableName]) -> frozenset[TableName] | None:
    """The known tables a statement names, or None when it does not parse. A name
    without a schema is the `public` table of that name, else the only one so named."""
    try:
        tree = parse_sql(query)
    except ParseError:
        return None
    names = _Names()
    names(tree)
    known = set(known)
    by_name: dict[str, list[TableName]] = {}
    for table in known:
        by_name.setdefault(table.name, []).append(table)
    found: set[TableName] = set()
    for schema, name in names.names:
        if schema is not None:
            table = TableName(schema, name)
            if table in known:
                found.add(table)
        elif name not in names.ctes:
            public = TableName("public", name)
            if public in known:
                found.add(public)
            elif len(by_name.get(name, ())) == 1:
                found.add(by_name[name][0])
    return frozenset(found)


def statements_between(before: StatementSnapshot, after: StatementSnapshot,
                       known: Iterable[TableName]) -> list[StatementUse]:
    """The statements called in the window (calls after minus before), with their tables."""
    if not (before.available and after.available):
        return []
    known = list(known)
    uses: list[StatementUse] = []
    for key, (query, calls) in (after.calls or {}).items():
        earlier = (before.calls or {}).get(key, (query, 0))[1]
        if calls <= earlier or not query or query == _HIDDEN:
            continue
        tables = statement_tables(query, known)
        if tables:
            uses.append(StatementUse(query=query, calls=calls - earlier, tables=tables))
    return uses
