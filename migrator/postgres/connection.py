"""DSNs: masking secrets in anything a person reads, and opening connections.

Every connection carries an application_name (so an operator sees the tool in
pg_stat_activity), a connect timeout and a statement timeout; psycopg errors are
translated here, at the one seam, into the project's own exceptions.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from migrator.errors import ServerUnreachable
from migrator.masking import mask_secrets

APPLICATION_NAME = "migrator"
def describe(dsn: str) -> str:
    """A short, secret-free name for a server: user@host:port/dbname."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return mask_secrets(dsn)
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    user = params.get("user")
    prefix = f"{user}@" if user else ""
    return f"{prefix}{host}:{port}/{params.get('dbname', '')}"


def with_options(dsn: str, **params: Any) -> str:
    """The DSN with extra connection parameters (existing ones win)."""
    current = conninfo_to_dict(dsn)
    extra = {k: v for k, v in params.items() if k not in current and v is not None}
    return make_conninfo(dsn, **extra)


def connect(
    dsn: str,
    *,
    autocommit: bool = True,
    connect_timeout: int = 5,
    statement_timeout_ms: int | None = 30_000,
    purpose: str = "",
    **kwargs: Any,
) -> psycopg.Connection:
    """Open a connection with the tool's name and timeouts, or raise ServerUnreachable."""
    options = f"-c statement_timeout={statement_timeout_ms}" if statement_timeout_ms else None
    name = f"{APPLICATION_NAME} {purpose}".strip()
    try:
        conninfo = with_options(dsn, application_name=name, connect_timeout=connect_timeout)
        if options:
            conninfo = with_options(conninfo, options=options)
        return psycopg.connect(conninfo, autocommit=autocommit, **kwargs)
    except psycopg.Error as exc:
        raise ServerUnreachable(
            f"cannot connect to {describe(dsn)}: {first_line(exc)}",
            hint="check that the server is running and the DSN, role and password are right",
        ) from exc


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, secrets masked."""
    text = str(exc).strip().splitlines()
    return mask_secrets(text[0] if text else type(exc).__name__)
