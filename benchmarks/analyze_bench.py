"""What watching costs: the source's CPU and the clients' throughput with `analyze` running.

    .venv/bin/python benchmarks/analyze_bench.py [--seconds 10] [--rounds 2] [--json-out PATH]

On-demand, not part of the pytest suite. A durable source, target and PgBouncer
(build_move_topology(durable=True), as `migrator sandbox` gives users), the demo schema
at scale 20, and two loads in a child process (so the clients and the sampler do not
share one interpreter):

  standard   the cutover benchmark's load: mix 'group', 16 clients, 600 tps on app_files,
             plus mix 'app', 2 clients, 20 tps on app;
  saturated  mix 'group', 16 clients as fast as they go on app_files (the throughput a
             fixed-rate load cannot show).

For each load, `--rounds` times and in alternating order: `--seconds` with no analyze,
with `analyze_playbook(interval=100ms)` and with `interval=10ms`. Per window: the client
transactions per second and latency (p50 / p99), the source cluster's CPU seconds per
second (postmaster and every child, benchlib.cluster_cpu_seconds), and the analyzer's
own CPU. Goal (issue 11): under 5% throughput loss at 10 ms (saturated load, medians).
Prints a table, writes benchmarks/results/analyze_bench.json, exit 1 when missed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib  # noqa: E402

from migrator.analyze.observe import analyze_playbook  # noqa: E402
from migrator.lab.sandbox import (  # noqa: E402
    APP_DB,
    GROUP_ENTRY,
    WHOLE_ENTRY,
    build_move_topology,
    create_demo_schema,
)
from migrator.lab.topology import remove_tree  # noqa: E402
from migrator.playbook import load_playbook  # noqa: E402

GOAL_LOSS = 0.05
MODES = {"off": None, "100ms": 0.1, "10ms": 0.01}

console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def window(load, cluster, playbook, names: list[str], interval: float | None, seconds: float) -> dict:
    import resource

    cpu0 = benchlib.cluster_cpu_seconds(cluster)
    own0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    report = None
    if interval is None:
        time.sleep(seconds)
    else:
        report = analyze_playbook(playbook, duration=seconds, interval=interval)
    t1 = time.monotonic()
    own1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu1 = benchlib.cluster_cpu_seconds(cluster)
    seen = {name: load.result(name, t0, t1) for name in names}
    main = seen[names[0]]
    return {
        "seconds": round(t1 - t0, 2),
        "tps": main["tps"],
        "latency_p50_ms": main["latency_p50_ms"],
        "latency_p99_ms": main["latency_p99_ms"],
        "failures": sum(s["failures"] for s in seen.values()),
        "source_cpu_per_s": round((cpu1 - cpu0) / (t1 - t0), 3),
        "analyzer_cpu_per_s": round((own1.ru_utime + own1.ru_stime - own0.ru_utime - own0.ru_stime) / (t1 - t0), 3),
        "samples": report.samples if report else None,
        "late_samples": report.late_samples if report else None,
        "transactions_observed": report.coverage.transactions_observed if report else None,
        "findings": len(report.findings) if report else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each window (default 10)")
    parser.add_argument("--rounds", type=int, default=2, help="windows per mode and load (default 2)")
    parser.add_argument("--scale", type=int, default=20)
    parser.add_argument("--loads", default="standard,saturated")
    parser.add_argument("--json-out", type=Path, default=benchlib.RESULTS_DIR / "analyze_bench.json")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temporary clusters (default /tmp)")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="migrator-analyzebench-", dir=args.dir))
    root.chmod(0o755)
    move = None
    began = time.monotonic()
    try:
        move = build_move_topology(root, durable=True)
        machine = benchlib.machine_header(move.source.dsn(APP_DB), own_root=root)
        benchlib.print_header(console, "analyze_bench — machine", machine, {"command": benchlib.rerun_command()})
        create_demo_schema(move.source.dsn(APP_DB), scale=args.scale)
        playbook = load_playbook(move.write_playbook(root / "playbook.yaml", name="analyze-bench"))
        specs = {
            "standard": {
                "group": (move.app_dsn(GROUP_ENTRY), {"mix": "group", "clients": 16, "rate": 600.0}),
                "app": (move.app_dsn(WHOLE_ENTRY), {"mix": "app", "clients": 2, "rate": 20.0, "seed": 2}),
            },
            "saturated": {
                "group": (move.app_dsn(GROUP_ENTRY), {"mix": "group", "clients": 16, "rate": 1e6}),
            },
        }
        rows: list[dict] = []
        for load_name in args.loads.split(","):
            load = benchlib.LoadProcess(specs[load_name]).start()
            try:
                time.sleep(2)
                order = list(MODES)
                for round_no in range(args.rounds):
                    for mode in (order if round_no % 2 == 0 else order[::-1]):
                        row = window(load, move.source, playbook, list(specs[load_name]), MODES[mode], args.seconds)
                        row.update(load=load_name, mode=mode, round=round_no + 1)
                        rows.append(row)
                        console.print(f"  {load_name:<9} {mode:<6} #{round_no + 1}: {row['tps']:8.1f} tps, "
                                      f"p99 {row['latency_p99_ms']} ms, source CPU {row['source_cpu_per_s']:.2f}/s")
            finally:
                load.stop()
                load.close()
        summary = {}
        for load_name in args.loads.split(","):
            base = statistics.median(r["tps"] for r in rows if r["load"] == load_name and r["mode"] == "off")
            for mode in MODES:
                mine = [r for r in rows if r["load"] == load_name and r["mode"] == mode]
                tps = statistics.median(r["tps"] for r in mine)
                summary[f"{load_name}/{mode}"] = {
                    "tps": tps, "loss": round(1 - tps / base, 4) if base else None,
                    "latency_p99_ms": statistics.median(r["latency_p99_ms"] or 0 for r in mine),
                    "source_cpu_per_s": statistics.median(r["source_cpu_per_s"] for r in mine),
                    "analyzer_cpu_per_s": statistics.median(r["analyzer_cpu_per_s"] for r in mine),
                }
        key = "saturated/10ms" if "saturated" in args.loads else "standard/10ms"
        met = summary[key]["loss"] is not None and summary[key]["loss"] < GOAL_LOSS
        table = Table(title="analyze overhead (medians)", title_justify="left")
        for name in ("load", "analyze", "tps", "loss", "p99 ms", "source CPU s/s", "analyzer CPU s/s"):
            table.add_column(name, justify="left" if name in ("load", "analyze") else "right")
        for name, s in summary.items():
            load_name, mode = name.split("/")
            table.add_row(load_name, mode, f"{s['tps']:.1f}", f"{(s['loss'] or 0) * 100:.1f}%",
                          f"{s['latency_p99_ms']:.1f}", f"{s['source_cpu_per_s']:.2f}", f"{s['analyzer_cpu_per_s']:.2f}")
        console.print(table)
        console.print(f"goal: under {GOAL_LOSS:.0%} throughput loss at 10 ms ({key}): "
                      f"{benchlib.ok(met)} ({(summary[key]['loss'] or 0) * 100:.1f}%)")
        doc = {"machine": machine, "windows": rows, "summary": summary,
               "goal": {"loss_below": GOAL_LOSS, "measured_on": key, "met": met},
               "wall_s": round(time.monotonic() - began, 1)}
        console.print(f"wrote {benchlib.write_json(args.json_out, doc)}")
        return 0 if met else 1
    finally:
        if move is not None:
            move.topology.stop()
        remove_tree(root)


if __name__ == "__main__":
    sys.exit(main())
