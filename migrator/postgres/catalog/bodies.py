"""What a routine's body touches, read by the real Postgres parser (pglast).

The catalogs record no dependency of a SQL or PL/pgSQL body on the tables it reads or
writes, the functions it calls or the types it declares (only a SQL-standard body,
`BEGIN ATOMIC`, has them in pg_depend). So the body is parsed: SQL bodies as
statements, PL/pgSQL with its own parser, whose every embedded statement and
expression is parsed again, assignments included (`x := ...` is the target and an
expression, not a query).

PL/pgSQL's parser runs without a server here, so it cannot look a type up: a
variable, argument or result whose type is an array of a type it does not know
(`h public.hstore[]`, `a public.money_amount[]`) fails the whole parse ("pseudo-type
_record"), and so does any type in a schema other than public ("LookupExplicitNamespace
only supports pg_catalog and public"). Declarations are therefore read first, by their
own small grammar: each declared type is recorded as written (what the routine needs
on the other server) and handed to the parser as a type it accepts (`text[]` for an
array, `record` for a row or another schema's type), which parses the same body.
What cannot be known (`EXECUTE` of a string built at run time) is said, and a body that
still does not parse says why, so the caller can fall back on a name search once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from pglast import parse_plpgsql
from pglast.parser import ParseError, parse_sql_json

# PL/pgSQL's parse modes (parser.h RawParseMode): a whole statement, a type name, an
# expression, and the three forms of an assignment's target (`x`, `x.f`, `x.f.g`).
_STATEMENT_MODE = 0
_TYPE_MODE = 1
_ASSIGN_MODES = (3, 4, 5)

Name = tuple[str | None, str]


@dataclass
class BodyReferences:
    """Names as written in the body: (schema or None, name)."""

    reads: set[Name] = field(default_factory=set)
    writes: set[Name] = field(default_factory=set)
    calls: set[Name] = field(default_factory=set)
    types: set[Name] = field(default_factory=set)      # casts, declared variables
    rowtypes: set[Name] = field(default_factory=set)   # relations used as types (%ROWTYPE, %TYPE)
    dynamic: bool = False          # EXECUTE of a string: what it touches is unknown
    parsed: bool = True            # False: the body did not parse
    problem: str | None = None     # why it did not parse, the parser's words

    def failed(self, why: str) -> BodyReferences:
        self.parsed = False
        self.problem = self.problem or why
        return self


# The statements that write a relation (their `relation`).
_WRITES = ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt")


def _collect(statements: str, refs: BodyReferences) -> None:
    """What the statements name, from the parse tree as JSON (pglast's C parser; a walk
    over plain dicts, much faster than building its Python nodes)."""
    ctes: set[str] = set()
    stack: list = [json.loads(parse_sql_json(statements))]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        for key, value in node.items():
            if key == "RangeVar":
                refs.reads.add((value.get("schemaname"), value["relname"]))
            elif key == "FuncCall":
                names = _strings(value.get("funcname"))
                if names:
                    refs.calls.add((names[0], names[1]) if len(names) == 2 else (None, names[-1]))
            elif key in ("TypeName", "typeName"):
                names = _strings(value.get("names"))
                if names and names[0] != "pg_catalog" and len(names) <= 2:
                    refs.types.add((names[0], names[1]) if len(names) == 2 else (None, names[0]))
            elif key == "CommonTableExpr":
                ctes.add(value["ctename"])
            elif key in _WRITES and isinstance(value.get("relation"), dict):
                relation = value["relation"]
                name = (relation.get("schemaname"), relation["relname"])
                refs.writes.add(name)
                refs.reads.add(name)
            elif key == "TruncateStmt":
                for relation in value.get("relations") or ():
                    target = relation.get("RangeVar", relation)
                    refs.writes.add((target.get("schemaname"), target["relname"]))
            if isinstance(value, dict | list):
                stack.append(value)
    # A name a WITH defines is not a table.
    refs.reads -= {(None, c) for c in ctes}


def _strings(nodes) -> list[str]:
    names = [n.get("String", {}).get("sval") if isinstance(n, dict) else None for n in nodes or ()]
    return names if names and all(names) else []


def sql_body(source: str) -> BodyReferences:
    """A LANGUAGE sql body (prosrc): one or more statements."""
    refs = BodyReferences()
    try:
        _collect(source, refs)
    except ParseError as exc:
        refs.failed(_first_line(exc))
    return refs


def plpgsql_body(definition: str) -> BodyReferences:
    """A PL/pgSQL routine, from its whole CREATE FUNCTION text (pg_get_functiondef)."""
    refs = BodyReferences()
    try:
        text = _parseable(definition, refs)
        tree = parse_plpgsql(text)
    except (ParseError, ValueError) as exc:
        return refs.failed(_first_line(exc))
    for mode, query, dynamic in _expressions(tree):
        if dynamic:
            refs.dynamic = True
        try:
            if mode == _STATEMENT_MODE:
                _collect(query, refs)
            elif mode in _ASSIGN_MODES:
                _collect(f"SELECT {_assigned(query)}", refs)
            elif mode != _TYPE_MODE:
                _collect(f"SELECT {query}", refs)
        except ParseError as exc:
            refs.failed(f"{_first_line(exc)} in: {_shorten(query)}")
    return refs


def _expressions(node, dynamic: bool = False) -> Iterable[tuple[int, str, bool]]:
    """Every PLpgSQL_expr in the tree: (parse mode, text, inside a dynamic EXECUTE)."""
    if isinstance(node, dict):
        for key, value in node.items():
            # EXECUTE, FOR ... IN EXECUTE, RETURN QUERY EXECUTE, OPEN ... FOR EXECUTE
            inside = dynamic or key in ("PLpgSQL_stmt_dynexecute", "PLpgSQL_stmt_dynfors", "dynquery")
            if key == "PLpgSQL_expr" and isinstance(value, dict) and value.get("query") is not None:
                yield value.get("parseMode", _STATEMENT_MODE), value["query"], inside
            yield from _expressions(value, inside)
    elif isinstance(node, list):
        for item in node:
            yield from _expressions(item, dynamic)


# --------------------------------------------------------------------------- PL/pgSQL text

# Tokens of PL/pgSQL source: comments and strings are skipped whole, so a `;` or a
# BEGIN inside them is not one.
_TOKEN = re.compile(r"""
      (?P<comment>--[^\n]*|/\*.*?\*/)
    | (?P<string>[Ee]?'(?:[^']|'')*')
    | (?P<dollar>(?P<tag>\$[A-Za-z_]*\$).*?(?P=tag))
    | (?P<ident>"(?:[^"]|"")*")
    | (?P<word>[A-Za-z_][\w$]*)
    | (?P<assign>:=)
    | (?P<space>\s+)
    | (?P<other>.)
""", re.VERBOSE | re.DOTALL)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    start: int
    end: int

    @property
    def word(self) -> str:
        return self.text.upper() if self.kind == "word" else ""


def _tokens(text: str) -> Iterator[_Token]:
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup if match.lastgroup != "tag" else "dollar"
        if kind not in ("space", "comment"):
            yield _Token(kind, match.group(), match.start(), match.end())


# pg_get_functiondef ends the header with `AS $tag$` (or `$function$`) and the body.
_BODY = re.compile(r"^AS (?P<tag>\$[A-Za-z_]*\$)(?P<body>.*)(?P=tag)\s*$", re.MULTILINE | re.DOTALL)
# A type spelled with array brackets in a header: a name (maybe qualified and quoted,
# maybe with a typmod) followed by one or more [].
_IDENT = r"""(?:"(?:[^"]|"")+"|[A-Za-z_][\w$]*)"""
_ARRAY_TYPE = re.compile(_IDENT + r"(?:\s*\.\s*" + _IDENT + r")?(?:\s*\([\d\s,]*\))?(?:\s*\[\s*\d*\s*\])+")
# A qualified name in a header, in a schema the parser cannot look into.
_OTHER_SCHEMA = re.compile(r"(?<![\w$\".])(?!(?:pg_catalog|public)\s*\.)" + _IDENT + r"\s*\.\s*(?=" + _IDENT + ")")
_DECLARATION_ENDS = {"COLLATE", "NOT", "DEFAULT"}
_KNOWN_SCHEMAS = {"PG_CATALOG", "PUBLIC"}     # the only ones the parser looks into


def _parseable(definition: str, refs: BodyReferences) -> str:
    """The definition as PL/pgSQL's parser here can read it: array types of the header
    and of every DECLARE section given as text[]; declared types recorded in refs."""
    match = _BODY.search(definition)
    if match is None:
        return definition
    header = _OTHER_SCHEMA.sub("public.", _ARRAY_TYPE.sub("text[]", definition[:match.start()]))
    body = match.group("body")
    tag = match.group("tag")
    return f"{header}AS {tag}{_declarations(body, refs)}{tag}\n"


def _declarations(body: str, refs: BodyReferences) -> str:
    """Record each declared variable's type and return the body with array types
    replaced; everything else stays byte for byte."""
    tokens = list(_tokens(body))
    replacements: list[tuple[int, int, str]] = []
    i = 0
    while i < len(tokens):
        if tokens[i].word != "DECLARE":
            i += 1
            continue
        i += 1
        declaration: list[_Token] = []
        depth = 0
        while i < len(tokens) and not (tokens[i].word == "BEGIN" and depth == 0 and not declaration):
            token = tokens[i]
            depth += token.text in "([" and token.kind == "other"
            depth -= token.text in ")]" and token.kind == "other"
            if token.text == ";" and depth == 0:
                replacements += _declared(body, declaration, refs)
                declaration = []
            else:
                declaration.append(token)
            i += 1
    out, position = [], 0
    for start, end, text in replacements:
        out += [body[position:start], text]
        position = end
    return "".join(out) + body[position:]


def _declared(body: str, tokens: list[_Token], refs: BodyReferences) -> list[tuple[int, int, str]]:
    """One declaration (`name [CONSTANT] type [COLLATE c] [NOT NULL] [{DEFAULT | := | =} e]`):
    its type recorded; the span to give the parser another way, and how: an array as
    text[], a table's row type as record (whose fields it then lets the body assign)."""
    if len(tokens) < 2 or tokens[1].word in ("ALIAS", "CURSOR", "SCROLL", "NO"):
        return []
    start = 2 if tokens[1].word == "CONSTANT" else 1
    end = start
    while end < len(tokens) and not (tokens[end].word in _DECLARATION_ENDS or tokens[end].kind == "assign"
                                     or tokens[end].text == "="):
        end += 1
    if end == start:
        return []
    spelled = body[tokens[start].start:tokens[end - 1].end]
    span = (tokens[start].start, tokens[end - 1].end)
    _default(body, tokens[end:], refs)
    if "%" in spelled:
        _anchored(spelled, refs)
        return [(*span, "record")] if tokens[end - 1].word == "ROWTYPE" else []
    _declared_type(spelled, refs)
    if any(t.text == "[" for t in tokens[start:end]) or tokens[end - 1].word == "ARRAY":
        return [(*span, "text[]")]
    if len(tokens[start:end]) > 1 and tokens[start + 1].text == "." and tokens[start].word not in _KNOWN_SCHEMAS:
        return [(*span, "record")]     # the parser takes a type it does not know as a row
    return []


def _default(body: str, rest: list[_Token], refs: BodyReferences) -> None:
    """A default's expression, read here too: the parser drops it for a variable whose
    type it does not know."""
    for k, token in enumerate(rest):
        if token.word == "DEFAULT" or token.kind == "assign" or token.text == "=":
            if k + 1 < len(rest):
                try:
                    _collect("SELECT " + body[rest[k + 1].start:rest[-1].end], refs)
                except ParseError:
                    pass  # PL/pgSQL's own parser reads it too, and says so
            return


def _declared_type(spelled: str, refs: BodyReferences) -> None:
    try:
        _collect(f"SELECT NULL::{spelled}", refs)
    except ParseError:
        pass  # a spelling only PL/pgSQL knows; its own parser says so if it matters


def _anchored(spelled: str, refs: BodyReferences) -> None:
    """`t%ROWTYPE`, `s.t%ROWTYPE`, `t.c%TYPE`, `s.t.c%TYPE`: a relation the routine needs
    (`v%TYPE` of a variable names none)."""
    name, _, anchor = spelled.partition("%")
    parts = [p.strip() for p in _identifiers(name)]
    if anchor.strip().upper() == "TYPE":
        parts = parts[:-1]
    if len(parts) == 1:
        refs.rowtypes.add((None, parts[0]))
    elif len(parts) == 2:
        refs.rowtypes.add((parts[0], parts[1]))


def _identifiers(name: str) -> list[str]:
    return [p[1:-1].replace('""', '"') if p.startswith('"') else p.lower()
            for p in re.findall(r'"(?:[^"]|"")*"|[^."\s]+', name)]


def _assigned(query: str) -> str:
    """The expression of an assignment (`x := e`, `r.f = e`, `a[i] := e`): what follows
    the first `:=` or `=` outside brackets."""
    depth = 0
    for token in _tokens(query):
        if token.kind == "other" and token.text in "([":
            depth += 1
        elif token.kind == "other" and token.text in ")]":
            depth -= 1
        elif depth == 0 and (token.kind == "assign" or token.text == "="):
            return query[token.end:]
    return query


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _shorten(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"
