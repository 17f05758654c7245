"""One observation of the source's live traffic, and the report made of it.

`analyze_playbook` watches the traffic against a playbook's group (routing through the
listed PgBouncers, transactions crossing the group's boundary, the group's impact);
`analyze_source` watches a whole database with no group in mind and proposes groups.
Both only read: pg_stat_activity, pg_locks, pg_stat_database, pg_stat_user_tables,
pg_stat_statements (where installed), the catalogs, and SHOW on each PgBouncer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import networkx as nx

from migrator.analyze import statements as pgss
from migrator.analyze.findings import isolation_findings, routing_findings
from migrator.analyze.impact import Impact, database_aas, impact
from migrator.analyze.isolation import (
    Crossing,
    Touch,
    candidate_groups,
    coaccess_graph,
    crossings,
    foreign_keys_across,
)
from migrator.analyze.routing import RouteMap, RoutingReport, route_uses
from migrator.analyze.sampling import database_oid, read_counters, sample, tables_of
from migrator.pgbouncer.console import PgBouncerConsole
from migrator.plan.finding import BLOCK, Finding
from migrator.playbook import Playbook, TableName
from migrator.postgres.catalog import ForeignKey, foreign_keys, table_relations
from migrator.postgres.connection import Side, connect, describe

DEFAULT_DURATION = 60.0
DEFAULT_INTERVAL = 0.01


@dataclass(frozen=True)
class Scope:
    """What to watch: the source, the group (empty: none), the PgBouncers with the
    group's entry on each (None without a playbook)."""

    source_dsn: str
    group: frozenset[TableName] = frozenset()
    pgbouncers: tuple[tuple[str, str | None], ...] = ()
    move: str | None = None

    @classmethod
    def of(cls, playbook: Playbook) -> Scope:
        return cls(source_dsn=playbook.source.dsn, group=frozenset(playbook.tables),
                   pgbouncers=tuple((p.admin_dsn, p.database) for p in playbook.pgbouncers),
                   move=playbook.name)


@dataclass(frozen=True)
class TableImpact:
    table: TableName
    in_group: bool
    impact: Impact

    def to_dict(self) -> dict:
        return {"table": str(self.table), "in_group": self.in_group, **self.impact.to_dict()}


@dataclass(frozen=True)
class Candidate:
    tables: tuple[TableName, ...]
    impact: Impact
    crossing_transactions: int
    crossing_statement_calls: int
    is_group: bool = False                # exactly the playbook's group

    def to_dict(self) -> dict:
        return {"tables": [str(t) for t in self.tables], **self.impact.to_dict(),
                "crossing_transactions": self.crossing_transactions,
                "crossing_statement_calls": self.crossing_statement_calls, "is_group": self.is_group}


@dataclass(frozen=True)
class Coverage:
    """How much of the traffic the samples saw."""

    transactions_observed: int            # distinct transactions caught by a sample
    transactions_committed: int | None    # pg_stat_database over the window, less our own
    statements: str                       # 'pg_stat_statements: N statements' or why not

    @property
    def share(self) -> float | None:
        if not self.transactions_committed:
            return None
        return min(1.0, self.transactions_observed / self.transactions_committed)

    def to_dict(self) -> dict:
        return {"transactions_observed": self.transactions_observed,
                "transactions_committed": self.transactions_committed,
                "share": None if self.share is None else round(self.share, 4),
                "statements": self.statements}


@dataclass(frozen=True)
class AnalyzeReport:
    source: str
    move: str | None
    group: tuple[TableName, ...]
    pgbouncers: tuple[str, ...]
    duration_s: float
    interval_ms: float
    samples: int
    late_samples: int
    seconds: float
    coverage: Coverage
    database_aas: float
    tables: tuple[TableImpact, ...]
    group_impact: Impact | None
    routing: RoutingReport
    crossings: tuple[Crossing, ...]
    foreign_keys: tuple[ForeignKey, ...]   # across the group's boundary
    candidates: tuple[Candidate, ...]
    statements_available: bool
    findings: tuple[Finding, ...]
    graph: nx.Graph = field(compare=False, repr=False, default_factory=nx.Graph)
    observed_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.level == BLOCK]

    @property
    def ok(self) -> bool:
        return not self.blocking

    def to_dict(self) -> dict:
        """The `analyze --json` document (DESIGN section 8). Keys are only ever added."""
        return {
            "ok": self.ok,
            "mode": "playbook" if self.move else "source",
            "move": self.move,
            "source": self.source,
            "pgbouncers": list(self.pgbouncers),
            "duration_s": self.duration_s,
            "interval_ms": self.interval_ms,
            "samples": self.samples,
            "late_samples": self.late_samples,
            "seconds": round(self.seconds, 3),
            "coverage": self.coverage.to_dict(),
            "database_aas": round(self.database_aas, 4),
            "tables": [t.to_dict() for t in self.tables],
            "group": None if self.group_impact is None else
            {"tables": [str(t) for t in self.group], **self.group_impact.to_dict()},
            "routing": self.routing.to_dict(),
            "isolation": {
                "crossing": [c.to_dict() for c in self.crossings],
                "foreign_keys": [{"name": fk.name, "table": str(fk.table), "references": str(fk.references)}
                                 for fk in self.foreign_keys],
                "graph": graph_dict(self.graph),
            },
            "candidates": [c.to_dict() for c in self.candidates],
            "findings": [f.to_dict() for f in self.findings],
            "blocking": [f.to_dict() for f in self.blocking],
            "observed_at": self.observed_at.isoformat(),
        }


def graph_dict(graph: nx.Graph) -> dict:
    return {
        "nodes": [{"table": str(t), "aas": round(d.get("aas", 0.0), 4)} for t, d in sorted(graph.nodes(data=True))
                  if d.get("aas", 0) > 0 or graph.degree(t) > 0],
        "edges": [{"tables": [str(a), str(b)], "weight": round(d["weight"], 2),
                   "transactions": d["transactions"], "statement_calls": d["statement_calls"]}
                  for a, b, d in sorted(graph.edges(data=True), key=lambda e: sorted(e[:2]))],
    }


def analyze_playbook(playbook: Playbook, *, duration: float = DEFAULT_DURATION,
                     interval: float = DEFAULT_INTERVAL, progress: Progress | None = None,
                     purpose: str = "analyze") -> AnalyzeReport:
    return observe(Scope.of(playbook), duration=duration, interval=interval, progress=progress,
                   purpose=purpose)


def analyze_source(source_dsn: str, *, pgbouncers: Iterable[str] = (), duration: float = DEFAULT_DURATION,
                   interval: float = DEFAULT_INTERVAL, progress: Progress | None = None) -> AnalyzeReport:
    scope = Scope(source_dsn=source_dsn, pgbouncers=tuple((admin, None) for admin in pgbouncers))
    return observe(scope, duration=duration, interval=interval, progress=progress)


Progress = Callable[[float, float], None]


def observe(scope: Scope, *, duration: float, interval: float, progress: Progress | None = None,
            purpose: str = "analyze") -> AnalyzeReport:
    """Watch for `duration` seconds, sampling every `interval`; change nothing."""
    admins = list(dict.fromkeys(admin for admin, _ in scope.pgbouncers))
    consoles: list[PgBouncerConsole] = []
    try:
        for admin in admins:
            consoles.append(PgBouncerConsole(admin))
        with connect(scope.source_dsn, side=Side.SOURCE, purpose=purpose) as conn:
            relations = table_relations(conn)
            every_table = sorted({t for r in relations.values() if r.kind == "table" for t in r.tables})
            fks = foreign_keys(conn, every_table) if every_table else []
            db = database_oid(conn)
            routes = RouteMap(consoles)
            routes.refresh()
            before, statements_before = read_counters(conn), pgss.snapshot(conn, db)
            seen = sample(conn, relations, duration=duration, interval=interval, routes=routes,
                          progress=progress)
            after, statements_after = read_counters(conn), pgss.snapshot(conn, db)
            routes.refresh()
    finally:
        for console in consoles:
            console.close()

    group = scope.group
    entry_of = dict(scope.pgbouncers)
    group_entries = {c.display: entry_of[c.admin_dsn] for c in consoles if entry_of.get(c.admin_dsn)}
    views = []
    for txn in seen.transactions.values():
        tables = tables_of(txn.relids, relations)
        if not tables:
            continue
        backend = seen.backends[txn.backend]
        views.append((txn, routes.route(backend), tables, routes.clients(backend)))
    touches = [Touch(tables=t, samples=txn.samples, route_label=r.label, query=txn.query)
               for txn, r, t, _ in views]
    statement_uses = pgss.statements_between(statements_before, statements_after, every_table)
    relids = {r.tables[0]: relid for relid, r in relations.items() if r.kind == "table"}

    def impact_of(tables: Iterable[TableName]) -> Impact:
        tables = frozenset(tables)
        touched = sum(1 for touch in touches if touch.tables & tables)
        return impact(tables, seen, before=before, after=after, relids=relids, transactions=touched)

    table_impacts = []
    for table in every_table:
        one = impact_of([table])
        if one.aas or one.transactions or one.reads_per_s or one.writes_per_s or table in group:
            table_impacts.append(TableImpact(table, table in group, one))
    table_impacts.sort(key=lambda t: (-t.impact.aas, -t.impact.transactions, t.table))

    graph = coaccess_graph(every_table, touches, statement_uses, {t.table: t.impact.aas for t in table_impacts})
    candidates = []
    for members in candidate_groups(graph, fks):
        inside = sum(1 for touch in touches if touch.tables & members and touch.tables - members)
        calls = sum(u.calls for u in statement_uses if u.tables & members and u.tables - members)
        candidates.append(Candidate(tables=tuple(sorted(members)), impact=impact_of(members),
                                    crossing_transactions=inside, crossing_statement_calls=calls,
                                    is_group=members == group))

    routing = route_uses(views, group, group_entries)
    crossed = tuple(crossings(touches, statement_uses, group)) if group else ()
    findings = tuple(routing_findings(routing) + isolation_findings(crossed, group_entries)) if group else ()
    own = seen.queries + 4            # the samples and the counter reads inside the window
    committed = after.transactions - before.transactions - own
    statements_note = (f"pg_stat_statements: {len(statement_uses)} statements on tables in the window"
                       if statements_after.available else statements_after.reason)
    return AnalyzeReport(
        source=describe(scope.source_dsn), move=scope.move, group=tuple(sorted(group)),
        pgbouncers=tuple(c.display for c in consoles), duration_s=duration,
        interval_ms=round(interval * 1000, 3), samples=seen.ticks, late_samples=seen.late_ticks,
        seconds=seen.seconds,
        coverage=Coverage(transactions_observed=len(seen.transactions),
                          transactions_committed=max(committed, 0), statements=statements_note),
        database_aas=database_aas(seen), tables=tuple(table_impacts),
        group_impact=impact_of(group) if group else None, routing=routing, crossings=crossed,
        foreign_keys=tuple(foreign_keys_across(fks, group)) if group else (),
        candidates=tuple(candidates), statements_available=statements_after.available,
        findings=findings, graph=graph,
    )

