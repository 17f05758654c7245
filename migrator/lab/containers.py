"""The testcontainers back-end of the test topology (DESIGN section 6).

The same `MoveTopology` the local back-end builds, on Docker containers of the images
built here (migrator.lab.images: nothing is pulled). migrator.lab.container_layout
decides, as plain data, what to start; `build_container_move` is a short loop that
starts those containers through the `testcontainers` package and sets the servers up
like the local back-end does. `choose_backend` decides which back-end a test session
uses.

Every container is on the host network and listens on 127.0.0.1 only, on a free port
picked like the local back-end's. So no container gets an address of its own, all
traffic stays on loopback, and `127.0.0.1:PORT` names the same server to the test
process, to PgBouncer and to a subscriber: every DSN, [databases] entry and
subscription connection string is what the local back-end uses.

No reaper (its image cannot be pulled here): a topology removes its own containers
when the fixture tears it down, and the test session sweeps whatever its containers'
labels say it left (migrator.lab.engine).
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
from migrator.lab import engine
from migrator.lab.binaries import free_port
from migrator.lab.container_layout import (
    DEFAULT_MAJOR,
    LOOPBACK,
    ContainerLayout,
    ContainerSpec,
    move_layout,
    pgbouncer_ini,
    pgbouncer_names,
    postgresql_conf,
    route,
    userlist,
)
from migrator.lab.sandbox import APP_DB, APP_ROLE, MoveTopology, create_app_database
from migrator.lab.topology import PgBouncerProcess, PostgresCluster
from migrator.postgres.connection import connect

# --------------------------------------------------------------------------- running it


def start_container(spec: ContainerSpec) -> Any:
    """Create and start one container; returns the testcontainers handle."""
    from testcontainers.core.container import DockerContainer

    engine.disable_reaper()
    arguments = spec.docker_arguments()
    container = DockerContainer(arguments.pop("image"))
    container.with_command(arguments.pop("command"))  # type: ignore[arg-type]
    container.with_envs(**arguments.pop("environment"))
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
    """Until a connection succeeds (the entrypoint's init server listens on no TCP port)."""
    try:
        for attempt in Retrying(
            stop=stop_after_delay(timeout), wait=wait_fixed(0.1),
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
        """The postmaster's pid on the Docker host."""
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
        users_file.chmod(0o644)  # the image's postgres user reads it; throwaway test passwords

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
    run_as: str | None = None  # servers run as their images' user, never as us

    @property
    def members(self) -> list[ContainerCluster | ContainerPgBouncer]:
        return [*self.clusters.values(), *self.pgbouncers.values()]

    def start(self) -> None:
        """Start whatever is stopped."""
        if any(member.container is None for member in self.members):
            raise OperationFailed("this topology's containers were removed; build a new one")
        for member in self.members:
            member.start()

    def stop(self) -> None:
        """Remove every container, PgBouncers first; never raises, so teardown always finishes."""
        for member in [*self.pgbouncers.values(), *self.clusters.values()]:
            if member.container is None:
                continue
            try:
                member.container.stop()
            except Exception:  # noqa: BLE001 - teardown must reach every container
                pass
            member.container = None

    def processes(self) -> list[int]:
        """Host pids of the servers still running (empty once stopped)."""
        return [pid for pid in (member.pid() for member in self.members) if pid]

    def logs(self, lines: int = 30) -> str:
        return "\n".join(f"--- {m.name} (docker logs)\n{m.log_tail(lines)}" for m in self.members)


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
        # Both servers initdb at once; then each is set up as the local back-end's are.
        for cluster in topo.clusters.values():
            cluster.container = start_container(layout.spec(cluster.name))
        for cluster in topo.clusters.values():
            cluster.start()
            create_app_database(cluster, layout.app_password)
        for bouncer in topo.pgbouncers.values():
            bouncer.container = start_container(layout.spec(bouncer.name))
        for bouncer in topo.pgbouncers.values():
            bouncer.start()
    except BaseException:
        topo.stop()
        raise
    return MoveTopology(topology=topo, app_password=layout.app_password, directory=root)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- which back-end


BACKENDS = ("local", "testcontainers")


@dataclasses.dataclass(frozen=True)
class BackendChoice:
    """The back-end of a test session, and why, in one line for the pytest header.
    `unusable` says why a requested testcontainers back-end cannot run (tests skip)."""

    name: str
    why: str
    unusable: str | None = None


def choose_backend(requested: str | None, *, engine_answers: bool, images_missing: list[str],
                   build=None) -> BackendChoice:
    """local unless asked otherwise or an engine with the lab's images answers.

    Asked for testcontainers: missing images are built (`build`, which raises
    OperationFailed); without an engine, or when a build fails, the choice stands and
    `unusable` says why, so the tests that need servers skip saying so. Not asked: an
    engine that lacks the images never turns the suite red, it is the local back-end
    and the reason."""
    where = engine.engine_address()
    if requested == "local":
        return BackendChoice("local", "MIGRATOR_TEST_BACKEND=local")
    if requested == "testcontainers":
        if not engine_answers:
            return BackendChoice("testcontainers", "MIGRATOR_TEST_BACKEND=testcontainers", unusable=(
                f"MIGRATOR_TEST_BACKEND=testcontainers, but no Docker engine answers at {where} "
                "(start dockerd, or set DOCKER_HOST)"))
        if images_missing and build is not None:
            try:
                build()
            except OperationFailed as exc:
                return BackendChoice("testcontainers", "MIGRATOR_TEST_BACKEND=testcontainers", unusable=(
                    f"the lab's images could not be built: {exc.message}"))
        return BackendChoice("testcontainers", f"MIGRATOR_TEST_BACKEND=testcontainers, engine at {where}")
    if not engine_answers:
        return BackendChoice("local", "no Docker engine answers")
    if images_missing:
        return BackendChoice("local", (
            f"a Docker engine answers at {where} but lacks the lab's images ({', '.join(images_missing)}): "
            "`python -m migrator.lab.images` builds them, MIGRATOR_TEST_BACKEND=testcontainers too"))
    return BackendChoice("testcontainers", f"a Docker engine with the lab's images answers at {where}")


__all__ = [
    "BackendChoice",
    "ContainerCluster",
    "ContainerPgBouncer",
    "ContainerTopology",
    "build_container_move",
    "choose_backend",
    "start_container",
]
