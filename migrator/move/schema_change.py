"""`migrator ddl`: a schema change to a group table while the move is in flight.

Logical replication carries rows, not DDL, and matches columns by name: a change made
on one side only stops the apply worker (a column the subscriber lacks) or leaves the
sides different. The DDL guard refuses such changes; this applies them to both sides
in the order that keeps replication running, or refuses with the reason:

| change | first on | why |
|---|---|---|
| ADD COLUMN | the subscribing side | the apply worker must know the column before a row carries it |
| DROP COLUMN | the publishing side | rows stop carrying it before the subscriber loses it (its NOT NULL, if any, is dropped there first) |

Whenever the publishing side goes first, the subscribing side follows only once it has
applied everything committed before (a marker row through the move's own replication):
a row still carrying a dropped column would stop its apply worker.
| ADD CONSTRAINT, SET NOT NULL, CREATE UNIQUE INDEX | the publishing side | the side that takes writes refuses a violating row before the subscriber would fail on one |
| DROP CONSTRAINT, DROP NOT NULL, DROP INDEX | the subscribing side | the subscriber stops enforcing it before the publisher does |
| SET/DROP DEFAULT, CREATE INDEX, COMMENT, storage and statistics settings | either (the publishing side) | nothing replication depends on |

Refused: a column's new type (the sides disagree in between, and a narrowing fails on
rows already sent), renames (replication matches names), a default computed by a
function for a new column (each side would fill existing rows differently), identity
columns, replica identity changes, several statements or kinds of change in one call.

Before anything changes, the statement runs on both sides in a transaction that is
rolled back: a change that would fail on either side (a constraint that existing rows
violate, a typo) fails there, and nothing changed.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from enum import Enum

import pglast
from pglast import ast, enums
from psycopg import sql

from migrator.errors import OperationFailed, PlaybookError
from migrator.move.phases import CutoverPhase
from migrator.move.guarding import Guards
from migrator.move.state import StateStore
from migrator.move.statuses import MoveStatus, StepStatus
from migrator.playbook import Playbook, TableName
from migrator.postgres import guards, replication
from migrator.postgres.catalog import guarded_objects
from migrator.postgres.connection import Side, connect, describe_error
from migrator.testhooks import hold

# Where a change in progress is checkpointed, beside the steps' records.
RECORD = "ddl"


class First(str, Enum):
    PUBLISHING = "publishing"
    SUBSCRIBING = "subscribing"


AT = enums.AlterTableType
_SUBSCRIBING_FIRST = {AT.AT_AddColumn: "ADD COLUMN", AT.AT_DropConstraint: "DROP CONSTRAINT",
                      AT.AT_DropNotNull: "DROP NOT NULL"}
_PUBLISHING_FIRST = {AT.AT_DropColumn: "DROP COLUMN", AT.AT_AddConstraint: "ADD CONSTRAINT",
                     AT.AT_SetNotNull: "SET NOT NULL"}
_EITHER = {AT.AT_ColumnDefault: "SET/DROP DEFAULT", AT.AT_SetStatistics: "SET STATISTICS",
           AT.AT_SetStorage: "SET STORAGE", AT.AT_SetRelOptions: "SET (...)", AT.AT_ResetRelOptions: "RESET (...)",
           AT.AT_SetOptions: "ALTER COLUMN SET (...)", AT.AT_ResetOptions: "ALTER COLUMN RESET (...)",
           AT.AT_ClusterOn: "CLUSTER ON", AT.AT_DropCluster: "SET WITHOUT CLUSTER"}
_REFUSED = {
    AT.AT_AlterColumnType: "a column's type change cannot be ordered safely: in between, the sides disagree "
                           "and rows already sent may not convert; add a new column, fill it, then switch",
    AT.AT_ReplicaIdentity: "the replica identity is what the apply worker finds rows by",
    AT.AT_AddIdentity: "an identity column numbers existing rows on each side on its own",
    AT.AT_AddColumnToView: "not a table",
}


@dataclass(frozen=True)
class SchemaChange:
    """One statement, understood: the table it changes and which side goes first."""

    sql: str
    kind: str                         # what it does, in the user's words
    table: tuple[str | None, str]     # (schema or None: resolved on the server, name)
    first: First
    why: str
    concurrently: bool = False        # CREATE/DROP INDEX CONCURRENTLY: no transaction around it
    index: tuple[str | None, str] | None = None   # DROP INDEX: the index (its table is found on the server)
    dropped_column: str | None = None


def _name(parts) -> tuple[str | None, str]:
    names = [p.sval for p in parts]
    return (names[-2] if len(names) > 1 else None), names[-1]


def _constant(node) -> bool:
    """A default the same on both sides for rows that exist: a constant, maybe cast."""
    if isinstance(node, ast.TypeCast):
        return _constant(node.arg)
    if isinstance(node, ast.A_Expr) and node.lexpr is None:          # -1
        return _constant(node.rexpr)
    return isinstance(node, ast.A_Const)


def understand(text: str) -> SchemaChange:
    """Parse one statement and decide its order, or raise PlaybookError with the reason."""
    try:
        statements = pglast.parse_sql(text)
    except pglast.parser.ParseError as exc:
        raise PlaybookError(f"the statement does not parse: {exc}") from exc
    if len(statements) != 1:
        raise PlaybookError(f"give one statement at a time ({len(statements)} given): each is applied to both "
                            "sides in its own order")
    stmt = statements[0].stmt
    sql_text = text.strip().rstrip(";").strip()
    if isinstance(stmt, ast.AlterTableStmt):
        return _alter_table(stmt, sql_text)
    if isinstance(stmt, ast.IndexStmt):
        rel = stmt.relation
        first = First.PUBLISHING if stmt.unique else First.SUBSCRIBING
        why = ("the side that takes writes refuses a duplicate before the subscriber would fail on one"
               if stmt.unique else "an index changes no row; the subscribing side first")
        return SchemaChange(sql_text, "CREATE UNIQUE INDEX" if stmt.unique else "CREATE INDEX",
                            (rel.schemaname, rel.relname), first, why, concurrently=bool(stmt.concurrent))
    if isinstance(stmt, ast.DropStmt) and stmt.removeType == enums.ObjectType.OBJECT_INDEX:
        if len(stmt.objects) != 1:
            raise PlaybookError("drop one index at a time")
        return SchemaChange(sql_text, "DROP INDEX", (None, ""), First.SUBSCRIBING,
                            "the subscriber stops enforcing a unique index before the publisher does",
                            concurrently=bool(stmt.concurrent), index=_name(stmt.objects[0]))
    if isinstance(stmt, ast.CommentStmt) and stmt.objtype in (enums.ObjectType.OBJECT_TABLE,
                                                               enums.ObjectType.OBJECT_COLUMN):
        parts = [p.sval for p in stmt.object]
        if stmt.objtype == enums.ObjectType.OBJECT_COLUMN:
            parts = parts[:-1]
        table = ((parts[-2] if len(parts) > 1 else None), parts[-1])
        return SchemaChange(sql_text, "COMMENT", table, First.PUBLISHING, "a comment changes nothing replication uses")
    if isinstance(stmt, ast.RenameStmt):
        raise PlaybookError("a rename cannot be ordered safely: replication matches tables and columns by name, "
                            "so it stops at the first side renamed")
    raise PlaybookError(f"migrator ddl applies ALTER TABLE, CREATE INDEX, DROP INDEX and COMMENT to a group table; "
                        f"not {type(stmt).__name__}")


def _alter_table(stmt: ast.AlterTableStmt, sql_text: str) -> SchemaChange:
    if stmt.objtype != enums.ObjectType.OBJECT_TABLE:
        raise PlaybookError("migrator ddl changes tables of the group")
    kinds: list[tuple[str, First | None]] = []
    dropped = None
    for cmd in stmt.cmds:
        sub = cmd.subtype
        if sub in _REFUSED:
            raise PlaybookError(_REFUSED[sub])
        if sub == AT.AT_AddColumn:
            for constraint in cmd.def_.constraints or ():
                if constraint.contype == enums.ConstrType.CONSTR_DEFAULT and not _constant(constraint.raw_expr):
                    raise PlaybookError(
                        f"the new column {cmd.def_.colname}'s default is computed: each side would fill its "
                        "existing rows with different values; add the column with a constant default (or "
                        "none), then SET DEFAULT")
                if constraint.contype == enums.ConstrType.CONSTR_IDENTITY:
                    raise PlaybookError(_REFUSED[AT.AT_AddIdentity])
        if sub == AT.AT_DropColumn:
            dropped = cmd.name
        for table, first in ((_SUBSCRIBING_FIRST, First.SUBSCRIBING), (_PUBLISHING_FIRST, First.PUBLISHING),
                             (_EITHER, None)):
            if sub in table:
                kinds.append((table[sub], first))
                break
        else:
            raise PlaybookError(f"migrator ddl does not know how to order {sub.name.removeprefix('AT_')} "
                                "while replication runs")
    firsts = {f for _, f in kinds if f is not None}
    if len(firsts) > 1:
        raise PlaybookError("this ALTER TABLE mixes changes that go first on different sides ("
                            + ", ".join(k for k, _ in kinds) + "): give them as separate statements")
    if dropped is not None and len(kinds) > 1:
        raise PlaybookError("drop a column in an ALTER TABLE of its own")
    first = firsts.pop() if firsts else First.PUBLISHING
    label = ", ".join(dict.fromkeys(k for k, _ in kinds))
    why = {First.SUBSCRIBING: "the subscribing side learns it before the publishing side sends rows that need it",
           First.PUBLISHING: "the side that takes writes changes first; the subscriber follows"}[first]
    return SchemaChange(sql_text, label, (stmt.relation.schemaname, stmt.relation.relname), first, why,
                        dropped_column=dropped)


@dataclass
class ChangeResult:
    move: str
    sql: str
    kind: str
    table: str
    order: list[str] = field(default_factory=list)       # sides in the order applied
    why: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def group_table(playbook: Playbook, schema: str, name: str) -> TableName:
    table = TableName(schema, name)
    if table not in playbook.tables:
        raise PlaybookError(f"{table.qualified} is not a table of move {playbook.name!r}: change it directly")
    return table


def timed(started: float) -> float:
    return round(time.monotonic() - started, 3)


def no_move_in_flight(playbook: Playbook, why: str) -> OperationFailed:
    return OperationFailed(f"move {playbook.name!r} {why}: change the tables directly",
                           hint="migrator ddl is for a move between its replicate step and `complete`")


# --------------------------------------------------------------------------- applying it


def _sides(playbook: Playbook, store: StateStore) -> tuple[str, str]:
    """(publishing, subscribing) for a move in flight, or refuse."""
    if store.move_status(playbook.name) == MoveStatus.COMPLETED:
        raise no_move_in_flight(playbook, "is completed")
    if store.step(playbook.name, "replicate").status not in (StepStatus.RUNNING, StepStatus.DONE):
        raise no_move_in_flight(playbook, "is not replicating")
    record = store.step(playbook.name, "cutover")
    cutover, phase = record.data, record.data.phase
    settled = phase in (None, CutoverPhase.ABORTED) or (
        phase == CutoverPhase.RESUMED and record.status in (StepStatus.DONE, StepStatus.UNDONE))
    if not settled:
        raise OperationFailed(f"move {playbook.name!r} has an interrupted cutover (phase {phase})",
                              hint="run `migrator execute` (or `rollback`) first: it finishes or reverts it")
    publishing = str(cutover.serving)
    return publishing, ("target" if publishing == "source" else "source")


_TABLE_OF = """
SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = pg_catalog.to_regclass(%s)
"""
_TABLE_OF_INDEX = """
SELECT n.nspname, c.relname FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class c ON c.oid = x.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE x.indexrelid = pg_catalog.to_regclass(%s)
"""
_NOT_NULL = """
SELECT a.attnotnull FROM pg_catalog.pg_attribute a
WHERE a.attrelid = pg_catalog.to_regclass(%s) AND a.attname = %s AND NOT a.attisdropped
"""


def _resolve(conn, change: SchemaChange, playbook: Playbook) -> TableName:
    schema, name = change.index if change.index is not None else change.table
    spelled = (sql.Identifier(schema, name) if schema else sql.Identifier(name)).as_string(conn)
    row = conn.execute(_TABLE_OF_INDEX if change.index is not None else _TABLE_OF, (spelled,)).fetchone()
    if row is None:
        raise PlaybookError(f"{'index' if change.index is not None else 'table'} {spelled} does not exist "
                            "on the publishing side")
    return group_table(playbook, row[0], row[1])


def apply_change(playbook: Playbook, store: StateStore, text: str, *, dry_run: bool = False) -> ChangeResult:
    """Apply one schema change to a group table on both sides, in its order."""
    change = understand(text)
    started = time.monotonic()
    with store.lock(playbook.name, "ddl"):
        publishing, subscribing = _sides(playbook, store)
        dsn = {"source": playbook.source.dsn, "target": playbook.target.dsn}
        with connect(dsn[publishing], side=Side(publishing), purpose="step ddl") as pub, \
                connect(dsn[subscribing], side=Side(subscribing), purpose="step ddl") as sub:
            conns = {publishing: pub, subscribing: sub}
            table = _resolve(pub, change, playbook)
            order = [publishing, subscribing] if change.first == First.PUBLISHING else [subscribing, publishing]
            result = ChangeResult(playbook.name, change.sql, change.kind, table.qualified, order, change.why)
            # Rows stop carrying a dropped column on the publishing side first; the apply
            # worker then leaves it empty on the other, which its NOT NULL would refuse.
            before: list[tuple[str, sql.Composable]] = []
            if change.dropped_column is not None:
                row = sub.execute(_NOT_NULL, (table.identifier.as_string(sub), change.dropped_column)).fetchone()
                if row and row[0]:
                    before.append((subscribing, sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL").format(
                        table.identifier, sql.Identifier(change.dropped_column))))
            steps = [*before, *((side, sql.SQL(change.sql)) for side in order)]
            if dry_run:
                result.order = [f"{side}: {q.as_string(conns[side])}" for side, q in steps]
                return result
            # Checkpointed like a step: a run stopped between the sides (a crash, a lost
            # server) is finished by running the same statement again.
            pending = store.step(playbook.name, RECORD).data.pending
            if pending and pending["sql"] != change.sql:
                raise OperationFailed(
                    f"an earlier `migrator ddl` stopped after {pending['done']} of its {pending['steps']} "
                    f"statements: {pending['sql']}",
                    hint="run that statement again with `migrator ddl` first: it finishes where it stopped")
            done = pending["done"] if pending else 0
            if not done and not change.concurrently:
                # Tried on both sides first and rolled back: what would fail anywhere fails
                # before anything changed.
                for side in order:
                    _try(conns[side], [q for s, q in steps if s == side], side)
            for number, (side, statement) in enumerate(steps):
                if number < done:
                    continue
                store.update_data(playbook.name, RECORD,
                                  pending={"sql": change.sql, "done": number, "steps": len(steps)})
                try:
                    _run(conns[side], statement, transaction=not change.concurrently)
                except Exception as exc:
                    applied = sorted({s for s, _ in steps[:number]})
                    raise OperationFailed(
                        f"the change failed on the {side}: {describe_error(exc)}"
                        + (f"; it was applied on the {' and '.join(applied)} already, so the sides now "
                           "differ (`migrator status` shows the drift)" if applied else "; nothing changed"),
                        hint="fix the cause and run the same `migrator ddl` again: it goes on from here"
                        if applied else None) from exc
                if side == publishing and number + 1 < len(steps):
                    # The subscriber must apply every change made before this one first: a
                    # row still carrying a dropped column stops its apply worker.
                    _catch_up(pub, sub, playbook, subscribing)
                store.update_data(playbook.name, RECORD,
                                  pending={"sql": change.sql, "done": number + 1, "steps": len(steps)})
                store.log(playbook.name, "sql", f"ddl: applied on the {side}", step=RECORD,
                          sql=statement.as_string(conns[side]))
                hold(RECORD, f"applied-{number + 1}")
            store.update_data(playbook.name, RECORD, pending=None)
            # The DDL guard knows the group's indexes by name: it learns a new one (or forgets one).
            relations, indexes = guarded_objects(pub, playbook.tables)
            Guards(playbook).refresh_ddl_guard(conns, relations, indexes)
    result.seconds = timed(started)
    store.log(playbook.name, "run", f"ddl: {change.kind} on {table.qualified} applied on the "
              f"{' then the '.join(order)} ({change.why})", step=RECORD, seconds=result.seconds)
    return result


CATCH_UP_TIMEOUT = 120.0


def _catch_up(pub, sub, playbook: Playbook, subscribing: str) -> None:
    marker = replication.commit_marker(pub, playbook, "ddl")
    try:
        replication.wait_for_marker(sub, playbook, marker, deadline=time.monotonic() + CATCH_UP_TIMEOUT, poll=0.05)
    except replication.MarkerTimeout as exc:
        raise OperationFailed(
            f"the {subscribing} did not apply the changes made before this one within "
            f"{CATCH_UP_TIMEOUT:.0f}s (`migrator status` shows the lag)",
            hint="run the same `migrator ddl` again: it goes on from here") from exc


def _try(conn, statements, side: str) -> None:
    def attempt() -> None:
        with conn.transaction(force_rollback=True):
            conn.execute(guards.LOCK_TIMEOUT)
            for statement in statements:
                conn.execute(statement)
    try:
        guards.with_lock_retries(attempt)
    except Exception as exc:
        raise OperationFailed(f"the change would fail on the {side}: {describe_error(exc)}; nothing changed") from exc


def _run(conn, statement, *, transaction: bool) -> None:
    if transaction:
        guards.run_each(conn, [statement])
    else:
        guards.with_lock_retries(lambda: conn.execute(statement))
