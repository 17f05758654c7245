"""Local Postgres clusters and PgBouncers from installed binaries.

One implementation serves the test fixtures and `migrator sandbox`: clusters made
with initdb/pg_ctl on free loopback ports and PgBouncers whose config file lives in a
directory the tool can rewrite. Postgres and PgBouncer both refuse to run as root, so
when the tool runs as root every server process runs as an unprivileged OS user
(`postgres` by default) through `runuser`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import time
from collections.abc import Mapping
from pathlib import Path

from psycopg import sql
from psycopg.conninfo import make_conninfo

from migrator.errors import OperationFailed
from migrator.lab.binaries import (
    _check_reachable,
    _give_to,
    _major_of,
    _run,
    free_port,
    pgbouncer_binary,
    port_open,
    postgres_bindir,
    run_as_user,
)
from migrator.move.state import process_alive

DEFAULT_SUPERUSER = "migrator"

# What a move needs from a server: logical WAL and room for the slots, senders and
# apply/sync workers of a forward and a reverse subscription (plus tablesync workers).
LOGICAL_SETTINGS: dict[str, str] = {
    "wal_level": "logical",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
    "max_logical_replication_workers": "10",
    "max_sync_workers_per_subscription": "4",
    "max_worker_processes": "20",
    "max_connections": "200",
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    # The collector, so that the server tells where it logs (pg_current_logfile) and
    # the tool can quote a failing replication worker's error; into the file pg_ctl
    # starts the server with, one directory above the data directory.
    "logging_collector": "on",
    "log_directory": "'..'",
    "log_filename": "'postgres.log'",
    "log_line_prefix": "'%m [%p] %q%a '",
    "log_min_messages": "warning",
    "shared_buffers": "128MB",
    "max_wal_size": "2GB",
}

# Tests trade crash safety for speed; the sandbox (and its benchmarks) keeps it.
FAST_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


# --------------------------------------------------------------------------- clusters


@dataclasses.dataclass
class PostgresCluster:
    """One local Postgres cluster listening on 127.0.0.1:port."""

    name: str
    directory: Path
    port: int
    bindir: Path
    password: str
    superuser: str = DEFAULT_SUPERUSER
    run_as: str | None = None
    host: str = "127.0.0.1"

    @property
    def datadir(self) -> Path:
        return self.directory / "data"

    @property
    def logfile(self) -> Path:
        return self.directory / "postgres.log"

    @property
    def major(self) -> int:
        return _major_of(self.bindir)

    def dsn(self, dbname: str = "postgres", user: str | None = None, password: str | None = None) -> str:
        return make_conninfo(
            host=self.host,
            port=self.port,
            dbname=dbname,
            user=user or self.superuser,
            password=password if user else self.password,
        )

    def url(self, dbname: str = "postgres", user: str | None = None, password: str | None = None) -> str:
        """The same DSN in URL form, as a playbook would carry it."""
        user = user or self.superuser
        password = password if password is not None else (self.password if user == self.superuser else None)
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@{self.host}:{self.port}/{dbname}"

    # lifecycle -------------------------------------------------------------

    def init(self, settings: Mapping[str, str]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        _give_to(self.directory, self.run_as)
        _check_reachable(self.directory, self.run_as)
        pwfile = self.directory / "initdb.pw"
        pwfile.write_text(self.password + "\n")
        _give_to(pwfile, self.run_as)
        try:
            _run(
                [
                    str(self.bindir / "initdb"),
                    "-D", str(self.datadir),
                    "-U", self.superuser,
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=trust",
                    "-E", "UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                self.run_as,
                f"initdb of {self.name}",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        self.write_settings(settings)

    def write_settings(self, settings: Mapping[str, str]) -> None:
        conf = self.datadir / "postgresql.auto.conf"
        lines = [f"{key} = {value}" for key, value in settings.items()]
        lines.append(f"port = {self.port}")
        conf.write_text("# written by migrator's local topology\n" + "\n".join(lines) + "\n")
        _give_to(conf, self.run_as)

    def start(self, timeout: float = 60) -> None:
        _run(
            [
                str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile),
                "-w", "-t", str(int(timeout)), "start",
            ],
            self.run_as,
            f"starting {self.name} (log: {self.logfile})",
        )

    def stop(self, mode: str = "fast") -> None:
        if not self.running():
            return
        _run(
            [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"],
            self.run_as,
            f"stopping {self.name}",
        )

    def restart(self) -> None:
        self.stop()
        self.start()

    def promote(self, timeout: float = 60) -> None:
        """A standby becomes a primary (pg_ctl promote waits until it accepts writes)."""
        _run([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-w", "-t", str(int(timeout)), "promote"],
             self.run_as, f"promoting {self.name}")

    def pid(self) -> int | None:
        pidfile = self.datadir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if process_alive(pid) else None

    def running(self) -> bool:
        return self.pid() is not None

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.logfile, lines)

    def to_dict(self) -> dict:
        return {
            "name": self.name, "directory": str(self.directory), "port": self.port,
            "bindir": str(self.bindir), "superuser": self.superuser, "run_as": self.run_as,
        }


# --------------------------------------------------------------------------- pgbouncer


@dataclasses.dataclass
class PgBouncerProcess:
    """One local PgBouncer with an admin console, routing [databases] entries."""

    name: str
    directory: Path
    port: int
    users: dict[str, str]
    admin_user: str = DEFAULT_SUPERUSER
    run_as: str | None = None
    host: str = "127.0.0.1"

    @property
    def config_file(self) -> Path:
        return self.directory / "pgbouncer.ini"

    @property
    def logfile(self) -> Path:
        return self.directory / "pgbouncer.log"

    @property
    def pidfile(self) -> Path:
        return self.directory / "pgbouncer.pid"

    def admin_dsn(self) -> str:
        return make_conninfo(
            host=self.host, port=self.port, dbname="pgbouncer",
            user=self.admin_user, password=self.users[self.admin_user],
        )

    def admin_url(self) -> str:
        return f"postgresql://{self.admin_user}:{self.users[self.admin_user]}@{self.host}:{self.port}/pgbouncer"

    def dsn(self, database: str, user: str) -> str:
        return make_conninfo(
            host=self.host, port=self.port, dbname=database, user=user, password=self.users[user]
        )

    def write_config(self, databases: Mapping[str, PostgresCluster | str], dbname: str = "app") -> None:
        """Write pgbouncer.ini; each entry maps to a cluster (its `dbname`) or a raw connstr."""
        self.directory.mkdir(parents=True, exist_ok=True)
        _give_to(self.directory, self.run_as)
        entries = []
        for entry, route in databases.items():
            if isinstance(route, PostgresCluster):
                route = f"host={route.host} port={route.port} dbname={dbname}"
            entries.append(f"{entry} = {route}")
        userlist = self.directory / "userlist.txt"
        userlist.write_text("".join(f'"{u}" "{p}"\n' for u, p in self.users.items()))
        userlist.chmod(0o600)
        _give_to(userlist, self.run_as)
        # Transaction pooling: PAUSE then only waits for transactions in flight, not
        # for clients to disconnect, which is what makes a sub-second cutover possible.
        self.config_file.write_text(
            "[databases]\n"
            + "\n".join(entries)
            + "\n\n[pgbouncer]\n"
            + f"listen_addr = {self.host}\n"
            + f"listen_port = {self.port}\n"
            + "unix_socket_dir =\n"
            + "auth_type = scram-sha-256\n"
            + f"auth_file = {userlist}\n"
            + f"admin_users = {self.admin_user}\n"
            + f"stats_users = {self.admin_user}\n"
            + "pool_mode = transaction\n"
            + "max_client_conn = 500\n"
            + "default_pool_size = 20\n"
            + "server_reset_query =\n"
            + "ignore_startup_parameters = extra_float_digits,options,statement_timeout\n"
            + f"logfile = {self.logfile}\n"
            + f"pidfile = {self.pidfile}\n"
        )
        # The tool rewrites this file on a reroute; the PgBouncer user must read it.
        self.config_file.chmod(0o644)

    def start(self, timeout: float = 15) -> None:
        if self.running():
            return
        _run([str(pgbouncer_binary()), "-d", str(self.config_file)], self.run_as,
             f"starting pgbouncer {self.name} (log: {self.logfile})")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.running() and port_open(self.port, self.host):
                return
            time.sleep(0.05)
        raise OperationFailed(f"pgbouncer {self.name} did not start: {self.log_tail(5)}")

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if process_alive(pid) else None

    def running(self) -> bool:
        return self.pid() is not None

    def stop(self, timeout: float = 10) -> None:
        pid = self.pid()
        if pid is None:
            return
        _signal(pid, signal.SIGTERM)
        if not _wait_gone(pid, timeout):
            _signal(pid, signal.SIGKILL)
            _wait_gone(pid, 5)
        self.pidfile.unlink(missing_ok=True)

    def kill(self) -> None:
        """Die like a crash: no shutdown, clients cut off."""
        pid = self.pid()
        if pid is not None:
            _signal(pid, signal.SIGKILL)
            _wait_gone(pid, 5)
        self.pidfile.unlink(missing_ok=True)

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.logfile, lines)

    def to_dict(self) -> dict:
        return {
            "name": self.name, "directory": str(self.directory), "port": self.port,
            "users": self.users, "admin_user": self.admin_user, "run_as": self.run_as,
        }


# --------------------------------------------------------------------------- topology


@dataclasses.dataclass
class Topology:
    """Clusters and PgBouncers under one directory; torn down together."""

    root: Path
    clusters: dict[str, PostgresCluster] = dataclasses.field(default_factory=dict)
    pgbouncers: dict[str, PgBouncerProcess] = dataclasses.field(default_factory=dict)
    run_as: str | None = dataclasses.field(default_factory=run_as_user)

    def __post_init__(self) -> None:
        self.root = Path(self.root).absolute()

    def add_cluster(
        self,
        name: str,
        *,
        version: int | None = None,
        password: str,
        settings: Mapping[str, str] | None = None,
        durable: bool = False,
        template: Path | None = None,
    ) -> PostgresCluster:
        """initdb (or copy a ready template data directory) and start a cluster."""
        self.root.mkdir(parents=True, exist_ok=True)
        _give_to(self.root, self.run_as)
        cluster = PostgresCluster(
            name=name,
            directory=self.root / name,
            port=free_port(),
            bindir=postgres_bindir(version),
            password=password,
            run_as=self.run_as,
        )
        merged = {**LOGICAL_SETTINGS, **({} if durable else FAST_SETTINGS), **(settings or {})}
        if template is not None and (template / "PG_VERSION").exists():
            cluster.directory.mkdir(parents=True, exist_ok=True)
            _give_to(cluster.directory, self.run_as)
            _run(["cp", "-a", str(template), str(cluster.datadir)], self.run_as, f"copying {name}")
            cluster.write_settings(merged)
        else:
            cluster.init(merged)
        self.clusters[name] = cluster
        _start_with_fresh_port(cluster, merged)
        return cluster

    def add_standby(self, name: str, primary: PostgresCluster, *, slot_sync: bool, dbname: str = "postgres",
                    durable: bool = False) -> PostgresCluster:
        """A physical standby of primary, streaming from a base backup, on a port of its own.

        slot_sync: the standby keeps the primary's failover slots (PostgreSQL 17+) the way
        the documentation sets it up: a physical slot on the primary (primary_slot_name),
        hot_standby_feedback, sync_replication_slots, a dbname in primary_conninfo, and
        the primary's synchronized_standby_slots naming that slot, so no logical
        walsender sends a change the standby does not have yet."""
        cluster = PostgresCluster(name=name, directory=self.root / name, port=free_port(), bindir=primary.bindir,
                                  password=primary.password, superuser=primary.superuser, run_as=self.run_as)
        cluster.directory.mkdir(parents=True, exist_ok=True)
        _give_to(cluster.directory, self.run_as)
        slot = name.replace("-", "_")
        if slot_sync:
            primary_sql(primary, sql.SQL("SELECT pg_catalog.pg_create_physical_replication_slot({}, true)")
                        .format(sql.Literal(slot)))
        _run([str(primary.bindir / "pg_basebackup"), "-h", primary.host, "-p", str(primary.port),
              "-U", primary.superuser, "-D", str(cluster.datadir), "-X", "stream", "-c", "fast", "--no-sync"],
             self.run_as, f"base backup of {primary.name} for {name}", env={"PGPASSWORD": primary.password})
        conninfo = make_conninfo(host=primary.host, port=primary.port, user=primary.superuser,
                                 password=primary.password, application_name=name,
                                 **({"dbname": dbname} if slot_sync else {}))
        settings = {**LOGICAL_SETTINGS, **({} if durable else FAST_SETTINGS),
                    "primary_conninfo": "'" + conninfo.replace("'", "''") + "'", "hot_standby": "on"}
        if slot_sync:
            settings |= {"primary_slot_name": sql.Literal(slot).as_string(None), "hot_standby_feedback": "on",
                         "sync_replication_slots": "on"}
        cluster.write_settings(settings)
        (cluster.datadir / "standby.signal").touch()
        _give_to(cluster.datadir / "standby.signal", self.run_as)
        self.clusters[name] = cluster
        _start_with_fresh_port(cluster, settings)
        if slot_sync:
            primary_sql(primary, sql.SQL("ALTER SYSTEM SET synchronized_standby_slots = {}").format(sql.Literal(slot)),
                        sql.SQL("SELECT pg_catalog.pg_reload_conf()"))
        return cluster

    def add_pgbouncer(
        self,
        name: str,
        databases: Mapping[str, PostgresCluster | str],
        users: Mapping[str, str],
        *,
        dbname: str = "app",
    ) -> PgBouncerProcess:
        bouncer = PgBouncerProcess(
            name=name, directory=self.root / name, port=free_port(), users=dict(users),
            run_as=self.run_as,
        )
        bouncer.write_config(databases, dbname=dbname)
        self.pgbouncers[name] = bouncer
        for attempt in range(3):
            try:
                bouncer.start()
                break
            except OperationFailed:
                if attempt == 2:
                    raise
                bouncer.port = free_port()
                bouncer.write_config(databases, dbname=dbname)
        return bouncer

    def start(self) -> None:
        for cluster in self.clusters.values():
            if not cluster.running():
                cluster.start()
        for bouncer in self.pgbouncers.values():
            bouncer.start()

    def stop(self) -> None:
        """Stop everything, PgBouncers first; never raises, so teardown always finishes."""
        for bouncer in self.pgbouncers.values():
            try:
                bouncer.stop()
            except Exception:  # noqa: BLE001 - teardown must reach every process
                bouncer.kill()
        for cluster in self.clusters.values():
            try:
                cluster.stop("immediate")
            except Exception:  # noqa: BLE001
                pid = cluster.pid()
                if pid:
                    _signal(pid, signal.SIGKILL)

    def processes(self) -> list[int]:
        pids = [c.pid() for c in self.clusters.values()] + [b.pid() for b in self.pgbouncers.values()]
        return [p for p in pids if p]

    def logs(self, lines: int = 30) -> str:
        parts = []
        for cluster in self.clusters.values():
            parts.append(f"--- {cluster.name} ({cluster.logfile})\n{cluster.log_tail(lines)}")
        for bouncer in self.pgbouncers.values():
            parts.append(f"--- {bouncer.name} ({bouncer.logfile})\n{bouncer.log_tail(lines)}")
        return "\n".join(parts)

    # persistence (the sandbox survives the process that made it) ---------------

    def save(self, path: Path, extra: Mapping | None = None) -> None:
        doc = {
            "root": str(self.root),
            "run_as": self.run_as,
            "clusters": {k: {**c.to_dict(), "password": c.password} for k, c in self.clusters.items()},
            "pgbouncers": {k: b.to_dict() for k, b in self.pgbouncers.items()},
            **(extra or {}),
        }
        path.write_text(json.dumps(doc, indent=2) + "\n")
        path.chmod(0o600)

    @classmethod
    def load(cls, path: Path) -> tuple[Topology, dict]:
        doc = json.loads(path.read_text())
        topo = cls(root=Path(doc["root"]), run_as=doc.get("run_as"))
        for name, c in doc["clusters"].items():
            topo.clusters[name] = PostgresCluster(
                name=name, directory=Path(c["directory"]), port=c["port"], bindir=Path(c["bindir"]),
                password=c["password"], superuser=c["superuser"], run_as=c["run_as"],
            )
        for name, b in doc["pgbouncers"].items():
            topo.pgbouncers[name] = PgBouncerProcess(
                name=name, directory=Path(b["directory"]), port=b["port"], users=b["users"],
                admin_user=b["admin_user"], run_as=b["run_as"],
            )
        return topo, doc


def make_template(directory: Path, *, version: int | None = None, password: str, run_as: str | None) -> Path:
    """An initdb'd data directory to copy: initdb costs seconds, a copy milliseconds."""
    cluster = PostgresCluster(
        name="template", directory=directory, port=0, bindir=postgres_bindir(version),
        password=password, run_as=run_as,
    )
    if not (cluster.datadir / "PG_VERSION").exists():
        cluster.init({})
    return cluster.datadir


def _start_with_fresh_port(cluster: PostgresCluster, settings: Mapping[str, str]) -> None:
    # free_port() can race with another process grabbing the port; pick again.
    for attempt in range(3):
        try:
            cluster.start()
            return
        except OperationFailed:
            if attempt == 2 or port_open(cluster.port) is False and cluster.running():
                raise
            cluster.port = free_port()
            cluster.write_settings(settings)


def primary_sql(cluster: PostgresCluster, *statements: sql.Composable) -> None:
    """Run lab statements as the cluster's superuser (setting a server up, not a move)."""
    from migrator.postgres.connection import connect

    with connect(cluster.dsn(), purpose="lab setup") as conn:
        for statement in statements:
            conn.execute(statement)


# --------------------------------------------------------------------------- processes


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.05)
    return not process_alive(pid)


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def remove_tree(path: Path) -> None:
    """Remove a directory the topology made (files owned by the server user included)."""
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)
