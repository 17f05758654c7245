"""The app roles' privileges on the group, switched inside the pause in as few
statements as the server takes.

The cutover revokes the app roles' privileges on the side that stops serving and grants
them on the side that starts, with clients waiting. One GRANT per object costs the
server a parse, a snapshot and a command of its own for each of them: for a group of
300 tables and their sequences that was most of the pause. GRANT and REVOKE take a list
of objects, so one statement per kind of object, role and set of privileges (and column,
for a column privilege) carries the whole group.
"""

from __future__ import annotations

from collections.abc import Iterable

from psycopg import sql

from migrator.postgres.ddl import AppPrivilege


def switch_statements(privileges: Iterable, *, grant: bool) -> list[sql.Composable]:
    """GRANT (or REVOKE) the recorded app-role privileges, grouped. Takes AppPrivilege
    values or their checkpoint lists."""
    per_object: dict[tuple[str, str, str, str, str | None], set[str]] = {}
    for item in privileges:
        p = item if isinstance(item, AppPrivilege) else AppPrivilege.from_list(item)
        per_object.setdefault((p.kind, p.schema, p.name, p.role, p.column), set()).add(p.privilege)
    groups: dict[tuple[str, str, str, tuple[str, ...]], list[tuple[str, str]]] = {}
    for (kind, schema, name, role, column), privs in per_object.items():
        groups.setdefault((kind, role, column or "", tuple(sorted(privs))), []).append((schema, name))
    out = []
    for (kind, role, column, privs), objects in sorted(groups.items()):
        # A column list belongs to each privilege: "SELECT (c), UPDATE (c)".
        columns = sql.SQL(" ({})").format(sql.Identifier(column)) if column else sql.SQL("")
        template = "GRANT {} ON {} {} TO {}" if grant else "REVOKE {} ON {} {} FROM {}"
        out.append(sql.SQL(template).format(
            sql.SQL(", ").join(sql.SQL("{}{}").format(sql.SQL(p), columns) for p in privs),
            sql.SQL(kind), sql.SQL(", ").join(sql.Identifier(s, n) for s, n in sorted(objects)),
            sql.Identifier(role)))
    return out


def inside_and_outside_the_pause(privileges: Iterable, *, fenced: bool = True) -> tuple[list, list]:
    """(the privileges switched inside the pause, those switched around it: granted on
    the new side before the pause, revoked on the old side after RESUME).

    With the move's write fence on every relation of the group on both sides (`fenced`,
    as the replicate step leaves them), the fence is what keeps a client that bypasses
    PgBouncer from writing the group's rows on the wrong side: it refuses writes on the
    new side until the pause lifts it there, and raises it on the old side in the
    marker's own commit, one statement per side whatever the group's size. No
    privilege is then switched inside the pause (the schema step may grant on the
    target early too, DESIGN section 4). The rest of the old side's privileges go right
    after RESUME; until then a client there can read rows that no longer change.

    Without the fence, table privileges are switched inside the pause, and only the
    sequences' around it: a sequence privilege lets such a client draw numbers at most
    (the cutover copies every sequence's value after the revoke anyway)."""
    inside, outside = [], []
    for item in privileges:
        p = item if isinstance(item, AppPrivilege) else AppPrivilege.from_list(item)
        (inside if p.kind == "TABLE" and not fenced else outside).append(item)
    return inside, outside
