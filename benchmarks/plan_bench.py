"""How long `migrator plan` takes on a large database (run on demand).

    .venv/bin/python benchmarks/plan_bench.py [--tables 1000] [--routines 300] [--runs 3] [--json-out F]

Builds a throwaway topology with `migrator.lab.sandbox` (two local clusters and a
PgBouncer) and, on the source, a database of --tables tables in 10 schemas (each with
a serial key, a foreign key to the one before it in its schema, an enum, a composite
and a domain column, a secondary index) and --routines routines: a third PL/pgSQL
trigger functions (each on a table, writing to another table of the group through
NEW), a third SQL functions reading tables (called by 50 views), a third PL/pgSQL
functions with `:=` assignments, declared variables of composite types and an
aggregate-style loop. Then times `migrator plan PLAYBOOK` (a new process, as a person
runs it: imports, both servers read, the steps built, the screen printed) and
`migrator plan PLAYBOOK --json` (every statement of every step rendered, a document of
about 5 MB) --runs times each, for two playbooks:

- every table named in `tables:` (the group is the whole database, table by table);
- `schemas: all` (whole-database mode: every view, routine and type too, and the
  listing of what stays behind).

Each plan reads both servers (catalogs, sizes, the closure of views, routines and types
with every body parsed), PgBouncer, and builds every step's SQL. Besides the wall time,
the CPU seconds of the plan process and of both servers during it (on a shared machine
these say what the wall time would be with the cores to ourselves). Prints a table and
writes benchmarks/results/plan.json. Goal (issue 19): under 5 s (each median).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from benchlib import (
    RESULTS_DIR,
    cluster_cpu_seconds,
    machine_header,
    ok,
    one_line,
    print_header,
    rerun_command,
    write_json,
)
from rich.console import Console
from rich.table import Table

from migrator.lab.sandbox import APP_DB, build_move_topology

RESULTS = RESULTS_DIR / "plan.json"
REPO = Path(__file__).resolve().parent.parent
GOAL_SECONDS = 5.0
SCHEMAS = 10
console = Console(highlight=False)


def schema_sql(tables: int, routines: int) -> str:
    per_schema = tables // SCHEMAS
    out = []
    for s in range(SCHEMAS):
        out.append(f"""
CREATE SCHEMA s{s};
CREATE TYPE s{s}.state AS ENUM ('new', 'open', 'closed');
CREATE TYPE s{s}.amount AS (currency char(3), cents bigint);
CREATE DOMAIN s{s}.positive AS integer CHECK (VALUE > 0);""")
    out.append(f"""
DO $do$
DECLARE s int; t int;
BEGIN
    FOR s IN 0..{SCHEMAS - 1} LOOP
        FOR t IN 0..{per_schema - 1} LOOP
            EXECUTE format('CREATE TABLE s%s.t%s (id bigserial PRIMARY KEY, parent bigint %s, state s%s.state NOT NULL '
                           'DEFAULT ''new'', total s%s.amount, qty s%s.positive, note text, at timestamptz NOT NULL '
                           'DEFAULT now())', s, t,
                           CASE WHEN t > 0 THEN format('REFERENCES s%s.t%s (id)', s, t - 1) ELSE '' END, s, s, s);
            EXECUTE format('CREATE INDEX ON s%s.t%s (at)', s, t);
        END LOOP;
    END LOOP;
END $do$;""")
    third = routines // 3
    out.append(f"""
DO $do$
DECLARE i int; s int; t int;
BEGIN
    FOR i IN 0..{third - 1} LOOP
        s := i % {SCHEMAS}; t := (i / {SCHEMAS}) % {per_schema};
        EXECUTE format($f$CREATE FUNCTION s%1$s.trg_%2$s() RETURNS trigger LANGUAGE plpgsql AS $b$
            DECLARE n bigint;
            BEGIN
                n := (SELECT count(*) FROM s%1$s.t%3$s WHERE id = NEW.id);
                UPDATE s%1$s.t%3$s SET note = TG_OP WHERE id = NEW.parent;
                RETURN NEW;
            END $b$$f$, s, i, (t + 1) % {per_schema});
        EXECUTE format('CREATE TRIGGER trg_%s AFTER INSERT ON s%s.t%s FOR EACH ROW EXECUTE FUNCTION s%s.trg_%s()',
                       i, s, t, s, i);
        EXECUTE format($f$CREATE FUNCTION s%1$s.total_%2$s(p bigint) RETURNS bigint LANGUAGE sql STABLE AS $b$
            SELECT coalesce(sum((total).cents), 0) FROM s%1$s.t%3$s WHERE parent = p $b$$f$, s, i, t);
        EXECUTE format($f$CREATE FUNCTION s%1$s.work_%2$s(a s%1$s.amount, k int) RETURNS s%1$s.amount
            LANGUAGE plpgsql AS $b$
            DECLARE acc s%1$s.amount; r s%1$s.t%3$s%%ROWTYPE; xs bigint[];
            BEGIN
                acc := a;
                FOR r IN SELECT * FROM s%1$s.t%3$s WHERE id <= k LOOP
                    acc.cents := acc.cents + coalesce((r.total).cents, 0);
                    xs := xs || r.id;
                END LOOP;
                RETURN acc;
            END $b$$f$, s, i, t);
        IF i < 50 THEN
            EXECUTE format('CREATE VIEW s%s.v%s AS SELECT id, state, s%s.total_%s(id) AS sub FROM s%s.t%s',
                           s, i, s, i, s, t);
        END IF;
    END LOOP;
END $do$;
ANALYZE;""")
    return "\n".join(out)


def timed_plan(path: Path, *options: str, servers=()) -> tuple[float, int, float, float]:
    """(wall seconds, exit code, CPU seconds of the plan process, CPU seconds the servers
    spent meanwhile): on a shared machine the CPU seconds say what the wall time would be
    with the cores to ourselves."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    servers_before = sum(cluster_cpu_seconds(s) for s in servers)
    started = time.monotonic()
    ran = subprocess.run([sys.executable, "-m", "migrator", "plan", str(path), *options], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    seconds = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = sum(cluster_cpu_seconds(s) for s in servers) - servers_before
    if ran.returncode not in (0, 3):
        raise SystemExit(f"plan failed ({ran.returncode}): {ran.stderr.strip()[-500:]}")
    client_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return seconds, ran.returncode, client_cpu, server_cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", type=int, default=1000, help="a multiple of 10 (the tables' schemas)")
    parser.add_argument("--routines", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json-out", type=Path, default=RESULTS)
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temporary clusters (default /tmp)")
    args = parser.parse_args(argv)
    if args.tables < SCHEMAS or args.routines < 3:
        parser.error(f"--tables must be at least {SCHEMAS} and --routines at least 3")

    root = Path(tempfile.mkdtemp(prefix="migrator-plan-bench-", dir=args.dir))
    root.chmod(0o755)
    move = build_move_topology(root / "topology")
    try:
        machine = machine_header(move.source.dsn(APP_DB), own_root=root)
        print_header(console, "migrator plan on a large database", machine,
                     {"tables": args.tables, "routines": args.routines, "runs": args.runs})
        with console.status(f"making {args.tables} tables and {args.routines} routines on the source"):
            started = time.monotonic()
            with psycopg.connect(move.source.dsn(APP_DB), autocommit=True) as conn:
                conn.execute(schema_sql(args.tables, args.routines))
                counts = conn.execute(
                    "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "        WHERE c.relkind = 'r' AND n.nspname LIKE 's%'), "
                    "       (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                    "        WHERE n.nspname LIKE 's%'), "
                    "       (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "        WHERE c.relkind = 'v' AND n.nspname LIKE 's%')").fetchone()
            seed_s = time.monotonic() - started
        tables = [f"s{s}.t{t}" for s in range(SCHEMAS) for t in range(args.tables // SCHEMAS)]
        playbooks = {
            "tables: (every table named)": move.write_playbook(root / "tables.yaml",
                                                                move.playbook_doc(tables, name="plan-bench")),
        }
        whole = move.playbook_doc(["s0.t0"], name="plan-bench-whole")
        del whole["tables"]
        whole["schemas"] = "all"
        playbooks["schemas: all (whole database)"] = move.write_playbook(root / "whole.yaml", whole)

        rows = []
        for label, path in playbooks.items():
            timed_plan(path)      # warm the servers' caches once, as a second plan would be
            for options in ((), ("--json",)):
                command = " ".join(["migrator plan", *options])
                times, client, server, code = [], [], [], None
                for number in range(1, args.runs + 1):
                    with console.status(f"{label}: {command} {number}/{args.runs}"):
                        seconds, code, client_cpu, server_cpu = timed_plan(
                            path, *options, servers=(move.source, move.target))
                    times.append(seconds)
                    client.append(client_cpu)
                    server.append(server_cpu)
                rows.append({"playbook": label, "command": command, "runs_s": [round(t, 2) for t in times],
                             "median_s": round(statistics.median(times), 2), "max_s": round(max(times), 2),
                             "client_cpu_s": round(statistics.median(client), 2),
                             "servers_cpu_s": round(statistics.median(server), 2),
                             "exit_code": code, "load_average_after": round(os.getloadavg()[0], 2)})
    finally:
        move.topology.stop()
        shutil.rmtree(root, ignore_errors=True)

    met = all(r["median_s"] < GOAL_SECONDS for r in rows)
    result = {"benchmark": "plan", "machine": machine, "tables": int(counts[0]), "routines": int(counts[1]),
              "views": int(counts[2]), "seed_seconds": round(seed_s, 1), "runs": args.runs, "results": rows,
              "goal_seconds": GOAL_SECONDS, "goal_met": met, "command": rerun_command()}
    write_json(args.json_out, result)

    table = Table(title=f"migrator plan: {counts[0]:,} tables, {counts[1]} routines, {counts[2]} views "
                        f"({one_line(machine)})", title_justify="left")
    for column, justify in (("playbook", "left"), ("command", "left"), ("runs s", "right"), ("median s", "right"),
                            ("max s", "right"), ("plan CPU s", "right"), ("servers CPU s", "right"),
                            ("load after", "right"), ("exit", "right")):
        table.add_column(column, justify=justify)
    for r in rows:
        table.add_row(r["playbook"], r["command"], ", ".join(f"{t:.2f}" for t in r["runs_s"]),
                      f"{r['median_s']:.2f}", f"{r['max_s']:.2f}", f"{r['client_cpu_s']:.2f}",
                      f"{r['servers_cpu_s']:.2f}", f"{r['load_average_after']:.2f}", str(r["exit_code"]))
    console.print(table)
    console.print(f"goal: every median under {GOAL_SECONDS:g} s: {ok(met)} (seeding took {result['seed_seconds']} s); "
                  f"wrote {args.json_out}")
    if not met:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
