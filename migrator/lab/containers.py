"""The testcontainers back-end of the test topology (DESIGN section 6).

Chosen when a Docker engine answers or MIGRATOR_TEST_BACKEND=testcontainers. No
Docker engine runs on the reference machines, so this stays thin: `move_layout`
decides, as plain data, what to start (images, commands, environment, published
ports, bind mounts and the files behind them); `build_container_move` is a short
loop that starts those containers and hands back the same `MoveTopology` the local
back-end builds, with the same `app` database and role setup.

One network namespace for the whole topology. Every container joins the namespace
of a do-nothing "pod" container (the Kubernetes pause-container pattern), which
publishes every port on the host's 127.0.0.1. So `127.0.0.1:PORT` names the same
server from the test process, from PgBouncer and from a subscriber. A docker network
with per-container aliases would make them disagree: the test process would know the
source as 127.0.0.1:<published port>, PgBouncer and the target as source:5432, and
the tool would need two addresses per server (for subscriptions and for the
[databases] entry it writes on a reroute). With one namespace, each server listens
inside on the port it is published on, and every DSN, [databases] entry and
subscription connection string is what the local back-end uses.
"""

from __future__ import annotations

import dataclasses
import secrets
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from migrator.errors import OperationFailed, ServerUnreachable
from migrator.lab.binaries import free_port
from migrator.lab.sandbox import (
    APP_DB,
    APP_ROLE,
    GROUP_ENTRY,
    WHOLE_ENTRY,
    MoveTopology,
    create_app_database,
)
from migrator.lab.topology import (
    DEFAULT_SUPERUSER,
    FAST_SETTINGS,
    LOGICAL_SETTINGS,
    PgBouncerProcess,
    PostgresCluster,
)
from migrator.postgres.connection import connect

DEFAULT_MAJOR = 15
LOOPBACK = "127.0.0.1"

POSTGRES_IMAGE = "postgres:{major}"  # the official image
# edoburu/pgbouncer: a small Alpine image, PgBouncer on PATH, running as an
# unprivileged user (uid 70). It reads a config it did not write from
# /etc/pgbouncer, so that directory can be a bind mount. (bitnami/pgbouncer renders
# its config from environment variables and left Docker Hub's free catalogue in 2025.)
PGBOUNCER_IMAGE = "edoburu/pgbouncer:v1.24.1-p0"
# Owns the network namespace everyone else joins; it only waits for a signal.
POD_IMAGE = "registry.k8s.io/pause:3.10"

# The config directory is mounted, not the file: the tool rewrites pgbouncer.ini by
# rename (migrator.pgbouncer.console.write_atomically), and a single-file bind mount would
# keep showing PgBouncer the old inode.
PGBOUNCER_CONFIG_DIR = "/etc/pgbouncer"
POSTGRES_CONFIG_DIR = "/etc/migrator"
POSTGRES_CONFIG_FILE = f"{POSTGRES_CONFIG_DIR}/postgresql.conf"

# Settings that describe the local back-end's machine, not a server in a container:
# the image listens on every interface of its namespace and keeps its socket directory.
# A container logs to its stderr (`docker logs`): no logging collector there.
LOCAL_ONLY_SETTINGS = frozenset({"listen_addresses", "unix_socket_directories", "log_directory", "log_filename"})
CONTAINER_OVERRIDES = {"logging_collector": "off"}
# Same initdb choices as topology.PostgresCluster.init: password auth over TCP
# (127.0.0.1 included), trust on the socket, UTF8 with C collation.
INITDB_ARGS = "--auth-host=scram-sha-256 --auth-local=trust -E UTF8 --locale=C"

LABEL = "org.migrator.lab.topology"


# --------------------------------------------------------------------------- settings


def container_settings(settings: Mapping[str, str] | None = None, *, durable: bool = False) -> dict[str, str]:
    """postgresql.conf settings of a server in a container: the local back-end's minus
    its machine-specific keys. Values are in postgresql.conf syntax (strings quoted)."""
    if settings is None:
        settings = {**LOGICAL_SETTINGS, **({} if durable else FAST_SETTINGS)}
    return {key: CONTAINER_OVERRIDES.get(key, value) for key, value in settings.items()
            if key not in LOCAL_ONLY_SETTINGS}


def postgres_command(settings: Mapping[str, str], port: int) -> list[str]:
    """`postgres -c key=value ...`: the settings as the official image's command line
    (docker-compose.yml uses this form). A -c value is taken literally, so the
    postgresql.conf quotes come off."""
    argv = ["postgres"]
    for key, value in {**settings, "port": str(port)}.items():
        argv += ["-c", f"{key}={_unquote(value)}"]
    return argv


def postgresql_conf(settings: Mapping[str, str], port: int) -> str:
    """The main config file of a server in the test back-end (bind-mounted).

    The test back-end starts Postgres with `-c config_file=...` rather than a -c per
    setting: command-line settings outrank postgresql.auto.conf, so neither ALTER
    SYSTEM nor `write_settings` could change wal_level for a test that needs a
    misconfigured server.
    """
    lines = ["# written by migrator's container topology", "listen_addresses = '*'"]
    lines += [f"{key} = {value}" for key, value in container_settings(settings).items()]
    lines.append(f"port = {port}")
    return "\n".join(lines) + "\n"


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == "'" else value


def pgbouncer_ini(
    routes: Mapping[str, str], *, listen_port: int, admin_user: str = DEFAULT_SUPERUSER
) -> str:
    """pgbouncer.ini for PgBouncer in a container (docker-compose.yml ships this text).

    The pooling settings are the local back-end's (topology.PgBouncerProcess): transaction
    pooling, so PAUSE waits only for transactions in flight. Logs go to stderr, where
    `docker logs` finds them.
    """
    entries = "".join(f"{entry} = {route}\n" for entry, route in routes.items())
    return (
        "[databases]\n"
        + entries
        + "\n[pgbouncer]\n"
        + "listen_addr = 0.0.0.0\n"
        + f"listen_port = {listen_port}\n"
        + "unix_socket_dir =\n"
        + "auth_type = scram-sha-256\n"
        + f"auth_file = {PGBOUNCER_CONFIG_DIR}/userlist.txt\n"
        + f"admin_users = {admin_user}\n"
        + f"stats_users = {admin_user}\n"
        + "pool_mode = transaction\n"
        + "max_client_conn = 500\n"
        + "default_pool_size = 20\n"
        + "server_reset_query =\n"
        + "ignore_startup_parameters = extra_float_digits,options,statement_timeout\n"
    )


def userlist(users: Mapping[str, str]) -> str:
    return "".join(f'"{user}" "{password}"\n' for user, password in users.items())


def route(port: int, dbname: str = APP_DB) -> str:
    """A [databases] connection string to a server of the topology (no secret)."""
    return f"host={LOOPBACK} port={port} dbname={dbname}"


# --------------------------------------------------------------------------- the layout


@dataclasses.dataclass(frozen=True)
class Mount:
    """A host directory bind-mounted into a container."""

    host: Path
    container: str
    mode: str = "ro"


@dataclasses.dataclass(frozen=True)
class ContainerSpec:
    """One container to start: plain data, no Docker needed to build or inspect it."""

    name: str
    image: str
    command: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    published: Mapping[int, int] = dataclasses.field(default_factory=dict)  # inside -> host port
    mounts: tuple[Mount, ...] = ()
    in_pod: bool = True  # joins the pod's network namespace
    port: int | None = None  # what it listens on inside the pod (= its host port)
    role: str = ""  # "pod", "postgres" or "pgbouncer"
    major: int | None = None

    def docker_arguments(self, pod_id: str | None = None) -> dict[str, Any]:
        """Keyword arguments for docker-py's containers.create (testcontainers passes
        them through)."""
        arguments: dict[str, Any] = {
            "image": self.image,
            "command": list(self.command) or None,
            "environment": dict(self.env),
            "ports": {f"{inside}/tcp": (LOOPBACK, outside) for inside, outside in self.published.items()},
            "volumes": {str(m.host): {"bind": m.container, "mode": m.mode} for m in self.mounts},
            "labels": {LABEL: self.name},
        }
        if self.entrypoint:
            arguments["entrypoint"] = list(self.entrypoint)
        if self.role == "postgres":
            # Docker's default /dev/shm (64MB) is smaller than parallel queries may want.
            arguments["shm_size"] = "256m"
        if self.in_pod:
            if pod_id is None:
                raise ValueError(f"{self.name} joins the pod: its container id is needed")
            # network=None also stops testcontainers from attaching a network of its own,
            # which Docker refuses next to a container network mode.
            arguments["network_mode"] = f"container:{pod_id}"
            arguments["network"] = None
        return arguments


@dataclasses.dataclass(frozen=True)
class ContainerLayout:
    """Everything `build_container_move` starts and writes, decided up front."""

    root: Path
    pod: ContainerSpec
    servers: tuple[ContainerSpec, ...]  # source, target
    pgbouncers: tuple[ContainerSpec, ...]
    files: Mapping[Path, tuple[str, int]]  # host path -> (text, mode)
    password: str
    app_password: str
    superuser: str = DEFAULT_SUPERUSER

    def spec(self, name: str) -> ContainerSpec:
        for spec in (self.pod, *self.servers, *self.pgbouncers):
            if spec.name == name:
                return spec
        raise KeyError(name)

    def write_files(self) -> None:
        """Write the bind-mounted files. Modes let the containers' own users read them
        (postgres uid 999, pgbouncer uid 70); the passwords are throwaway test ones."""
        for path, (text, mode) in self.files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.parent.chmod(0o755)
            path.write_text(text)
            path.chmod(mode)


def pgbouncer_names(count: int) -> list[str]:
    return ["pgbouncer" if index == 0 else f"pgbouncer{index + 1}" for index in range(count)]


def move_layout(
    root: Path,
    *,
    ports: Mapping[str, int],
    password: str,
    app_password: str,
    source_version: int | None = None,
    target_version: int | None = None,
    pgbouncers: int = 1,
    durable: bool = False,
) -> ContainerLayout:
    """The containers of a move topology: a pod, source, target and PgBouncer(s).

    `ports` maps each of "source", "target", "pgbouncer", "pgbouncer2", ... to the
    port it listens on inside the pod and is published on at 127.0.0.1.
    """
    root = Path(root)
    superuser = DEFAULT_SUPERUSER
    files: dict[Path, tuple[str, int]] = {}
    settings = container_settings(durable=durable)

    servers = []
    for name, version in (("source", source_version), ("target", target_version)):
        major = version or DEFAULT_MAJOR
        port = ports[name]
        config_dir = root / name
        files[config_dir / "postgresql.conf"] = (postgresql_conf(settings, port), 0o644)
        servers.append(ContainerSpec(
            name=name,
            image=POSTGRES_IMAGE.format(major=major),
            command=("postgres", "-c", f"config_file={POSTGRES_CONFIG_FILE}"),
            env={
                "POSTGRES_USER": superuser,
                "POSTGRES_PASSWORD": password,
                "POSTGRES_DB": "postgres",
                "POSTGRES_INITDB_ARGS": INITDB_ARGS,
                # The image's entrypoint and its psql find the server by PGPORT.
                "PGPORT": str(port),
            },
            mounts=(Mount(config_dir, POSTGRES_CONFIG_DIR),),
            port=port,
            role="postgres",
            major=major,
        ))

    users = {superuser: password, APP_ROLE: app_password}
    source_route = route(ports["source"])
    bouncers = []
    for name in pgbouncer_names(pgbouncers):
        port = ports[name]
        config_dir = root / name
        ini = pgbouncer_ini({WHOLE_ENTRY: source_route, GROUP_ENTRY: source_route}, listen_port=port)
        # 0644 like the local back-end's: the tool rewrites the file, PgBouncer reads it.
        files[config_dir / "pgbouncer.ini"] = (ini, 0o644)
        files[config_dir / "userlist.txt"] = (userlist(users), 0o644)
        bouncers.append(ContainerSpec(
            name=name,
            image=PGBOUNCER_IMAGE,
            # Straight to PgBouncer: the image's entrypoint would write a config of
            # its own when it finds none.
            entrypoint=("pgbouncer", f"{PGBOUNCER_CONFIG_DIR}/pgbouncer.ini"),
            mounts=(Mount(config_dir, PGBOUNCER_CONFIG_DIR),),
            port=port,
            role="pgbouncer",
        ))

    every_port = [spec.port for spec in (*servers, *bouncers) if spec.port is not None]
    pod = ContainerSpec(
        name="pod", image=POD_IMAGE, published={p: p for p in every_port}, in_pod=False, role="pod"
    )
    return ContainerLayout(
        root=root, pod=pod, servers=tuple(servers), pgbouncers=tuple(bouncers), files=files,
        password=password, app_password=app_password, superuser=superuser,
    )


# --------------------------------------------------------------------------- running it


def docker_available() -> bool:
    """Does a Docker engine answer? (The client alone is not enough.)"""
    try:
        import docker  # type: ignore[import-untyped]
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=2)
        client.ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means "no engine here"
        return False


def start_container(spec: ContainerSpec, pod_id: str | None = None) -> Any:
    """Create and start one container; returns the testcontainers handle.

    testcontainers rather than bare docker-py: its reaper removes the containers of a
    test session that died without tearing down.
    """
    from testcontainers.core.container import DockerContainer

    arguments = spec.docker_arguments(pod_id)
    container = DockerContainer(arguments.pop("image"))
    container.with_command(arguments.pop("command"))  # type: ignore[arg-type]
    container.with_envs(**arguments.pop("environment"))
    # with_bind_ports takes no host address; docker-py accepts (address, port).
    container.ports.update(arguments.pop("ports"))
    for host, mount in arguments.pop("volumes").items():
        container.with_volume_mapping(host, mount["bind"], mount["mode"])
    container.with_kwargs(**arguments)
    return container.start()


def _docker(container: Any) -> Any:
    return container.get_wrapped_container() if container is not None else None


def _status(container: Any) -> str | None:
    wrapped = _docker(container)
    if wrapped is None:
        return None
    try:
        wrapped.reload()
    except Exception:  # noqa: BLE001 - a removed container is simply not running
        return None
    return wrapped.status


def _host_pid(container: Any) -> int | None:
    if _status(container) != "running":
        return None
    return _docker(container).attrs.get("State", {}).get("Pid") or None


def _logs(container: Any, lines: int) -> str:
    wrapped = _docker(container)
    if wrapped is None:
        return "(no container)"
    try:
        return wrapped.logs(tail=lines).decode(errors="replace").rstrip()
    except Exception as exc:  # noqa: BLE001 - logs are for a failure report
        return f"(no log: {exc})"


def _wait_until(connect_to: str, what: str, container: Any, timeout: float = 120) -> None:
    """Until a connection succeeds. With Docker's port proxy, an open port says nothing."""
    try:
        for attempt in Retrying(
            stop=stop_after_delay(timeout), wait=wait_fixed(0.25),
            retry=retry_if_exception_type(ServerUnreachable), reraise=True,
        ):
            with attempt:
                if _status(container) not in ("running", "restarting"):
                    raise OperationFailed(f"{what} exited: {_logs(container, 5)}")
                connect(connect_to, purpose="lab wait", connect_timeout=2).close()
    except ServerUnreachable as exc:
        raise OperationFailed(
            f"{what} accepted no connection within {timeout:.0f}s: {exc.message}",
            hint=f"its log ends with: {_logs(container, 5)}",
        ) from exc


@dataclasses.dataclass
class ContainerCluster(PostgresCluster):
    """A Postgres container, with the local cluster's interface (dsn, url, start, ...)."""

    spec: ContainerSpec | None = None
    container: Any = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def config_file(self) -> Path:
        return self.directory / "postgresql.conf"

    @property
    def major(self) -> int:
        return self.spec.major if self.spec and self.spec.major else DEFAULT_MAJOR

    def write_settings(self, settings: Mapping[str, str]) -> None:
        """Replace the server's settings; they apply at the next restart (as locally)."""
        self.config_file.write_text(postgresql_conf(settings, self.port))
        self.config_file.chmod(0o644)

    def start(self, timeout: float = 120) -> None:
        if not self.running():
            _docker(self.container).start()
        _wait_until(self.dsn(), f"postgres {self.name}", self.container, timeout)

    def stop(self, mode: str = "fast") -> None:
        if not self.running():
            return
        # pg_ctl's modes are signals to the postmaster, which is the container's PID 1.
        sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
        wrapped = _docker(self.container)
        wrapped.kill(signal=sig.name)
        wrapped.wait(timeout=60)

    def restart(self) -> None:
        self.stop()
        self.start()

    def pid(self) -> int | None:
        """The postmaster's pid on the Docker host (a Docker Desktop VM's, on a Mac)."""
        return _host_pid(self.container)

    def running(self) -> bool:
        return _status(self.container) == "running"

    def log_tail(self, lines: int = 40) -> str:
        return _logs(self.container, lines)


@dataclasses.dataclass
class ContainerPgBouncer(PgBouncerProcess):
    """A PgBouncer container whose config directory is a bind mount of `directory`."""

    container: Any = dataclasses.field(default=None, repr=False, compare=False)

    def write_config(self, databases: Mapping[str, PostgresCluster | str], dbname: str = APP_DB) -> None:
        routes = {
            entry: route(target.port, dbname) if isinstance(target, PostgresCluster) else target
            for entry, target in databases.items()
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(pgbouncer_ini(routes, listen_port=self.port, admin_user=self.admin_user))
        self.config_file.chmod(0o644)
        users_file = self.directory / "userlist.txt"
        users_file.write_text(userlist(self.users))
        users_file.chmod(0o644)  # PgBouncer's uid 70 reads it; throwaway test passwords

    def start(self, timeout: float = 60) -> None:
        if not self.running():
            _docker(self.container).start()
        _wait_until(self.admin_dsn(), f"pgbouncer {self.name}", self.container, timeout)

    def stop(self, timeout: float = 10) -> None:
        if self.running():
            _docker(self.container).stop(timeout=int(timeout))

    def kill(self) -> None:
        """Die like a crash: no shutdown, clients cut off."""
        if self.running():
            wrapped = _docker(self.container)
            wrapped.kill(signal="SIGKILL")
            wrapped.wait(timeout=30)

    def pid(self) -> int | None:
        return _host_pid(self.container)

    def running(self) -> bool:
        return _status(self.container) == "running"

    def log_tail(self, lines: int = 40) -> str:
        return _logs(self.container, lines)


@dataclasses.dataclass
class ContainerTopology:
    """The containers of one move topology; the local `Topology`'s interface."""

    root: Path
    layout: ContainerLayout
    clusters: dict[str, ContainerCluster] = dataclasses.field(default_factory=dict)
    pgbouncers: dict[str, ContainerPgBouncer] = dataclasses.field(default_factory=dict)
    pod: Any = None
    run_as: str | None = None  # servers run as their images' users, never as us

    def start(self) -> None:
        """Start whatever is stopped; the pod first, since everyone shares its network."""
        if self.pod is None:
            raise OperationFailed("this topology's containers were removed; build a new one")
        if _status(self.pod) != "running":
            _docker(self.pod).start()
        for cluster in self.clusters.values():
            cluster.start()
        for bouncer in self.pgbouncers.values():
            bouncer.start()

    def stop(self) -> None:
        """Remove every container, the pod last; never raises, so teardown always finishes."""
        members = [*self.pgbouncers.values(), *self.clusters.values()]
        for handle in [m.container for m in members] + [self.pod]:
            if handle is None:
                continue
            try:
                handle.stop()
            except Exception:  # noqa: BLE001 - teardown must reach every container
                pass
        for member in members:
            member.container = None
        self.pod = None

    def processes(self) -> list[int]:
        """Host pids of the servers still running (empty once stopped)."""
        pids = [c.pid() for c in self.clusters.values()] + [b.pid() for b in self.pgbouncers.values()]
        return [p for p in pids if p]

    def logs(self, lines: int = 30) -> str:
        parts = [f"--- {m.name} (docker logs)\n{m.log_tail(lines)}"
                 for m in (*self.clusters.values(), *self.pgbouncers.values())]
        return "\n".join(parts)


def build_container_move(
    root: Path,
    *,
    source_version: int | None = None,
    target_version: int | None = None,
    pgbouncers: int = 1,
    password: str,
    durable: bool = False,
) -> MoveTopology:
    """Start the move topology in containers: what `build_move_topology` does locally."""
    root = Path(root).absolute()
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    names = ["source", "target", *pgbouncer_names(pgbouncers)]
    layout = move_layout(
        root, ports={name: free_port() for name in names}, password=password,
        app_password=secrets.token_urlsafe(12), source_version=source_version,
        target_version=target_version, pgbouncers=pgbouncers, durable=durable,
    )
    layout.write_files()
    topo = ContainerTopology(root=root, layout=layout)
    for spec in layout.servers:
        topo.clusters[spec.name] = ContainerCluster(
            name=spec.name, directory=root / spec.name, port=spec.port or 0, bindir=Path(),
            password=password, superuser=layout.superuser, host=LOOPBACK, spec=spec,
        )
    users = {layout.superuser: password, APP_ROLE: layout.app_password}
    for spec in layout.pgbouncers:
        topo.pgbouncers[spec.name] = ContainerPgBouncer(
            name=spec.name, directory=root / spec.name, port=spec.port or 0, users=dict(users),
            admin_user=layout.superuser, host=LOOPBACK,
        )
    try:
        topo.pod = start_container(layout.pod)
        pod_id = topo.pod.get_container_id()
        for cluster in topo.clusters.values():
            cluster.container = start_container(layout.spec(cluster.name), pod_id)
        for cluster in topo.clusters.values():
            cluster.start()
            create_app_database(cluster, layout.app_password)
        for bouncer in topo.pgbouncers.values():
            bouncer.container = start_container(layout.spec(bouncer.name), pod_id)
            bouncer.start()
    except BaseException:
        topo.stop()
        raise
    return MoveTopology(topology=topo, app_password=layout.app_password, directory=root)  # type: ignore[arg-type]


__all__ = [
    "ContainerCluster",
    "ContainerLayout",
    "ContainerPgBouncer",
    "ContainerSpec",
    "ContainerTopology",
    "build_container_move",
    "container_settings",
    "docker_available",
    "move_layout",
    "pgbouncer_ini",
    "postgres_command",
    "postgresql_conf",
]
