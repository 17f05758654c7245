"""What a routine's body touches, read by the real Postgres parser (pglast).

The catalogs record no dependency of a SQL or PL/pgSQL body on the tables it reads or
writes (only a SQL-standard body, `BEGIN ATOMIC`, has them in pg_depend). So the body
is parsed: SQL bodies as statements, PL/pgSQL with its own parser, whose every embedded
statement and expression is parsed again. What cannot be known (`EXECUTE` of a string
built at run time, a body that does not parse) is said, so the caller can fall back on
a name search and warn.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pglast import parse_plpgsql, parse_sql
from pglast.parser import ParseError
from pglast.visitors import Visitor

# PL/pgSQL's parse modes (plpgsql.h RawParseMode): 0 a whole statement, else an expression.
_STATEMENT_MODE = 0


@dataclass
class BodyReferences:
    """Names as written in the body: (schema or None, name)."""

    reads: set[tuple[str | None, str]] = field(default_factory=set)
    writes: set[tuple[str | None, str]] = field(default_factory=set)
    calls: set[tuple[str | None, str]] = field(default_factory=set)
    dynamic: bool = False          # EXECUTE of a string: what it touches is unknown
    parsed: bool = True            # False: the body did not parse


class _Collector(Visitor):
    def __init__(self, refs: BodyReferences) -> None:
        super().__init__()
        self.refs = refs
        self.ctes: set[str] = set()

    def visit_CommonTableExpr(self, ancestors, node) -> None:
        self.ctes.add(node.ctename)

    def visit_RangeVar(self, ancestors, node) -> None:
        self.refs.reads.add((node.schemaname, node.relname))

    def visit_FuncCall(self, ancestors, node) -> None:
        names = [getattr(n, "sval", None) for n in node.funcname or ()]
        if names and all(names):
            self.refs.calls.add((names[0], names[1]) if len(names) == 2 else (None, names[-1]))

    def _wrote(self, relation) -> None:
        if relation is not None:
            self.refs.writes.add((relation.schemaname, relation.relname))

    def visit_InsertStmt(self, ancestors, node) -> None:
        self._wrote(node.relation)

    def visit_UpdateStmt(self, ancestors, node) -> None:
        self._wrote(node.relation)

    def visit_DeleteStmt(self, ancestors, node) -> None:
        self._wrote(node.relation)

    def visit_MergeStmt(self, ancestors, node) -> None:
        self._wrote(node.relation)

    def visit_TruncateStmt(self, ancestors, node) -> None:
        for relation in node.relations or ():
            self._wrote(relation)


def _collect(statements: str, refs: BodyReferences) -> None:
    collector = _Collector(refs)
    collector(parse_sql(statements))
    # A name a WITH defines is not a table.
    refs.reads -= {(None, c) for c in collector.ctes}


def sql_body(source: str) -> BodyReferences:
    """A LANGUAGE sql body (prosrc): one or more statements."""
    refs = BodyReferences()
    try:
        _collect(source, refs)
    except ParseError:
        refs.parsed = False
    return refs


def plpgsql_body(definition: str) -> BodyReferences:
    """A PL/pgSQL routine, from its whole CREATE FUNCTION text (pg_get_functiondef)."""
    refs = BodyReferences()
    try:
        tree = parse_plpgsql(definition)
    except ParseError:
        refs.parsed = False
        return refs
    for mode, query, dynamic in _expressions(tree):
        if dynamic:
            refs.dynamic = True
        try:
            _collect(query if mode == _STATEMENT_MODE else f"SELECT {query}", refs)
        except ParseError:
            refs.parsed = False
    return refs


def _expressions(node, dynamic: bool = False) -> Iterable[tuple[int, str, bool]]:
    """Every PLpgSQL_expr in the tree: (parse mode, text, inside a dynamic EXECUTE)."""
    if isinstance(node, dict):
        for key, value in node.items():
            inside = dynamic or key in ("PLpgSQL_stmt_dynexecute", "PLpgSQL_stmt_dynfors")
            if key == "PLpgSQL_expr" and isinstance(value, dict) and value.get("query") is not None:
                yield value.get("parseMode", _STATEMENT_MODE), value["query"], inside
            yield from _expressions(value, inside)
    elif isinstance(node, list):
        for item in node:
            yield from _expressions(item, dynamic)
