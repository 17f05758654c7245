"""The testcontainers back-end of the test topology (DESIGN section 6).

Chosen when a Docker engine answers or MIGRATOR_TEST_BACKEND=testcontainers. No
Docker engine runs on the reference machines, so this stays thin: it only decides
what to start and reuses the local back-end's topology objects for everything else.
"""

from __future__ import annotations


def docker_available() -> bool:
    """Does a Docker engine answer? (The client alone is not enough.)"""
    try:
        import docker  # type: ignore[import-untyped]
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=2)
        client.ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means "no engine here"
        return False
