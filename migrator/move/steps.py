"""The steps of a move (DESIGN section 3): each is data plus `do` and `undo`.

Only the runner orders steps and writes their status. A step's own data (the index
definitions it dropped, the privileges it must restore, where a cutover stands) is
written to the checkpoint store *before* the side effect that needs it, and every
`do`/`undo` checks the catalogs first, so running one again after a crash converges.
"""

from __future__ import annotations

import concurrent.futures
import time

import psycopg
from psycopg import sql

from migrator import names
from migrator.errors import OperationFailed, PlanBlocked
from migrator.move.context import MoveContext, Reporter, Step
from migrator.move.cutover import original_entries
from migrator.move.cutover_step import cutover_do, cutover_undo
from migrator.playbook import TableName
from migrator.postgres import replication
from migrator.postgres.connection import describe_error
from migrator.postgres.ddl import IndexDef, read_group_schema
from migrator.testhooks import hold

__all__ = ["STEPS", "STEP_NAMES", "MoveContext", "Reporter", "Step", "describe_failure"]

INITIAL_COPY_TIMEOUT = 24 * 3600


# --------------------------------------------------------------------------- preflight


def preflight_do(ctx: MoveContext) -> str:
    from migrator.plan.findings import check
    from migrator.plan.inspection import inspect_move

    snapshot = inspect_move(ctx.playbook)
    findings = check(snapshot, ctx.playbook, expected_objects=names.all_objects(ctx.playbook))
    blocking = [f for f in findings if f.level == "block"]
    if blocking:
        first = blocking[0]
        more = f" (and {len(blocking) - 1} more: run `migrator plan`)" if len(blocking) > 1 else ""
        raise PlanBlocked(f"preflight: {first.message}{more}", hint=first.hint)
    if "original_entries" not in ctx.data("preflight"):
        ctx.save("preflight", original_entries=original_entries(ctx.playbook))
    warnings = sum(1 for f in findings if f.level == "warn")
    return f"{len(findings)} checks, {warnings} warnings, nothing blocking"


def nothing(ctx: MoveContext) -> None:
    return None


# --------------------------------------------------------------------------- schema


def schema_do(ctx: MoveContext) -> str:
    with ctx.source("schema") as src, ctx.target("schema") as dst:
        replication.ensure_marker_table(src)
        data = ctx.data("schema")
        group = read_group_schema(src, ctx.tables, list(ctx.playbook.app_roles))
        if data.get("intent") and _all_tables_exist(dst, ctx.tables):
            return "already on the target"  # the DDL transaction committed before a crash
        existing_types = {(s, n) for s, n, _ in group.types if _exists(dst, "SELECT to_regtype(%s)", f"{s}.{n}")}
        existing_functions = {sig for _, sig, _ in group.functions if _exists(dst, "SELECT to_regprocedure(%s)", sig)}
        existing_sequences = {s.qualified for s in group.sequences
                              if not s.identity and _exists(dst, "SELECT to_regclass(%s)", s.qualified)}
        if any(_exists(dst, "SELECT to_regclass(%s)", t.qualified) for t in ctx.tables):
            raise OperationFailed(
                "some group tables already exist on the target and were not made by this move",
                hint="drop them on the target, or remove them from the playbook")
        all_sequences = [[s.schema, s.name] for s in group.sequences]
        group.types = [t for t in group.types if (t[0], t[1]) not in existing_types]
        group.functions = [f for f in group.functions if f[1] not in existing_functions]
        group.sequences = [s for s in group.sequences if s.qualified not in existing_sequences]
        # A schema the target has already is not ours to create, grant on or drop.
        group.schemas = [s for s in group.schemas if not _exists(dst, "SELECT to_regnamespace(%s)", s)]
        # What this move creates, recorded before creating it: undo drops exactly this.
        ctx.save(
            "schema",
            intent=True,
            created_schemas=group.schemas,
            created_types=[f"{s}.{n}" for s, n, _ in group.types],
            created_functions=[sig for _, sig, _ in group.functions],
            created_sequences=[s.qualified for s in group.sequences if not s.identity],
            app_privileges=[list(p) for p in group.app_privileges],
            sequences=all_sequences,
            indexes=[i.__dict__ for i in group.indexes],
        )
        statements = group.statements()
        with dst.transaction():
            replication.ensure_marker_table(dst)
            for stmt in statements:
                dst.execute(stmt)
        for stmt in statements:
            ctx.log("schema", "created on the target", stmt, dst)
    return f"{len(ctx.tables)} tables, {len(statements)} statements"


def schema_undo(ctx: MoveContext) -> str:
    data = ctx.data("schema")
    with ctx.target("schema-undo") as dst:
        if not ctx.keep_target:
            with dst.transaction():
                for table in reversed(ctx.tables):
                    ctx.run_sql("schema", dst, sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(table.identifier))
                for qualified in data.get("created_sequences", []):
                    ctx.run_sql("schema", dst, sql.SQL("DROP SEQUENCE IF EXISTS {}").format(
                        sql.Identifier(*qualified.split(".", 1))))
                for signature in data.get("created_functions", []):
                    if _exists(dst, "SELECT to_regprocedure(%s)", signature):
                        ctx.run_sql("schema", dst, sql.SQL("DROP FUNCTION {}").format(sql.SQL(signature)))
                for qualified in data.get("created_types", []):
                    ctx.run_sql("schema", dst, sql.SQL("DROP TYPE IF EXISTS {}").format(
                        sql.Identifier(*qualified.split(".", 1))))
                for schema in data.get("created_schemas", []):
                    # Only if nothing else was put there since (every object in a schema
                    # depends on it).
                    if not _exists(dst, "SELECT 1 FROM pg_catalog.pg_depend WHERE refclassid = "
                                   "'pg_catalog.pg_namespace'::regclass AND refobjid = to_regnamespace(%s)", schema):
                        ctx.run_sql("schema", dst, sql.SQL("DROP SCHEMA IF EXISTS {}").format(sql.Identifier(schema)))
        replication.drop_marker_table(dst, ctx.move)
    with ctx.source("schema-undo") as src:
        replication.drop_marker_table(src, ctx.move)
    # Whatever stays on the target (--keep-target) is no longer this move's: a new run
    # must not take it for its own half-finished work.
    ctx.save("schema", intent=False)
    return "kept the target's tables" if ctx.keep_target else "dropped the group on the target"


def _exists(conn: psycopg.Connection, query: str, arg: str) -> bool:
    row = conn.execute(query, (arg,)).fetchone()
    return bool(row and row[0] is not None)


def _all_tables_exist(conn: psycopg.Connection, tables: list[TableName]) -> bool:
    return all(_exists(conn, "SELECT to_regclass(%s)", t.qualified) for t in tables)


def _index_defs(ctx: MoveContext) -> list[IndexDef]:
    return [IndexDef(**i) for i in ctx.data("schema").get("indexes", [])]


# --------------------------------------------------------------------------- indexes


def defer_do(ctx: MoveContext) -> str:
    if not ctx.playbook.indexes.defer:
        ctx.save("defer-indexes", dropped=[])
        return "indexes.defer is off: nothing deferred"
    secondary = [i for i in _index_defs(ctx) if i.secondary]
    # Recorded before the first DROP: a crash in between still knows what to rebuild.
    ctx.save("defer-indexes", dropped=[i.__dict__ for i in secondary])
    with ctx.target("defer-indexes") as dst:
        for index in secondary:
            ctx.run_sql("defer-indexes", dst, sql.SQL("DROP INDEX IF EXISTS {}").format(
                sql.Identifier(index.schema, index.name)), "dropped for the bulk copy")
    return f"dropped {len(secondary)} secondary indexes"


def defer_undo(ctx: MoveContext) -> str | None:
    if ctx.tables_will_be_dropped:
        return "skipped: the tables go with the schema step"
    dropped = [IndexDef(**i) for i in ctx.data("defer-indexes").get("dropped", [])]
    _build_indexes(ctx, "defer-indexes", dropped)
    return f"recreated {len(dropped)} indexes"


def _index_builder(ctx: MoveContext) -> str:
    return f"index-build {ctx.playbook.slug}"


def _stop_orphaned_builds(ctx: MoveContext, step: str) -> None:
    """A run killed mid-build leaves its CREATE INDEX running on the server (which does
    not notice a client that is gone) and racing ours for the same name; only one run
    holds the move's lock, so any such build is a dead run's."""
    with ctx.target(step) as conn:
        rows = conn.execute(
            "SELECT pg_catalog.pg_terminate_backend(pid, 10000) FROM pg_catalog.pg_stat_activity "
            "WHERE application_name = %s AND datname = pg_catalog.current_database() "
            "AND pid <> pg_catalog.pg_backend_pid()", (f"migrator {_index_builder(ctx)}",)).fetchall()
    if rows:
        ctx.log(step, f"stopped {len(rows)} index builds left running by an interrupted run")


def _build_index(ctx: MoveContext, step: str, index: IndexDef) -> None:
    with ctx.target(_index_builder(ctx)) as conn:
        conn.execute("SET maintenance_work_mem = '256MB'")
        statement = index.create_if_missing()
        conn.execute(statement)  # type: ignore[arg-type]
        ctx.log(step, f"built {index.name}", statement)


def _build_indexes(ctx: MoveContext, step: str, indexes: list[IndexDef]) -> None:
    """CREATE INDEX in parallel, one connection each: the builds are CPU bound."""
    if not indexes:
        return
    _stop_orphaned_builds(ctx, step)
    done = 0
    workers = max(2, min(len(indexes), 4))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_build_index, ctx, step, i) for i in indexes]
        for future in concurrent.futures.as_completed(futures):
            future.result()
            done += 1
            ctx.reporter.progress(step, done, len(indexes), "indexes")


class EarlyIndexBuilds:
    """Deferred indexes of a table built as soon as its initial copy is done, while
    the bigger tables are still copying: the copy of the largest table sets the pace,
    and the others' builds hide under it. rebuild-indexes still makes sure of all."""

    def __init__(self, ctx: MoveContext) -> None:
        self.ctx = ctx
        dropped = [IndexDef(**i) for i in ctx.data("defer-indexes").get("dropped", [])]
        self.pending: dict[str, list[IndexDef]] = {}
        for index in dropped:
            self.pending.setdefault(index.table, []).append(index)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=2) if self.pending else None
        self.futures: list[concurrent.futures.Future] = []
        if self.pool is not None:
            _stop_orphaned_builds(ctx, "replicate")

    def table_copied(self, table: str) -> None:
        for index in self.pending.pop(table, []):
            self.futures.append(self.pool.submit(_build_index, self.ctx, "replicate", index))

    def finish(self) -> int:
        """Wait for the builds started; returns how many there were."""
        if self.pool is None:
            return 0
        try:
            for future in self.futures:
                future.result()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
        return len(self.futures)


def rebuild_do(ctx: MoveContext) -> str:
    dropped = [IndexDef(**i) for i in ctx.data("defer-indexes").get("dropped", [])]
    started = time.monotonic()
    _build_indexes(ctx, "rebuild-indexes", dropped)
    built = time.monotonic() - started
    _analyze(ctx)
    with ctx.source("lag") as src:
        _wait_for_lag(ctx, src, names.slot(ctx.playbook), "rebuild-indexes")
    return f"rebuilt {len(dropped)} indexes in {built:.1f}s, analyzed the group; lag under max_lag"


def _analyze(ctx: MoveContext) -> None:
    """Statistics before the target serves traffic: the copy leaves it with none, and
    until autovacuum gets there every query on the group is planned blind."""
    def analyze(table: TableName) -> None:
        with ctx.target("analyze") as conn:
            ctx.run_sql("rebuild-indexes", conn, sql.SQL("ANALYZE {}").format(table.identifier))

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for future in [pool.submit(analyze, t) for t in ctx.tables]:
            future.result()


def rebuild_undo(ctx: MoveContext) -> str | None:
    if ctx.tables_will_be_dropped:
        return "skipped: the tables go with the schema step"
    dropped = [IndexDef(**i) for i in ctx.data("defer-indexes").get("dropped", [])]
    with ctx.target("rebuild-undo") as dst:
        for index in dropped:
            ctx.run_sql("rebuild-indexes", dst, sql.SQL("DROP INDEX IF EXISTS {}").format(
                sql.Identifier(index.schema, index.name)))
    return f"dropped {len(dropped)} rebuilt indexes again"


def _wait_for_lag(ctx: MoveContext, publisher: psycopg.Connection, slot: str, step: str,
                  timeout: float = 3600) -> None:
    limit = ctx.playbook.cutover.max_lag
    deadline = time.monotonic() + timeout
    while True:
        lag = replication.slot_lag_bytes(publisher, slot)
        if lag is None:
            raise OperationFailed(f"replication slot {slot} is missing: replication is not running",
                                  hint="run `migrator status` and `migrator rollback --to defer-indexes`")
        ctx.reporter.progress(step, max(0, limit - lag), limit, f"lag {lag} bytes")
        if lag <= limit:
            return
        if time.monotonic() > deadline:
            raise OperationFailed(f"replication lag stayed above max_lag for {timeout:.0f}s")
        time.sleep(0.5)


# --------------------------------------------------------------------------- replicate


def replicate_do(ctx: MoveContext) -> str:
    pub, sub, slot = names.publication(ctx.playbook), names.subscription(ctx.playbook), names.slot(ctx.playbook)
    with ctx.source("replicate") as src, ctx.target("replicate") as dst:
        stmt = replication.create_publication(src, pub, ctx.tables)
        if stmt:
            ctx.log("replicate", "publication on the source", stmt, src)
        stmt = replication.create_subscription(
            dst, src, name=sub, publisher_dsn=ctx.playbook.source.dsn, publication=pub, slot=slot,
            copy_data=True)
        if stmt:
            ctx.log("replicate", "subscription on the target", stmt, dst)
        sizes = replication.relation_bytes(src, ctx.tables)
        total = sum(sizes.values()) or 1
        ctx.save("replicate", bytes_total=total)
        hold("replicate", "copying")
        deadline = time.monotonic() + INITIAL_COPY_TIMEOUT
        early = EarlyIndexBuilds(ctx)
        try:
            _wait_for_copy(ctx, dst, sub, sizes, total, deadline, early)
        finally:
            built = early.finish()
        ctx.reporter.progress("replicate", total, total, "bytes")
    early_note = f"; {built} deferred indexes built as their tables finished" if built else ""
    return f"{len(ctx.tables)} tables copied and streaming ({total} bytes){early_note}"


def _wait_for_copy(ctx: MoveContext, dst: psycopg.Connection, sub: str, sizes: dict[str, int],
                   total: int, deadline: float, early: EarlyIndexBuilds) -> None:
    """Until every table is `r`eady: progress in bytes, early index builds per table."""
    while True:
        states = replication.sync_states(dst, sub)
        group_states = {t.qualified: states.get(t.qualified, "?") for t in ctx.tables}
        for table, state in group_states.items():
            if state in ("s", "r"):
                early.table_copied(table)
        if group_states and all(s == "r" for s in group_states.values()) and states.get(
                ".".join(names.sync_marker())) == "r":
            return
        copying = [t for t, s in group_states.items() if s in ("d", "i", "?")]
        copied = sum(v for t, v in sizes.items() if t not in copying)
        if copying:
            target_sizes = replication.relation_bytes(dst, [TableName.parse(t) for t in copying])
            copied += sum(min(target_sizes.get(t, 0), sizes.get(t, 0)) for t in copying)
        ctx.reporter.progress("replicate", copied, total, "bytes")
        if time.monotonic() > deadline:
            raise OperationFailed("the initial copy did not finish in time")
        time.sleep(0.25)


def replicate_undo(ctx: MoveContext) -> str:
    pub, sub, slot = names.publication(ctx.playbook), names.subscription(ctx.playbook), names.slot(ctx.playbook)
    with ctx.target("replicate-undo") as dst:
        try:
            src = ctx.source("replicate-undo")
        except OperationFailed:
            src = None
        try:
            replication.drop_subscription(dst, sub, src)
            ctx.log("replicate", f"dropped subscription {sub}")
            if src is not None:
                replication.drop_slot(src, slot)
                for orphan in replication.drop_orphaned_tablesync_slots(src, dst):
                    ctx.log("replicate", f"dropped table-sync slot {orphan}, orphaned by a subscription "
                            "dropped while the source was down")
                replication.drop_publication(src, pub)
                ctx.log("replicate", f"dropped publication {pub}")
        finally:
            if src is not None:
                src.close()
    if src is None:
        raise OperationFailed(f"the source is unreachable: its slot {slot} and publication {pub} remain",
                              hint="run `migrator rollback` again once the source is back")
    return "replication removed"


# --------------------------------------------------------------------------- prepare-reverse


def prepare_reverse_do(ctx: MoveContext) -> str:
    pub = names.reverse_publication(ctx.playbook)
    with ctx.target("prepare-reverse") as dst:
        stmt = replication.create_publication(dst, pub, ctx.tables)
        if stmt:
            ctx.log("prepare-reverse", "reverse publication on the target", stmt, dst)
    return f"publication {pub} ready on the target"


def prepare_reverse_undo(ctx: MoveContext) -> str:
    pub = names.reverse_publication(ctx.playbook)
    with ctx.target("prepare-reverse-undo") as dst:
        replication.drop_publication(dst, pub)
    return f"dropped publication {pub}"


STEPS: tuple[Step, ...] = (
    Step("preflight", "re-check the plan's findings", preflight_do, nothing),
    Step("schema", "create the group's schema on the target", schema_do, schema_undo),
    Step("defer-indexes", "drop secondary indexes on the target for the bulk copy", defer_do, defer_undo),
    Step("replicate", "publish, subscribe and copy the group", replicate_do, replicate_undo),
    Step("rebuild-indexes", "rebuild the deferred indexes; wait for lag under max_lag", rebuild_do, rebuild_undo),
    Step("prepare-reverse", "publish the group on the target for reverse replication",
         prepare_reverse_do, prepare_reverse_undo),
    Step("cutover", "pause, sync, switch replication, reroute, resume", cutover_do, cutover_undo),
)
STEP_NAMES: tuple[str, ...] = tuple(s.name for s in STEPS)


def describe_failure(exc: BaseException) -> str:
    """The user's one line for a step's failure; a driver error says on which side."""
    return exc.message if isinstance(exc, OperationFailed) else describe_error(exc)
