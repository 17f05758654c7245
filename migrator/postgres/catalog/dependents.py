"""The closure of what the application reaches from the group: which views, routines and
types move with it, which cross its boundary, and what else they need.

After the cutover the application's queries run on the target: a view it reads, a
routine it calls or a trigger fires, and every type, extension and operator those use,
must be there and find every table they use there. So, from the group:
- a view moves when it reads only group tables (directly or through views that move);
  one that reads group tables and tables outside crosses the boundary;
- a routine moves when the group needs it (its triggers, defaults, constraints and
  indexes call it, a moving view or routine calls it, an aggregate is made of it) or
  its body uses group tables and nothing outside. One the group needs moves whatever
  it touches, and what it touches outside is a crossing, told with the chain that
  reaches it (`trigger t on a → function f → writes b (outside the group)`): a trigger
  function reaches its table through NEW and OLD and may name no group table at all;
- what moving routines and views need comes too: the types of their arguments,
  results, declared variables and casts (followed down by the reader), the extensions
  those and their calls come from;
- a body read only by a name search (dynamic SQL) is said, and so is one that could not
  be analysed, with the parser's reason.
The playbook's `objects.include` / `objects.exclude` decide beyond what is detected
(views, routines, types and domains), and `schemas:` (whole-database mode) moves
everything of those schemas.
"""

from __future__ import annotations

import graphlib
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from migrator.playbook import TableName
from migrator.postgres.catalog.bodies import BodyReferences, plpgsql_body, sql_body
from migrator.postgres.catalog.facts import Crossing, Requirement, RoutineFacts, ViewFacts

_SEARCH_PATH = re.compile(r"^search_path=(?P<value>.*)$")

RoutineKey = tuple[TableName, str]          # (name, argument types)

# pg_type.typtype of what a CREATE TYPE or CREATE DOMAIN makes; relkinds whose row type is
# a relation's (a table used as a type is that table).
_RELATION_ROWS = ("r", "p", "v", "m", "f")


@dataclass(frozen=True)
class TypeName:
    """A type of the database by name, to resolve what bodies spell."""

    kind: str                      # pg_type.typtype
    relkind: str = ""              # the relation's kind when it is a row type ('' when not)
    extension: str | None = None


@dataclass(frozen=True)
class RoutineSource:
    """A routine of the database, as read, with what its body names."""

    facts: RoutineFacts
    language: str
    source: str                         # prosrc
    depends_on: tuple[TableName, ...]   # relations pg_depend knows (a SQL-standard body)
    search_path: tuple[str, ...]        # its own SET search_path, else ('public',)
    types: tuple[TableName, ...] = ()   # argument and result types (pg_depend), arrays as elements
    extensions: tuple[str, ...] = ()    # extensions those types (or a SQL-standard body) use

    @property
    def key(self) -> RoutineKey:
        return self.facts.name, self.facts.arguments

    def body(self) -> BodyReferences:
        if self.facts.kind == "aggregate" or self.facts.sql_body:
            return BodyReferences()
        if self.language == "sql":
            return sql_body(self.source)
        if self.language == "plpgsql":
            return plpgsql_body(self.facts.definition)
        return BodyReferences().failed(f"written in {self.language}: its body is not read")


@dataclass(frozen=True)
class Dependents:
    views: tuple[ViewFacts, ...]
    routines: tuple[RoutineFacts, ...]
    crossings: tuple[Crossing, ...]
    name_searched: tuple[str, ...]
    left_behind: tuple[tuple[str, str], ...]
    unparsed: tuple[tuple[str, str], ...] = ()
    # Types that moving routines and views (or the playbook) name -> who names them.
    types: Mapping[TableName, tuple[str, ...]] = field(default_factory=dict)
    extensions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    requirements: tuple[Requirement, ...] = ()
    unmatched: tuple[tuple[str, TableName], ...] = ()


def search_path(config: Iterable[str] | None) -> tuple[str, ...]:
    for item in config or ():
        match = _SEARCH_PATH.match(item)
        if match:
            schemas = (s.strip().strip('"') for s in match.group("value").split(","))
            return tuple(s for s in schemas if s and s != "$user")
    return ("public",)


@dataclass
class _Uses:
    """What one routine touches, resolved against the database."""

    reads: set[TableName]
    writes: set[TableName]
    calls: list[RoutineSource]
    types: set[TableName]
    extensions: set[str]
    body: BodyReferences

    @property
    def relations(self) -> set[TableName]:
        return self.reads | self.writes


@dataclass
class _Resolver:
    group: set[TableName]
    relations: Mapping[TableName, str]
    types: Mapping[TableName, TypeName]
    extension_routines: Mapping[TableName, str]
    by_name: dict[TableName, list[RoutineSource]]

    def relation(self, name: tuple[str | None, str], path: tuple[str, ...]) -> TableName | None:
        """A name a body uses, as a relation of the database (None: not one, e.g. a CTE)."""
        schema, relname = name
        if schema is not None:
            candidate = TableName(schema, relname)
            return candidate if candidate in self.relations else None
        for s in path:
            if TableName(s, relname) in self.relations:
                return TableName(s, relname)
        # The application's own search_path is not known here: a bare name that only a
        # group table has is taken to be that table.
        matches = [t for t in self.group if t.name == relname]
        return matches[0] if len(matches) == 1 else None

    def type(self, name: tuple[str | None, str], path: tuple[str, ...]) -> TableName | None:
        schema, typname = name
        for s in ([schema] if schema else list(path)):
            if TableName(s, typname) in self.types:
                return TableName(s, typname)
        return None

    def routines(self, name: tuple[str | None, str], path: tuple[str, ...]) -> tuple[list[RoutineSource], str | None]:
        """The routines a call may mean (every overload of the name), or the extension
        that provides it."""
        schema, proname = name
        for s in ([schema] if schema else list(path)):
            found = self.by_name.get(TableName(s, proname))
            if found:
                return found, None
            extension = self.extension_routines.get(TableName(s, proname))
            if extension:
                return [], extension
        return [], None

    def uses(self, r: RoutineSource, body: BodyReferences | None = None) -> _Uses:
        body = body if body is not None else r.body()
        path = r.search_path
        reads = {self.relation(n, path) for n in body.reads | body.rowtypes} - {None}
        writes = {self.relation(n, path) for n in body.writes} - {None}
        reads |= set(r.depends_on)
        types: set[TableName] = set()
        extensions = set(r.extensions)
        named = [t for t in r.types] + [t for t in (self.type(n, path) for n in body.types) if t is not None]
        for t in named:
            facts = self.types.get(t)
            if facts is not None and facts.relkind in _RELATION_ROWS:
                reads.add(t)        # a relation's row type: the relation must be there
            elif facts is not None and facts.extension:
                extensions.add(facts.extension)
            else:
                types.add(t)
        calls: list[RoutineSource] = []
        for name in body.calls:
            found, extension = self.routines(name, path)
            calls += found
            if extension:
                extensions.add(extension)
        return _Uses(reads, writes, calls, types, extensions, body)  # type: ignore[arg-type]


def resolve(group: set[TableName], needed: Iterable[tuple[RoutineKey, str]], views: Iterable[ViewFacts],
            routines: Iterable[RoutineSource], relations: Mapping[TableName, str], *,
            types: Mapping[TableName, TypeName] | None = None,
            extension_routines: Mapping[TableName, str] | None = None,
            include: Iterable[TableName] = (), exclude: Iterable[TableName] = (),
            schemas: Iterable[str] = (), bodies: Mapping[RoutineKey, BodyReferences] | None = None) -> Dependents:
    """Decide, from what was read, what moves, what crosses and what else is needed.
    `group` holds the group's tables, partitions and sequences; `relations` every
    relation of the database; `needed` the routines the group's tables call, each with
    why (`trigger t on public.a`); `schemas` the playbook's whole-database schemas;
    `bodies` the routines' bodies already parsed (else they are parsed here)."""
    types = types or {}
    include, exclude, schemas = list(include), list(exclude), set(schemas)
    all_views = {v.name: v for v in views}
    sources = list(routines)
    routine_names = {r.facts.name for r in sources}
    unmatched = [(f"objects.{what}[{i}]", n) for what, names in (("include", include), ("exclude", exclude))
                 for i, n in enumerate(names)
                 if n not in all_views and n not in routine_names and n not in types]
    include_set, exclude_set = set(include), set(exclude)
    views_by_name = {n: v for n, v in all_views.items() if n not in exclude_set}
    kept = [r for r in sources if r.facts.name not in exclude_set]
    by_name: dict[TableName, list[RoutineSource]] = {}
    for r in kept:
        by_name.setdefault(r.facts.name, []).append(r)
    resolver = _Resolver(group, relations, types, extension_routines or {}, by_name)
    requirements: list[Requirement] = []

    # Views: those that touch the group (fixpoint), then those of them that read only
    # the group and each other. In whole-database mode every view of the schemas.
    def chosen_view(n: TableName) -> bool:
        return n in include_set or n.schema in schemas

    touching = {n for n, v in views_by_name.items() if set(v.reads) & group or chosen_view(n)}
    while True:
        more = {n for n, v in views_by_name.items() if n not in touching and set(v.reads) & touching}
        if not more:
            break
        touching |= more
    moving = set(touching)
    while True:
        out = {n for n in moving if n not in include_set and set(views_by_name[n].reads) - group - moving}
        if not out:
            break
        moving -= out
    crossings = [
        Crossing("view", str(n), tuple(sorted(set(views_by_name[n].reads) & (group | touching))),
                 tuple(sorted(set(views_by_name[n].reads) - group - moving)), chain=(f"view {n}",))
        for n in sorted(touching - moving)
    ]

    # Routines: what each body uses, resolved against the database.
    uses = {r.key: resolver.uses(r, (bodies or {}).get(r.key)) for r in kept}
    allowed = group | moving
    index = {r.key: r for r in kept}
    chains: dict[RoutineKey, tuple[str, ...]] = {}
    why: dict[RoutineKey, str] = {}
    queue: deque[RoutineKey] = deque()

    def reach(key: RoutineKey, chain: tuple[str, ...], reason: str) -> None:
        if key in chains or key not in index:
            return
        chains[key] = (*chain, f"{_kind(index[key].facts)} {_display(index[key].facts)}")
        why[key] = reason
        queue.append(key)

    excluded_keys = {(r.facts.name, r.facts.arguments) for r in sources if r.facts.name in exclude_set}
    for key, reason in needed:
        if key in excluded_keys:
            arguments = tuple(a for a in key[1].split(", ") if a)
            requirements.append(Requirement("function", f"function {key[0]}({key[1]})",
                                            ("function", (key[0].schema, key[0].name), arguments), (reason,)))
        reach(key, (reason,), f"the group's {reason.split(' ')[0]}s call it")
    for name in sorted(moving):
        for key in views_by_name[name].routines:
            reach(key, (f"view {name}",), f"view {name} calls it")
    for r in kept:
        if r.facts.name in include_set:
            reach(r.key, (), "named in objects.include")
        elif r.facts.name.schema in schemas:
            reach(r.key, (), f"in schema {r.facts.name.schema}")
    # A body that uses the group and nothing outside moves; one that also uses what is
    # outside crosses, and stays unless something that moves needs it.
    body_crossings: dict[RoutineKey, Crossing] = {}
    for r in kept:
        used = uses[r.key].relations
        if r.key in chains or not used & allowed:
            continue
        outside = used - allowed
        if outside:
            body_crossings[r.key] = Crossing(
                "routine", _display(r.facts), tuple(sorted(used & allowed)), tuple(sorted(outside)),
                bool(uses[r.key].writes - allowed), chain=(f"{_kind(r.facts)} {_display(r.facts)}",))
            continue
        reach(r.key, (), "its body uses " + _listing(sorted(used & allowed)))
    while queue:
        key = queue.popleft()
        r, used = index[key], uses[key]
        for callee in used.calls:
            reach(callee.key, chains[key], f"{_display(r.facts)} calls it")
        if r.facts.aggregate is not None:
            for f in r.facts.aggregate.functions:
                for part in by_name.get(f, []):
                    reach(part.key, chains[key], f"aggregate {_display(r.facts)} is made of it")
    routine_crossings: list[Crossing] = []
    for key, chain in chains.items():
        body_crossings.pop(key, None)
        used = uses[key].relations
        outside = used - allowed
        if outside and index[key].facts.name not in include_set:
            routine_crossings.append(Crossing(
                "routine", _display(index[key].facts), tuple(sorted(used & allowed)), tuple(sorted(outside)),
                bool(uses[key].writes - allowed), chain=chain, moves=True))
    crossings += [*body_crossings.values(), *routine_crossings]

    # What the moving routines and views need besides: types, extensions.
    needs_type: dict[TableName, list[str]] = {}
    needs_extension: dict[str, list[str]] = {}
    for key in chains:
        user = f"{_kind(index[key].facts)} {_display(index[key].facts)}"
        for t in uses[key].types:
            needs_type.setdefault(t, []).append(user)
        for e in uses[key].extensions:
            needs_extension.setdefault(e, []).append(user)
    for name in moving:
        view = views_by_name[name]
        user = f"{'materialized view' if view.materialized else 'view'} {name}"
        for t in view.types:
            facts = types.get(t)
            if facts is None or facts.relkind in _RELATION_ROWS:
                continue
            if facts.extension:
                needs_extension.setdefault(facts.extension, []).append(user)
            else:
                needs_type.setdefault(t, []).append(user)
        for e in view.extensions:
            needs_extension.setdefault(e, []).append(user)
    for name, facts in types.items():
        if facts.extension or facts.relkind in _RELATION_ROWS:
            continue      # comes with its extension, or is a relation's row
        if name in include_set:
            needs_type.setdefault(name, []).append("objects.include")
        elif name.schema in schemas and name not in exclude_set:
            needs_type.setdefault(name, []).append(f"schema {name.schema}")
    for name in sorted(exclude_set & set(needs_type)):
        requirements.append(Requirement("type", f"type {name}", ("type", (name.qualified,), ()),
                                        tuple(needs_type.pop(name))))

    name_searched, unparsed = [], []
    for r in kept:
        body = uses[r.key].body
        reached = r.key in chains or r.key in body_crossings
        if body.dynamic and not (uses[r.key].relations & allowed) and _named(r, group):
            name_searched.append(_display(r.facts))
        elif not body.parsed and (reached or _named(r, group)):
            unparsed.append((_display(r.facts), body.problem or "it does not parse"))
    chosen = {key: replace(index[key].facts, why=why[key], after=_after(index[key], types))
              for key in chains}
    left = [(str(n), "objects.exclude") for n in sorted(exclude_set)]
    return Dependents(
        views=_view_order([views_by_name[n] for n in moving]),
        routines=_routine_order(chosen.values()),
        crossings=tuple(crossings),
        name_searched=tuple(sorted(name_searched)),
        left_behind=tuple(left),
        unparsed=tuple(sorted(unparsed)),
        types={t: tuple(dict.fromkeys(u)) for t, u in sorted(needs_type.items())},
        extensions={e: tuple(dict.fromkeys(u)) for e, u in sorted(needs_extension.items())},
        requirements=tuple(requirements),
        unmatched=tuple(unmatched),
    )


def _after(r: RoutineSource, types: Mapping[TableName, TypeName]) -> tuple[TableName, ...]:
    """The relations a routine's signature uses as row types, and those a SQL-standard
    body reads: it is created after them."""
    rows = {t for t in r.types if t in types and types[t].relkind in _RELATION_ROWS}
    return tuple(sorted(rows | (set(r.depends_on) if r.facts.sql_body else set())))


def _named(r: RoutineSource, group: set[TableName]) -> bool:
    text = r.source or r.facts.definition
    return any(re.search(rf"\b{re.escape(t.name)}\b", text) for t in group)


def _display(r: RoutineFacts) -> str:
    return f"{r.name}({r.arguments})"


def _kind(r: RoutineFacts) -> str:
    return {"function": "function", "procedure": "procedure", "aggregate": "aggregate"}.get(r.kind, "function")


def _listing(names: list[TableName], limit: int = 4) -> str:
    shown = ", ".join(str(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _view_order(views: list[ViewFacts]) -> tuple[ViewFacts, ...]:
    """Each view after the views it reads; otherwise by name, whatever order they came
    in (a set's, which changes from one process to the next): two plans of one database
    show the same statements in the same order."""
    by_name = {v.name: v for v in views}
    graph = graphlib.TopologicalSorter()
    for name in sorted(by_name):
        graph.add(name)      # first, so that the order among views ready together is the names'
    for name in sorted(by_name):
        graph.add(name, *sorted(r for r in by_name[name].reads if r in by_name))
    return tuple(by_name[n] for n in graph.static_order())


def _routine_order(routines: Iterable[RoutineFacts]) -> tuple[RoutineFacts, ...]:
    """Functions first (their bodies are not checked at creation), then aggregates over
    them; SQL-standard bodies and signatures over relations are created after those (ddl)."""
    rank = {"aggregate": 1}
    return tuple(sorted(routines, key=lambda r: (rank.get(r.kind, 0), str(r.name), r.arguments)))
