"""The test topology: real Postgres clusters and real PgBouncers, torn down always.

Two back-ends behind one fixture interface (DESIGN section 6):
- local binaries (default): initdb/pg_ctl and pgbouncer from this machine, run as an
  unprivileged OS user when the tests run as root;
- testcontainers: the same topology on Docker, chosen when MIGRATOR_TEST_BACKEND is
  `testcontainers` or a Docker engine answers.

Every test that needs servers asks for `move` (a MoveTopology: source, target,
PgBouncer with the `app` and `app_files` entries) or `make_move` for variations.
When a test fails, the tail of every server log is attached to its report.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest

from migrator.lab import topology
from migrator.lab.sandbox import build_move_topology

PASSWORD = "Pw-" + secrets.token_hex(6)
BACKEND_ENV = "MIGRATOR_TEST_BACKEND"


def backend_name() -> str:
    chosen = os.environ.get(BACKEND_ENV, "").strip().lower()
    if chosen in ("local", "testcontainers"):
        return chosen
    if chosen:
        raise pytest.UsageError(f"{BACKEND_ENV}={chosen!r}: use 'local' or 'testcontainers'")
    from migrator.lab.containers import docker_available

    return "testcontainers" if docker_available() else "local"


def pytest_report_header(config):
    try:
        bindir = topology.postgres_bindir()
        majors = topology.available_majors()
        bouncer = topology.pgbouncer_binary()
    except Exception as exc:  # noqa: BLE001 - the header must not break collection
        return [f"migrator topology: unavailable ({exc})"]
    return [
        f"migrator topology: backend={backend_name()} postgres={bindir} majors={majors} "
        f"pgbouncer={bouncer} run_as={topology.run_as_user() or 'self'}"
    ]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session")
def workdir():
    """A scratch directory the servers' OS user can reach."""
    root = Path(tempfile.mkdtemp(prefix="migrator-tests-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def templates(workdir):
    """One initdb per PostgreSQL major per session; clusters copy it."""
    made: dict = {}

    def get(version: int | None) -> Path:
        if version not in made:
            directory = workdir / f"template-{version or 'default'}"
            made[version] = topology.make_template(
                directory, version=version, password=PASSWORD, run_as=topology.run_as_user()
            )
        return made[version]

    return get


@pytest.fixture
def make_move(request, workdir, templates):
    """Build MoveTopologies for this test; each is torn down after it, logs on failure."""
    built = []
    counter = iter(range(1000))

    def make(*, source_version=None, target_version=None, pgbouncers=1, durable=False):
        root = workdir / f"{request.node.name[:40]}-{next(counter)}-{secrets.token_hex(3)}"
        if backend_name() == "testcontainers":
            from migrator.lab.containers import build_container_move

            move = build_container_move(
                root, source_version=source_version, target_version=target_version,
                pgbouncers=pgbouncers, password=PASSWORD,
            )
        else:
            move = build_move_topology(
                root,
                durable=durable,
                source_version=source_version,
                target_version=target_version,
                pgbouncers=pgbouncers,
                password=PASSWORD,
                templates={v: templates(v) for v in {source_version, target_version}},
            )
        built.append(move)
        return move

    yield make
    failed = any(
        getattr(request.node, f"rep_{when}", None) is not None
        and getattr(request.node, f"rep_{when}").failed
        for when in ("setup", "call")
    )
    for move in built:
        if failed:
            request.node.add_report_section("teardown", "server logs", move.topology.logs(40))
        move.topology.stop()
        # Data directories add up over a session: remove each once its servers stopped.
        root = getattr(move.topology, "root", None)
        if root is not None:
            topology.remove_tree(root)


@pytest.fixture
def move(make_move):
    """The standard topology: source, target, one PgBouncer (entries app, app_files)."""
    return make_move()
