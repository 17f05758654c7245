"""Isolation: which tables the traffic keeps together, and what crosses a boundary.

The co-access graph has a node per table and an edge between two tables that one
transaction (sampled: the relations it held locks on, accumulated) or one statement
(pg_stat_statements, parsed) touched together. An edge's weight is the time spent
together, so heavy work weighs more than a rare query: the samples of the transactions
that held both, plus the calls of the statements that named both.

A transaction that touched tables on both sides of the group's boundary cannot run
after the cutover (the two halves are on different servers). Candidate groups are the
graph's communities (networkx's Louvain method on those weights), joined along foreign
keys as `plan` requires (a foreign key across the boundary blocks the move), ranked by
their AAS.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import networkx as nx

from migrator.analyze.statements import StatementUse
from migrator.playbook import TableName
from migrator.postgres.catalog import ForeignKey


@dataclass(frozen=True)
class Touch:
    """One sampled transaction: the tables it held, who ran it, what it ran."""

    tables: frozenset[TableName]
    samples: int
    route_label: str
    query: str | None


@dataclass(frozen=True)
class Crossing:
    """Traffic that touched both sides of a boundary: the same tables, counted together."""

    inside: tuple[TableName, ...]
    outside: tuple[TableName, ...]
    transactions: int                     # sampled transactions
    statement_calls: int                  # pg_stat_statements calls in the window
    routes: tuple[str, ...]
    sample_query: str | None

    def to_dict(self) -> dict:
        return {"inside": [str(t) for t in self.inside], "outside": [str(t) for t in self.outside],
                "transactions": self.transactions, "statement_calls": self.statement_calls,
                "routes": list(self.routes), "sample_query": self.sample_query}


def crossings(touches: Iterable[Touch], statements: Iterable[StatementUse],
              group: frozenset[TableName]) -> list[Crossing]:
    """Transactions and statements that touched the group and a table outside it,
    grouped by the tables on each side, most frequent first."""
    found: dict[tuple[frozenset, frozenset], list] = {}
    for touch in touches:
        inside, outside = touch.tables & group, touch.tables - group
        if inside and outside:
            entry = found.setdefault((inside, outside), [0, 0, set(), None])
            entry[0] += 1
            entry[2].add(touch.route_label)
            entry[3] = _fuller(entry[3], touch.query)
    for use in statements:
        inside, outside = use.tables & group, use.tables - group
        if inside and outside:
            entry = found.setdefault((inside, outside), [0, 0, set(), None])
            entry[1] += use.calls
            entry[2].add("pg_stat_statements")
            entry[3] = entry[3] or use.query
    return sorted(
        (Crossing(inside=tuple(sorted(i)), outside=tuple(sorted(o)), transactions=n, statement_calls=c,
                  routes=tuple(sorted(r)), sample_query=q)
         for (i, o), (n, c, r, q) in found.items()),
        key=lambda c: (-(c.transactions + c.statement_calls), c.inside, c.outside),
    )


def _fuller(current: str | None, candidate: str | None) -> str | None:
    """The sample that shows more of its transaction's statements."""
    if current is None or (candidate and candidate.count("; ") > current.count("; ")):
        return candidate or current
    return current


def coaccess_graph(tables: Iterable[TableName], touches: Iterable[Touch],
                   statements: Iterable[StatementUse], aas: Mapping[TableName, float]) -> nx.Graph:
    """Nodes: every table (attribute `aas`); edges: weight (samples together + statement
    calls together), transactions, statement_calls."""
    graph = nx.Graph()
    for table in tables:
        graph.add_node(table, aas=aas.get(table, 0.0))

    def link(held: frozenset[TableName], weight: float, transactions: int, calls: int) -> None:
        ordered = sorted(held)
        for i, a in enumerate(ordered):
            for b in ordered[i + 1:]:
                if not graph.has_edge(a, b):
                    graph.add_edge(a, b, weight=0.0, transactions=0, statement_calls=0)
                edge = graph[a][b]
                edge["weight"] += weight
                edge["transactions"] += transactions
                edge["statement_calls"] += calls

    for touch in touches:
        for table in touch.tables:
            graph.add_node(table, aas=aas.get(table, 0.0))
        link(touch.tables, touch.samples, 1, 0)
    for use in statements:
        for table in use.tables:
            graph.add_node(table, aas=aas.get(table, 0.0))
        link(use.tables, use.calls, 0, use.calls)
    return graph


def candidate_groups(graph: nx.Graph, foreign_keys: Iterable[ForeignKey]) -> list[frozenset[TableName]]:
    """Communities of the co-access graph, merged along foreign keys; only those with
    traffic (some AAS or an edge), the busiest first."""
    if graph.number_of_nodes() == 0:
        return []
    communities = nx.community.louvain_communities(graph, weight="weight", seed=1)
    joined = nx.Graph()
    for community in communities:
        members = sorted(community)
        joined.add_nodes_from(members)
        joined.add_edges_from(zip(members, members[1:]))
    for fk in foreign_keys:
        if fk.table in joined and fk.references in joined and fk.table != fk.references:
            joined.add_edge(fk.table, fk.references)
    groups = []
    for component in nx.connected_components(joined):
        busy = any(graph.nodes[t].get("aas", 0) > 0 or graph.degree(t) > 0 for t in component)
        if busy:
            groups.append(frozenset(component))
    return sorted(groups, key=lambda g: (-sum(graph.nodes[t].get("aas", 0) for t in g), sorted(g)))


def foreign_keys_across(foreign_keys: Iterable[ForeignKey], group: frozenset[TableName]) -> list[ForeignKey]:
    """The foreign keys with exactly one end in the group (as `plan` judges them)."""
    return [fk for fk in foreign_keys if (fk.table in group) != (fk.references in group)]
