"""How fast `migrator verify` compares a table group of >= 250 MB (run on demand).

    .venv/bin/python benchmarks/verify_bench.py [--scale 450] [--runs 3] [--chunk-rows 100000]

Builds a throwaway topology with `migrator.lab.sandbox` (two local clusters and PgBouncer),
seeds the demo schema on the source at --scale thousand files, copies the group to the
target by logical replication under the names a move uses (so verify's catch-up wait
finds the subscription, as during a move), vacuums both sides (the visibility map and
hint bits of a table that has been live for a while), then times verify --runs times
while replication stays on. Prints a table; writes benchmarks/results/verify.json.

MB/s is the source's table data (pg_table_size of the group, 1 MB = 1024^2 bytes)
divided by the wall time of the whole verify call (connections, catalog reads, the
pass and any re-check). Source and target share this machine's cores (verify uses one
backend per side for the hashing, plus one on the source for key-range bounds when a key
is not a dense integer). The CPU seconds each cluster spent during the run are reported
too, as MB per CPU second of the busier side: the speed a run would reach with a core
per side to itself, which wall time on a busy machine hides.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import psycopg
from benchlib import cluster_cpu_seconds
from psycopg import sql
from rich.console import Console
from rich.table import Table

from migrator import names
from migrator.lab.sandbox import APP_DB, build_move_topology, create_demo_schema
from migrator.playbook import format_size, load_playbook
from migrator.verify.compare import DEFAULT_CHUNK_ROWS, verify

RESULTS = Path(__file__).parent / "results" / "verify.json"
console = Console(highlight=False)


def replicate(move, book) -> float:
    """Publication on the source, subscription on the target; seconds to the end of the copy."""
    started = time.monotonic()
    with psycopg.connect(move.source.dsn(APP_DB), autocommit=True) as src:
        src.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
            sql.Identifier(names.publication(book)),
            sql.SQL(", ").join(t.identifier for t in book.tables)))
    with psycopg.connect(move.target.dsn(APP_DB), autocommit=True) as dst:
        dst.execute(sql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {}").format(
            sql.Identifier(names.subscription(book)), sql.Literal(move.source.dsn(APP_DB)),
            sql.Identifier(names.publication(book))))
        while dst.execute("SELECT count(*) FILTER (WHERE srsubstate <> 'r'), count(*) "
                          "FROM pg_catalog.pg_subscription_rel").fetchone() != (0, len(book.tables)):
            time.sleep(0.5)
    return time.monotonic() - started


def reaped(move) -> None:
    """Until verify's backends have exited and their postmasters have counted their CPU."""
    for server in (move.source, move.target):
        with psycopg.connect(server.dsn(APP_DB), autocommit=True) as conn:
            while conn.execute("SELECT count(*) FROM pg_catalog.pg_stat_activity "
                               "WHERE application_name = 'migrator verify'").fetchone()[0]:
                time.sleep(0.05)
    time.sleep(0.3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=450, help="thousands of demo files (450: ~260 MB)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS)
    parser.add_argument("--json-out", type=Path, default=RESULTS)
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temporary clusters (default /tmp)")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="migrator-verify-bench-", dir=args.dir))
    root.chmod(0o755)
    move = build_move_topology(root / "topology")
    try:
        with console.status(f"seeding the source (scale {args.scale})"):
            started = time.monotonic()
            create_demo_schema(move.source.dsn(APP_DB), scale=args.scale)
            create_demo_schema(move.target.dsn(APP_DB))
            seed_s = time.monotonic() - started
        book = load_playbook(move.write_playbook(root / "playbook.yaml"))
        with console.status("copying the group to the target by logical replication"):
            copy_s = replicate(move, book)
        with console.status("VACUUM ANALYZE on both sides"):
            for server in (move.source, move.target):
                with psycopg.connect(server.dsn(APP_DB), autocommit=True) as conn:
                    conn.execute("VACUUM ANALYZE")
        with psycopg.connect(move.source.dsn(APP_DB)) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]

        runs = []
        for number in range(1, args.runs + 1):
            load = os.getloadavg()[0]
            cpu = [cluster_cpu_seconds(c) for c in (move.source, move.target)]
            with console.status(f"verify run {number}/{args.runs}"):
                report = verify(book, chunk_rows=args.chunk_rows)
            reaped(move)
            cpu = [round(cluster_cpu_seconds(c) - before, 2) for c, before in zip((move.source, move.target), cpu)]
            runs.append({"run": number, "seconds": report.seconds, "mb_per_s": report.mb_per_s,
                         "server_cpu_seconds": {"source": cpu[0], "target": cpu[1]},
                         "mb_per_cpu_second": round(report.bytes / 1024**2 / max(cpu), 1),
                         "identical": report.identical, "load_average_before": round(load, 2),
                         "rechecked_chunks": report.rechecked_chunks,
                         "tables": [t.to_dict() for t in report.tables]})
    finally:
        move.topology.stop()
        shutil.rmtree(root, ignore_errors=True)

    speeds = [r["mb_per_s"] for r in runs]
    result = {
        "benchmark": "verify",
        "scale": args.scale,
        "chunk_rows": args.chunk_rows,
        "bytes": report.bytes,
        "rows": {t.table: t.source_rows for t in report.tables},
        "postgres": version,
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
        "seed_seconds": round(seed_s, 1),
        "copy_seconds": round(copy_s, 1),
        "runs": runs,
        "median_mb_per_s": statistics.median(speeds),
        "best_mb_per_s": max(speeds),
        "all_identical": all(r["identical"] for r in runs),
    }
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(result, indent=2) + "\n")

    table = Table(title=f"migrator verify: {format_size(report.bytes)} of table data, "
                        f"{sum(result['rows'].values()):,} rows, PostgreSQL {version}, "
                        f"{os.cpu_count()} CPUs", title_justify="left")
    for column in ("run", "seconds", "MB/s", "identical", "re-checked chunks", "load avg before",
                   "CPU s source / target", "MB per CPU s"):
        table.add_column(column, justify="right")
    for r in runs:
        table.add_row(str(r["run"]), f"{r['seconds']:.2f}", f"{r['mb_per_s']:.1f}",
                      "yes" if r["identical"] else "NO", str(r["rechecked_chunks"]),
                      f"{r['load_average_before']:.2f}",
                      f"{r['server_cpu_seconds']['source']:.2f} / {r['server_cpu_seconds']['target']:.2f}",
                      f"{r['mb_per_cpu_second']:.1f}")
    console.print(table)
    console.print(f"median {result['median_mb_per_s']:.1f} MB/s, best {result['best_mb_per_s']:.1f} MB/s "
                  f"(seed {result['seed_seconds']} s, copy {result['copy_seconds']} s); wrote {args.json_out}")


if __name__ == "__main__":
    main()
