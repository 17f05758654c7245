"""The guards of a move in flight (DESIGN section 9): the SQL that makes, switches,
reads and removes them.

From the replicate step until `complete` or a full rollback, both servers carry:

- a **DDL guard**: two event triggers (`ddl_command_end` and `sql_drop`) running one
  function that refuses a schema change on the group's tables, partitions, indexes,
  constraints, triggers, rules and policies, naming the move and pointing at
  `migrator ddl`. It is on both sides, not only the publishing one: a change on the
  subscribing side breaks the apply worker just as surely. GRANT and REVOKE pass (the
  sides' privileges differ on purpose). A session that sets `migrator.guard` to
  `bypass` passes (the tool's own sessions do, and so can a person who means it);
  event triggers do not fire under `session_replication_role = replica` either.
- a **write fence**: a statement-level trigger on every table of the group (roots,
  partitions) for INSERT, UPDATE, DELETE and TRUNCATE, whose function refuses the
  statement on the copy that does not serve and does nothing on the one that does.
  Ordinary triggers do not fire for replication's apply and table-sync workers (they
  run with `session_replication_role = replica`), so replication passes the fence in
  both directions. Moving the fence is one `CREATE OR REPLACE FUNCTION` per side, with
  no lock on any table: it rides inside the pause with the REVOKE and the GRANT, in
  the same round trips, whatever the number of tables.

Every object is named after the move (`migrator_<name>_ddl_guard`, `..._drop_guard`,
`..._fence`), and removal is by name with IF EXISTS, so it works from any point a
crash can leave.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import TypeVar

import psycopg
from psycopg import sql
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from migrator import names
from migrator.playbook import TableName

# What the DDL guard looks at: the commands that change a table, its indexes or what
# hangs off it. GRANT/REVOKE are left out on purpose, and so is everything that names
# no table (the tool's publications and subscriptions, for one).
DDL_TAGS = ("ALTER TABLE", "CREATE TABLE", "CREATE INDEX", "ALTER INDEX", "CREATE TRIGGER",
            "ALTER TRIGGER", "CREATE RULE", "CREATE POLICY", "ALTER POLICY", "COMMENT",
            "CREATE STATISTICS", "ALTER STATISTICS", "SECURITY LABEL")
DROP_TAGS = ("DROP TABLE", "DROP INDEX", "DROP TRIGGER", "DROP RULE", "DROP POLICY", "ALTER TABLE",
             "DROP SCHEMA", "DROP OWNED", "DROP TYPE", "DROP DOMAIN", "DROP FUNCTION", "DROP STATISTICS")

# A trigger's CREATE or DROP locks its table against writes, waiting first for the
# application's transactions on it while every query after it queues behind. So each
# guard statement runs in a transaction of its own (it never holds one table's lock
# while waiting for another's: two tables taken in one transaction deadlocked with
# application transactions that write both, under load), gives up quickly, and tries
# again a little later.
LOCK_TIMEOUT = sql.SQL("SET LOCAL lock_timeout = '200ms'")
LOCK_ATTEMPTS = 40
ONE_BY_ONE = "each statement in a transaction of its own, lock_timeout 200ms, retried"

T = TypeVar("T")


def with_lock_retries(work: Callable[[], T]) -> T:
    """Run `work` (a transaction that begins with LOCK_TIMEOUT) until it gets its locks."""
    return Retrying(retry=retry_if_exception_type(psycopg.errors.LockNotAvailable),
                    stop=stop_after_attempt(LOCK_ATTEMPTS), wait=wait_exponential(multiplier=0.05, max=2),
                    reraise=True)(work)


def run_each(conn: psycopg.Connection, statements: Iterable[sql.Composable],
             ran: Callable[[sql.Composable], None] = lambda _: None) -> None:
    """Run guard statements one by one, each in its own transaction under LOCK_TIMEOUT,
    retried until it gets its lock; `ran` is told of each once it has committed."""
    for statement in statements:
        def work(statement: sql.Composable = statement) -> None:
            with conn.transaction():
                conn.execute(LOCK_TIMEOUT)
                conn.execute(statement)
        with_lock_retries(work)
        ran(statement)


FENCED_MARK = "-- migrator fence: refuses"
SERVING_MARK = "-- migrator fence: serving"

_DDL_GUARD_BODY = """
DECLARE
    -- spelled as the server spells an identity (format's %I quotes only where needed)
    relations constant text[] := COALESCE((SELECT pg_catalog.array_agg(pg_catalog.format('%I.%I', s, n))
                                  FROM ROWS FROM (pg_catalog.unnest({relation_schemas}), pg_catalog.unnest({relation_names})) u(s, n)), '{{}}');
    indexes constant text[] := COALESCE((SELECT pg_catalog.array_agg(pg_catalog.format('%I.%I', s, n))
                                FROM ROWS FROM (pg_catalog.unnest({index_schemas}), pg_catalog.unnest({index_names})) u(s, n)), '{{}}');
    c record;
    rel oid;
    hit text;
BEGIN
    IF pg_catalog.current_setting({setting}, true) = 'bypass' THEN
        RETURN;
    END IF;
    IF TG_EVENT = 'sql_drop' THEN
        FOR c IN SELECT * FROM pg_catalog.pg_event_trigger_dropped_objects() LOOP
            IF (c.object_type IN ('table', 'index') AND c.object_identity = ANY (relations || indexes))
               OR (c.object_type IN ('table column', 'table constraint', 'trigger', 'rule', 'policy',
                                     'default value')
                   AND pg_catalog.format('%I.%I', c.address_names[1], c.address_names[2]) = ANY (relations))
            THEN
                hit := c.object_identity;
                EXIT;
            END IF;
        END LOOP;
    ELSE
        FOR c IN SELECT * FROM pg_catalog.pg_event_trigger_ddl_commands() LOOP
            rel := CASE c.classid
                WHEN 'pg_catalog.pg_class'::pg_catalog.regclass THEN
                    COALESCE((SELECT x.indrelid FROM pg_catalog.pg_index x WHERE x.indexrelid = c.objid), c.objid)
                WHEN 'pg_catalog.pg_trigger'::pg_catalog.regclass THEN
                    (SELECT t.tgrelid FROM pg_catalog.pg_trigger t WHERE t.oid = c.objid)
                WHEN 'pg_catalog.pg_constraint'::pg_catalog.regclass THEN
                    (SELECT k.conrelid FROM pg_catalog.pg_constraint k WHERE k.oid = c.objid)
                WHEN 'pg_catalog.pg_rewrite'::pg_catalog.regclass THEN
                    (SELECT r.ev_class FROM pg_catalog.pg_rewrite r WHERE r.oid = c.objid)
                WHEN 'pg_catalog.pg_policy'::pg_catalog.regclass THEN
                    (SELECT p.polrelid FROM pg_catalog.pg_policy p WHERE p.oid = c.objid)
                WHEN 'pg_catalog.pg_statistic_ext'::pg_catalog.regclass THEN
                    (SELECT s.stxrelid FROM pg_catalog.pg_statistic_ext s WHERE s.oid = c.objid)
                END;
            -- the relation itself, or a partition (new or old) of a group table
            -- (pg_partition_ancestors lists nothing for a table outside any tree)
            IF rel IS NOT NULL AND EXISTS (
                SELECT 1 FROM pg_catalog.unnest(relations) g(name)
                WHERE pg_catalog.to_regclass(g.name) = rel
                   OR pg_catalog.to_regclass(g.name) IN (SELECT a.relid FROM pg_catalog.pg_partition_ancestors(rel) a))
            THEN
                hit := c.object_identity;
                EXIT;
            END IF;
        END LOOP;
    END IF;
    IF hit IS NOT NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'object_in_use',
            MESSAGE = pg_catalog.format(
                'migrator: %s on %s refused: move %s is in flight and this is one of its group''s objects '
                '(a change on one side only stops replication or leaves the two sides different)',
                TG_TAG, hit, {move}),
            HINT = 'apply it to both sides, in the order that keeps replication running, with: '
                   'migrator ddl PLAYBOOK "SQL"';
    END IF;
END
"""

_FENCE_REFUSES = """
BEGIN
    {mark}
    RAISE EXCEPTION USING
        ERRCODE = 'read_only_sql_transaction',
        MESSAGE = pg_catalog.format(
            'migrator: %s on %I.%I refused: move %s is in flight and this copy of the group does not '
            'serve it (%s)', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME, {move}, {where}),
        HINT = {hint};
END
"""

_FENCE_PASSES = """
BEGIN
    {mark}
    RETURN NULL;
END
"""


def _text_array(items: Iterable[str]) -> sql.Composable:
    items = list(items)
    if not items:
        return sql.SQL("ARRAY[]::text[]")
    return sql.SQL("ARRAY[{}]::text[]").format(sql.SQL(", ").join(sql.Literal(i) for i in items))


def _body(template: str, **parts: sql.Composable) -> sql.Composable:
    """A function body with SQL parts in it, quoted as one dollar-quoted string."""
    text = sql.SQL(template).format(**parts).as_string(None)
    return sql.SQL("$migrator_guard$" + text + "$migrator_guard$")


def ddl_guard_statements(move, move_name: str, relations: Iterable[TableName],
                         indexes: Iterable[TableName]) -> list[sql.Composable]:
    """The DDL guard on one side: its function (the group's relations and indexes in
    it), then its two event triggers (made again: there is no CREATE OR REPLACE)."""
    schema, function = names.ddl_guard_function(move)
    relations, indexes = list(relations), list(indexes)
    body = _body(_DDL_GUARD_BODY, relation_schemas=_text_array(r.schema for r in relations),
                 relation_names=_text_array(r.name for r in relations),
                 index_schemas=_text_array(i.schema for i in indexes),
                 index_names=_text_array(i.name for i in indexes),
                 setting=sql.Literal(names.GUARD_SETTING), move=sql.Literal(move_name))
    out: list[sql.Composable] = [sql.SQL(
        "CREATE OR REPLACE FUNCTION {}() RETURNS event_trigger LANGUAGE plpgsql AS {}").format(
            sql.Identifier(schema, function), body)]
    for trigger, event, tags in ((names.ddl_guard(move), "ddl_command_end", DDL_TAGS),
                                 (names.drop_guard(move), "sql_drop", DROP_TAGS)):
        out.append(sql.SQL("DROP EVENT TRIGGER IF EXISTS {}").format(sql.Identifier(trigger)))
        out.append(sql.SQL("CREATE EVENT TRIGGER {} ON {} WHEN TAG IN ({}) EXECUTE FUNCTION {}()").format(
            sql.Identifier(trigger), sql.SQL(event), sql.SQL(", ").join(sql.Literal(t) for t in tags),
            sql.Identifier(schema, function)))
    return out


def fence_function_statement(move, move_name: str, *, serving: bool, serving_side: str,
                             hint: str | None = None) -> sql.Composable:
    """The fence's function on one side: passing (this side serves) or refusing (the
    `serving_side` does). One statement, no lock on any table."""
    if serving:
        body = _body(_FENCE_PASSES, mark=sql.SQL(SERVING_MARK))
    else:
        hint = hint or ("write through the group's PgBouncer entry: it routes to the side that serves; "
                        "the move's `migrator status` says which")
        body = _body(_FENCE_REFUSES, mark=sql.SQL(FENCED_MARK), move=sql.Literal(move_name),
                     where=sql.Literal(f"the {serving_side} serves it"), hint=sql.Literal(hint))
    return sql.SQL("CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS {}").format(
        sql.Identifier(*names.fence_function(move)), body)


def fence_trigger_statements(move, relations: Iterable[TableName]) -> list[sql.Composable]:
    """The fence's statement trigger on every relation of the group on one side."""
    return [sql.SQL("CREATE OR REPLACE TRIGGER {} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {} "
                    "FOR EACH STATEMENT EXECUTE FUNCTION {}()").format(
                sql.Identifier(names.fence(move)), sql.Identifier(r.schema, r.name),
                sql.Identifier(*names.fence_function(move)))
            for r in relations]


def install_statements(move, move_name: str, relations: list[TableName], indexes: list[TableName], *,
                       serving: bool, serving_side: str, ddl_guard: bool = True) -> list[sql.Composable]:
    """Everything one side carries while the move is in flight, in one transaction:
    the fence's function and triggers, then the DDL guard (last: it would refuse the
    triggers to a session without the bypass)."""
    out = [fence_function_statement(move, move_name, serving=serving, serving_side=serving_side)]
    out += fence_trigger_statements(move, relations)
    if ddl_guard:
        out += ddl_guard_statements(move, move_name, relations, indexes)
    return out


def remove_ddl_guard_statements(move) -> list[sql.Composable]:
    return [sql.SQL("DROP EVENT TRIGGER IF EXISTS {}").format(sql.Identifier(names.ddl_guard(move))),
            sql.SQL("DROP EVENT TRIGGER IF EXISTS {}").format(sql.Identifier(names.drop_guard(move))),
            sql.SQL("DROP FUNCTION IF EXISTS {}()").format(sql.Identifier(*names.ddl_guard_function(move)))]


def lift_fence_statement(move) -> sql.Composable:
    """The fence's function and, with it (CASCADE), every one of its triggers."""
    return sql.SQL("DROP FUNCTION IF EXISTS {}() CASCADE").format(sql.Identifier(*names.fence_function(move)))


def remove_fence_statements(move, fenced: Iterable[TableName]) -> list[sql.Composable]:
    """The fence's triggers one table at a time (see LOCK_TIMEOUT), then its function
    (whose CASCADE takes any trigger a list read earlier missed)."""
    return [*(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(names.fence(move)),
                                                                 sql.Identifier(t.schema, t.name))
              for t in fenced),
            lift_fence_statement(move)]


def remove_statements(move, fenced: Iterable[TableName]) -> list[sql.Composable]:
    """Every guard object of the move on one side, by name: safe from any state."""
    return [*remove_ddl_guard_statements(move), *remove_fence_statements(move, fenced)]


def fenced_relations(conn: psycopg.Connection, move, *, enabled: bool = False) -> list[TableName]:
    """The tables that carry this move's fence trigger on this server (`enabled`: only
    where it fires for the application's sessions)."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE t.tgname = %s "
        "AND (NOT %s OR t.tgenabled IN ('O', 'A')) ORDER BY c.oid",
        (names.fence(move), enabled)).fetchall()
    return [TableName(r[0], r[1]) for r in rows]


def bypass_statement() -> sql.Composable:
    """What a session runs to pass the DDL guard (the tool's sessions set it at connect)."""
    return sql.SQL(f"SET {names.GUARD_SETTING} = 'bypass'")


def can_make_event_triggers(conn: psycopg.Connection) -> bool:
    """Only a superuser may create an event trigger (up to PostgreSQL 18 at least)."""
    row = conn.execute("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user").fetchone()
    return bool(row and row[0])


@dataclass(frozen=True)
class GuardState:
    """What one side carries of a move's guards."""

    ddl_guard: int           # of its 2 event triggers, how many are there and enabled
    fence: str | None        # 'refuses' | 'serving' | None (no fence function)
    fenced_tables: int       # relations carrying the fence trigger

    @property
    def any(self) -> bool:
        return bool(self.ddl_guard or self.fence or self.fenced_tables)

    def to_dict(self) -> dict:
        return asdict(self)


def read_state(conn: psycopg.Connection, move) -> GuardState:
    schema, function = names.fence_function(move)
    row = conn.execute(
        """
        SELECT (SELECT count(*) FROM pg_catalog.pg_event_trigger
                WHERE evtname = ANY(%(events)s) AND evtenabled <> 'D'),
               (SELECT CASE WHEN p.prosrc LIKE '%%' || %(fenced)s || '%%' THEN 'refuses' ELSE 'serving' END
                FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                WHERE n.nspname = %(schema)s AND p.proname = %(function)s AND p.pronargs = 0),
               (SELECT count(*) FROM pg_catalog.pg_trigger WHERE tgname = %(trigger)s)
        """,
        {"events": [names.ddl_guard(move), names.drop_guard(move)], "fenced": FENCED_MARK,
         "schema": schema, "function": function, "trigger": names.fence(move)},
    ).fetchone()
    return GuardState(int(row[0]), row[1], int(row[2]))
