"""Cutovers under load: the pause window, what clients see, and the other entry.

    .venv/bin/python benchmarks/cutover_bench.py [--rounds 5] [--json-out PATH]

On-demand, not part of the pytest suite. It starts a durable source, target and
PgBouncer (build_move_topology(durable=True), as `migrator sandbox` gives users),
seeds the demo schema, runs `execute --until cutover` once, then starts a steady
write load through PgBouncer on the group's entry (Workload mix 'group', 16 clients,
600 tps) and light traffic on the whole application's entry (mix 'app', ~20 tps),
and alternates, `--rounds` times:

  forward  `execute`                        (only the cutover step runs)
  reverse  `rollback --to prepare-reverse`  (only the cutover is undone: a reverse
                                             cutover; replication keeps running)

Per cutover it reports the pause window and its parts (the PauseWindow the state
records in step 'cutover': last_window / history), the longest client-visible stall
on the group's entry (the longest gap between completed transactions while the
command ran), failed client transactions, and the other entry's longest stall; it
checks that each command ran only the cutover step and left steps, replication and
PgBouncer's route as they should be; at the end it compares both sides (count + md5
of the rows in primary-key order, per table).

Goals (issue 4): every pause under 1 s, median under 300 ms, every client stall under
1 s, zero failed transactions, the other entry unaffected (no failure; its longest stall
during a cutover no more than 100 ms above its longest stall between cutovers), and the
load at benchmark scale (at least half its rate achieved). The test suite checks only
what the product promises (no pause past max_pause + the watchdog's margin, no failed
transaction, both sides identical); these figures are measured here. Prints rich tables, writes
benchmarks/results/cutover_bench.json and tears everything down.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib  # noqa: E402

from migrator import names  # noqa: E402
from migrator.lab.sandbox import (  # noqa: E402
    APP_DB,
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
from migrator.pgbouncer.console import PgBouncerConsole  # noqa: E402
from migrator.playbook import load_playbook  # noqa: E402

GOAL_MAX_PAUSE = 1.0
GOAL_MEDIAN_PAUSE = 0.3
GOAL_MAX_STALL = 1.0       # the longest a client waits for a transaction, per cutover
GOAL_LOAD_SHARE = 0.5      # the load ran at benchmark scale: at least this share of its rate
OTHER_ENTRY_SLACK = 0.1
SHORT = {"pause": "PAUSE", "revoke": "revoke", "privileges": "privs", "old_switch": "fence+marker", "sync_marker": "marker", "sequences": "seq",
         "replication_switch": "repl switch", "reroute": "reroute", "resume": "RESUME"}

console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def subscriptions(dsn: str) -> dict[str, bool]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT subname, subenabled FROM pg_subscription").fetchall())


def check_after(kind: str, move, playbook, store, ran: list[str]) -> list[str]:
    """Problems with the state a command left (empty: exactly as expected)."""
    problems = []
    if ran != ["cutover"]:
        problems.append(f"ran steps {ran}, expected only cutover")
    statuses = {name: rec.status.value for name, rec in store.steps(playbook.name).items()}
    want_cutover = "done" if kind == "forward" else "undone"
    if statuses.get("cutover") != want_cutover:
        problems.append(f"cutover step {statuses.get('cutover')}, expected {want_cutover}")
    others = {k: v for k, v in statuses.items() if k != "cutover" and v != "done"}
    if others:
        problems.append(f"other steps not done: {others}")
    on_source = subscriptions(move.source.dsn(APP_DB))
    on_target = subscriptions(move.target.dsn(APP_DB))
    fwd, rev = names.subscription(playbook), names.reverse_subscription(playbook)
    if kind == "forward" and (fwd in on_target or on_source.get(rev) is not True):
        problems.append(f"replication after forward: target subs {on_target}, source subs {on_source}")
    if kind == "reverse" and (rev in on_source or on_target.get(fwd) is not True):
        problems.append(f"replication after reverse: target subs {on_target}, source subs {on_source}")
    with PgBouncerConsole(move.pgbouncer.admin_dsn()) as bouncer:
        entries = bouncer.databases()
    serving = move.target if kind == "forward" else move.source
    if entries[GROUP_ENTRY].port != serving.port or entries[GROUP_ENTRY].paused:
        problems.append(f"{GROUP_ENTRY} routes to port {entries[GROUP_ENTRY].port} "
                        f"(paused={entries[GROUP_ENTRY].paused}), expected {serving.port}")
    if entries[WHOLE_ENTRY].port != move.source.port:
        problems.append(f"{WHOLE_ENTRY} moved to port {entries[WHOLE_ENTRY].port}")
    return problems


def compare_sides(move, timeout: float = 60) -> dict:
    """Count + md5 per table on both sides, once replication has caught up."""
    deadline = time.monotonic() + timeout
    while True:
        rows = {t: (benchlib.table_digest(move.source.dsn(APP_DB), t),
                    benchlib.table_digest(move.target.dsn(APP_DB), t)) for t in GROUP_TABLES}
        same = all(s == d for s, d in rows.values())
        if same or time.monotonic() > deadline:
            return {t: {"source_rows": s[0], "source_md5": s[1], "target_rows": d[0], "target_md5": d[1],
                        "identical": s == d} for t, (s, d) in rows.items()}
        time.sleep(0.5)


def report(doc: dict) -> None:
    table = Table(title=f"cutover_bench: {len(doc['cutovers'])} cutovers under {doc['load']['group_rate']:.0f} tps "
                        f"from {doc['load']['group_clients']} clients on {GROUP_ENTRY} "
                        f"(+{doc['load']['app_rate']:.0f} tps on {WHOLE_ENTRY}), durable clusters",
                  title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("direction")
    table.add_column("pause ms", justify="right")
    parts: list[str] = []   # the PauseWindow's parts, in the order the cutover records them
    for c in doc["cutovers"]:
        parts += [p for p in c["window"].get("parts", {}) if p not in parts]
    for p in parts:
        table.add_column(SHORT.get(p, p) + " ms", justify="right")
    table.add_column("client stall ms", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("tps", justify="right")
    table.add_column(f"{WHOLE_ENTRY} stall ms", justify="right")
    table.add_column("command s", justify="right")
    table.add_column("before pause s", justify="right")
    table.add_column("after resume s", justify="right")
    table.add_column("check")
    for c in doc["cutovers"]:
        w = c["window"]
        table.add_row(
            str(c["n"]), c["direction"], f"[bold]{benchlib.fmt_ms(w.get('total'))}[/]",
            *[benchlib.fmt_ms(w.get("parts", {}).get(p)) for p in parts],
            benchlib.fmt_ms(c["group"]["longest_gap_s"]), str(c["group"]["failures"]),
            f"{c['group']['tps']:.0f}", benchlib.fmt_ms(c["app"]["longest_gap_s"]),
            f"{c['command_s']:.2f}", benchlib.fmt_s(c["before_pause_s"], 2), benchlib.fmt_s(c["after_resume_s"], 2),
            "ok" if not c["problems"] else "[red]" + "; ".join(c["problems"]) + "[/]",
        )
    console.print(table)

    s = doc["summary"]
    summary = Table(title="summary", title_justify="left")
    summary.add_column("")
    summary.add_column("forward", justify="right")
    summary.add_column("reverse", justify="right")
    summary.add_column("all", justify="right")
    for key, label in (("pause", "pause window ms (median / max)"), ("stall", "client stall ms (median / max)"),
                       ("app_stall", f"{WHOLE_ENTRY} stall ms (median / max)")):
        summary.add_row(label, *[f"{benchlib.fmt_ms(s[d][key]['median'])} / {benchlib.fmt_ms(s[d][key]['max'])}"
                                 for d in ("forward", "reverse", "all")])
    summary.add_row("marker wait ms (median)", *[benchlib.fmt_ms(s[d]["marker_wait_median"])
                                                 for d in ("forward", "reverse", "all")])
    summary.add_row("old side's switch ms (fence up + sync marker, one commit; median)",
                    *[benchlib.fmt_ms(s[d].get("old_switch_median")) for d in ("forward", "reverse", "all")])
    summary.add_row("new side's switch ms (fence lifted, overlapped with the marker wait; median)",
                    *[benchlib.fmt_ms(s[d].get("new_switch_median")) for d in ("forward", "reverse", "all")])
    console.print(summary)
    whole = doc["whole_run"]
    console.print(
        f"whole run: {GROUP_ENTRY} {whole['group']['transactions']:,} transactions ({whole['group']['tps']:.0f} tps "
        f"achieved of {whole['group']['target_tps']:.0f}), {whole['group']['failures']} "
        f"failed {whole['group']['failure_kinds'] or ''}, p50 {whole['group']['latency_p50_ms']} ms, "
        f"p99 {whole['group']['latency_p99_ms']} ms; {WHOLE_ENTRY} {whole['app']['transactions']:,} transactions, "
        f"{whole['app']['failures']} failed; {WHOLE_ENTRY} longest stall between cutovers "
        f"{benchlib.fmt_ms(doc['app_baseline_gap_s'])} ms")

    sides = Table(title="both sides at the end (count + md5 of the rows in primary-key order)",
                  title_justify="left")
    for col in ("table", "source rows", "target rows", "source md5", "target md5", ""):
        sides.add_column(col)
    for t, r in doc["sides"].items():
        sides.add_row(t, f"{r['source_rows']:,}", f"{r['target_rows']:,}", r["source_md5"], r["target_md5"],
                      "[green]identical[/]" if r["identical"] else "[red]DIFFERENT[/]")
    console.print(sides)

    goals = Table(title="goals (issue 4)", title_justify="left")
    for col in ("goal", "measured", ""):
        goals.add_column(col)
    for g in doc["goals"].values():
        goals.add_row(g["goal"], g["measured"], benchlib.ok(g["met"]))
    console.print(goals)
    a = doc["activity_at_end"]
    console.print(f"machine at the end: loadavg {a['loadavg']}, {a['other_postgres_clusters']} other Postgres "
                  f"clusters, {a['pytest_processes']} pytest processes")


def _stats(values: list[float]) -> dict:
    return {"median": statistics.median(values) if values else None, "max": max(values) if values else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="forward + reverse cutover pairs (default 5)")
    parser.add_argument("--scale", type=int, default=20, help="thousands of files to seed (default 20)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rate", type=float, default=600.0, help="group entry transactions per second")
    parser.add_argument("--app-clients", type=int, default=2)
    parser.add_argument("--app-rate", type=float, default=20.0, help="other entry transactions per second")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds of plain load between cutovers")
    parser.add_argument("--json-out", type=Path, default=benchlib.RESULTS_DIR / "cutover_bench.json")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temporary clusters (default /tmp)")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="migrator-cutoverbench-", dir=args.dir))
    move = load = store = None
    began = time.monotonic()
    try:
        move = build_move_topology(root, durable=True)
        machine = benchlib.machine_header(move.source.dsn(APP_DB), own_root=root)
        benchlib.print_header(console, "cutover_bench — machine", machine, {
            "clusters": "durable (fsync on, synchronous_commit on); PgBouncer transaction pooling",
            "command": benchlib.rerun_command(),
        })
        create_demo_schema(move.source.dsn(APP_DB), scale=args.scale)
        playbook = load_playbook(move.write_playbook(root / "playbook.yaml", name="cutover-bench"))
        store = StateStore(f"sqlite:///{root / 'state.db'}")
        started = time.monotonic()
        prep = execute(playbook, store, checks=preflight_checks, until="cutover")
        prep_s = time.monotonic() - started
        console.print(f"ready for cutover after {prep_s:.1f} s (scale {args.scale}); cutover settings: "
                      f"max_pause {playbook.cutover.max_pause}s, grace {playbook.cutover.grace}s, "
                      f"max_lag {playbook.cutover.max_lag} bytes")

        load = benchlib.LoadProcess({
            "group": (move.app_dsn(GROUP_ENTRY), {"mix": "group", "clients": args.clients, "rate": args.rate}),
            "app": (move.app_dsn(WHOLE_ENTRY), {"mix": "app", "clients": args.app_clients, "rate": args.app_rate,
                                                "seed": 2}),
        }).start()
        time.sleep(args.settle)
        quiet: list[tuple[float, float]] = []
        quiet_from = time.monotonic() - args.settle + 1.0
        cutovers = []
        n = 0
        for _ in range(args.rounds):
            for kind in ("forward", "reverse"):
                n += 1
                t0, wall0 = time.monotonic(), time.time()
                quiet.append((quiet_from, t0))
                if kind == "forward":
                    result = execute(playbook, store, checks=preflight_checks)
                else:
                    result = rollback(playbook, store, to="prepare-reverse")
                t1, wall1 = time.monotonic(), time.time()
                data = store.step(playbook.name, "cutover").data
                window = data.last_window or {}
                problems = check_after(kind, move, playbook, store, [s for s, _, _ in result.ran])
                if window.get("direction") != kind:
                    problems.append(f"last_window is a {window.get('direction')} window")
                time.sleep(args.settle)
                # The stall is read over the command plus a second after it: a gap that
                # began inside the pause is measured to its end.
                g, a = load.result("group", t0, t1 + 1.0), load.result("app", t0, t1 + 1.0)
                quiet_from = t1 + 1.0
                paused_at = data.pause_started
                before = round(paused_at - wall0, 3) if paused_at else None
                after = round(wall1 - paused_at - window.get("total", 0), 3) if paused_at else None
                cutovers.append({"n": n, "direction": kind, "command_s": round(t1 - t0, 3), "window": window,
                                 "before_pause_s": before, "after_resume_s": after,
                                 "group": g, "app": a, "problems": problems,
                                 "history_len": len(data.history)})
                console.print(f"  {n:2d} {kind:<7} pause {window.get('total', 0) * 1000:5.0f} ms, client stall "
                              f"{g['longest_gap_s'] * 1000:5.0f} ms, failed {g['failures']}, "
                              f"{WHOLE_ENTRY} stall {a['longest_gap_s'] * 1000:4.0f} ms, "
                              f"{'ok' if not problems else problems}", markup=False)
        quiet.append((quiet_from, time.monotonic()))
        stopped = load.stop()
        group_all, app_all = stopped["group"], stopped["app"]
        app_baseline = max((load.result("app", a, b)["longest_gap_s"] for a, b in quiet if b > a), default=0.0)
        group_baseline = max((load.result("group", a, b)["longest_gap_s"] for a, b in quiet if b > a), default=0.0)
        sides = compare_sides(move)

        def pick(direction: str | None) -> list[dict]:
            return [c for c in cutovers if direction in (None, c["direction"])]

        summary = {}
        for label, direction in (("forward", "forward"), ("reverse", "reverse"), ("all", None)):
            chosen = pick(direction)
            summary[label] = {
                "pause": _stats([c["window"].get("total", float("nan")) for c in chosen]),
                "stall": _stats([c["group"]["longest_gap_s"] for c in chosen]),
                "app_stall": _stats([c["app"]["longest_gap_s"] for c in chosen]),
                "marker_wait_median": statistics.median([c["window"].get("marker_wait") or 0 for c in chosen])
                if chosen else None,
                # each side's switch inside the pause: privileges and the write fence
                "old_switch_median": statistics.median([c["window"].get("old_switch") or 0 for c in chosen])
                if chosen else None,
                "new_switch_median": statistics.median([c["window"].get("new_switch") or 0 for c in chosen])
                if chosen else None,
            }
        pauses = [c["window"].get("total", float("inf")) for c in cutovers]
        completed = all(c["window"].get("outcome") == "completed" for c in cutovers)
        app_worst = max((c["app"]["longest_gap_s"] for c in cutovers), default=0.0)
        stall_worst = max((c["group"]["longest_gap_s"] for c in cutovers), default=0.0)
        goals = {
            "max_pause": {"goal": f"every pause under {GOAL_MAX_PAUSE * 1000:.0f} ms",
                          "measured": f"max {max(pauses) * 1000:.0f} ms" + ("" if completed else " (an abort)"),
                          "met": completed and max(pauses) < GOAL_MAX_PAUSE},
            "median_pause": {"goal": f"median pause under {GOAL_MEDIAN_PAUSE * 1000:.0f} ms",
                             "measured": f"{statistics.median(pauses) * 1000:.0f} ms",
                             "met": statistics.median(pauses) < GOAL_MEDIAN_PAUSE},
            "max_stall": {"goal": f"every client stall under {GOAL_MAX_STALL * 1000:.0f} ms (forward and reverse)",
                          "measured": f"max {stall_worst * 1000:.0f} ms",
                          "met": bool(cutovers) and stall_worst < GOAL_MAX_STALL},
            "load_scale": {"goal": f"the load ran at benchmark scale (at least {GOAL_LOAD_SHARE:.0%} of "
                                   f"{args.rate:.0f} tps on {GROUP_ENTRY})",
                           "measured": f"{group_all['tps']:.0f} tps over the whole run",
                           "met": group_all["tps"] >= GOAL_LOAD_SHARE * args.rate},
            "no_failures": {"goal": "zero failed client transactions (whole run, both entries)",
                            "measured": f"{group_all['failures']} + {app_all['failures']}",
                            "met": group_all["failures"] == 0 and app_all["failures"] == 0},
            "other_entry": {"goal": f"{WHOLE_ENTRY} unaffected (stall <= between-cutover stall + "
                                    f"{OTHER_ENTRY_SLACK * 1000:.0f} ms)",
                            "measured": f"worst {app_worst * 1000:.0f} ms vs {app_baseline * 1000:.0f} ms",
                            "met": app_all["failures"] == 0 and app_worst <= app_baseline + OTHER_ENTRY_SLACK},
            "steps": {"goal": "each command ran only the cutover step, state as expected",
                      "measured": f"{sum(1 for c in cutovers if not c['problems'])}/{len(cutovers)} ok",
                      "met": all(not c["problems"] for c in cutovers)},
            "identical": {"goal": "both sides identical at the end",
                          "measured": f"{sum(1 for r in sides.values() if r['identical'])}/{len(sides)} tables",
                          "met": all(r["identical"] for r in sides.values())},
        }
        doc = {
            "benchmark": "cutover_bench",
            "command": benchlib.rerun_command(),
            "machine": machine,
            "activity_at_end": benchlib.other_activity(root),
            "scale": args.scale,
            "prepare_s": round(prep_s, 1),
            "prepare_steps": prep.to_dict()["steps"],
            "cutover_settings": {"max_pause_s": playbook.cutover.max_pause, "grace_s": playbook.cutover.grace,
                                 "max_lag_bytes": playbook.cutover.max_lag},
            "load": {"group_clients": args.clients, "group_rate": args.rate, "app_clients": args.app_clients,
                     "app_rate": args.app_rate, "settle_s": args.settle},
            "cutovers": cutovers,
            "summary": summary,
            "whole_run": {"group": group_all, "app": app_all},
            "group_baseline_gap_s": group_baseline,
            "app_baseline_gap_s": app_baseline,
            "recorded_history": store.step(playbook.name, "cutover").data.history,
            "sides": sides,
            "goals": goals,
            "wall_s": round(time.monotonic() - began, 1),
        }
        report(doc)
        path = benchlib.write_json(args.json_out, doc)
        console.print(f"wrote {path} (benchmark wall time {doc['wall_s']:.0f} s)")
        return 0 if all(g["met"] for g in goals.values()) else 1
    finally:
        if load is not None:
            load.close()
        if store is not None:
            store.close()
        if move is not None:
            move.topology.stop()
        remove_tree(root)


if __name__ == "__main__":
    sys.exit(main())
