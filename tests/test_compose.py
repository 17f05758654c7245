"""docker-compose.yml, its local override and playbooks/, checked without Docker.

What is checked here is that the pieces agree: the compose file with the playbook that
drives it, the shipped PgBouncer and init files with the sandbox they copy, the
override with the lab's images (tests/test_compose_up.py brings it up for real).

The compose init SQL and pgbouncer.ini are generated from migrator's own code;
`.venv/bin/python tests/test_compose.py` rewrites them when that code changes.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from migrator.errors import PlaybookError
from migrator.lab import sandbox
from migrator.lab.container_layout import (
    INITDB_ARGS,
    container_settings,
    pgbouncer_ini,
    postgres_command,
    route,
)
from migrator.lab.sandbox import (
    APP_DB,
    APP_ROLE,
    GROUP_ENTRY,
    GROUP_TABLES,
    WHOLE_ENTRY,
)
from migrator.lab.topology import DEFAULT_SUPERUSER
from migrator.pgbouncer.config import entry_for, read_entry, rewrite_entry
from migrator.pgbouncer.console import DatabaseEntry
from migrator.playbook import load_playbook

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
# docker-compose.yml keeps public images for a user with a registry; the override swaps
# in the lab's (migrator.lab.images).
PUBLIC_PGBOUNCER_IMAGE = "edoburu/pgbouncer:v1.24.1-p0"
PUBLIC_POD_IMAGE = "registry.k8s.io/pause:3.10"
COMPOSE_PLAYBOOK = REPO / "playbooks" / "compose.yaml"
EXAMPLE_PLAYBOOK = REPO / "playbooks" / "example.yaml"
INITDB = REPO / "compose" / "initdb"
PGBOUNCER_DIR = REPO / "compose" / "pgbouncer"
PASSWORD_ENV = "MIGRATOR_COMPOSE_PASSWORD"
DEMO_SCALE = 10  # thousand files, as `migrator sandbox up` seeds by default
PGBOUNCER_PORT = 16432


# --------------------------------------------------------------------------- reading compose


def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def service(name: str) -> dict:
    return compose()["services"][name]


def published() -> dict[int, int]:
    """inside port -> host port of everything the pod publishes (127.0.0.1 only)."""
    ports = {}
    for mapping in service("pod")["ports"]:
        address, outside, inside = str(mapping).split(":")
        assert address == "127.0.0.1", f"{mapping}: publish on 127.0.0.1 only"
        ports[int(inside)] = int(outside)
    return ports


def server_port(name: str) -> int:
    return int(service(name)["environment"]["PGPORT"])


def userlist_passwords() -> dict[str, str]:
    text = (PGBOUNCER_DIR / "userlist.txt").read_text()
    return dict(re.findall(r'^"([^"]+)" "([^"]*)"$', text, re.M))


def compose_password() -> str:
    return service("source")["environment"]["POSTGRES_PASSWORD"]


def pgbouncer_listen_port() -> int:
    text = (PGBOUNCER_DIR / "pgbouncer.ini").read_text()
    return int(re.search(r"^listen_port = (\d+)$", text, re.M).group(1))


# --------------------------------------------------------------------------- generated files


def recorded_sql(monkeypatch, function, *args, **kwargs) -> list[tuple[str, str]]:
    """(dbname, statement) for each statement `function` runs, without a server."""
    statements: list[tuple[str, str]] = []

    class Recorder:
        def __init__(self, dsn: str, **_: object) -> None:
            self.dbname = conninfo_to_dict(dsn).get("dbname", "postgres")

        def __enter__(self) -> Recorder:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def execute(self, query) -> None:
            text = query if isinstance(query, str) else query.as_string(None)
            statements.append((self.dbname, text))

    monkeypatch.setattr(sandbox, "connect", Recorder)
    function(*args, **kwargs)
    return statements


def as_script(header: str, statements: list[tuple[str, str]]) -> str:
    """A psql script for /docker-entrypoint-initdb.d (psql connects to `postgres`)."""
    lines = [f"-- {line}" if line else "--" for line in header.strip().splitlines()]
    current = "postgres"
    for dbname, statement in statements:
        if dbname != current:
            lines.append(f"\\connect {dbname}")
            current = dbname
        text = statement.strip()
        lines.append(text if text.endswith(";") else text + ";")
    return "\n".join(lines) + "\n"


class _Server:
    def dsn(self, dbname: str = "postgres") -> str:
        return f"dbname={dbname}"


GENERATED = "Generated from migrator's code by tests/test_compose.py; do not edit."


def expected_files(monkeypatch) -> dict[Path, str]:
    app_password = userlist_passwords()[APP_ROLE]
    setup = recorded_sql(monkeypatch, sandbox.create_app_database, _Server(), app_password)
    schema = recorded_sql(monkeypatch, sandbox.create_demo_schema, f"dbname={APP_DB}", scale=0)
    seeded = recorded_sql(monkeypatch, sandbox.create_demo_schema, f"dbname={APP_DB}", scale=DEMO_SCALE)
    assert seeded[: len(schema)] == schema
    source_route = route(server_port("source"))
    # Every interface of the pod's namespace: the engine's port publishing arrives on
    # its own address there (the local override listens on 127.0.0.1 instead).
    ini = pgbouncer_ini({WHOLE_ENTRY: source_route, GROUP_ENTRY: source_route}, listen_port=PGBOUNCER_PORT,
                        listen_addr="0.0.0.0")
    return {
        INITDB / "01-app.sql": as_script(
            f"The app role and database (migrator.lab.sandbox.create_app_database), on source and target.\n"
            f"{GENERATED}\nSandbox-only password, the same as in compose/pgbouncer/userlist.txt.",
            setup,
        ),
        INITDB / "02-demo-schema.sql": as_script(
            f"The demo schema and the app role's grants (migrator.lab.sandbox.create_demo_schema).\n{GENERATED}",
            schema,
        ),
        INITDB / "03-demo-data.sql": as_script(
            f"The demo data, as `migrator sandbox up --scale {DEMO_SCALE}` seeds it.\n{GENERATED}",
            seeded[len(schema):],
        ),
        PGBOUNCER_DIR / "pgbouncer.ini": (
            "; PgBouncer of docker-compose.yml, bind-mounted as /etc/pgbouncer/pgbouncer.ini.\n"
            "; migrator rewrites the app_files entry here when it moves the group, then RELOADs.\n"
            "; Entries name servers as PgBouncer's container reaches them: 127.0.0.1 and the\n"
            "; port each server listens on in the shared network namespace.\n"
            f"; {GENERATED}\n"
            + ini
        ),
    }


def without_comments(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and line.lstrip()[0] not in ";#"]


# --------------------------------------------------------------------------- compose vs playbook


def test_compose_has_a_pg15_source_a_newer_target_and_pgbouncer_in_one_namespace():
    services = compose()["services"]
    assert set(services) == {"pod", "source", "target", "pgbouncer"}
    assert services["source"]["image"] == "postgres:15"
    target_major = int(services["target"]["image"].split(":")[1])
    assert target_major > 15
    assert services["pgbouncer"]["image"] == PUBLIC_PGBOUNCER_IMAGE
    assert services["pod"]["image"] == PUBLIC_POD_IMAGE
    for name in ("source", "target", "pgbouncer"):
        assert services[name]["network_mode"] == "service:pod", name
        assert "ports" not in services[name], f"{name}: the pod publishes every port"


def test_published_ports_are_the_ports_the_servers_listen_on():
    ports = published()
    assert set(ports) == {server_port("source"), server_port("target"), pgbouncer_listen_port()}
    assert all(inside == outside for inside, outside in ports.items()), (
        "each server must listen inside on its published port, so one address serves host and containers"
    )


@pytest.mark.parametrize("name", ["source", "target"])
def test_compose_servers_run_the_container_backends_settings(name):
    spec = service(name)
    port = server_port(name)
    assert spec["command"] == postgres_command(container_settings(durable=True), port)
    assert "wal_level=logical" in spec["command"]
    env = spec["environment"]
    assert env["POSTGRES_USER"] == DEFAULT_SUPERUSER
    assert env["POSTGRES_INITDB_ARGS"] == INITDB_ARGS
    assert env["POSTGRES_PASSWORD"] == compose_password()
    assert f"{port}" in spec["healthcheck"]["test"]


def test_compose_playbook_loads_and_points_at_the_compose_services():
    playbook = load_playbook(COMPOSE_PLAYBOOK, env={PASSWORD_ENV: compose_password()})
    source, target = conninfo_to_dict(playbook.source.dsn), conninfo_to_dict(playbook.target.dsn)
    ports = published()
    assert (source["host"], int(source["port"]), source["dbname"]) == ("127.0.0.1", ports[server_port("source")], APP_DB)
    assert (target["host"], int(target["port"]), target["dbname"]) == ("127.0.0.1", ports[server_port("target")], APP_DB)
    assert source["password"] == compose_password() == userlist_passwords()[DEFAULT_SUPERUSER]
    assert tuple(t.qualified for t in playbook.tables) == GROUP_TABLES
    assert playbook.app_roles == (APP_ROLE,)

    (bouncer,) = playbook.pgbouncers
    admin = conninfo_to_dict(bouncer.admin_dsn)
    assert int(admin["port"]) == ports[pgbouncer_listen_port()]
    assert admin["dbname"] == "pgbouncer" and admin["user"] == DEFAULT_SUPERUSER
    assert bouncer.database == GROUP_ENTRY
    assert not bouncer.config_file.is_absolute(), "relative to the repository top, where compose runs"
    config_file = REPO / bouncer.config_file
    assert config_file.is_file()
    assert f"./{config_file.parent.relative_to(REPO)}:/etc/pgbouncer:ro" in service("pgbouncer")["volumes"]
    assert service("pgbouncer")["entrypoint"] == ["pgbouncer", "/etc/pgbouncer/pgbouncer.ini"]


def test_what_the_tool_writes_on_a_reroute_is_where_pgbouncer_reaches_the_target():
    playbook = load_playbook(COMPOSE_PLAYBOOK, env={PASSWORD_ENV: compose_password()})
    config_file = REPO / playbook.pgbouncers[0].config_file
    # The entry that routes the group to the source is the source's DSN as the tool
    # knows it, so the entry->server check needs no alias table.
    assert read_entry(config_file, GROUP_ENTRY) in (entry_for(playbook.source.dsn), entry_for(playbook.target.dsn))
    assert read_entry(config_file, WHOLE_ENTRY) == entry_for(playbook.source.dsn)
    entry = DatabaseEntry(name=WHOLE_ENTRY, host="127.0.0.1", port=server_port("source"), database=APP_DB,
                          paused=False, disabled=False, current_connections=0)
    assert entry.points_at(playbook.source.dsn) and not entry.points_at(playbook.target.dsn)
    assert entry_for(playbook.target.dsn) == route(server_port("target"))


def test_compose_playbook_keeps_the_password_in_the_environment():
    raw = yaml.safe_load(COMPOSE_PLAYBOOK.read_text())
    for dsn in (raw["source"]["dsn"], raw["target"]["dsn"], raw["pgbouncers"][0]["admin_dsn"]):
        assert f":${{{PASSWORD_ENV}}}@" in dsn, dsn
    with pytest.raises(PlaybookError, match=PASSWORD_ENV):
        load_playbook(COMPOSE_PLAYBOOK, env={})


def test_example_playbook_is_the_design_example_and_valid():
    playbook = load_playbook(EXAMPLE_PLAYBOOK, env={})
    assert playbook.name == "files-partition"
    assert [t.qualified for t in playbook.tables] == ["public.files", "public.file_versions"]
    assert playbook.pgbouncers[0].database == "app_files"
    assert str(playbook.pgbouncers[0].config_file) == "/etc/pgbouncer/pgbouncer.ini"
    assert (playbook.cutover.max_pause, playbook.cutover.grace, playbook.cutover.max_lag) == (2.0, 0.5, 16 * 1024**2)
    assert playbook.indexes.defer is True


# --------------------------------------------------------------------------- shipped files


def test_compose_init_sql_is_the_sandbox_setup_schema_and_data(monkeypatch):
    expected = expected_files(monkeypatch)
    for path in (INITDB / "01-app.sql", INITDB / "02-demo-schema.sql", INITDB / "03-demo-data.sql"):
        assert path.read_text() == expected[path], (
            f"{path.relative_to(REPO)} is out of date with migrator.lab.sandbox: "
            "rewrite it with .venv/bin/python tests/test_compose.py"
        )
    assert sandbox.DEMO_SCHEMA.strip() in (INITDB / "02-demo-schema.sql").read_text()
    app_sql = (INITDB / "01-app.sql").read_text()
    assert f"PASSWORD '{userlist_passwords()[APP_ROLE]}'" in app_sql


def test_init_scripts_are_mounted_schema_on_the_source_only():
    def scripts(name):
        return sorted(v.split(":")[0] for v in service(name)["volumes"] if "docker-entrypoint-initdb.d" in v)

    assert scripts("source") == ["./compose/initdb/01-app.sql", "./compose/initdb/02-demo-schema.sql",
                                 "./compose/initdb/03-demo-data.sql"]
    assert scripts("target") == ["./compose/initdb/01-app.sql"]
    for script in scripts("source"):
        assert (REPO / script).is_file(), script


def test_shipped_pgbouncer_ini_has_both_entries_and_the_container_settings(monkeypatch):
    ini = PGBOUNCER_DIR / "pgbouncer.ini"
    expected = expected_files(monkeypatch)[ini]
    source_route = route(server_port("source"))
    assert read_entry(ini, WHOLE_ENTRY) == source_route
    # app_files routes to the source as shipped, to the target after a move from this checkout.
    assert read_entry(ini, GROUP_ENTRY) in (source_route, route(server_port("target")))
    shipped = [line for line in without_comments(ini.read_text()) if not line.startswith(f"{GROUP_ENTRY} =")]
    wanted = [line for line in without_comments(expected) if not line.startswith(f"{GROUP_ENTRY} =")]
    assert shipped == wanted, "rewrite it with .venv/bin/python tests/test_compose.py"
    assert set(userlist_passwords()) == {DEFAULT_SUPERUSER, APP_ROLE}


# --------------------------------------------------------------------------- regenerate


if __name__ == "__main__":
    # .venv/bin/python tests/test_compose.py: rewrite the generated compose files.
    patch = pytest.MonkeyPatch()
    try:
        for path, text in expected_files(patch).items():
            if path.name == "pgbouncer.ini" and path.exists():
                # Keep a rerouted app_files entry; only the rest is generated.
                current = read_entry(path, GROUP_ENTRY)
                path.write_text(text)
                if current:
                    rewrite_entry(path, GROUP_ENTRY, current)
            else:
                path.write_text(text)
            print(f"wrote {path.relative_to(REPO)}", file=sys.stderr)
    finally:
        patch.undo()
