"""The pause window as the work grows: PgBouncers (1, 4, 16) x group size (3, 30, 300 tables).

    .venv/bin/python benchmarks/pause_bench.py [--pgbouncers 1,4,16] [--tables 3,30,300] [--rounds 3]

On-demand, not part of the pytest suite. Per group size it starts a durable source and
target and 16 PgBouncers (build_move_topology(durable=True, pgbouncers=16)), seeds the
demo schema and adds small tables to the group (each with a bigserial key, so a sequence
to copy, and the app role's privileges, so a REVOKE and a GRANT inside the pause) until
it has the group size, and runs `execute --until cutover` once with every PgBouncer in
the playbook. Then, per PgBouncer count k, with the playbook listing the first k of
them, under the standard load (Workload mix 'group', 16 clients and 600 tps in all,
spread over the k PgBouncers' group entry; mix 'app' on the whole application's entry,
20 tps), it alternates `--rounds` times a forward cutover (`execute`) and a reverse one
(`rollback --to prepare-reverse`), 2 s of plain load after each.

Per cell it reports the median and the largest pause window and the medians of its
parts (the PauseWindow the state records), and the client transactions that failed.
Goals (issue 14): from the smallest case (3 tables, 1 PgBouncer) to the largest (300,
16) the median pause grows less than twofold, every cell's median is under 100 ms, and
no client transaction fails. Prints rich tables, writes
benchmarks/results/pause_bench.json and tears everything down; exit 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib  # noqa: E402

from migrator.lab.sandbox import (  # noqa: E402
    APP_DB,
    APP_ROLE,
    GROUP_ENTRY,
    GROUP_TABLES,
    WHOLE_ENTRY,
    build_move_topology,
    create_demo_schema,
)
from migrator.lab.topology import remove_tree  # noqa: E402
from migrator.move.runner import execute, rollback  # noqa: E402
from migrator.plan.build import preflight_checks  # noqa: E402
from migrator.move.state import StateStore  # noqa: E402
from migrator.playbook import parse_playbook  # noqa: E402

GOAL_GROWTH = 2.0
GOAL_MEDIAN = 0.100
# The sequences are copied while the marker is awaited: their time is in sync_marker
# (and apart, as the window's sequences_copy).
PARTS = ("pause", "old_switch", "sync_marker", "replication_switch", "reroute", "resume")
SHORT = {"pause": "PAUSE", "old_switch": "fence+marker", "sync_marker": "marker wait+seq",
         "replication_switch": "repl", "reroute": "reroute", "resume": "RESUME"}

console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def add_tables(dsn: str, count: int) -> list[str]:
    """`count` small tables for the group: a key from a sequence, a few rows, the app's grants."""
    names = [f"public.bench_t{i:03d}" for i in range(count)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in names:
            table = sql.Identifier(*name.split("."))
            conn.execute(sql.SQL(
                "CREATE TABLE {t} (id bigserial PRIMARY KEY, v integer NOT NULL, at timestamptz DEFAULT now()); "
                "INSERT INTO {t} (v) SELECT g FROM generate_series(1, 10) g; "
                "GRANT SELECT, INSERT, UPDATE, DELETE ON {t} TO {r}; "
                "GRANT USAGE, SELECT ON SEQUENCE {s} TO {r}").format(
                    t=table, r=sql.Identifier(APP_ROLE), s=sql.Identifier("public", f"{name.split('.')[1]}_id_seq")))
    return names


def cell_report(cells: list[dict]) -> Table:
    table = Table(title="pause window by PgBouncers and group size (medians; ms)", title_justify="left")
    for col in ("tables", "PgBouncers", "cutovers", "pause median", "pause max",
                *[SHORT[p] for p in PARTS], "sequences", "failed", "tps"):
        table.add_column(col, justify="right")
    for c in cells:
        table.add_row(str(c["tables"]), str(c["pgbouncers"]), str(len(c["windows"])),
                      f"[bold]{benchlib.fmt_ms(c['pause_median'])}[/]", benchlib.fmt_ms(c["pause_max"]),
                      *[benchlib.fmt_ms(c["parts_median"].get(p)) for p in PARTS],
                      str(c["sequences"]), str(c["failed"]), f"{c['tps']:.0f}")
    return table


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def run_size(size: int, args, machine_box: dict) -> list[dict]:
    root = Path(tempfile.mkdtemp(prefix=f"migrator-pausebench-{size}-", dir=args.dir))
    move = store = None
    cells = []
    try:
        most = max(args.pgbouncers)
        move = build_move_topology(root, durable=True, pgbouncers=most)
        if not machine_box:
            machine_box.update(benchlib.machine_header(move.source.dsn(APP_DB), own_root=root))
            benchlib.print_header(console, "pause_bench — machine", machine_box, {
                "clusters": "durable (fsync on, synchronous_commit on); PgBouncer transaction pooling",
                "command": benchlib.rerun_command(),
            })
        create_demo_schema(move.source.dsn(APP_DB), scale=args.scale)
        tables = list(GROUP_TABLES) + add_tables(move.source.dsn(APP_DB), size - len(GROUP_TABLES))
        doc = move.playbook_doc(tables, name="pause-bench")
        full = move.write_playbook(root / "playbook.yaml", doc)
        store = StateStore(f"sqlite:///{root / 'state.db'}")
        started = time.monotonic()
        execute(parse_playbook(full.read_text()), store, checks=preflight_checks, until="cutover")
        console.print(f"{size} tables: ready for the cutover after {time.monotonic() - started:.1f} s")
        for k in args.pgbouncers:
            sub = dict(doc, pgbouncers=doc["pgbouncers"][:k])
            playbook = parse_playbook(move.write_playbook(root / f"playbook-{k}.yaml", sub).read_text())
            bouncers = move.pgbouncers[:k]
            specs = {f"group{i}": (move.app_dsn(GROUP_ENTRY, b), {
                "mix": "group", "clients": max(1, args.clients // k), "rate": args.rate / k, "seed": i})
                for i, b in enumerate(bouncers)}
            specs["app"] = (move.app_dsn(WHOLE_ENTRY), {"mix": "app", "clients": 2, "rate": 20.0, "seed": 99})
            load = benchlib.LoadProcess(specs).start()
            windows = []
            try:
                time.sleep(args.settle)
                for _ in range(args.rounds):
                    for kind in ("forward", "reverse"):
                        if kind == "forward":
                            execute(playbook, store, checks=preflight_checks)
                        else:
                            rollback(playbook, store, to="prepare-reverse")
                        window = store.step(playbook.name, "cutover").data.last_window or {}
                        windows.append({"direction": kind, **window})
                        console.print(f"  {size:3d} tables, {k:2d} PgBouncers, {kind:<7} pause "
                                      f"{window.get('total', 0) * 1000:5.0f} ms "
                                      f"({', '.join(f'{SHORT.get(p, p)} {v * 1000:.0f}' for p, v in window.get('parts', {}).items())})",
                                      markup=False)
                        time.sleep(args.settle)
            finally:
                seen = load.stop()
                load.close()
            failed = sum(r["failures"] for r in seen.values())
            group_tps = sum(r["tps"] for name, r in seen.items() if name != "app")
            completed = [w for w in windows if w.get("outcome") == "completed"]
            cells.append({
                "tables": size, "pgbouncers": k, "windows": windows,
                "aborted": len(windows) - len(completed),
                "pause_median": median([w["total"] for w in completed]),
                "pause_max": max((w.get("total", 0) for w in windows), default=None),
                "parts_median": {p: median([w["parts"][p] for w in completed if p in w.get("parts", {})])
                                 for p in PARTS},
                "sequences": max((w.get("sequences", 0) for w in windows), default=0),
                "failed": failed, "failure_kinds": {n: r["failure_kinds"] for n, r in seen.items() if r["failures"]},
                "tps": group_tps,
            })
    finally:
        if store is not None:
            store.close()
        if move is not None:
            move.topology.stop()
        remove_tree(root)
    return cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pgbouncers", type=lambda v: [int(x) for x in v.split(",")], default=[1, 4, 16])
    parser.add_argument("--tables", type=lambda v: [int(x) for x in v.split(",")], default=[3, 30, 300])
    parser.add_argument("--rounds", type=int, default=3, help="forward + reverse cutover pairs per cell (default 3)")
    parser.add_argument("--scale", type=int, default=5, help="thousands of demo files to seed (default 5)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rate", type=float, default=600.0, help="group entry transactions per second, in all")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds of plain load around each cutover")
    parser.add_argument("--json-out", type=Path, default=benchlib.RESULTS_DIR / "pause_bench.json")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temporary clusters (default /tmp)")
    args = parser.parse_args(argv)
    began = time.monotonic()
    machine: dict = {}
    cells: list[dict] = []
    for size in args.tables:
        cells += run_size(size, args, machine)
    console.print(cell_report(cells))

    smallest = next(c for c in cells if c["tables"] == min(args.tables) and c["pgbouncers"] == min(args.pgbouncers))
    largest = next(c for c in cells if c["tables"] == max(args.tables) and c["pgbouncers"] == max(args.pgbouncers))
    growth = (largest["pause_median"] or float("inf")) / (smallest["pause_median"] or float("nan"))
    worst = max((c["pause_median"] or float("inf")) for c in cells)
    failed = sum(c["failed"] for c in cells)
    aborted = sum(c["aborted"] for c in cells)
    goals = {
        "growth": {"goal": f"median pause grows less than {GOAL_GROWTH:g}x from the smallest to the largest case",
                   "measured": f"{benchlib.fmt_ms(smallest['pause_median'])} -> "
                               f"{benchlib.fmt_ms(largest['pause_median'])} ms ({growth:.2f}x)",
                   "met": growth < GOAL_GROWTH},
        "median": {"goal": f"every cell's median pause under {GOAL_MEDIAN * 1000:.0f} ms",
                   "measured": f"worst median {benchlib.fmt_ms(worst)} ms", "met": worst < GOAL_MEDIAN},
        "no_failures": {"goal": "0 failed client transactions, every cutover completed",
                        "measured": f"{failed} failed, {aborted} aborted", "met": failed == 0 and aborted == 0},
    }
    summary = Table(title="goals (issue 14)", title_justify="left")
    for col in ("goal", "measured", ""):
        summary.add_column(col)
    for g in goals.values():
        summary.add_row(g["goal"], g["measured"], benchlib.ok(g["met"]))
    console.print(summary)
    doc = {"benchmark": "pause_bench", "command": benchlib.rerun_command(), "machine": machine,
           "activity_at_end": benchlib.other_activity(), "settings": vars(args) | {"json_out": str(args.json_out),
                                                                               "dir": str(args.dir)},
           "cells": cells, "goals": goals, "wall_s": round(time.monotonic() - began, 1)}
    path = benchlib.write_json(args.json_out, doc)
    console.print(f"wrote {path} (benchmark wall time {doc['wall_s']:.0f} s)")
    return 0 if all(g["met"] for g in goals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
