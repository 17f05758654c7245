"""Table names: one identity per table (schema + name), parsed as Postgres reads them.

SQL is composed from `TableName.identifier`; `qualified` is for people and regclass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from migrator.playbook.units import _kind

__all__ = ["TableName"]

_SIMPLE_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_LOWER_IDENT = re.compile(r"[a-z_][a-z0-9_$]*")
_NAME_PART = re.compile(r'"(?P<quoted>(?:[^"]|"")+)"|(?P<plain>[^".]+)')
# NAMEDATALEN - 1: Postgres silently truncates longer names, so the table we would
# look for is not the table the user named.
_MAX_IDENT_BYTES = 63


@dataclass(frozen=True, order=True)
class TableName:
    """A schema-qualified table name, folded to lower case unless quoted, as Postgres does."""

    schema: str
    name: str

    @classmethod
    def parse(cls, text: str) -> TableName:
        """'files', 'public.files', '"My Table"' or 'sales."Order"'."""
        if not isinstance(text, str):
            raise ValueError(f"expected a table name such as public.files, got {_kind(text)}")
        parts = _split_name(text.strip())
        if len(parts) == 1:
            parts = ["public", *parts]
        if len(parts) != 2:
            raise ValueError(
                f"{text!r} is not a table name — write schema.table or table "
                "(a database name cannot be part of it)"
            )
        return cls(*parts)

    @property
    def qualified(self) -> str:
        """'public.files', with double quotes where Postgres needs them ('sales."Order"').

        The quoting makes the text safe for `'...'::regclass`; SQL is composed with
        `identifier`, never with this string.
        """
        return f"{_quote(self.schema)}.{_quote(self.name)}"

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    def __str__(self) -> str:
        return self.qualified


def _split_name(text: str) -> list[str]:
    parts: list[str] = []
    position = 0
    while True:
        match = _NAME_PART.match(text, position)
        if not match:
            raise ValueError(f"{text!r} is not a table name — write schema.table or table")
        if match["quoted"] is not None:
            part = match["quoted"].replace('""', '"')
        else:
            part = match["plain"]
            if not _SIMPLE_IDENT.fullmatch(part):
                raise ValueError(
                    f"{text!r} is not a table name — a name with spaces or other characters "
                    """must be double-quoted, and in YAML the quotes need quoting: '"My Table"'"""
                )
            part = part.lower()
        if len(part.encode()) > _MAX_IDENT_BYTES:
            raise ValueError(
                f"{part!r} is longer than {_MAX_IDENT_BYTES} bytes, Postgres would truncate it"
            )
        parts.append(part)
        position = match.end()
        if position == len(text):
            return parts
        if text[position] != ".":
            raise ValueError(f"{text!r} is not a table name — write schema.table or table")
        position += 1


def _quote(ident: str) -> str:
    if _LOWER_IDENT.fullmatch(ident):
        return ident
    return '"' + ident.replace('"', '""') + '"'


def _table_name(value: Any) -> TableName:
    return value if isinstance(value, TableName) else TableName.parse(value)
