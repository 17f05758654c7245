"""A statement of a step: the SQL object that runs, and where it runs.

`plan` prints these, the step runs them, the event log records them, and
`rollback --dry-run` prints the ones an undo would run: one object, so the text a
person approves is the text that runs (secrets masked in every rendering).

A statement is also an action of the move's sequence (migrator.move.actions): it may
carry its inverse (what undoes it, for the undo log) and the privileges it needs on
its side (what `plan` checks). A value known only when it runs (a marker's token, a
sequence's last value) is a `RunValue`: rendered as `<name>` for people and the event
log, bound to its literal by the executor that runs it (`bound`).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from migrator.masking import mask_secrets

_BOUND: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar("migrator_bound", default=None)


class RunValue(sql.Composable):
    """A value of a statement known only at run time: `<name>` when rendered, the value's
    literal while `bound` says what it is."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def as_bytes(self, context: Any = None) -> bytes:
        values = _BOUND.get()
        if values is None or self.name not in values:
            return f"<{self.name}>".encode()
        value = values[self.name]
        return (value if isinstance(value, sql.Composable) else sql.Literal(value)).as_bytes(context)


@contextmanager
def bound(values: Mapping[str, Any]) -> Iterator[None]:
    """While inside, every RunValue named in `values` renders as that value's literal
    (this thread only: each thread that runs statements binds its own). Nested, the
    inner values join the outer ones."""
    token = _BOUND.set({**(_BOUND.get() or {}), **values})
    try:
        yield
    finally:
        _BOUND.reset(token)


@dataclass(frozen=True)
class Privilege:
    """A right an action needs, as the catalogs' privilege functions ask it (never by trying).

    kind: 'object' (`privileges` on the `object_type` `name`: has_*_privilege),
    'owner' (the privileges of `name`'s owner: to publish it, put a trigger on it, grant
    and revoke on it), 'member' (the privileges of the role `name`), 'attribute' (the
    role attribute `name`: REPLICATION, SUPERUSER). `code` is the plan finding's code
    when it is missing, `level` whether that blocks or warns; `on` the side it is needed
    on when that is not the action's own (a subscription connects to the other side).
    An object the side does not have yet is the move's to create, and so its own."""

    kind: str
    name: str
    object_type: str = ""
    privileges: tuple[str, ...] = ()
    code: str = "role.privilege"
    level: str = "block"
    on: str | None = None
    role: str | None = None       # whose privilege: the DSN role's unless named (a new owner's)

    def describe(self) -> str:
        if self.kind == "object":
            return f"{', '.join(self.privileges)} on {self.object_type.lower()} {self.name}"
        if self.kind == "owner":
            return f"the privileges of the owner of {self.object_type.lower()} {self.name}"
        if self.kind == "member":
            return f"the privileges of {self.name}"
        return f"the {self.name} attribute"


def may(privileges: str, object_type: str, name: str, code: str, *, level: str = "block",
        on: str | None = None, role: str | None = None) -> Privilege:
    return Privilege("object", name, object_type, tuple(p.strip() for p in privileges.split(",")), code, level, on,
                     role)


def owns(object_type: str, name: str, code: str, *, level: str = "block", on: str | None = None) -> Privilege:
    return Privilege("owner", name, object_type, (), code, level, on)


def member_of(role: str, code: str, *, level: str = "block", on: str | None = None) -> Privilege:
    return Privilege("member", role, "", (), code, level, on)


def attribute(name: str, code: str, *, level: str = "block", on: str | None = None) -> Privilege:
    return Privilege("attribute", name, "", (), code, level, on)


@dataclass(frozen=True)
class Statement:
    on: str                        # 'source' | 'target' | 'pgbouncers[i] user@host:port/pgbouncer' | a file
    sql: sql.Composable | str
    note: str = ""                 # why, or when it is a summary rather than the exact text
    # What undoes it, where something does (written to the undo log before it runs).
    inverse: Statement | None = None
    needs: tuple[Privilege, ...] = ()
    # Run by a named operation of migrator.move.actions rather than as text, where running
    # it safely takes a look at the catalogs first (a slot dropped only if it is there).
    op: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """The SQL as a person reads it: rendered without a connection, secrets masked."""
        return mask_secrets(self.raw_text)

    @property
    def raw_text(self) -> str:
        """The SQL as it runs (run-time values as `<name>`), secrets included: for the undo
        log and the watchdog's orders only, never for a person."""
        return self.sql if isinstance(self.sql, str) else self.sql.as_string(None)

    def to_dict(self) -> dict[str, str]:
        return {"on": self.on, "sql": self.text, "note": self.note}
