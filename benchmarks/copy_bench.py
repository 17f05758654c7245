"""How long until the target is ready for the cutover, with and without deferred indexes,
beside the floor (a plain parallel COPY pipe plus the same index builds).

    .venv/bin/python benchmarks/copy_bench.py [--scale N] [--repeat 2] [--runs defer,no-defer,floor]
                                              [--json-out PATH]

On-demand, not part of the pytest suite. It starts a durable source and target
(build_move_topology(durable=True), as `migrator sandbox` gives users), seeds the
demo schema on the source once (default scale 450: 251.6 MB, i.e. MiB, of table data
by pg_table_size), then on the same source measures, resetting the target between runs
(and repeating the runs --repeat times, every other cycle in reverse order):

  defer     `execute --until cutover` with indexes.defer on: preflight, schema,
            defer-indexes, replicate (tablesync copy), rebuild-indexes (split into the
            index builds and the lag gate), prepare-reverse
  no-defer  the same with indexes.defer off (the copy maintains every index)
  floor     what the hardware can do at best with the same shape: the group's tables
            (primary keys and constraints, no secondary indexes) created on the target,
            `COPY (SELECT ...) TO STDOUT` -> `COPY ... FROM STDIN` per table through
            psycopg between two connections, tables in parallel as the subscription's
            tablesync workers would be (max_sync_workers_per_subscription), with
            session_replication_role = replica like them, then the secondary indexes
            built in parallel as the tool builds them

Goals (issue 4): defer at least 1.8x faster than no-defer, and within 1.3x of the floor
(from the medians). Prints rich tables and writes benchmarks/results/copy_bench.json;
tears everything down. Exit code 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib  # noqa: E402

from migrator.lab.binaries import postgres_bindir  # noqa: E402
from migrator.lab.sandbox import (  # noqa: E402
    APP_DB,
    APP_ROLE,
    GROUP_TABLES,
    build_move_topology,
    create_demo_schema,
)
from migrator.lab.topology import LOGICAL_SETTINGS, remove_tree  # noqa: E402
from migrator.move.runner import execute, rollback  # noqa: E402
from migrator.plan.build import preflight_checks  # noqa: E402
from migrator.move.state import StateStore  # noqa: E402
from migrator.move.steps import Reporter  # noqa: E402
from migrator.playbook import TableName, load_playbook  # noqa: E402
from migrator.postgres.catalog import ExistingObjects, read_group  # noqa: E402
from migrator.postgres.ddl import group_schema  # noqa: E402

MIN_BYTES = 250 * 1024 * 1024
DEFAULT_SCALE = 450            # ~0.56 MiB of table data per unit: 251.6 MiB
SYNC_WORKERS = int(LOGICAL_SETTINGS["max_sync_workers_per_subscription"])
FLOOR_MAINTENANCE_WORK_MEM = "256MB"   # what migrator/steps.py sets for its builds
GOAL_DEFER_SPEEDUP = 1.8
GOAL_FLOOR_RATIO = 1.3

console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)


# --------------------------------------------------------------------------- measuring


def cpu_snapshot() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def cpu_busy(a: tuple[int, int], b: tuple[int, int]) -> float | None:
    total = b[1] - a[1]
    return round((b[0] - a[0]) / total, 2) if total > 0 else None


class PhaseReporter(Reporter):
    """Timestamps of every step, and where rebuild-indexes turns from builds to the lag gate."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.started: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self.cpu: dict[str, tuple] = {}
        self.summaries: dict[str, str | None] = {}
        self.index_done: list[float] = []
        self.lag_started: float | None = None

    def step_started(self, step: str, title: str) -> None:
        self.started[step] = time.monotonic()
        self.cpu[step] = (cpu_snapshot(),)

    def step_finished(self, step: str, seconds: float, summary: str | None) -> None:
        self.finished[step] = time.monotonic()
        self.cpu[step] = (self.cpu[step][0], cpu_snapshot())
        self.summaries[step] = summary
        console.print(f"  [{self.label}] {step:<16} {seconds:7.1f} s  {summary or ''}", markup=False)

    def progress(self, step: str, done: int, total: int, detail: str = "") -> None:
        if step != "rebuild-indexes":
            return
        if detail == "indexes":
            self.index_done.append(time.monotonic())
        elif detail.startswith("lag") and self.lag_started is None:
            self.lag_started = time.monotonic()


class SyncSampler(threading.Thread):
    """Polls the target's pg_subscription_rel / pg_stat_subscription: when each table's
    copy started and ended, and how many tablesync workers ran at once."""

    def __init__(self, dsn: str, interval: float = 0.2) -> None:
        super().__init__(daemon=True, name="sync-sampler")
        self.dsn = dsn
        self.interval = interval
        self.stop_event = threading.Event()
        self.first_seen: dict[str, dict[str, float]] = {}
        self.workers: list[tuple[float, int]] = []
        self.polls: list[float] = []

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop_event.is_set():
                now = time.monotonic()
                rows = conn.execute(
                    "SELECT n.nspname || '.' || c.relname, r.srsubstate FROM pg_subscription_rel r "
                    "JOIN pg_class c ON c.oid = r.srrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
                ).fetchall()
                for table, state in rows:
                    self.first_seen.setdefault(table, {}).setdefault(state, now)
                n = conn.execute("SELECT count(*) FROM pg_stat_subscription WHERE relid IS NOT NULL").fetchone()[0]
                if rows:
                    self.workers.append((now, n))
                self.polls.append(now)
                self.stop_event.wait(self.interval)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(5)

    def copy_times(self, since: float) -> dict[str, dict]:
        out = {}
        for table, states in self.first_seen.items():
            began = states.get("d", since)
            ended = min((states[s] for s in ("f", "s", "r") if s in states), default=None)
            out[table] = {
                "copy_started_s": round(began - since, 1),
                "copy_ended_s": round(ended - since, 1) if ended else None,
                "copy_s": round(ended - began, 1) if ended else None,
                "ready_s": round(states["r"] - since, 1) if "r" in states else None,
            }
        return out

    def concurrency(self) -> dict:
        busy = [n for _, n in self.workers if n > 0]
        gaps = [b - a for a, b in zip(self.polls, self.polls[1:])]
        return {"max_sync_workers": max(busy, default=0),
                "mean_sync_workers_while_copying": round(statistics.mean(busy), 2) if busy else 0,
                "sampler_polls": len(self.polls), "sampler_max_gap_s": round(max(gaps, default=0), 2)}


# --------------------------------------------------------------------------- the runs


def group_sizes(dsn: str) -> dict[str, dict]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT n.nspname || '.' || c.relname, pg_table_size(c.oid), pg_indexes_size(c.oid), c.reltuples "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname || '.' || c.relname = ANY(%s) AND c.relkind = 'r'",
            (list(GROUP_TABLES),),
        ).fetchall()
    return {t: {"table_bytes": int(tb), "index_bytes": int(ib), "rows": int(r)} for t, tb, ib, r in rows}


def column_stats(dsn: str) -> dict[str, int]:
    """Columns with planner statistics (pg_stats rows) per group table."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT schemaname || '.' || tablename, count(*) FROM pg_stats "
                            "WHERE schemaname || '.' || tablename = ANY(%s) GROUP BY 1", (list(GROUP_TABLES),)).fetchall()
    found = dict(rows)
    return {t: int(found.get(t, 0)) for t in GROUP_TABLES}


def cluster_cpu(move) -> dict[str, float]:
    return {"source": benchlib.cluster_cpu_seconds(move.source), "target": benchlib.cluster_cpu_seconds(move.target)}


def checkpoint(*dsns: str) -> None:
    for dsn in dsns:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CHECKPOINT")


def target_is_clean(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return all(conn.execute("SELECT to_regclass(%s)", (t,)).fetchone()[0] is None for t in GROUP_TABLES)


def run_tool(move, root: Path, *, defer: bool, label: str) -> dict:
    doc = move.playbook_doc(name="copy-bench")
    doc["indexes"]["defer"] = defer
    playbook = load_playbook(move.write_playbook(root / f"playbook-{label}.yaml", doc))
    store = StateStore(f"sqlite:///{root / f'state-{label}.db'}")
    reporter = PhaseReporter(label)
    sampler = SyncSampler(move.target.dsn(APP_DB))
    load_at_start = benchlib.other_activity()["loadavg"]
    rusage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = cluster_cpu(move)
    sampler.start()
    started = time.monotonic()
    try:
        result = execute(playbook, store, checks=preflight_checks, until="cutover", reporter=reporter)
        total = time.monotonic() - started
    finally:
        sampler.stop()
    client_cpu = resource.getrusage(resource.RUSAGE_SELF)
    cpu_after = cluster_cpu(move)
    sizes_after = group_sizes(move.target.dsn(APP_DB))
    stats_before = column_stats(move.target.dsn(APP_DB))
    # Not part of the total: what an ANALYZE of the group would add (the copy leaves the
    # target without column statistics until autovacuum gets to it).
    analyze_started = time.monotonic()
    with psycopg.connect(move.target.dsn(APP_DB), autocommit=True) as conn:
        for t in GROUP_TABLES:
            conn.execute(sql.SQL("ANALYZE {}").format(TableName.parse(t).identifier))
    analyze_s = time.monotonic() - analyze_started
    phases = {step: round(seconds, 2) for step, seconds, _ in result.ran}
    rb_start, rb_end = reporter.started.get("rebuild-indexes"), reporter.finished.get("rebuild-indexes")
    lag_at = reporter.lag_started or rb_end
    index_build = round(lag_at - rb_start, 2) if rb_start and lag_at else None
    lag_gate = round(rb_end - lag_at, 2) if rb_end and lag_at else None
    rep_start = reporter.started.get("replicate")
    run = {
        "kind": label,
        "total_s": round(total, 2),
        "phases_s": phases,
        "index_build_s": index_build,
        "lag_gate_s": lag_gate,
        "index_completions_s": [round(t - rb_start, 2) for t in reporter.index_done] if rb_start else [],
        "copy_per_table": sampler.copy_times(rep_start) if rep_start else {},
        "first_copy_started_s": min((c["copy_started_s"] for c in sampler.copy_times(rep_start).values()),
                                    default=None) if rep_start else None,
        "tablesync": sampler.concurrency(),
        "cpu_busy": {s: cpu_busy(*c) for s, c in reporter.cpu.items() if len(c) == 2},
        "client_cpu_s": round(client_cpu.ru_utime + client_cpu.ru_stime - rusage.ru_utime - rusage.ru_stime, 1),
        "cluster_cpu_s": {side: round(cpu_after[side] - cpu_before[side], 1) for side in cpu_before},
        "target_after": sizes_after,
        "column_stats_when_ready": stats_before,
        "analyze_after_s": round(analyze_s, 2),
        "loadavg_at_start": load_at_start,
        "summaries": reporter.summaries,
    }
    console.print(f"  [{label}] ready for cutover after {total:.1f} s; resetting the target (rollback)")
    rollback(playbook, store)
    store.close()
    if not target_is_clean(move.target.dsn(APP_DB)):
        raise SystemExit(f"{label}: the group is still on the target after the rollback")
    # The dropped subscription's workers exiting woke the target's logical replication
    # launcher, which then starts no worker for wal_retrieve_retry_interval: a run
    # right after this one would wait that long for its apply worker. Let it pass.
    with psycopg.connect(move.target.dsn(APP_DB)) as conn:
        retry_ms = conn.execute("SELECT setting::int FROM pg_settings WHERE name = 'wal_retrieve_retry_interval'"
                                ).fetchone()[0]
    time.sleep(retry_ms / 1000 + 1)
    return run


def _copy_table(src_dsn: str, dst_dsn: str, table: TableName, columns: list[str]) -> dict:
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    started = time.monotonic()
    moved = 0
    with psycopg.connect(src_dsn) as src, psycopg.connect(dst_dsn) as dst:
        # What a tablesync worker does: one transaction per table, triggers of origin
        # (foreign keys) off, the table's rows streamed in text format.
        dst.execute("SET session_replication_role = replica")
        with src.cursor().copy(sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(cols, table.identifier)) as out, \
                dst.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(table.identifier, cols)) as into:
            for chunk in out:
                into.write(chunk)
                moved += len(chunk)
        dst.commit()
    return {"copy_s": round(time.monotonic() - started, 2), "bytes_streamed": moved}


def _copy_table_psql(src_dsn: str, dst_dsn: str, table: TableName, columns: list[str]) -> dict:
    """The same pipe through two psql processes: no Python in the data path."""
    psql = str(postgres_bindir() / "psql")
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    with psycopg.connect(src_dsn) as conn:
        copy_out = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(cols, table.identifier).as_string(conn)
        copy_in = sql.SQL("COPY {} ({}) FROM STDIN").format(table.identifier, cols).as_string(conn)
    started = time.monotonic()
    out = subprocess.Popen([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", src_dsn, "-c", copy_out],
                           stdout=subprocess.PIPE)
    into = subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dst_dsn,
                           "-c", "SET session_replication_role = replica", "-c", copy_in],
                          stdin=out.stdout, capture_output=True, text=True)
    out.stdout.close()
    if out.wait() != 0 or into.returncode != 0:
        raise SystemExit(f"psql pipe of {table.qualified} failed: {into.stderr.strip()}")
    return {"copy_s": round(time.monotonic() - started, 2)}


def _build_index(dst_dsn: str, definition: str) -> float:
    started = time.monotonic()
    with psycopg.connect(dst_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(FLOOR_MAINTENANCE_WORK_MEM)))
        conn.execute(definition)  # type: ignore[arg-type]
    return round(time.monotonic() - started, 2)


def run_floor(move, *, label: str = "floor", pk_only: bool = False, pipe: str = "psycopg") -> dict:
    """The floor; with pk_only, unique constraints other than the primary key are also
    dropped for the copy and added back with the index builds (what the tool could do);
    with pipe='psql' the rows go through two psql processes instead of psycopg."""
    src_dsn, dst_dsn = move.source.dsn(APP_DB), move.target.dsn(APP_DB)
    tables = [TableName.parse(t) for t in GROUP_TABLES]
    load_at_start = benchlib.other_activity()["loadavg"]
    cpu_before = cluster_cpu(move)
    started = time.monotonic()
    rusage = resource.getrusage(resource.RUSAGE_SELF)
    with psycopg.connect(src_dsn) as src:
        group = group_schema(read_group(src, tables), ExistingObjects(), [APP_ROLE])
        columns = {}
        for t in tables:
            columns[t] = [r[0] for r in src.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
                "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum", (t.qualified,)).fetchall()]
    secondary = group.secondary_indexes
    with psycopg.connect(dst_dsn) as dst:
        with dst.transaction():
            # The tool's schema, minus the secondary indexes (dropped while still empty).
            for stmt in group.statements() + [i.drop() for i in secondary]:
                dst.execute(stmt)
        deferred = []
        if pk_only:
            for table, name, definition in dst.execute(
                    "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
                    "WHERE contype = 'u' AND conrelid = ANY(%s::regclass[])",
                    ([t.qualified for t in tables],)).fetchall():
                dst.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.SQL(table), sql.Identifier(name)))
                deferred.append((name, sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                    sql.SQL(table), sql.Identifier(name), sql.SQL(definition)).as_string(dst)))
            dst.commit()
    t_schema = time.monotonic()
    cpu1 = cpu_snapshot()
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(tables), SYNC_WORKERS)) as pool:
        copy = _copy_table_psql if pipe == "psql" else _copy_table
        futures = {t.qualified: pool.submit(copy, src_dsn, dst_dsn, t, columns[t]) for t in tables}
        per_table = {name: f.result() for name, f in futures.items()}
    t_copy = time.monotonic()
    cpu2 = cpu_snapshot()
    copy_rusage = resource.getrusage(resource.RUSAGE_SELF)
    builds = [(i.name, i.definition) for i in secondary] + deferred
    workers = max(2, min(len(builds), 4))   # as migrator/steps.py _build_indexes
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {name: pool.submit(_build_index, dst_dsn, statement) for name, statement in builds}
        per_index = {name: f.result() for name, f in futures.items()}
    t_index = time.monotonic()
    cpu3 = cpu_snapshot()
    cpu_after = cluster_cpu(move)
    total = t_index - started
    for phase, seconds in (("schema", t_schema - started), ("copy", t_copy - t_schema), ("indexes", t_index - t_copy)):
        console.print(f"  [{label}] {phase:<16} {seconds:7.1f} s", markup=False)
    sizes_after = group_sizes(dst_dsn)
    # Reset: drop exactly what this run created.
    with psycopg.connect(dst_dsn) as dst:
        with dst.transaction():
            for t in reversed(tables):
                dst.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(t.identifier))
            for s in group.sequences:
                if not s.identity:
                    dst.execute(sql.SQL("DROP SEQUENCE IF EXISTS {}").format(s.name.identifier))
            for t in group.types:
                dst.execute(sql.SQL("DROP {} IF EXISTS {}").format(
                    sql.SQL("DOMAIN" if t.kind == "domain" else "TYPE"), sql.Identifier(t.schema, t.name)))
    console.print(f"  [{label}] done after {total:.1f} s; target reset")
    return {
        "kind": label,
        "total_s": round(total, 2),
        "phases_s": {"schema": round(t_schema - started, 2), "copy": round(t_copy - t_schema, 2),
                     "indexes": round(t_index - t_copy, 2)},
        "copy_per_table": per_table,
        "copy_parallelism": min(len(tables), SYNC_WORKERS),
        "index_per_build_s": per_index,
        "index_workers": workers,
        "cpu_busy": {"copy": cpu_busy(cpu1, cpu2), "indexes": cpu_busy(cpu2, cpu3)},
        "cluster_cpu_s": {side: round(cpu_after[side] - cpu_before[side], 1) for side in cpu_before},
        "client_cpu_copy_s": round(copy_rusage.ru_utime + copy_rusage.ru_stime
                                   - rusage.ru_utime - rusage.ru_stime, 1),
        "target_after": sizes_after,
        "loadavg_at_start": load_at_start,
    }


# --------------------------------------------------------------------------- report

KINDS = ("defer", "no-defer", "floor", "floor-pk-only", "floor-psql")


def _label(run: dict, cycles: int) -> str:
    return run["kind"] + (f" #{run['cycle']}" if cycles > 1 else "")


def report(doc: dict) -> None:
    runs, cycles = doc["runs"], doc["repeat"]
    table = Table(title=f"copy_bench: time until ready for cutover (scale {doc['scale']}, "
                        f"{doc['data_mb']:.0f} MB of table data, durable clusters)", title_justify="left")
    table.add_column("run")
    for col in ("preflight", "schema", "defer-idx", "copy", "index build", "lag gate", "prep-reverse", "total"):
        table.add_column(col + " s", justify="right")
    table.add_column("loadavg at start", justify="right")
    for r in sorted(runs, key=lambda r: (KINDS.index(r["kind"]), r["cycle"])):
        p = r["phases_s"]
        if r["kind"].startswith("floor"):
            cells = ["-", benchlib.fmt_s(p["schema"]), "-", benchlib.fmt_s(p["copy"]), benchlib.fmt_s(p["indexes"]),
                     "-", "-"]
        else:
            cells = [benchlib.fmt_s(p.get(s)) for s in ("preflight", "schema", "defer-indexes", "replicate")] + [
                benchlib.fmt_s(r["index_build_s"]), benchlib.fmt_s(r["lag_gate_s"]),
                benchlib.fmt_s(p.get("prepare-reverse"))]
        table.add_row(_label(r, cycles), *cells, f"[bold]{r['total_s']:.1f}[/]", str(r["loadavg_at_start"][0]))
    if cycles > 1:
        for kind, median in doc["median_total_s"].items():
            table.add_row(f"[bold]{kind} median[/]", *[""] * 7, f"[bold]{median:.1f}[/]", "")
    table.caption = ("cluster CPU seconds (source + target), medians: " + ", ".join(
        f"{k} {v:.1f}" for k, v in doc["median_cluster_cpu_s"].items()))
    console.print(table)

    detail = Table(title="where the copy time goes (seconds after the copy phase began)", title_justify="left")
    detail.add_column("run")
    for t in GROUP_TABLES:
        detail.add_column(t.split(".")[1] + " copy s", justify="right")
    detail.add_column("first copy starts s", justify="right")
    detail.add_column("sync workers max/mean", justify="right")
    detail.add_column("cpu busy copy/index", justify="right")
    detail.add_column("bench client cpu s", justify="right")
    detail.add_column("cluster cpu s src/tgt", justify="right")
    for r in sorted(runs, key=lambda r: (KINDS.index(r["kind"]), r["cycle"])):
        floor = r["kind"].startswith("floor")
        cells = []
        for t in GROUP_TABLES:
            c = r["copy_per_table"].get(t, {})
            cells.append(benchlib.fmt_s(c.get("copy_s")) if floor
                         else f"{benchlib.fmt_s(c.get('copy_s'))} (ends {benchlib.fmt_s(c.get('copy_ended_s'))})")
        if floor:
            workers = f"{r['copy_parallelism']} pipes"
            busy = f"{r['cpu_busy']['copy']}/{r['cpu_busy']['indexes']}"
            client = benchlib.fmt_s(r["client_cpu_copy_s"])
        else:
            workers = f"{r['tablesync']['max_sync_workers']}/{r['tablesync']['mean_sync_workers_while_copying']}"
            busy = f"{r['cpu_busy'].get('replicate')}/{r['cpu_busy'].get('rebuild-indexes')}"
            client = benchlib.fmt_s(r["client_cpu_s"])
        start = "0.0" if floor else benchlib.fmt_s(r.get("first_copy_started_s"))
        cluster = f"{r['cluster_cpu_s']['source']:.1f}/{r['cluster_cpu_s']['target']:.1f}"
        detail.add_row(_label(r, cycles), *cells, start, workers, busy, client, cluster)
    console.print(detail)

    idx = Table(title="secondary index builds", title_justify="left")
    idx.add_column("run")
    idx.add_column("builds (s)")
    for r in sorted(runs, key=lambda r: (KINDS.index(r["kind"]), r["cycle"])):
        if r["kind"] == "defer":
            idx.add_row(_label(r, cycles), "completions at " + ", ".join(f"{x:.1f}" for x in r["index_completions_s"])
                        + f" s (of {r['index_build_s']} s)")
        elif r["kind"].startswith("floor"):
            idx.add_row(_label(r, cycles), ", ".join(f"{k} {v:.1f}" for k, v in r["index_per_build_s"].items())
                        + f" ({r['index_workers']} at once)")
    console.print(idx)
    for r in runs:
        if not r["kind"].startswith("floor"):
            console.print(f"{_label(r, cycles)}: columns with planner statistics on the target when ready for "
                          "cutover: " + ", ".join(f"{t.split('.')[1]} {n}" for t, n in r["column_stats_when_ready"].items())
                          + f"; an ANALYZE of the group then took {r['analyze_after_s']:.1f} s (not in the total)")

    if doc["goals"]:
        goals = Table(title="goals (issue 4)", title_justify="left")
        for col in ("goal", "per cycle", "from the medians", ""):
            goals.add_column(col, justify="right" if col != "goal" else "left")
        for g in doc["goals"].values():
            goals.add_row(g["goal"], ", ".join(f"{v:.2f}x" for v in g["per_cycle"]), f"{g['value']:.2f}x",
                          benchlib.ok(g["met"]) if g.get("met") is not None else "(info)")
        console.print(goals)
    a = doc["activity_at_end"]
    console.print(f"machine at the end: loadavg {a['loadavg']}, {a['other_postgres_clusters']} other Postgres "
                  f"clusters, {a['pytest_processes']} pytest processes")


# --------------------------------------------------------------------------- main


def _ratio_goal(runs: list[dict], median: dict, a: str, b: str, text: str, goal: float | None,
                at_least: bool) -> dict | None:
    """median[a] / median[b], and the same ratio within each cycle."""
    if a not in median or b not in median:
        return None
    by_cycle = {}
    for r in runs:
        by_cycle.setdefault(r["cycle"], {})[r["kind"]] = r["total_s"]
    per_cycle = [round(c[a] / c[b], 2) for _, c in sorted(by_cycle.items()) if a in c and b in c]
    value = median[a] / median[b]
    met = None if goal is None else (value >= goal if at_least else value <= goal)
    return {"goal": text, "value": round(value, 2), "per_cycle": per_cycle, "target": goal, "met": met}


def _cpu_ratio(runs: list[dict], cpu_median: dict, a: str, b: str, text: str) -> dict | None:
    if a not in cpu_median or b not in cpu_median:
        return None
    by_cycle = {}
    for r in runs:
        by_cycle.setdefault(r["cycle"], {})[r["kind"]] = sum(r["cluster_cpu_s"].values())
    per_cycle = [round(c[a] / c[b], 2) for _, c in sorted(by_cycle.items()) if a in c and b in c]
    return {"goal": text, "value": round(cpu_median[a] / cpu_median[b], 2), "per_cycle": per_cycle,
            "target": None, "met": None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=DEFAULT_SCALE,
                        help=f"thousands of files to seed (default {DEFAULT_SCALE}: >= 250 MB of table data)")
    parser.add_argument("--runs", default="defer,no-defer,floor",
                        help="which runs, in order (default defer,no-defer,floor). Also: floor-pk-only (the floor "
                        "with unique constraints other than primary keys built after the copy too), floor-psql "
                        "(the floor's rows through two psql processes instead of psycopg)")
    parser.add_argument("--repeat", type=int, default=2,
                        help="cycles of the runs, every other one in reverse order (default 2); the goals use "
                        "the medians")
    parser.add_argument("--no-warmup", action="store_true",
                        help="skip the unmeasured warm-up run (a floor run: fills caches, pre-allocates WAL)")
    parser.add_argument("--json-out", type=Path, default=benchlib.RESULTS_DIR / "copy_bench.json")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temporary clusters (default /tmp)")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.runs.split(",") if k.strip()]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown runs: {', '.join(sorted(unknown))}")

    root = Path(tempfile.mkdtemp(prefix="migrator-copybench-", dir=args.dir))
    move = None
    began = time.monotonic()
    try:
        move = build_move_topology(root, durable=True)
        machine = benchlib.machine_header(move.source.dsn(APP_DB), own_root=root)
        benchlib.print_header(console, "copy_bench — machine", machine, {
            "clusters": "durable (fsync on, synchronous_commit on, full_page_writes on), shared_buffers "
                        f"{LOGICAL_SETTINGS['shared_buffers']}, max_sync_workers_per_subscription {SYNC_WORKERS}",
            "command": benchlib.rerun_command(),
        })
        seed_started = time.monotonic()
        console.print(f"seeding scale {args.scale} on the source ...")
        create_demo_schema(move.source.dsn(APP_DB), scale=args.scale)
        seed_s = time.monotonic() - seed_started
        sizes = group_sizes(move.source.dsn(APP_DB))
        data_bytes = sum(s["table_bytes"] for s in sizes.values())
        console.print(f"seeded in {seed_s:.0f} s: " + ", ".join(
            f"{t} {s['rows']:,} rows {s['table_bytes'] / 2**20:.0f} MB (+{s['index_bytes'] / 2**20:.0f} MB idx)"
            for t, s in sizes.items()))
        if data_bytes < MIN_BYTES:
            console.print(f"[yellow]note: {data_bytes / 2**20:.0f} MB of table data is below the 250 MB the "
                          "issue asks for; raise --scale[/]")
        dsns = (move.source.dsn(APP_DB), move.target.dsn(APP_DB))
        if not args.no_warmup:
            console.print("warm-up (unmeasured floor run) ...")
            run_floor(move, label="warm-up")
        runs = []
        for cycle in range(1, args.repeat + 1):
            for kind in (kinds if cycle % 2 else list(reversed(kinds))):
                checkpoint(*dsns)
                label = kind + (f" #{cycle}" if args.repeat > 1 else "")
                console.print(f"run: {label}")
                if kind.startswith("floor"):
                    run = run_floor(move, label=label, pk_only=kind == "floor-pk-only",
                                    pipe="psql" if kind == "floor-psql" else "psycopg")
                else:
                    run = run_tool(move, root, defer=kind == "defer", label=label)
                runs.append({**run, "kind": kind, "cycle": cycle})
        median = {k: round(statistics.median(r["total_s"] for r in runs if r["kind"] == k), 2)
                  for k in KINDS if any(r["kind"] == k for r in runs)}
        cpu_median = {k: round(statistics.median(sum(r["cluster_cpu_s"].values()) for r in runs if r["kind"] == k), 1)
                      for k in median}
        goals = {name: g for name, g in (
            ("defer_speedup", _ratio_goal(runs, median, "no-defer", "defer",
                                          f"defer >= {GOAL_DEFER_SPEEDUP}x faster than no-defer",
                                          GOAL_DEFER_SPEEDUP, True)),
            ("defer_vs_floor", _ratio_goal(runs, median, "defer", "floor",
                                           f"defer within {GOAL_FLOOR_RATIO}x of the floor", GOAL_FLOOR_RATIO, False)),
            ("defer_vs_floor_psql", _ratio_goal(runs, median, "defer", "floor-psql",
                                                "defer / floor through psql (no Python in the pipe)", None, False)),
            ("defer_speedup_cpu", _cpu_ratio(runs, cpu_median, "no-defer", "defer",
                                             "no-defer / defer in cluster CPU seconds (noise-robust twin)")),
            ("defer_vs_floor_cpu", _cpu_ratio(runs, cpu_median, "defer", "floor",
                                              "defer / floor in cluster CPU seconds (noise-robust twin)")),
            ("floor_pk_only_vs_floor", _ratio_goal(runs, median, "floor-pk-only", "floor",
                                                   "floor-pk-only / floor (unique constraints deferred too)",
                                                   None, False)),
        ) if g is not None}
        doc = {
            "benchmark": "copy_bench",
            "command": benchlib.rerun_command(),
            "machine": machine,
            "activity_at_end": benchlib.other_activity(root),
            "scale": args.scale,
            "repeat": args.repeat,
            "seed_s": round(seed_s, 1),
            "data_bytes": data_bytes,
            "data_mb": data_bytes / 2**20,
            "source_tables": sizes,
            "secondary_indexes": [i.name for i in _secondary(move)],
            "runs": runs,
            "median_total_s": median,
            "median_cluster_cpu_s": cpu_median,
            "goals": goals,
            "wall_s": round(time.monotonic() - began, 1),
        }
        report(doc)
        path = benchlib.write_json(args.json_out, doc)
        console.print(f"wrote {path} (benchmark wall time {doc['wall_s']:.0f} s)")
        return 0 if all(g["met"] for g in goals.values() if g["met"] is not None) else 1
    finally:
        if move is not None:
            move.topology.stop()
        remove_tree(root)


def _secondary(move) -> list:
    with psycopg.connect(move.source.dsn(APP_DB)) as src:
        group = group_schema(read_group(src, [TableName.parse(t) for t in GROUP_TABLES]),
                             ExistingObjects(), [APP_ROLE])
    return group.secondary_indexes


if __name__ == "__main__":
    sys.exit(main())
