"""What the move's actions need, against what the DSN roles have (DESIGN sections 10, 11).

Every action of the move says what it needs (migrator.postgres.statement.Privilege):
the steps as `plan` renders them, with the undo each one carries, and the reverse
cutover a rollback runs. `needs_of` gathers them per side; `read_gaps` asks each
server, with the catalogs' privilege functions and ownership (never by trying), which
of them its DSN role lacks (migrator.plan.server_checks.privileges turns each gap into a
finding with the exact statement that closes it and the server to run it on). A superuser has them all; an
object a side does not have yet is the move's to create, so its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from migrator.move.actions import needs as action_needs
from migrator.move.cutover import Direction, cutover_sequence
from migrator.move.steps import STEPS, MoveFacts
from migrator.playbook import Playbook
from migrator.postgres.statement import Privilege, Statement

SIDES = ("source", "target")


@dataclass(frozen=True)
class Need:
    side: str
    privilege: Privilege
    step: str                     # the first action that needs it: its step and statement
    statement: Statement

    @property
    def why(self) -> str:
        """That action, as a person reads it (rendered only for a gap: one statement can
        fence a thousand tables)."""
        text = " ".join(self.statement.text.split())
        return f"{self.step}: {text[:90]}{'...' if len(text) > 90 else ''}"


@dataclass(frozen=True)
class Gap:
    """A privilege the side's DSN role lacks."""

    side: str
    role: str
    database: str
    privilege: Privilege
    why: str
    owner: str | None = None      # for an ownership gap: the role that owns the object

    @property
    def statement(self) -> str | None:
        """What closes it, run on that side by a role that may (None: nothing but a superuser)."""
        p, role = self.privilege, sql.Identifier(self.role)
        if p.kind == "object":
            target = (sql.Identifier(self.database) if p.object_type == "DATABASE" else
                      sql.Identifier(p.name) if p.object_type == "SCHEMA" else sql.SQL(p.name))
            return sql.SQL("GRANT {} ON {} {} TO {}").format(
                sql.SQL(", ").join(sql.SQL(x) for x in p.privileges), sql.SQL(p.object_type), target,
                role).as_string(None)
        if p.kind == "owner":
            return sql.SQL("GRANT {} TO {}").format(sql.Identifier(self.owner or "?"), role).as_string(None)
        if p.kind == "member":
            return sql.SQL("GRANT {} TO {}").format(sql.Identifier(p.name), role).as_string(None)
        if p.name == "REPLICATION":
            return sql.SQL("ALTER ROLE {} WITH REPLICATION").format(role).as_string(None)
        return None


def needs_of(playbook: Playbook, facts: MoveFacts, described: dict[str, tuple[Statement, ...]]) -> list[Need]:
    """Every privilege the move and its rollback need, per side, once each, with the
    first action that needs it: each step's statements as `described` (by name, from
    `facts`; and their inverses), then the reverse cutover."""
    seen: dict[tuple[str, Privilege], Need] = {}

    def add(step: str, statements: Iterable[Statement]) -> None:
        for statement in statements:
            for side, privilege in action_needs([statement]):
                where = privilege.on or side
                if where in SIDES:
                    seen.setdefault((where, privilege), Need(where, privilege, step, statement))

    for step in STEPS:
        add(step.name, described[step.name])
    reverse = cutover_sequence(playbook, Direction.reverse(playbook), facts.cutover)
    add("rollback (the reverse cutover)", [s for a in reverse.actions() for s in _statements(a)])
    return list(seen.values())


def _statements(action) -> list[Statement]:
    if isinstance(action, Statement):
        return [action]
    return list(getattr(action, "statements", ()))


# One row per privilege asked; a superuser has them all, and a superuser DSN role skips
# the checks on a new owner (PostgreSQL's ALTER ... OWNER TO does). An object the server does not
# have yet is the move's to create (and own); pg_has_role is asked only about a role
# that exists.
_GAPS = """
SELECT c.i, r.rolname, pg_catalog.current_database(),
       (SELECT o.rolname FROM pg_catalog.pg_class k JOIN pg_catalog.pg_roles o ON o.oid = k.relowner
        WHERE c.kind = 'owner' AND k.oid = pg_catalog.to_regclass(c.name))
FROM unnest(%(i)s::int[], %(kind)s::text[], %(type)s::text[], %(name)s::text[], %(privilege)s::text[],
            %(role)s::text[]) AS c(i, kind, type, name, privilege, role)
CROSS JOIN pg_catalog.pg_roles r
WHERE r.rolname = COALESCE(c.role, current_user)
  AND NOT r.rolsuper
  AND NOT (SELECT t.rolsuper FROM pg_catalog.pg_roles t WHERE t.rolname = current_user)
  AND NOT CASE c.kind
    WHEN 'attribute' THEN CASE c.name WHEN 'REPLICATION' THEN r.rolreplication
                                      WHEN 'BYPASSRLS' THEN r.rolbypassrls ELSE false END
    WHEN 'member' THEN CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_roles m WHERE m.rolname = c.name)
                            THEN pg_catalog.pg_has_role(c.name, 'USAGE') ELSE false END
    WHEN 'owner' THEN CASE WHEN pg_catalog.to_regclass(c.name) IS NULL THEN true
                           ELSE pg_catalog.pg_has_role((SELECT k.relowner FROM pg_catalog.pg_class k
                                                        WHERE k.oid = pg_catalog.to_regclass(c.name)), 'USAGE') END
    ELSE CASE c.type
        WHEN 'DATABASE' THEN pg_catalog.has_database_privilege(r.rolname, pg_catalog.current_database(), c.privilege)
        WHEN 'SCHEMA' THEN CASE WHEN NOT EXISTS (SELECT FROM pg_catalog.pg_namespace n WHERE n.nspname = c.name)
                                THEN true ELSE pg_catalog.has_schema_privilege(r.rolname, c.name, c.privilege) END
        WHEN 'SEQUENCE' THEN CASE WHEN pg_catalog.to_regclass(c.name) IS NULL THEN true
                                  ELSE pg_catalog.has_sequence_privilege(c.name, c.privilege) END
        ELSE CASE WHEN pg_catalog.to_regclass(c.name) IS NULL THEN true
                  ELSE pg_catalog.has_table_privilege(c.name, c.privilege) END
        END
    END
ORDER BY c.i
"""


def read_gaps(conn: psycopg.Connection, side: str, needs: list[Need]) -> list[Gap]:
    """Which of the side's needs its DSN role lacks: one query (has_*_privilege asks one
    privilege at a time: with a list it answers whether any of them is held)."""
    rows: list[tuple[Need, Privilege, str]] = []
    for need in needs:
        if need.side != side:
            continue
        if need.privilege.kind == "object":
            rows += [(need, need.privilege, p) for p in need.privilege.privileges]
        else:
            rows.append((need, need.privilege, ""))
    if not rows:
        return []
    found = conn.execute(_GAPS, {
        "i": list(range(len(rows))), "kind": [p.kind for _, p, _ in rows], "type": [p.object_type for _, p, _ in rows],
        "name": [p.name for _, p, _ in rows], "privilege": [x for _, _, x in rows],
        "role": [p.role for _, p, _ in rows]}).fetchall()
    gaps: dict[tuple, Gap] = {}
    for i, role, database, owner in found:
        need, privilege, _ = rows[i]
        gaps.setdefault((privilege,), Gap(side, role, database, privilege, need.why, owner))
    return list(gaps.values())


def passwordless_subscriptions(playbook: Playbook, versions: dict[str, int],
                               superuser: dict[str, bool]) -> list[tuple[str, str]]:
    """(subscriber side, publisher side) of each subscription a non-superuser owner on
    16+ makes with a DSN that carries no password: PostgreSQL refuses it ("password is
    required"), and a password kept in a passfile is the tool's, not the server's."""
    out = []
    for subscriber, publisher, dsn in (("target", "source", playbook.source.dsn),
                                       ("source", "target", playbook.target.dsn)):
        if versions.get(subscriber, 0) >= 160000 and not superuser.get(subscriber) \
                and not conninfo_to_dict(dsn).get("password"):
            out.append((subscriber, publisher))
    return out
