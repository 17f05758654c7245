"""The views and routines that use the group: which move with it, which cross it.

After the cutover the application's queries run on the target: a view it reads or a
routine it calls must be there, and must find every table it uses there. So:
- a view moves when it reads only group tables (directly or through views that move);
  one that reads group tables and tables outside crosses the boundary;
- a routine moves when the group needs it (defaults, constraints, indexes, triggers,
  views, or routines that move call it) or its body uses group tables and nothing
  outside; one whose body uses both sides crosses, worst when it writes outside;
- a body read only by a name search (dynamic SQL, a body that does not parse) is said.
The playbook's `objects.include` / `objects.exclude` decide beyond what is detected.
"""

from __future__ import annotations

import graphlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from migrator.playbook import TableName
from migrator.postgres.catalog.bodies import BodyReferences, plpgsql_body, sql_body
from migrator.postgres.catalog.facts import Crossing, RoutineFacts, ViewFacts

_SEARCH_PATH = re.compile(r"^search_path=(?P<value>.*)$")


@dataclass(frozen=True)
class RoutineSource:
    """A routine of the database, as read, with what its body names."""

    facts: RoutineFacts
    language: str
    source: str                         # prosrc
    depends_on: tuple[TableName, ...]   # relations pg_depend knows (a SQL-standard body)
    search_path: tuple[str, ...]        # its own SET search_path, else ('public',)

    def body(self) -> BodyReferences:
        if self.language == "sql" and not self.facts.sql_body:
            return sql_body(self.source)
        if self.language == "plpgsql":
            return plpgsql_body(self.facts.definition)
        return BodyReferences(parsed=self.facts.sql_body or self.facts.kind == "aggregate")


@dataclass(frozen=True)
class Dependents:
    views: tuple[ViewFacts, ...]
    routines: tuple[RoutineFacts, ...]
    crossings: tuple[Crossing, ...]
    name_searched: tuple[str, ...]
    left_behind: tuple[tuple[str, str], ...]


def search_path(config: Iterable[str] | None) -> tuple[str, ...]:
    for item in config or ():
        match = _SEARCH_PATH.match(item)
        if match:
            schemas = (s.strip().strip('"') for s in match.group("value").split(","))
            return tuple(s for s in schemas if s and s != "$user")
    return ("public",)


def resolve(group: set[TableName], needed: Iterable[RoutineFacts], views: Iterable[ViewFacts],
            routines: Iterable[RoutineSource], relations: Mapping[TableName, str], *,
            include: Iterable[TableName] = (), exclude: Iterable[TableName] = ()) -> Dependents:
    """Decide, from what was read, what moves and what crosses. `group` holds the group's
    tables, partitions and sequences; `relations` every relation of the database."""
    include, exclude = set(include), set(exclude)
    views = {v.name: v for v in views if v.name not in exclude}
    sources = [r for r in routines if r.facts.name not in exclude]
    by_name: dict[TableName, list[RoutineSource]] = {}
    for r in sources:
        by_name.setdefault(r.facts.name, []).append(r)

    # Views: those that touch the group (fixpoint), then those of them that read only
    # the group and each other.
    touching = {n for n, v in views.items() if set(v.reads) & group or n in include}
    while True:
        more = {n for n, v in views.items() if n not in touching and set(v.reads) & touching}
        if not more:
            break
        touching |= more
    moving = set(touching)
    while True:
        out = {n for n in moving if n not in include and set(views[n].reads) - group - moving}
        if not out:
            break
        moving -= out
    crossings = [
        Crossing("view", str(n), tuple(sorted(set(views[n].reads) & (group | touching))),
                 tuple(sorted(set(views[n].reads) - group - moving)))
        for n in sorted(touching - moving)
    ]

    # Routines: what each body uses, resolved against the database's relations.
    uses: dict[int, tuple[set[TableName], set[TableName], set[TableName]]] = {}
    name_searched = []
    allowed = group | moving
    for i, r in enumerate(sources):
        body = r.body()
        reads = {_relation(n, r.search_path, group, relations) for n in body.reads} - {None}
        writes = {_relation(n, r.search_path, group, relations) for n in body.writes} - {None}
        reads |= set(r.depends_on)
        calls = {c for n in body.calls for c in _routines(n, r.search_path, by_name)}
        uses[i] = (reads | writes, writes, calls)
        if (body.dynamic or not body.parsed) and not (reads & allowed) and _named(r, group):
            name_searched.append(_display(r.facts))
    chosen: dict[tuple[TableName, str], RoutineFacts] = {(f.name, f.arguments): f for f in needed}
    for i, r in enumerate(sources):
        used, writes, _ = uses[i]
        if not used & allowed and r.facts.name not in include:
            continue
        outside = used - allowed
        if outside and r.facts.name not in include:
            crossings.append(Crossing("routine", _display(r.facts), tuple(sorted(used & allowed)),
                                      tuple(sorted(outside)), bool(writes - allowed)))
            continue
        chosen.setdefault((r.facts.name, r.facts.arguments),
                          replace(r.facts, why="its body uses " + _listing(sorted(used & allowed))
                                  if used & allowed else "named in objects.include"))
    # What moving views and routines call comes too, and an aggregate's functions.
    index = {(r.facts.name, r.facts.arguments): (i, r) for i, r in enumerate(sources)}
    wanted = [key for v in views.values() if v.name in moving for key in v.routines]
    wanted += list(chosen)
    seen: set[tuple[TableName, str]] = set()
    while wanted:
        key = wanted.pop()
        if key in seen or key not in index:
            continue
        seen.add(key)
        i, r = index[key]
        chosen.setdefault(key, replace(r.facts, why=r.facts.why or "called by what moves"))
        wanted += [(c.facts.name, c.facts.arguments) for c in uses[i][2]]
        if r.facts.aggregate is not None:
            wanted += [(f, a.facts.arguments) for f in r.facts.aggregate.functions for a in by_name.get(f, [])]
    left = [(str(n), "objects.exclude") for n in sorted(exclude)]
    return Dependents(
        views=_view_order([views[n] for n in moving]),
        routines=_routine_order(chosen.values()),
        crossings=tuple(crossings),
        name_searched=tuple(sorted(name_searched)),
        left_behind=tuple(left),
    )


def _relation(name: tuple[str | None, str], path: tuple[str, ...], group: set[TableName],
              relations: Mapping[TableName, str]) -> TableName | None:
    """A name a body uses, as a relation of the database (None: not one, e.g. a CTE)."""
    schema, relname = name
    if schema is not None:
        candidate = TableName(schema, relname)
        return candidate if candidate in relations else None
    for s in path:
        if TableName(s, relname) in relations:
            return TableName(s, relname)
    # The application's own search_path is not known here: a bare name that only a
    # group table has is taken to be that table.
    matches = [t for t in group if t.name == relname]
    return matches[0] if len(matches) == 1 else None


def _routines(name: tuple[str | None, str], path: tuple[str, ...],
              by_name: Mapping[TableName, list[RoutineSource]]) -> list[RoutineSource]:
    schema, proname = name
    for s in ([schema] if schema else list(path)):
        found = by_name.get(TableName(s, proname))
        if found:
            return found
    return []


def _named(r: RoutineSource, group: set[TableName]) -> bool:
    text = r.source or r.facts.definition
    return any(re.search(rf"\b{re.escape(t.name)}\b", text) for t in group)


def _display(r: RoutineFacts) -> str:
    return f"{r.name}({r.arguments})"


def _listing(names: list[TableName], limit: int = 4) -> str:
    shown = ", ".join(str(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _view_order(views: list[ViewFacts]) -> tuple[ViewFacts, ...]:
    """Each view after the views it reads."""
    names = {v.name for v in views}
    graph = graphlib.TopologicalSorter({v.name: [r for r in v.reads if r in names] for v in views})
    by_name = {v.name: v for v in views}
    return tuple(by_name[n] for n in graph.static_order())


def _routine_order(routines: Iterable[RoutineFacts]) -> tuple[RoutineFacts, ...]:
    """Functions first (their bodies are not checked at creation), then aggregates over
    them; SQL-standard bodies are created after the views (ddl)."""
    rank = {"aggregate": 1}
    return tuple(sorted(routines, key=lambda r: (rank.get(r.kind, 0), str(r.name), r.arguments)))
