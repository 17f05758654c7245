"""Which way each backend came: through a PgBouncer entry, or straight to the server.

A server connection of PgBouncer is a backend whose `client_addr`/`client_port` are that
connection's `local_addr`/`local_port` in the PgBouncer's `SHOW SERVERS` (its `remote_pid`
is the backend's pid, a second way to match). `SHOW CLIENTS` adds which client holds the
server connection at that moment, for naming it. Server connections come and go, so the
consoles are read again when a backend shows up that no reading explains yet (at most
every REFRESH_AFTER seconds) and once more at the end. A backend no listed PgBouncer owns
is `direct`, named by role, application_name and client address.

After the cutover the group's entry routes to the target: a group table reached any
other way keeps using the old copy (or fails), a non-group table reached through the
group's entry is not on the target at all.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from migrator.analyze.sampling import Backend, Transaction
from migrator.pgbouncer.console import PgBouncerConsole
from migrator.playbook import TableName

REFRESH_AFTER = 0.1
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}

DIRECT = "direct"
ENTRY = "entry"


@dataclass(frozen=True)
class Route:
    """How one backend reached the source."""

    kind: str                          # ENTRY | DIRECT
    role: str
    application_name: str = ""
    pgbouncer: str | None = None       # the console's display (user@host:port/pgbouncer)
    entry: str | None = None
    client: str | None = None          # a direct backend's client address

    @property
    def label(self) -> str:
        if self.kind == ENTRY:
            return f"entry {self.entry} on PgBouncer {self.pgbouncer} (role {self.role})"
        app = f", application_name {self.application_name!r}" if self.application_name else ""
        return f"direct connection: role {self.role}{app}, client {self.client or 'local socket'}"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "pgbouncer": self.pgbouncer, "entry": self.entry, "role": self.role,
                "application_name": self.application_name, "client": self.client, "label": self.label}


@dataclass
class _Server:
    pgbouncer: str
    entry: str
    clients: set[str] = field(default_factory=set)


class RouteMap:
    """The listed PgBouncers' server connections, read through their consoles."""

    def __init__(self, consoles: Iterable[PgBouncerConsole], *, clock=time.monotonic) -> None:
        self.consoles = list(consoles)
        self.clock = clock
        self._by_port: dict[tuple[str, int], _Server] = {}
        self._by_pid: dict[int, _Server] = {}
        self._refreshed_at: float | None = None
        self.refreshes = 0

    def refresh(self) -> None:
        for console in self.consoles:
            clients: dict[str, set[str]] = {}
            for row in console.show("CLIENTS"):
                if row.get("link"):
                    app = row.get("application_name") or ""
                    clients.setdefault(str(row["link"]), set()).add(
                        f"{row.get('addr')}" + (f" ({app})" if app else ""))
            for row in console.show("SERVERS"):
                server = _Server(console.display, str(row["database"]),
                                 clients.get(str(row.get("ptr")), set()))
                known = self._by_port.get(_address(row.get("local_addr"), row.get("local_port")))
                if known is not None and known.entry == server.entry:
                    known.clients |= server.clients
                    server = known
                if row.get("local_port") is not None:
                    self._by_port[_address(row.get("local_addr"), row["local_port"])] = server
                if row.get("remote_pid"):
                    self._by_pid[int(row["remote_pid"])] = server
        self._refreshed_at = self.clock()
        self.refreshes += 1

    def _server(self, backend: Backend) -> _Server | None:
        if backend.client_port is not None:
            server = self._by_port.get(_address(backend.client_addr, backend.client_port))
            if server is not None:
                return server
        return self._by_pid.get(backend.pid)

    def backend_seen(self, backend: Backend) -> None:
        """Called by the sampler for each new backend: read the consoles again when
        no reading explains it (rate-limited; the end reads them once more)."""
        if not self.consoles or self._server(backend) is not None:
            return
        now = self.clock()
        if self._refreshed_at is None or now - self._refreshed_at >= REFRESH_AFTER:
            self.refresh()

    def clients(self, backend: Backend) -> frozenset[str]:
        """The PgBouncer clients seen holding this backend's server connection."""
        server = self._server(backend)
        return frozenset(server.clients) if server is not None else frozenset()

    def route(self, backend: Backend) -> Route:
        server = self._server(backend)
        if server is None:
            return Route(kind=DIRECT, role=backend.role, application_name=backend.application_name,
                         client=backend.client_addr)
        # A server connection carries the application_name of whichever client used it
        # last: the entry and the role name the route, the clients are listed apart.
        return Route(kind=ENTRY, role=backend.role, pgbouncer=server.pgbouncer, entry=server.entry)


def _address(addr: object, port: object) -> tuple[str, int]:
    text = str(addr or "")
    return ("loopback" if text in _LOOPBACK else text, int(port or 0))


# --------------------------------------------------------------------------- judging routes


@dataclass(frozen=True)
class RouteUse:
    """Transactions that reached one table by one route."""

    route: Route
    table: TableName
    in_group: bool
    transactions: int
    sample_query: str | None
    clients: tuple[str, ...] = ()              # PgBouncer clients seen on those connections

    def to_dict(self) -> dict:
        return {"route": self.route.to_dict(), "table": str(self.table), "in_group": self.in_group,
                "transactions": self.transactions, "sample_query": self.sample_query,
                "clients": list(self.clients)}


@dataclass(frozen=True)
class RoutingReport:
    uses: tuple[RouteUse, ...]                 # every (route, table) seen
    wrong_entry: tuple[RouteUse, ...] = ()     # group table via another entry, or the reverse
    direct: tuple[RouteUse, ...] = ()          # group table via no listed PgBouncer
    group_entries: Mapping[str, str] = field(default_factory=dict)  # pgbouncer -> entry

    def to_dict(self) -> dict:
        return {
            "group_entries": [{"pgbouncer": p, "entry": e} for p, e in self.group_entries.items()],
            "uses": [u.to_dict() for u in self.uses],
            "wrong_entry": [u.to_dict() for u in self.wrong_entry],
            "direct": [u.to_dict() for u in self.direct],
        }


def route_uses(
    transactions: Iterable[tuple[Transaction, Route, frozenset[TableName], frozenset[str]]],
    group: frozenset[TableName],
    group_entries: Mapping[str, str],
) -> RoutingReport:
    """Every (route, table) pair seen, and the ones that would break at the cutover.

    group_entries: for each listed PgBouncer (its display), the group's entry. Empty
    group (no playbook): only the uses are reported."""
    counts: dict[tuple[Route, TableName], list] = {}
    for txn, route, tables, clients in transactions:
        for table in tables:
            entry = counts.setdefault((route, table), [0, None, set()])
            entry[0] += 1
            entry[1] = entry[1] or txn.query
            entry[2] |= clients
    uses = tuple(
        RouteUse(route=route, table=table, in_group=table in group, transactions=n, sample_query=query,
                 clients=tuple(sorted(clients)))
        for (route, table), (n, query, clients) in sorted(counts.items(),
                                                           key=lambda kv: (kv[0][0].label, kv[0][1]))
    )
    if not group:
        return RoutingReport(uses=uses, group_entries=dict(group_entries))
    wrong, direct = [], []
    for use in uses:
        route = use.route
        if route.kind == DIRECT:
            if use.in_group:
                direct.append(use)
            continue
        group_entry = group_entries.get(route.pgbouncer or "")
        if group_entry is None:
            continue
        if use.in_group != (route.entry == group_entry):
            wrong.append(use)
    return RoutingReport(uses=uses, wrong_entry=tuple(wrong), direct=tuple(direct),
                         group_entries=dict(group_entries))
