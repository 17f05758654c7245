"""What the observed traffic means for the move: findings in `plan`'s shape.

Codes (DESIGN section 8; they never change): `routing.wrong_entry`, `routing.direct`,
`isolation.crossing_transaction`, each `block`: what was seen would break at the
cutover. Nothing observed, nothing said: on clean traffic there is no finding at all
(a false alarm would teach people to ignore the tool).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from migrator.analyze.isolation import Crossing
from migrator.analyze.routing import RouteUse, RoutingReport
from migrator.plan.finding import BLOCK, Finding, listing, plural

CODES: dict[str, str] = {
    "routing.wrong_entry": "a group table reached through a PgBouncer entry other than the group's "
                           "(or a non-group table through the group's entry)",
    "routing.direct": "a group table reached by a connection that no listed PgBouncer owns",
    "isolation.crossing_transaction": "one transaction touched tables inside and outside the group",
}

QUERY_SHOWN = 140


def short_query(query: str | None) -> str:
    if not query:
        return "(no statement text seen)"
    text = re.sub(r"\s+", " ", query).strip()
    return text if len(text) <= QUERY_SHOWN else text[: QUERY_SHOWN - 1] + "…"


def _by_route(uses: Iterable[RouteUse]) -> dict[tuple, list[RouteUse]]:
    grouped: dict[tuple, list[RouteUse]] = {}
    for use in uses:
        grouped.setdefault((use.route, use.in_group), []).append(use)
    return grouped


def routing_findings(routing: RoutingReport) -> list[Finding]:
    found: list[Finding] = []
    for (route, in_group), uses in _by_route(routing.wrong_entry).items():
        tables = [str(u.table) for u in uses]
        seen = plural(sum(u.transactions for u in uses), "sampled transaction")
        clients = sorted({c for u in uses for c in u.clients})
        who = f" (clients: {listing(clients, 3)})" if clients else ""
        group_entry = routing.group_entries.get(route.pgbouncer or "", "?")
        example = short_query(next((u.sample_query for u in uses if u.sample_query), None))
        if in_group:
            found.append(Finding(
                BLOCK, "routing.wrong_entry", f"{listing(tables)} via entry {route.entry}",
                f"{listing(tables)} (in the group) reached through entry {route.entry} on PgBouncer "
                f"{route.pgbouncer}, not the group's entry {group_entry}{who}: {seen}, e.g. {example}; "
                f"after the cutover only {group_entry} routes to the target, so these would use the "
                "old copy on the source",
                f"connect these clients (role {route.role}) through entry {group_entry}",
            ))
        else:
            found.append(Finding(
                BLOCK, "routing.wrong_entry", f"{listing(tables)} via entry {route.entry}",
                f"{listing(tables)} (not in the group) reached through the group's entry {route.entry} "
                f"on PgBouncer {route.pgbouncer}{who}: {seen}, e.g. {example}; after the cutover that "
                f"entry routes to the target, which does not serve {'them' if len(tables) > 1 else 'it'}",
                f"connect these clients (role {route.role}) through another entry for the rest of the "
                f"application, or add {listing(tables)} to tables:",
            ))
    for (route, _), uses in _by_route(routing.direct).items():
        tables = [str(u.table) for u in uses]
        seen = plural(sum(u.transactions for u in uses), "sampled transaction")
        example = short_query(next((u.sample_query for u in uses if u.sample_query), None))
        app = f", application_name {route.application_name!r}" if route.application_name else ""
        entries = ", ".join(sorted(set(routing.group_entries.values()))) or "the group's entry"
        found.append(Finding(
            BLOCK, "routing.direct", f"{listing(tables)} by role {route.role}",
            f"{listing(tables)} (in the group) reached by a connection no listed PgBouncer owns: role "
            f"{route.role}{app}, client {route.client or 'local socket'}: {seen}, e.g. {example}; "
            "the cutover does not move it, so it would keep using the old copy on the source",
            f"route it through PgBouncer entry {entries}, or stop it for the move",
        ))
    return found


def isolation_findings(crossings: Iterable[Crossing], group_entries: Mapping[str, str]) -> list[Finding]:
    found = []
    for crossing in crossings:
        inside = listing(map(str, crossing.inside))
        outside = listing(map(str, crossing.outside))
        counts = []
        if crossing.transactions:
            counts.append(plural(crossing.transactions, "sampled transaction"))
        if crossing.statement_calls:
            counts.append(plural(crossing.statement_calls, "statement call") + " (pg_stat_statements)")
        routes = listing([r for r in crossing.routes if r != "pg_stat_statements"], 3)
        via = f" via {routes}" if routes else ""
        found.append(Finding(
            BLOCK, "isolation.crossing_transaction", f"{inside} + {outside}",
            f"transactions touched {inside} (in the group) and {outside} (outside it): "
            f"{' and '.join(counts)}{via}, e.g. {short_query(crossing.sample_query)}; after the cutover "
            "the two sides are on different servers and such a transaction fails",
            f"split that work into separate transactions, or add {outside} to tables: "
            "(see the candidate groups)",
        ))
    return found
