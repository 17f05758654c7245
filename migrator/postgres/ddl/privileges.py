"""Grants, comments, and the app roles' privileges that the cutover switches."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from psycopg import sql

from migrator.postgres.catalog import Grant


@dataclass(frozen=True)
class AppPrivilege:
    """One privilege of an app role on a group object, switched at the cutover: revoked
    on the side that stops serving, granted on the side that starts."""

    kind: str                      # 'TABLE' | 'SEQUENCE'
    schema: str
    name: str
    role: str
    privilege: str                 # 'SELECT', 'INSERT', ...
    column: str | None = None      # a column-level privilege

    def to_list(self) -> list:
        return [self.kind, self.schema, self.name, self.role, self.privilege, self.column]

    @classmethod
    def from_list(cls, item: Sequence) -> AppPrivilege:
        return cls(*item)


def grantee(role: str) -> sql.Composable:
    return sql.SQL("PUBLIC") if role == "PUBLIC" else sql.Identifier(role)


def grant_statements(grants: Iterable[Grant], kind: sql.Composable, target: sql.Composable, *,
                      column: str | None = None) -> list[sql.Composable]:
    grants = list(grants)
    if not grants:
        return []     # most columns have none: nothing composed for them
    out: list[sql.Composable] = []
    columns = sql.SQL(" ({})").format(sql.Identifier(column)) if column else sql.SQL("")
    for g in grants:
        for privilege in g.privileges:
            out.append(sql.SQL("GRANT {}{} ON {} {} TO {}{}").format(
                sql.SQL(privilege), columns, kind, target, grantee(g.grantee),
                sql.SQL(" WITH GRANT OPTION" if privilege in g.grantable else "")))
    return out


def comment_statement(kind: str, target: sql.Composable, text: str) -> sql.Composable:
    return sql.SQL("COMMENT ON {} {} IS {}").format(sql.SQL(kind), target, sql.Literal(text))
