"""The steps of a move (DESIGN section 3): each is data plus `do` and `undo`.

Only the runner orders steps and writes their status. A step's own data (the index
definitions it dropped, the privileges it must restore, where a cutover stands) is
written to the checkpoint store *before* the side effect that needs it, and every
`do`/`undo` checks the catalogs first, so running one again after a crash converges.
"""

from __future__ import annotations

import concurrent.futures
import time
from dataclasses import dataclass, field, replace

import psycopg
from psycopg import sql

from migrator import names, waiting
from migrator.errors import OperationFailed, PlanBlocked
from migrator.move.context import MoveContext, Reporter, Step, UndoPlan
from migrator.move.cutover import CutoverFacts, Direction, cutover_facts, cutover_sequence, subscription_needs
from migrator.move.cutover_step import cutover_do, cutover_undo, cutover_undo_statements
from migrator.move.guarding import Guards
from migrator.move.statuses import SampleKind
from migrator.pgbouncer.route import original_entries
from migrator.playbook import Playbook, TableName, format_size
from migrator.postgres import replication
from migrator.postgres.catalog import existing_objects, guarded_objects, read_group
from migrator.postgres.connection import Side, describe_error
from migrator.postgres.guards import can_make_event_triggers
from migrator.postgres.ddl import DeferredIndex, GroupSchema, group_schema
from migrator.postgres.statement import Privilege, Statement, may, member_of, owns
from migrator.postgres.subscription_health import SubscriptionWatch
from migrator.testhooks import hold

__all__ = ["STEPS", "STEP_NAMES", "MoveContext", "MoveFacts", "Reporter", "Step", "describe_failure"]

INITIAL_COPY_TIMEOUT = 24 * 3600


# --------------------------------------------------------------------------- the facts


@dataclass(frozen=True)
class MoveFacts:
    """What the steps' statements are built from, one value wherever it is read: `plan`
    reads it from its snapshot of the servers, a running move from its checkpoint and
    the servers (migrator.move.facts_from_checkpoint). Each step's `describe` turns it
    into the statements that run, so what `plan` shows is what runs."""

    schema: GroupSchema | None                   # the schema step's DDL (None: cannot be built)
    secondary_indexes: tuple[DeferredIndex, ...]
    materialized_views: tuple[TableName, ...]
    partitioned: bool                            # publish via the partition root
    guarded: tuple[tuple[TableName, ...], tuple[TableName, ...]]   # (relations, indexes)
    ddl_guard: dict[str, bool]                   # per side: may the role make event triggers
    cutover: CutoverFacts
    notes: dict[str, list[str]] = field(default_factory=dict)


def describe_schema(playbook: Playbook, facts: MoveFacts) -> list[Statement]:
    return schema_statements(facts.schema, playbook) if facts.schema is not None else []


def describe_defer(playbook: Playbook, facts: MoveFacts) -> list[Statement]:
    return defer_statements(playbook, list(facts.secondary_indexes))


def describe_replicate(playbook: Playbook, facts: MoveFacts) -> list[Statement]:
    relations, indexes = facts.guarded
    return [*Guards(playbook).install(list(relations), list(indexes), ddl_guard=facts.ddl_guard),
            *replicate_statements(playbook, via_root=facts.partitioned,
                                  target_version=facts.cutover.target_version,
                                  source_version=facts.cutover.source_version)]


def describe_rebuild(playbook: Playbook, facts: MoveFacts) -> list[Statement]:
    return rebuild_statements(playbook, list(facts.secondary_indexes), list(facts.materialized_views))


def describe_prepare_reverse(playbook: Playbook, facts: MoveFacts) -> list[Statement]:
    return prepare_reverse_statements(playbook, via_root=facts.partitioned)


def describe_cutover(playbook: Playbook, facts: MoveFacts) -> list[Statement]:
    return cutover_sequence(playbook, Direction.forward(playbook), facts.cutover).render()


def facts_of(ctx: MoveContext, src: psycopg.Connection | None = None,
             dst: psycopg.Connection | None = None) -> MoveFacts:
    """The facts as a running move has them: its checkpoint, and with connections to
    both sides what the guards protect there now."""
    schema = ctx.data("schema")
    relations, indexes = guarded_objects(src, ctx.tables) if src is not None else ([], [])
    ddl_guard = ({"source": can_make_event_triggers(src), "target": can_make_event_triggers(dst)}
                 if src is not None and dst is not None else {})
    return MoveFacts(
        schema=None, secondary_indexes=tuple(schema.secondary_indexes),
        materialized_views=tuple(schema.materialized_views), partitioned=schema.partitioned,
        guarded=(tuple(relations), tuple(indexes)), ddl_guard=ddl_guard, cutover=cutover_facts(ctx))


# --------------------------------------------------------------------------- preflight


def preflight_do(ctx: MoveContext) -> str:
    """The plan's checks again (`ctx.checks`: the caller gives them, so the move does
    not depend on the planner), and the facts later steps need recorded."""
    if ctx.checks is None:
        raise OperationFailed("preflight: no checks were given to run")
    findings = ctx.checks(ctx.playbook)
    blocking = [f for f in findings if f.level == "block"]
    # The findings as execute saw them, for `migrator report` (plan's may be days older).
    ctx.store.record_sample(ctx.playbook.name, SampleKind.FINDINGS,
                            {"findings": [f.to_dict() for f in findings]}, step="preflight")
    if blocking:
        first = blocking[0]
        more = f" (and {len(blocking) - 1} more: run `migrator plan`)" if len(blocking) > 1 else ""
        raise PlanBlocked(f"preflight: {first.message}{more}", hint=first.hint)
    recorded = ctx.data("preflight")
    if not recorded.original_entries:
        ctx.save("preflight", original_entries=original_entries(ctx.playbook))
    if not (recorded.source_version and recorded.target_version):
        with ctx.source("preflight") as src, ctx.target("preflight") as dst:
            ctx.save("preflight", source_version=src.info.server_version, target_version=dst.info.server_version)
    warnings = sum(1 for f in findings if f.level == "warn")
    return f"{len(findings)} checks, {warnings} warning{'' if warnings == 1 else 's'}, nothing blocking"


def nothing(ctx: MoveContext) -> None:
    return None


# --------------------------------------------------------------------------- schema


def read_schema(src: psycopg.Connection, dst: psycopg.Connection, playbook: Playbook) -> GroupSchema:
    """The catalog model's reading of the source, and what the target has of it."""
    with src.transaction():
        group = read_group(src, playbook.tables, include=playbook.objects.include,
                           exclude=playbook.objects.exclude, schemas=playbook.schema_names)
    return group_schema(group, existing_objects(dst, group), playbook.app_roles)


def schema_statements(schema: GroupSchema, playbook: Playbook) -> list[Statement]:
    """What the schema step runs, in order: this move's marker table on both sides (a
    transaction on each), then the group's DDL on the target in that same transaction
    (so the shared objects' lock covers its `CREATE SCHEMA IF NOT EXISTS` too)."""
    marker = replication.marker_table_statements(playbook)
    # The tool's schema on each side: CREATE on the database (checked before IF NOT EXISTS).
    database = (may("CREATE", "DATABASE", "", "role.create_objects"),)
    ddl = [Statement("target", q) for q in schema.statements()]
    if ddl:
        ddl[0] = replace(ddl[0], needs=_schema_needs(schema))
    return ([Statement("source", q, needs=database if i == 0 else ()) for i, q in enumerate(marker)]
            + [Statement("target", q, needs=database if i == 0 else ()) for i, q in enumerate(marker)] + ddl)


def _schema_needs(schema: GroupSchema) -> tuple[Privilege, ...]:
    """What the group's DDL needs on the target: CREATE on the database for a schema it
    makes, CREATE on each schema the target has already that it puts objects in, and the
    privileges of each role it hands an object to (ALTER ... OWNER TO)."""
    made = {s.name for s in schema.schemas}
    used = ({t.schema for t in schema.types} | {q.name.schema for q in schema.sequences}
            | {r.name.schema for r in schema.routines} | {t.name.schema for t in schema.tables}
            | {v.name.schema for v in schema.views})
    needs = [may("CREATE", "DATABASE", "", "role.create_objects")] if made else []
    needs += [may("CREATE", "SCHEMA", name, "role.create_in_schema") for name in sorted(used - made)]
    # ALTER ... OWNER TO r: the tool must have r's privileges, and r CREATE on the object's
    # schema (for a schema: the tool CREATE on the database), as PostgreSQL checks them.
    handed = schema.new_owners()
    for role in sorted({r for _, r in handed}):
        needs.append(member_of(role, "role.set_owner"))
        needs += [may("CREATE", "SCHEMA", s, "role.set_owner", role=role)
                  for s in sorted({s for s, r in handed if r == role and s is not None})]
    if any(s is None for s, _ in handed):
        needs.append(may("CREATE", "DATABASE", "", "role.set_owner"))
    return tuple(dict.fromkeys(needs))


def schema_do(ctx: MoveContext) -> str:
    with ctx.source("schema") as src, ctx.target("schema") as dst:
        if ctx.data("schema").intent and _all_tables_exist(dst, ctx.tables):
            return "already on the target"  # the DDL transaction committed before a crash
        schema = read_schema(src, dst, ctx.playbook)
        if any(t in ctx.tables for t in schema.existing.tables):
            raise OperationFailed(
                "some group tables already exist on the target and were not made by this move",
                hint="drop them on the target, or remove them from the playbook")
        # What this move creates, recorded before creating it: undo drops exactly this.
        ctx.save(
            "schema",
            intent=True,
            created_schemas=[s.name for s in schema.schemas],
            created_types=[(t.schema, t.name, t.kind) for t in schema.types],
            created_functions=[(r.name.schema, r.name.name, r.arguments, r.kind) for r in schema.routines],
            created_views=[(v.name.schema, v.name.name, v.materialized) for v in schema.views],
            created_sequences=[(q.name.schema, q.name.name) for q in schema.sequences if not q.identity],
            app_privileges=[tuple(p.to_list()) for p in schema.app_privileges],
            sequences=[(n.schema, n.name) for n in schema.sequence_names],
            indexes=[i.to_dict() for i in schema.secondary_indexes],
            partitioned=schema.group.partitioned,
        )
        statements = describe_schema(ctx.playbook, replace(facts_of(ctx), schema=schema))
        ctx.run(src, [q for q in statements if q.on == "source"], "schema", "on the source", transaction=True)
        ctx.run(dst, [q for q in statements if q.on == "target"], "schema", "created on the target",
                transaction=True)
    return f"{len(ctx.tables)} tables, {len(statements)} statements"


_DROP_ROUTINE = {"procedure": "PROCEDURE", "aggregate": "AGGREGATE"}


def schema_undo_statements(ctx: MoveContext) -> UndoPlan:
    data = ctx.data("schema")
    if ctx.keep_target:
        return UndoPlan([], ["--keep-target: the target's tables stay (no longer this move's)"])
    # Views first, each before the views it reads.
    out = [Statement("target", sql.SQL("DROP {}VIEW IF EXISTS {}").format(
                sql.SQL("MATERIALIZED " if materialized else ""), sql.Identifier(schema, name)))
            for schema, name, materialized in reversed(data.created_views)]
    out += [Statement("target", sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(t.identifier))
            for t in reversed(ctx.tables)]
    out += [Statement("target", sql.SQL("DROP SEQUENCE IF EXISTS {}").format(sql.Identifier(*q)))
            for q in data.created_sequences]
    out += [Statement("target", sql.SQL("DROP {} IF EXISTS {}({})").format(
                sql.SQL(_DROP_ROUTINE.get(kind, "FUNCTION")), sql.Identifier(schema, name), sql.SQL(arguments)))
            for schema, name, arguments, kind in reversed(data.created_functions)]
    # Made dependencies first, so dropped in reverse: a composite before the enum it holds.
    out += [Statement("target", sql.SQL("DROP {} IF EXISTS {}").format(
                sql.SQL("DOMAIN" if kind == "domain" else "TYPE"), sql.Identifier(schema, name)))
            for schema, name, kind in reversed(data.created_types)]
    out += [Statement("target", sql.SQL("DROP SCHEMA IF EXISTS {}").format(sql.Identifier(schema)),
                      "only if nothing else was put there since")
            for schema in data.created_schemas]
    return UndoPlan(out, [f"and this move's sync marker table {'.'.join(names.sync_marker(ctx.playbook))} on both "
                          "sides (the schema too, once nothing else is in it)"])


def schema_undo(ctx: MoveContext) -> str:
    plan = schema_undo_statements(ctx)
    with ctx.target("schema-undo") as dst:
        with dst.transaction():
            for statement in plan.statements:
                if statement.note:
                    # Nothing else in it? DROP SCHEMA refuses a schema that is not empty.
                    try:
                        with dst.transaction():
                            dst.execute(statement.sql)
                    except psycopg.errors.DependentObjectsStillExist:
                        ctx.log("schema", f"kept {statement.text}: other objects are in it")
                        continue
                else:
                    dst.execute(statement.sql)
                ctx.log("schema", "dropped on the target", statement.text)
        replication.drop_marker_table(dst, ctx.playbook)
    with ctx.source("schema-undo") as src:
        replication.drop_marker_table(src, ctx.playbook)
    # Whatever stays on the target (--keep-target) is no longer this move's: a new run
    # must not take it for its own half-finished work.
    ctx.save("schema", intent=False)
    return "kept the target's tables" if ctx.keep_target else "dropped the group on the target"


def _all_tables_exist(conn: psycopg.Connection, tables: list[TableName]) -> bool:
    row = conn.execute("SELECT bool_and(pg_catalog.to_regclass(t) IS NOT NULL) FROM unnest(%s::text[]) t",
                       ([t.qualified for t in tables],)).fetchone()
    return bool(row and row[0])


# --------------------------------------------------------------------------- indexes


def defer_statements(playbook: Playbook, indexes: list[DeferredIndex]) -> list[Statement]:
    """DROP of each secondary index (not the primary key, not the replica identity, no
    constraint depending on it: the catalog model's `IndexFacts.secondary`)."""
    if not playbook.indexes.defer:
        return []
    return [Statement("target", i.drop()) for i in indexes]


def defer_do(ctx: MoveContext) -> str:
    if not ctx.playbook.indexes.defer:
        ctx.save("defer-indexes", dropped=[])
        return "indexes.defer is off: nothing deferred"
    facts = facts_of(ctx)
    secondary = list(facts.secondary_indexes)
    # Recorded before the first DROP: a crash in between still knows what to rebuild.
    ctx.save("defer-indexes", dropped=[i.to_dict() for i in secondary])
    with ctx.target("defer-indexes") as dst:
        ctx.run(dst, describe_defer(ctx.playbook, facts), "defer-indexes", "dropped for the bulk copy")
    return f"dropped {len(secondary)} secondary indexes"


def _skipped_with_tables(ctx: MoveContext) -> UndoPlan | None:
    if ctx.tables_will_be_dropped:
        return UndoPlan([], ["skipped: the tables go with the schema step"])
    return None


def defer_undo_statements(ctx: MoveContext) -> UndoPlan:
    return _skipped_with_tables(ctx) or UndoPlan(
        [Statement("target", q) for i in _dropped(ctx) for q in i.build()], ["up to 4 at a time"])


def defer_undo(ctx: MoveContext) -> str | None:
    if ctx.tables_will_be_dropped:
        return "skipped: the tables go with the schema step"
    dropped = _dropped(ctx)
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


def _build_index(ctx: MoveContext, step: str, index: DeferredIndex) -> None:
    with ctx.target(_index_builder(ctx)) as conn:
        conn.execute("SET maintenance_work_mem = '256MB'")
        ctx.run(conn, [Statement("target", q) for q in index.build()], step, f"built {index.name}")


def _build_indexes(ctx: MoveContext, step: str, indexes: list[DeferredIndex]) -> None:
    """CREATE INDEX in parallel, one connection each: the builds are CPU bound. An index
    built already (as its table's copy finished, or before a crash) is not built again,
    so the event log holds each build once."""
    if not indexes:
        return
    _stop_orphaned_builds(ctx, step)
    with ctx.target(step) as conn:
        built = _built(conn, indexes)
    indexes = [i for i in indexes if i.identity not in built]
    done = 0
    workers = max(2, min(len(indexes), 4))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_build_index, ctx, step, i) for i in indexes]
        for future in concurrent.futures.as_completed(futures):
            future.result()
            done += 1
            ctx.reporter.progress(step, done, len(indexes), "indexes")


def _built(conn: psycopg.Connection, indexes: list[DeferredIndex]) -> set[TableName]:
    """Those of the indexes that exist and are valid (a partitioned index is valid once
    every partition's index is attached to it)."""
    rows = conn.execute(
        "SELECT s, n FROM unnest(%s::text[], %s::text[]) u(s, n) JOIN pg_catalog.pg_index x "
        "ON x.indexrelid = pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', s, n)) WHERE x.indisvalid",
        ([i.identity.schema for i in indexes], [i.identity.name for i in indexes])).fetchall()
    return {TableName(schema, name) for schema, name in rows}


class EarlyIndexBuilds:
    """Deferred indexes of a table built as soon as its initial copy is done, while
    the bigger tables are still copying: the copy of the largest table sets the pace,
    and the others' builds hide under it. rebuild-indexes still makes sure of all."""

    def __init__(self, ctx: MoveContext) -> None:
        self.ctx = ctx
        self.pending: dict[TableName, list[DeferredIndex]] = {}
        for index in _dropped(ctx):
            self.pending.setdefault(index.copied_with or index.table, []).append(index)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=2) if self.pending else None
        self.futures: list[concurrent.futures.Future] = []
        if self.pool is not None:
            _stop_orphaned_builds(ctx, "replicate")

    def table_copied(self, table: TableName) -> None:
        for index in self.pending.pop(table, []):
            self.futures.append(self.pool.submit(_build_index, self.ctx, "rebuild-indexes", index))

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


def rebuild_statements(playbook: Playbook, indexes: list[DeferredIndex],
                       materialized_views: list[TableName]) -> list[Statement]:
    """The recorded definitions (and comments), ANALYZE of each table, and the contents
    of the materialized views that moved, computed on the target from the copied rows."""
    builds = [Statement("target", q) for i in indexes for q in i.build()] if playbook.indexes.defer else []
    return builds + _analyze_statements(playbook) + _refresh_statements(materialized_views)


def _analyze_statements(playbook: Playbook) -> list[Statement]:
    return [Statement("target", sql.SQL("ANALYZE {}").format(t.identifier)) for t in playbook.tables]


def _refresh_statements(materialized_views: list[TableName]) -> list[Statement]:
    return [Statement("target", sql.SQL("REFRESH MATERIALIZED VIEW {}").format(v.identifier))
            for v in materialized_views]


def _dropped(ctx: MoveContext) -> list[DeferredIndex]:
    """The indexes the defer-indexes step recorded and dropped: what is rebuilt."""
    return ctx.data("defer-indexes").indexes


def rebuild_do(ctx: MoveContext) -> str:
    dropped = _dropped(ctx)
    started = time.monotonic()
    _build_indexes(ctx, "rebuild-indexes", dropped)
    built = time.monotonic() - started
    _analyze(ctx)
    refresh = _refresh_statements(ctx.data("schema").materialized_views)
    if refresh:
        with ctx.target("refresh") as conn:
            ctx.run(conn, refresh, "rebuild-indexes", "computed on the target")
    with ctx.source("lag") as src, ctx.target("lag") as dst:
        hold("rebuild-indexes", "lag")
        _wait_for_lag(ctx, src, dst, "rebuild-indexes")
    views = f", refreshed {len(refresh)} materialized view{'' if len(refresh) == 1 else 's'}" if refresh else ""
    return f"rebuilt {len(dropped)} indexes in {built:.1f}s, analyzed the group{views}; lag under max_lag"


def _analyze(ctx: MoveContext) -> None:
    """Statistics before the target serves traffic: the copy leaves it with none, and
    until autovacuum gets there every query on the group is planned blind."""
    def analyze(statement: Statement) -> float:
        with ctx.target("analyze") as conn:
            started = time.monotonic()
            conn.execute(statement.sql)
            return time.monotonic() - started

    statements = _analyze_statements(ctx.playbook)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(analyze, q) for q in statements]
        # Two at a time, recorded in the order shown.
        for statement, future in zip(statements, futures, strict=True):
            ctx.log("rebuild-indexes", "analyzed", statement.sql, seconds=future.result())


def rebuild_undo_statements(ctx: MoveContext) -> UndoPlan:
    return _skipped_with_tables(ctx) or UndoPlan([Statement("target", i.drop()) for i in _dropped(ctx)])


def rebuild_undo(ctx: MoveContext) -> str | None:
    plan = rebuild_undo_statements(ctx)
    if not plan.statements:
        return plan.notes[0] if plan.notes else "nothing to drop"
    with ctx.target("rebuild-undo") as dst:
        ctx.run(dst, plan.statements, "rebuild-indexes", "dropped")
    return f"dropped {len(plan.statements)} rebuilt indexes again"


class WaitNotes:
    """A long wait says what it waits for: a note when that changes, from `after`
    seconds on and at most every `every` seconds (and the same words once a minute)."""

    def __init__(self, ctx: MoveContext, step: str, *, after: float = 10.0, every: float = 10.0) -> None:
        self.ctx, self.step, self.after, self.every = ctx, step, after, every
        self.started = self.last_at = time.monotonic()
        self.last_text: str | None = None

    def say(self, text: str) -> None:
        now = time.monotonic()
        if now - self.started < self.after or now - self.last_at < self.every:
            return
        if text == self.last_text and now - self.last_at < 60:
            return
        waited = f"{now - self.started:.0f}s"
        self.ctx.reporter.note(f"{self.step}: still waiting after {waited}: {text}")
        if text != self.last_text:
            self.ctx.log(self.step, f"waiting after {waited}: {text}")
        self.last_text, self.last_at = text, now


def _wait_for_lag(ctx: MoveContext, publisher: psycopg.Connection, subscriber: psycopg.Connection, step: str,
                  timeout: float = 3600) -> None:
    """Until the slot's lag is under max_lag with the apply worker running: a small lag
    behind an apply worker that fails on every attempt is no readiness."""
    slot, sub = names.slot(ctx.playbook), names.subscription(ctx.playbook)
    limit = ctx.playbook.cutover.max_lag
    deadline = time.monotonic() + timeout
    watch = SubscriptionWatch(subscriber, sub, side="target")
    notes = WaitNotes(ctx, step)
    last: list = []   # the latest health, for the words of a timeout

    def caught_up() -> bool | None:
        health = watch.check()
        last[:] = [health]
        lag = replication.slot_lag_bytes(publisher, slot)
        if lag is None:
            raise replication.slot_lost(slot, "source")
        if health.enabled is False:
            raise OperationFailed(f"subscription {sub} is disabled on the target: nothing is applied",
                                  hint=f"ALTER SUBSCRIPTION {sub} ENABLE on the target (or `migrator rollback`), "
                                  "then run `migrator execute` again")
        ctx.reporter.progress(step, max(0, limit - lag), limit, f"lag {format_size(lag)}")
        if lag <= limit and health.apply_pid:
            return True
        notes.say(f"lag {lag} bytes (max_lag {limit}); {watch.waiting_for(health)}")
        return None

    waiting.poll(caught_up, every=0.5, deadline=deadline, timed_out=lambda: OperationFailed(
        f"replication lag stayed above max_lag for {timeout:.0f}s ({watch.waiting_for(last[0])})"))


# --------------------------------------------------------------------------- replicate


def replicate_statements(playbook: Playbook, *, via_root: bool = False, target_version: int = 0,
                         source_version: int = 0) -> list[Statement]:
    """The publication of the group on the source, the subscription on the target (which
    makes the slot, a failover slot on a 17+ source, and starts the initial copy)."""
    pub, sub = names.publication(playbook), names.subscription(playbook)
    return [
        Statement("source", replication.publication_statement(pub, list(playbook.tables), playbook,
                                                              via_root=via_root),
                  needs=_publication_needs(playbook)),
        Statement("target", replication.subscription_statement(
            sub, playbook.source.dsn, pub, names.slot(playbook), copy_data=True,
            run_as_owner=replication.runs_as_owner(target_version),
            failover=replication.slot_failover(source_version)),
            needs=subscription_needs(target_version, publisher="source")),
    ]


def _publication_needs(playbook: Playbook) -> tuple[Privilege, ...]:
    """A publication FOR TABLE: CREATE on the database, and the tables' owner's privileges."""
    return (may("CREATE", "DATABASE", "", "role.create_objects"),
            *(owns("TABLE", t.qualified, "role.table_owner") for t in playbook.tables))


def replicate_do(ctx: MoveContext) -> str:
    pub, sub, slot = names.publication(ctx.playbook), names.subscription(ctx.playbook), names.slot(ctx.playbook)
    with ctx.source("replicate") as src, ctx.target("replicate") as dst:
        facts = facts_of(ctx, src, dst)
        *guarding, publication, subscription = describe_replicate(ctx.playbook, facts)
        Guards(ctx.playbook).run(guarding, {"source": src, "target": dst}, ddl_guard=facts.ddl_guard,
                                 log=lambda message, q=None: ctx.log("replicate", message, q),
                                 note=ctx.reporter.note, hold=lambda point: hold("replicate", point))
        if not replication.publication_exists(src, pub):
            ctx.run(src, [publication], "replicate", "publication on the source")
        if replication.subscription(dst, sub) is None:
            # A crash between the slot's creation and the subscription's commit leaves the
            # slot behind with no subscriber: drop it and start over.
            replication.drop_slot(src, slot)
            ctx.run(dst, [subscription], "replicate", "subscription on the target")
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
        ctx.reporter.progress("replicate", total, total, "bytes",
                              tables={t.qualified: [v, v] for t, v in sizes.items()})
    early_note = f"; {built} deferred indexes built as their tables finished" if built else ""
    return f"{len(ctx.tables)} tables copied and streaming ({format_size(total)}){early_note}"


def _wait_for_copy(ctx: MoveContext, dst: psycopg.Connection, sub: str, sizes: dict[TableName, int],
                   total: int, deadline: float, early: EarlyIndexBuilds) -> None:
    """Until every table is `r`eady: progress in bytes, early index builds per table."""
    marker = TableName(*names.sync_marker(ctx.playbook))
    watch = SubscriptionWatch(dst, sub, side="target")
    notes = WaitNotes(ctx, "replicate")

    def copied_all() -> bool | None:
        health = watch.check()
        states = replication.sync_states(dst, sub)
        group_states = {t: states.get(t, "?") for t in ctx.tables}
        for table, state in group_states.items():
            if state in ("s", "r"):
                early.table_copied(table)
        if group_states and all(s == "r" for s in group_states.values()) and states.get(marker) == "r":
            return True
        copying = [t for t, s in group_states.items() if s in ("d", "i", "?")]
        per_table = {t.qualified: [v, v] for t, v in sizes.items() if t not in copying}
        if copying:
            target_sizes = replication.relation_bytes(dst, copying)
            per_table.update({t.qualified: [min(target_sizes.get(t, 0), sizes.get(t, 0)), sizes.get(t, 0)]
                              for t in copying})
        copied = sum(done for done, _ in per_table.values())
        ctx.reporter.progress("replicate", copied, total, "bytes", tables=per_table)
        not_ready = [t.qualified for t, st in group_states.items() if st != "r"]
        notes.say(f"{format_size(copied)} of {format_size(total)}; {len(not_ready)} tables not ready; "
                  f"{watch.waiting_for(health, not_ready)}")
        return None

    waiting.poll(copied_all, every=0.25, deadline=deadline,
                 timed_out=lambda: OperationFailed("the initial copy did not finish in time"))


def replicate_undo_statements(ctx: MoveContext) -> UndoPlan:
    pub, sub, slot = names.publication(ctx.playbook), names.subscription(ctx.playbook), names.slot(ctx.playbook)
    return UndoPlan(
        [Statement("target", replication.drop_subscription_statement(sub), "drops its slot on the source too"),
         Statement("source", replication.drop_publication_statement(pub)),
         *Guards(ctx.playbook).remove()],
        [f"and the slot {slot} if the subscription could not drop it (the source was down), "
         "and table-sync slots orphaned that way"])


def replicate_undo(ctx: MoveContext) -> str:
    pub, sub, slot = names.publication(ctx.playbook), names.subscription(ctx.playbook), names.slot(ctx.playbook)
    drop_subscription, drop_publication = replicate_undo_statements(ctx).statements[:2]
    guards = Guards(ctx.playbook)
    with ctx.target("replicate-undo") as dst:
        try:
            src = ctx.source("replicate-undo")
        except OperationFailed:
            src = None
        try:
            if replication.subscription(dst, sub) is not None:
                replication.drop_subscription(dst, sub, src)
                ctx.log("replicate", f"dropped subscription {sub}", drop_subscription.text)
            if src is not None:
                replication.drop_slot(src, slot)
                for orphan in replication.drop_orphaned_tablesync_slots(src, dst):
                    ctx.log("replicate", f"dropped table-sync slot {orphan}, orphaned by a subscription "
                            "dropped while the source was down")
                ctx.run(src, [drop_publication], "replicate", f"dropped publication {pub}")
                guards.run_remove(src, Side.SOURCE, lambda message, q: ctx.log("replicate", message, q))
                hold("replicate", "undo-unguarded-source")
            guards.run_remove(dst, Side.TARGET, lambda message, q: ctx.log("replicate", message, q))
        finally:
            if src is not None:
                src.close()
    if src is None:
        raise OperationFailed(f"the source is unreachable: its slot {slot} and publication {pub} remain",
                              hint="run `migrator rollback` again once the source is back")
    return "replication removed"


# --------------------------------------------------------------------------- prepare-reverse


def prepare_reverse_statements(playbook: Playbook, *, via_root: bool = False) -> list[Statement]:
    pub = names.reverse_publication(playbook)
    return [Statement("target", replication.publication_statement(pub, list(playbook.tables), playbook,
                                                                  via_root=via_root), needs=_publication_needs(playbook))]


def prepare_reverse_do(ctx: MoveContext) -> str:
    pub = names.reverse_publication(ctx.playbook)
    with ctx.target("prepare-reverse") as dst:
        if not replication.publication_exists(dst, pub):
            ctx.run(dst, describe_prepare_reverse(ctx.playbook, facts_of(ctx)), "prepare-reverse",
                    "reverse publication on the target")
    return f"publication {pub} ready on the target"


def prepare_reverse_undo_statements(ctx: MoveContext) -> UndoPlan:
    return UndoPlan([Statement("target", replication.drop_publication_statement(
        names.reverse_publication(ctx.playbook)))])


def prepare_reverse_undo(ctx: MoveContext) -> str:
    with ctx.target("prepare-reverse-undo") as dst:
        ctx.run(dst, prepare_reverse_undo_statements(ctx).statements, "prepare-reverse", "dropped")
    return f"dropped publication {names.reverse_publication(ctx.playbook)}"


def nothing_to_undo(ctx: MoveContext) -> UndoPlan:
    return UndoPlan([])


STEPS: tuple[Step, ...] = (
    Step("preflight", "re-check the plan's findings", preflight_do, nothing, nothing_to_undo, lambda p, f: []),
    Step("schema", "create the group's schema on the target", schema_do, schema_undo, schema_undo_statements,
         describe_schema),
    Step("defer-indexes", "drop secondary indexes on the target for the bulk copy", defer_do, defer_undo,
         defer_undo_statements, describe_defer),
    Step("replicate", "publish, subscribe and copy the group", replicate_do, replicate_undo,
         replicate_undo_statements, describe_replicate),
    Step("rebuild-indexes", "rebuild the deferred indexes; wait for lag under max_lag", rebuild_do, rebuild_undo,
         rebuild_undo_statements, describe_rebuild),
    Step("prepare-reverse", "publish the group on the target for reverse replication",
         prepare_reverse_do, prepare_reverse_undo, prepare_reverse_undo_statements, describe_prepare_reverse),
    Step("cutover", "pause, sync, switch replication, reroute, resume", cutover_do, cutover_undo,
         cutover_undo_statements, describe_cutover),
)
STEP_NAMES: tuple[str, ...] = tuple(s.name for s in STEPS)


def describe_failure(exc: BaseException) -> str:
    """The user's one line for a step's failure; a driver error says on which side."""
    return exc.message if isinstance(exc, OperationFailed) else describe_error(exc)
