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


def privilege_statements(privileges: Iterable, *, grant: bool) -> list[sql.Composable]:
    """GRANT (or REVOKE) the recorded app-role privileges, one statement per object, role
    and column. Takes AppPrivilege values or their checkpoint lists."""
    by_object: dict[tuple[str, str, str, str, str | None], set[str]] = {}
    for item in privileges:
        p = item if isinstance(item, AppPrivilege) else AppPrivilege.from_list(item)
        by_object.setdefault((p.kind, p.schema, p.name, p.role, p.column), set()).add(p.privilege)
    out = []
    for (kind, schema, name, role, column), privs in sorted(by_object.items(), key=lambda kv: (
            kv[0][0], kv[0][1], kv[0][2], kv[0][3], kv[0][4] or "")):
        # A column list belongs to each privilege: "SELECT (c), UPDATE (c)".
        columns = sql.SQL(" ({})").format(sql.Identifier(column)) if column else sql.SQL("")
        template = "GRANT {} ON {} {} TO {}" if grant else "REVOKE {} ON {} {} FROM {}"
        out.append(sql.SQL(template).format(
            sql.SQL(", ").join(sql.SQL("{}{}").format(sql.SQL(p), columns) for p in sorted(privs)),
            sql.SQL(kind), sql.Identifier(schema, name), sql.Identifier(role)))
    return out
