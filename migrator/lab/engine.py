"""The Docker engine the lab's containers run on: where it is, whether it answers, and
removing what a session left there.

The engine is the one DOCKER_HOST names (docker-py's and the docker CLI's rule), else
the default socket. The lab never pulls (no image registry is reachable here, see
migrator.lab.images) and never starts testcontainers' reaper, whose image would have
to be pulled: each topology removes its own containers, and `remove_containers`
sweeps a session's leftovers by label.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
LABEL = "org.migrator.lab.topology"            # every lab container: the member's name
SESSION_LABEL = "org.migrator.lab.session"     # which process started it
SESSION = uuid.uuid4().hex[:12]


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET


def docker_client(timeout: int = 2) -> Any | None:
    """A docker-py client of an engine that answers a ping, or None."""
    try:
        import docker  # type: ignore[import-untyped]
    except ImportError:
        return None
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception:  # noqa: BLE001 - any failure means "no engine here"
        return None
    client.api.timeout = 120  # a build or a container start takes longer than a ping
    return client


def docker_available() -> bool:
    """Does a Docker engine answer? (The client alone is not enough.)"""
    return docker_client() is not None


def disable_reaper() -> None:
    """No Ryuk: its image cannot be pulled here; teardown is the fixtures' own."""
    os.environ["TESTCONTAINERS_RYUK_DISABLED"] = "true"
    from testcontainers.core.config import testcontainers_config

    testcontainers_config.ryuk_disabled = True


def labels(member: str) -> dict[str, str]:
    return {LABEL: member, SESSION_LABEL: SESSION}


def remove_containers(session: str | None = SESSION) -> list[str]:
    """Remove the lab's containers (this session's, or every session's with None);
    returns their names. Never raises: it runs in teardown."""
    client = docker_client()
    if client is None:
        return []
    wanted = [LABEL] + ([f"{SESSION_LABEL}={session}"] if session else [])
    removed = []
    try:
        for container in client.containers.list(all=True, filters={"label": wanted}):
            container.remove(force=True, v=True)
            removed.append(container.name)
    except Exception:  # noqa: BLE001 - teardown must finish
        pass
    return removed
