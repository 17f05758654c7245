"""What the testcontainers back-end starts, as plain data (DESIGN section 6).

`move_layout` decides the containers of a move topology (image, command, environment,
bind mounts and the files behind them) without Docker, so tests can inspect it and
migrator.lab.containers only has to start it. docker-compose.yml is checked against
the same settings (tests/test_compose.py).

Every container is on the host network and listens on 127.0.0.1 only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from migrator.lab import engine, images
from migrator.lab.sandbox import APP_DB, APP_ROLE, GROUP_ENTRY, WHOLE_ENTRY
from migrator.lab.topology import DEFAULT_SUPERUSER, FAST_SETTINGS, LOGICAL_SETTINGS

DEFAULT_MAJOR = 15
LOOPBACK = "127.0.0.1"

# The config directory is mounted, not the file: the tool rewrites pgbouncer.ini by
# rename (migrator.pgbouncer.config.rewrite_entry), and a single-file bind mount would
# keep showing PgBouncer the old inode.
PGBOUNCER_CONFIG_DIR = "/etc/pgbouncer"
POSTGRES_CONFIG_DIR = "/etc/migrator"
POSTGRES_CONFIG_FILE = f"{POSTGRES_CONFIG_DIR}/postgresql.conf"

# Settings that describe where a server listens, which an image decides (the official
# image: every interface of its network namespace; the lab's: 127.0.0.1), not what a
# move needs of it.
LOCAL_ONLY_SETTINGS = frozenset({"listen_addresses", "unix_socket_directories", "log_directory", "log_filename"})
# A container logs to its stderr (`docker logs`): no logging collector there.
CONTAINER_OVERRIDES = {"logging_collector": "off"}
# Same initdb choices as topology.PostgresCluster.init: password auth over TCP
# (127.0.0.1 included), trust on the socket, UTF8 with C collation.
INITDB_ARGS = "--auth-host=scram-sha-256 --auth-local=trust -E UTF8 --locale=C"


# --------------------------------------------------------------------------- settings


def container_settings(settings: Mapping[str, str] | None = None, *, durable: bool = False) -> dict[str, str]:
    """postgresql.conf settings of a server in a container: the local back-end's minus
    where it listens and logs. Values are in postgresql.conf syntax (strings quoted)."""
    if settings is None:
        settings = {**LOGICAL_SETTINGS, **({} if durable else FAST_SETTINGS)}
    return {key: CONTAINER_OVERRIDES.get(key, value) for key, value in settings.items()
            if key not in LOCAL_ONLY_SETTINGS}


def postgres_command(settings: Mapping[str, str], port: int) -> list[str]:
    """`postgres -c key=value ...`: the settings as an image's command line
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
    misconfigured server. On the host network, loopback only.
    """
    lines = ["# written by migrator's container topology", f"listen_addresses = '{LOOPBACK}'"]
    lines += [f"{key} = {value}" for key, value in container_settings(settings).items()]
    lines.append(f"port = {port}")
    return "\n".join(lines) + "\n"


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == "'" else value


def pgbouncer_ini(
    routes: Mapping[str, str], *, listen_port: int, admin_user: str = DEFAULT_SUPERUSER,
    listen_addr: str = LOOPBACK,
) -> str:
    """pgbouncer.ini for PgBouncer in a container (docker-compose.yml ships this text,
    with listen_addr 0.0.0.0 for its own network namespace).

    The pooling settings are the local back-end's (topology.PgBouncerProcess): transaction
    pooling, so PAUSE waits only for transactions in flight. Logs go to stderr, where
    `docker logs` finds them.
    """
    entries = "".join(f"{entry} = {route}\n" for entry, route in routes.items())
    return (
        "[databases]\n"
        + entries
        + "\n[pgbouncer]\n"
        + f"listen_addr = {listen_addr}\n"
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
    mounts: tuple[Mount, ...] = ()
    port: int | None = None  # where it listens on the host's 127.0.0.1
    role: str = ""  # "postgres" or "pgbouncer"
    major: int | None = None

    def docker_arguments(self) -> dict[str, Any]:
        """Keyword arguments for docker-py's containers.create (testcontainers passes
        them through)."""
        arguments: dict[str, Any] = {
            "image": self.image,
            "command": list(self.command) or None,
            "environment": dict(self.env),
            "volumes": {str(m.host): {"bind": m.container, "mode": m.mode} for m in self.mounts},
            "labels": engine.labels(self.name),
            # The host's network: no address of its own, no published port, no proxy.
            # network=None also stops testcontainers from attaching a network of its own.
            "network_mode": "host",
            "network": None,
        }
        if self.entrypoint:
            arguments["entrypoint"] = list(self.entrypoint)
        if self.role == "postgres":
            # Docker's default /dev/shm (64MB) is smaller than parallel queries may want.
            arguments["shm_size"] = "256m"
        return arguments


@dataclasses.dataclass(frozen=True)
class ContainerLayout:
    """Everything `build_container_move` starts and writes, decided up front."""

    root: Path
    servers: tuple[ContainerSpec, ...]  # source, target
    pgbouncers: tuple[ContainerSpec, ...]
    files: Mapping[Path, tuple[str, int]]  # host path -> (text, mode)
    password: str
    app_password: str
    superuser: str = DEFAULT_SUPERUSER

    @property
    def members(self) -> tuple[ContainerSpec, ...]:
        return (*self.servers, *self.pgbouncers)

    def spec(self, name: str) -> ContainerSpec:
        for spec in self.members:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def write_files(self) -> None:
        """Write the bind-mounted files. Modes let the containers' own user (the images'
        `postgres`) read them; the passwords are throwaway test ones."""
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
    """The containers of a move topology: source, target and PgBouncer(s).

    `ports` maps each of "source", "target", "pgbouncer", "pgbouncer2", ... to the
    port it listens on at 127.0.0.1.
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
            image=images.postgres_image(major),
            command=("postgres", "-c", f"config_file={POSTGRES_CONFIG_FILE}"),
            env={
                "POSTGRES_USER": superuser,
                "POSTGRES_PASSWORD": password,
                "POSTGRES_INITDB_ARGS": INITDB_ARGS,
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
            image=images.pgbouncer_image(),
            # Straight to PgBouncer, in the foreground: the container lives as long as it.
            entrypoint=("pgbouncer", f"{PGBOUNCER_CONFIG_DIR}/pgbouncer.ini"),
            mounts=(Mount(config_dir, PGBOUNCER_CONFIG_DIR),),
            port=port,
            role="pgbouncer",
        ))

    return ContainerLayout(
        root=root, servers=tuple(servers), pgbouncers=tuple(bouncers), files=files,
        password=password, app_password=app_password, superuser=superuser,
    )
