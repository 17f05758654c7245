"""What the on-demand benchmarks share: the machine header, the noise note, JSON out.

Not part of the pytest suite. Imported by the scripts next to it (run them as
`python benchmarks/NAME.py`, which puts this directory on sys.path).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _meminfo_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _pgbouncer_version() -> str:
    from migrator.lab.binaries import pgbouncer_binary

    try:
        out = subprocess.run([str(pgbouncer_binary()), "--version"], capture_output=True, text=True).stdout
        return out.splitlines()[0].strip() if out else "unknown"
    except Exception:  # noqa: BLE001 - a header must not fail the benchmark
        return "unknown"


def other_activity(own_root: Path | None = None) -> dict:
    """What else runs on this (shared) machine: load, other Postgres clusters, test runs."""
    postmasters = pytest = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = b" ".join(argv).decode(errors="replace")
        if argv and argv[0].endswith(b"/postgres") and " -D " in text:
            if own_root is None or str(own_root) not in text:
                postmasters += 1
        elif "pytest" in text and "python" in text:
            pytest += 1
    load1, load5, load15 = os.getloadavg()
    return {
        "loadavg": [round(load1, 2), round(load5, 2), round(load15, 2)],
        "other_postgres_clusters": postmasters,
        "pytest_processes": pytest,
    }


def code_version() -> str:
    """The commit measured, and whether migrator/ had uncommitted changes (a shared tree)."""
    top = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(top), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(top), "status", "--porcelain", "--", "migrator"],
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"
    return (sha or "unknown") + (" + uncommitted changes in migrator/" if dirty else "")


def machine_header(server_dsn: str | None = None, own_root: Path | None = None) -> dict:
    pg_version = "unknown"
    if server_dsn:
        with psycopg.connect(server_dsn) as conn:
            pg_version = conn.execute("SELECT version()").fetchone()[0].split(" on ")[0]
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": _meminfo_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgres": pg_version,
        "pgbouncer": _pgbouncer_version(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "code": code_version(),
        "activity_at_start": other_activity(own_root),
    }


def one_line(machine: dict) -> str:
    a = machine["activity_at_start"]
    return (f"{machine['cores']} cores ({machine['cpu']}), {machine['ram_gib']} GiB RAM, {machine['postgres']}, "
            f"{machine['pgbouncer']}; load {a['loadavg'][0]}, {a['other_postgres_clusters']} other Postgres "
            f"clusters and {a['pytest_processes']} pytest processes running")


def print_header(console: Console, title: str, machine: dict, extra: dict | None = None) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("", style="bold")
    table.add_column("")
    for key in ("cpu", "cores", "ram_gib", "kernel", "python", "postgres", "pgbouncer", "when", "code"):
        table.add_row(key, str(machine[key]))
    a = machine["activity_at_start"]
    table.add_row("machine load", f"loadavg {a['loadavg']}, {a['other_postgres_clusters']} other Postgres "
                                  f"clusters, {a['pytest_processes']} pytest processes (shared, noisy machine)")
    for key, value in (extra or {}).items():
        table.add_row(key, str(value))
    console.print(table)


def write_json(path: Path, doc: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return path


def table_digest(dsn: str, table: str) -> tuple[int, str | None]:
    """(row count, md5 over every row in primary-key order) of one table."""
    schema, name = table.split(".")
    with psycopg.connect(dsn) as conn:
        key = conn.execute(
            """
            SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY array_position(i.indkey, a.attnum))
            FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
            WHERE i.indrelid = to_regclass(%s) AND i.indisprimary
            """,
            (table,),
        ).fetchone()[0]
        query = sql.SQL("SELECT count(*), md5(string_agg(md5(t::text), '' ORDER BY {})) FROM {} t").format(
            sql.SQL(key), sql.Identifier(schema, name))
        count, digest = conn.execute(query).fetchone()
        return int(count), digest


def ok(flag: bool) -> str:
    return "[green]met[/]" if flag else "[red]MISSED[/]"


def fmt_s(seconds: float | None, places: int = 1) -> str:
    return "-" if seconds is None else f"{seconds:.{places}f}"


def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def rerun_command() -> str:
    return " ".join([".venv/bin/python", *[a if " " not in a else repr(a) for a in sys.argv]])


# --------------------------------------------------------------------------- load in its own process


def _load_main(pipe, specs: dict) -> None:
    from migrator.lab.workload import Workload

    loads = {name: Workload(dsn, **kwargs) for name, (dsn, kwargs) in specs.items()}
    for load in loads.values():
        load.start()
    pipe.send("started")
    try:
        while True:
            message = pipe.recv()
            if message[0] == "result":
                _, name, since, until = message
                pipe.send(loads[name].result(since, until).to_dict())
            elif message[0] == "stop":
                pipe.send({name: load.stop().to_dict() for name, load in loads.items()})
            else:
                break
    finally:
        for load in loads.values():
            load.stop()


class LoadProcess:
    """migrator.lab.workload.Workload clients in a child process, so that the client threads
    and the tool under test do not share one interpreter (and its GIL), as in production.
    Windows are time.monotonic() instants, the same clock in both processes on Linux."""

    def __init__(self, specs: dict[str, tuple[str, dict]]) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.process = ctx.Process(target=_load_main, args=(child, specs), daemon=True, name="bench-load")

    def start(self) -> LoadProcess:
        self.process.start()
        if not self.pipe.poll(60) or self.pipe.recv() != "started":
            raise RuntimeError("the load process did not start")
        return self

    def result(self, name: str, since: float, until: float) -> dict:
        self.pipe.send(("result", name, since, until))
        return self.pipe.recv()

    def stop(self) -> dict[str, dict]:
        self.pipe.send(("stop",))
        return self.pipe.recv()

    def close(self) -> None:
        if self.process.is_alive():
            try:
                self.pipe.send(("exit",))
            except OSError:
                pass
            self.process.join(15)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)


def cluster_cpu_seconds(cluster) -> float:
    """CPU seconds a local cluster has used so far: the postmaster, its live processes
    and the ones it already reaped (tablesync workers, finished backends). Less noisy on
    a shared machine than wall time: other processes slow us down, they do not add CPU."""
    import psutil

    postmaster = psutil.Process(int((cluster.datadir / "postmaster.pid").read_text().split()[0]))
    own = postmaster.cpu_times()
    total = own.user + own.system + own.children_user + own.children_system
    for child in postmaster.children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total
