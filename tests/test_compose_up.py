"""docker-compose.yml with its local override, brought up for real: the user's compose
topology on the lab's images and the host network, with the compose command this
machine has (Debian's docker-compose). playbooks/compose.yaml is planned, executed and
rolled back against it, then it is taken down. Runs where the testcontainers back-end
does (CI's testcontainers pass); skipped elsewhere, saying why."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time

import psutil
import psycopg
import pytest
from click.testing import CliRunner
from conftest import backend_choice
from test_compose import (
    COMPOSE_FILE,
    COMPOSE_PLAYBOOK,
    PASSWORD_ENV,
    REPO,
    compose_password,
    userlist_passwords,
)

from migrator.cli import cli
from migrator.lab import engine
from migrator.lab.binaries import port_open
from migrator.lab.sandbox import APP_ROLE, GROUP_ENTRY
from migrator.pgbouncer.config import read_entry

pytestmark = [pytest.mark.containers, pytest.mark.timeout(240)]

OVERRIDE = REPO / "docker-compose.local.yml"
PORTS = {"source": 15432, "target": 15433, "pgbouncer": 16432}  # docker-compose.yml's


def compose_command() -> list[str] | None:
    """`docker compose` (the v2 plugin) or `docker-compose` (Debian's 1.29), whichever runs."""
    for argv in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(argv[0]) and subprocess.run([*argv, "version"], capture_output=True).returncode == 0:
            return argv
    return None


@pytest.fixture
def compose_up(tmp_path):
    """The compose topology in a copy of the files it needs (the tool rewrites
    compose/pgbouncer/pgbouncer.ini: never the checkout's), under a project name of
    its own; taken down (volumes too) after the test, whatever happened."""
    choice = backend_choice()
    if choice.name != "testcontainers" or choice.unusable:
        pytest.skip(f"needs a Docker engine with the lab's images: backend={choice.name} "
                    f"({choice.unusable or choice.why})")
    command = compose_command()
    if command is None:
        pytest.skip("no compose command: apt-get install docker-compose")
    busy = [f"{name} {port}" for name, port in PORTS.items() if port_open(port)]
    if busy:
        pytest.skip(f"docker-compose.yml's ports are taken on 127.0.0.1: {', '.join(busy)}")
    directory = tmp_path / "checkout"
    directory.mkdir()
    for name in ("docker-compose.yml", "docker-compose.local.yml"):
        shutil.copy(REPO / name, directory / name)
    for name in ("compose", "playbooks"):
        shutil.copytree(REPO / name, directory / name)
    project = f"migrator-test-{secrets.token_hex(3)}"
    argv = [*command, "-p", project, "-f", "docker-compose.yml", "-f", "docker-compose.local.yml"]

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([*argv, *args], cwd=directory, capture_output=True, text=True, timeout=timeout)

    try:
        up = run("up", "-d")
        assert up.returncode == 0, up.stdout + up.stderr
        yield directory, project
    finally:
        down = run("down", "-v", "--remove-orphans")
        assert down.returncode == 0, down.stdout + down.stderr
        assert not project_containers(project), "docker-compose down left containers"


def project_containers(project: str) -> list:
    client = engine.docker_client()
    return client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"})


def wait_connectable(dsn: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(dsn, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def served_by(app_dsn: str) -> int:
    """The port of the server behind a PgBouncer entry, asked through it."""
    with psycopg.connect(app_dsn, prepare_threshold=None) as conn:
        return conn.execute("SELECT inet_server_port()").fetchone()[0]


def listening(pids: set[int]) -> set[tuple[str, int]]:
    family = set(pids)
    for pid in pids:
        family |= {child.pid for child in psutil.Process(pid).children(recursive=True)}
    return {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.pid in family}


def test_compose_topology_on_the_lab_images_plans_executes_and_rolls_back(compose_up, monkeypatch):
    directory, project = compose_up
    password = compose_password()
    app_password = userlist_passwords()[APP_ROLE]
    admin = f"postgresql://migrator:{password}@127.0.0.1:{PORTS['pgbouncer']}/pgbouncer"
    app = f"postgresql://{APP_ROLE}:{app_password}@127.0.0.1:{PORTS['pgbouncer']}/{GROUP_ENTRY}"
    wait_connectable(admin)

    containers = {c.labels["com.docker.compose.service"]: c for c in project_containers(project)}
    assert set(containers) == {"pod", "source", "target", "pgbouncer"}
    pids = {c.attrs["State"]["Pid"] for name, c in containers.items() if name != "pod"}
    assert listening(pids) == {("127.0.0.1", port) for port in PORTS.values()}, "127.0.0.1 only"
    for name, container in containers.items():
        assert container.attrs["HostConfig"]["NetworkMode"] == ("none" if name == "pod" else "host"), name
        assert container.image.tags and container.image.tags[0].startswith("migrator-lab/"), name
    with psycopg.connect(f"postgresql://migrator:{password}@127.0.0.1:{PORTS['target']}/app") as conn:
        assert conn.execute("SHOW server_version_num").fetchone()[0].startswith("18")

    monkeypatch.chdir(directory)  # the playbook's config_file is relative to the checkout
    monkeypatch.setenv(PASSWORD_ENV, password)
    state = f"sqlite:///{directory / 'state.db'}"
    playbook = str(directory / COMPOSE_PLAYBOOK.relative_to(REPO))
    config = directory / "compose" / "pgbouncer" / "pgbouncer.ini"

    def migrator(verb: str):
        state_option = [] if verb == "plan" else ["--state", state]  # plan records nothing
        result = CliRunner().invoke(cli, [verb, playbook, *state_option])
        assert result.exit_code == 0, f"migrator {verb}:\n{result.output}"
        return result.output

    assert "ready: nothing blocks the move" in migrator("plan")
    assert served_by(app) == PORTS["source"]
    migrator("execute")
    assert read_entry(config, GROUP_ENTRY) == f"host=127.0.0.1 port={PORTS['target']} dbname=app"
    assert served_by(app) == PORTS["target"]
    with psycopg.connect(app, prepare_threshold=None) as conn:
        assert conn.execute("SELECT count(*) FROM public.files").fetchone()[0] == 10_000
    migrator("rollback")
    assert read_entry(config, GROUP_ENTRY) == f"host=127.0.0.1 port={PORTS['source']} dbname=app"
    assert served_by(app) == PORTS["source"]


def test_the_override_swaps_images_and_network_only():
    import yaml

    base = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    local = yaml.safe_load(OVERRIDE.read_text())["services"]
    assert set(local) == set(base)
    assert {name: spec["image"] for name, spec in local.items()} == {
        "pod": "migrator-lab/debian:bookworm", "source": "migrator-lab/postgres:15",
        "target": "migrator-lab/postgres:18", "pgbouncer": "migrator-lab/postgres:15"}
    assert {name: spec["network_mode"] for name, spec in local.items()} == {
        "pod": "none", "source": "host", "target": "host", "pgbouncer": "host"}
    for name in ("source", "target"):
        assert set(local[name]) == {"image", "network_mode"}, f"{name}: everything else is docker-compose.yml's"
    wrapper = REPO / "compose" / "local" / "pgbouncer.ini"
    assert local["pgbouncer"]["entrypoint"] == ["pgbouncer", "/etc/pgbouncer-local/pgbouncer.ini"]
    assert local["pgbouncer"]["volumes"] == ["./compose/local:/etc/pgbouncer-local:ro"]
    lines = [line for line in wrapper.read_text().splitlines() if line and not line.startswith(";")]
    assert lines == ["[pgbouncer]", "%include /etc/pgbouncer/pgbouncer.ini", "listen_addr = 127.0.0.1"]
    shipped = (REPO / "compose" / "pgbouncer" / "pgbouncer.ini").read_text()
    headers = [line for line in shipped.splitlines() if line.startswith("[")]
    assert headers[-1] == "[pgbouncer]", "the wrapper's listen_addr lands in the included file's last section"
