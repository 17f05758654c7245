"""`migrator complete`: end a finished move.

After the cutover, reverse replication keeps the source's copy current so that
`rollback` loses nothing. Completing gives that up on purpose: the reverse
subscription and its slot, both publications, the marker rows and tables go, and the
move is recorded as completed so `rollback` refuses. The old copy on the source is
dropped only when asked (`drop_source`), because it is the last way back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from psycopg import sql

from migrator import names
from migrator.errors import OperationFailed
from migrator.move.state import StateStore
from migrator.move.statuses import MoveStatus, StepStatus
from migrator.playbook import Playbook
from migrator.move.guarding import Guards
from migrator.postgres import replication
from migrator.postgres.connection import Side, connect
from migrator.testhooks import hold


@dataclass
class CompleteResult:
    move: str
    removed: list[str] = field(default_factory=list)
    dropped_source_tables: list[str] = field(default_factory=list)
    # The old copy stays fenced (it refuses writes): the statement that lifts the fence.
    source_fence_lift: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def check_completable(playbook: Playbook, store: StateStore) -> None:
    status = store.move_status(playbook.name)
    if status == MoveStatus.COMPLETED:
        raise OperationFailed(f"move {playbook.name!r} is already completed")
    cutover = store.step(playbook.name, "cutover")
    if cutover.status != StepStatus.DONE or cutover.data.serving != Side.TARGET:
        raise OperationFailed(
            f"move {playbook.name!r} has not cut over to the target (cutover: {cutover.status.value})",
            hint=f"run `migrator execute {playbook.path or 'PLAYBOOK'}` first; complete ends a finished move")


def complete(playbook: Playbook, store: StateStore, *, drop_source: bool = False) -> CompleteResult:
    """Remove every object the move made on both sides; optionally drop the source's copy."""
    result = CompleteResult(playbook.name)
    with store.lock(playbook.name, "complete"):
        check_completable(playbook, store)
        store.log(playbook.name, "run", "complete started" + (" (dropping the source's copy)" if drop_source else ""))
        with connect(playbook.source.dsn, purpose="complete", statement_timeout_ms=None) as src, \
                connect(playbook.target.dsn, purpose="complete", statement_timeout_ms=None) as dst:
            replication.drop_subscription(src, names.reverse_subscription(playbook), dst)
            replication.drop_slot(dst, names.reverse_slot(playbook))
            result.removed.append(f"subscription {names.reverse_subscription(playbook)} and its slot")
            # A forward subscription or slot could only be left by an interrupted run.
            replication.drop_subscription(dst, names.subscription(playbook), src)
            replication.drop_slot(src, names.slot(playbook))
            replication.drop_publication(dst, names.reverse_publication(playbook))
            replication.drop_publication(src, names.publication(playbook))
            result.removed.append("publications " + ", ".join(
                [names.publication(playbook), names.reverse_publication(playbook)]))
            # The guards: the DDL guard on both sides, the fence on the target (it serves);
            # the old copy stays fenced unless it is dropped, so nothing writes to it by mistake.
            owner = Guards(playbook)

            def log(what: str, statement) -> None:
                store.log(playbook.name, "sql", what, sql=statement.as_string(None))

            for conn in (src, dst):
                owner.remove_ddl_guard(conn, log)
            owner.remove_fence(dst, log)
            hold("complete", "unguarded")
            result.removed.append(f"the DDL guard on both sides ({names.ddl_guard(playbook)}, "
                                  f"{names.drop_guard(playbook)}) and the target's write fence")
            for conn in (src, dst):
                replication.drop_marker_table(conn, playbook)
            result.removed.append("sync marker table " + ".".join(names.sync_marker(playbook)))
            if drop_source:
                with src.transaction():
                    for table in reversed(playbook.tables):
                        statement = sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(table.identifier)
                        src.execute(statement)
                        store.log(playbook.name, "sql", "dropped the source's copy", sql=statement.as_string(src))
                        result.dropped_source_tables.append(table.qualified)
                owner.remove_fence(src, log)
                replication.drop_marker_table(src, playbook)   # the schema, now that the fence is gone
            else:
                lift = owner.lift_fence().text
                hint = f"move {playbook.name} is complete and this old copy is kept fenced; lift it with: {lift}"
                owner.keep_fenced(src, Side.SOURCE, hint=hint, log=log)
                result.source_fence_lift = lift
        store.set_move_status(playbook.name, MoveStatus.COMPLETED)
        store.log(playbook.name, "run", "complete finished: " + "; ".join(result.removed))
    return result

