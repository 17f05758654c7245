"""Playbook rules across fields (duplicate tables or PgBouncers, source equal to
target), checked on the raw data after the fields themselves."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from migrator.playbook.tables import TableName
from migrator.postgres.connection import server_addresses

# ---------------------------------------------------------------------------
# Rules across fields, on the raw data (anything unparseable was reported already).
# Each rule yields the fields it read, so a rule that read a field whose ${VAR} was
# unresolved stays quiet instead of reporting a consequence of that one problem.
Finding = tuple[tuple[str, ...], str]


def relations(data: dict[str, Any]) -> Iterator[Finding]:
    yield from _duplicate_tables(data.get("tables"))
    yield from _duplicate_pgbouncers(data.get("pgbouncers"))
    yield from _same_database(data.get("source"), data.get("target"))


def _duplicate_tables(tables: Any) -> Iterator[Finding]:
    first: dict[TableName, int] = {}
    for index, item in enumerate(tables if isinstance(tables, list) else []):
        table = _attempt(TableName.parse, item)
        if table is None:
            continue
        if table in first:
            yield (f"tables[{index}]",), (
                f"tables[{index}]: {table.qualified} is listed twice (also tables[{first[table]}])"
            )
        else:
            first[table] = index


def _duplicate_pgbouncers(entries: Any) -> Iterator[Finding]:
    first: dict[tuple[Any, ...], int] = {}
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        if not isinstance(entry, dict):
            continue
        address = _server_address(entry.get("admin_dsn"))
        database = entry.get("database")
        if address is None or not isinstance(database, str):
            continue
        key = (*address[:2], database)
        where = f"pgbouncers[{index}]"
        if key in first:
            yield (where, f"pgbouncers[{first[key]}]"), (
                f"{where}: database {database} on {address[0]}:{address[1]} is listed twice "
                f"(also pgbouncers[{first[key]}])"
            )
        else:
            first[key] = index


def _same_database(source: Any, target: Any) -> Iterator[Finding]:
    if not (isinstance(source, dict) and isinstance(target, dict)):
        return
    source_dsn, target_dsn = source.get("dsn"), target.get("dsn")
    source_address, target_address = _server_address(source_dsn), _server_address(target_dsn)
    if source_address is None or target_address is None or source_address[2] != target_address[2]:
        return
    # A DSN may list several hosts (libpq follows the primary among them): one in common
    # is enough to be the same database.
    shared = [a for a in _addresses(source_dsn) if a in _addresses(target_dsn)]
    if shared:
        (host, port), dbname = shared[0], source_address[2]
        yield ("source.dsn", "target.dsn"), (
            f"target.dsn: is the same database as source.dsn ({host}:{port}/{dbname}) — "
            "the target must be the server and database the tables move to"
        )


def _addresses(dsn: str) -> list[tuple[str, str]]:
    """(host, port) of every host a DSN lists, with libpq's defaults."""
    try:
        return [(host, str(port)) for host, port in server_addresses(dsn)]
    except (psycopg.ProgrammingError, ValueError):
        return []


def _server_address(dsn: Any) -> tuple[str, str, str] | None:
    """(host, port, dbname) with libpq's defaults, or None if dsn is not usable."""
    if not isinstance(dsn, str) or not dsn.strip():
        return None
    params = _attempt(conninfo_to_dict, dsn, errors=(psycopg.ProgrammingError,))
    if params is None:
        return None
    host = params.get("host") or params.get("hostaddr") or "localhost"
    return host, params.get("port") or "5432", params.get("dbname") or params.get("user") or ""


def _attempt(function: Any, value: Any, errors: tuple[type[Exception], ...] = (ValueError,)) -> Any:
    try:
        return function(value)
    except errors:
        return None
