"""The PgBouncer config file's [databases] entry: read, rewritten in two stages, and the
new value built from the old one; on temporary ini files, no PgBouncer."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import pytest
from faultkit import unwritable

from migrator.errors import OperationFailed
from migrator.pgbouncer import config as config_module
from migrator.pgbouncer.config import (
    EntryError,
    EntryRoute,
    entry_for,
    entry_settings,
    entry_value,
    parse_entry,
    prepare_rewrite,
    read_entry,
    rewrite_entry,
)
from migrator.pgbouncer.route import value_from_show

CONFIG = """\
;; PgBouncer for the app: two entries route the same database
[databases]
; the group's entry, rerouted by migrator
app_files = host=127.0.0.1 port=5432 dbname=app pool_size=20
app = host=127.0.0.1 port=5432 dbname=app
  # an indented comment
  spaced   =   host=10.0.0.9 port=6432 dbname=other

[pgbouncer]
listen_port = 6432
; app_files = host=decoy port=1 in a comment of another section
auth_file = /etc/pgbouncer/userlist.txt
"""


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "pgbouncer.ini"
    path.write_text(CONFIG)
    path.chmod(0o640)
    return path


def leftovers(path: Path) -> list[str]:
    """Temporary files the rewrite left beside the config."""
    return sorted(p.name for p in path.parent.iterdir() if p != path)


# --------------------------------------------------------------------------- reading


def test_read_entry_finds_each_entry_of_the_databases_section(config):
    assert read_entry(config, "app_files") == "host=127.0.0.1 port=5432 dbname=app pool_size=20"
    assert read_entry(config, "app") == "host=127.0.0.1 port=5432 dbname=app"
    assert read_entry(config, "spaced") == "host=10.0.0.9 port=6432 dbname=other"


def test_read_entry_ignores_comments_other_sections_and_unknown_names(config):
    assert read_entry(config, "listen_port") is None          # a [pgbouncer] setting, not an entry
    assert read_entry(config, "app_file") is None             # a prefix is not the name
    assert read_entry(config, "auth_file") is None
    assert read_entry(config, "missing") is None


# --------------------------------------------------------------------------- rewriting


def test_rewrite_entry_changes_only_that_entry_and_keeps_everything_else(config):
    old = rewrite_entry(config, "app_files", "host=127.0.0.1 port=5433 dbname=app pool_size=20")
    assert old == "host=127.0.0.1 port=5432 dbname=app pool_size=20"
    assert config.read_text() == CONFIG.replace(
        "app_files = host=127.0.0.1 port=5432 dbname=app pool_size=20",
        "app_files = host=127.0.0.1 port=5433 dbname=app pool_size=20")
    assert read_entry(config, "app") == "host=127.0.0.1 port=5432 dbname=app"
    assert leftovers(config) == []


def test_rewrite_entry_keeps_the_entrys_own_spacing(config):
    rewrite_entry(config, "spaced", "host=10.0.0.9 port=7000 dbname=other")
    assert "  spaced   =   host=10.0.0.9 port=7000 dbname=other\n" in config.read_text()


def test_rewrite_keeps_the_files_mode(config):
    rewrite_entry(config, "app", "host=127.0.0.1 port=5433 dbname=app")
    assert config.stat().st_mode & 0o777 == 0o640


def test_prepare_writes_nothing_visible_until_commit(config):
    prepared = prepare_rewrite(config, "app_files", "host=t port=1 dbname=app")
    assert prepared.old_value == "host=127.0.0.1 port=5432 dbname=app pool_size=20"
    assert config.read_text() == CONFIG                       # not yet
    assert prepared.temporary.parent == config.parent         # beside it: the rename is atomic
    assert prepared.temporary.exists()
    inode = config.stat().st_ino
    prepared.commit()
    assert read_entry(config, "app_files") == "host=t port=1 dbname=app"
    assert config.stat().st_ino != inode                      # replaced by rename, not written in place
    assert leftovers(config) == []


@pytest.mark.parametrize("order", ["app_files first", "app first"])
def test_two_reroutes_of_one_file_at_once_keep_both(config, order):
    # Two moves, each with its own entry in the same file: both prepare before their
    # pauses, then commit; the later commit must not put back the other's entry.
    files = prepare_rewrite(config, "app_files", "host=t port=1 dbname=app pool_size=20")
    app = prepare_rewrite(config, "app", "host=u port=2 dbname=app")
    for prepared in ((files, app) if order == "app_files first" else (app, files)):
        prepared.commit()
    assert read_entry(config, "app_files") == "host=t port=1 dbname=app pool_size=20"
    assert read_entry(config, "app") == "host=u port=2 dbname=app"
    assert read_entry(config, "spaced") == "host=10.0.0.9 port=6432 dbname=other"
    assert leftovers(config) == []


def test_a_writer_that_holds_the_lock_delays_a_rewrite_only_a_bounded_time(config, monkeypatch):
    # The lock keeps two of the tool's writers from interleaving; one that hangs holding
    # it must not hold another (a watchdog resuming traffic) for long.
    monkeypatch.setattr(config_module, "LOCK_WAIT", 0.2)
    fd = os.open(config.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        started = time.monotonic()
        rewrite_entry(config, "app", "host=u port=2 dbname=app")
        assert 0.4 <= time.monotonic() - started < 1.4   # the bound twice: prepare, then commit
    finally:
        os.close(fd)
    assert read_entry(config, "app") == "host=u port=2 dbname=app"


def test_discard_leaves_the_file_as_it_was_and_nothing_beside_it(config):
    prepared = prepare_rewrite(config, "app_files", "host=t port=1 dbname=app")
    prepared.discard()
    prepared.discard()                                        # twice: harmless
    assert config.read_text() == CONFIG
    assert leftovers(config) == []


def test_an_unknown_entry_is_refused_and_the_file_untouched(config):
    with pytest.raises(OperationFailed, match=r"no \[databases\] entry 'listen_port' to rewrite"):
        prepare_rewrite(config, "listen_port", "host=t")
    assert config.read_text() == CONFIG
    assert leftovers(config) == []


@pytest.mark.parametrize(("what", "message"), [("file", "cannot replace"), ("directory", "cannot write beside")])
def test_a_config_that_cannot_be_replaced_is_refused_before_anything_changes(config, what, message):
    with unwritable(config if what == "file" else config.parent):
        with pytest.raises(OperationFailed, match=message):
            prepare_rewrite(config, "app_files", "host=t")
    assert config.read_text() == CONFIG
    if what == "directory":
        assert leftovers(config) == []


def test_a_refused_rewrite_leaves_nothing_beside_the_config(config):
    with unwritable(config):
        with pytest.raises(OperationFailed):
            prepare_rewrite(config, "app_files", "host=t")
    assert leftovers(config) == []


# --------------------------------------------------------------------------- the new value


def test_entry_value_reroutes_host_port_and_dbname_and_keeps_the_other_settings():
    original = "host=127.0.0.1 port=5432 dbname=app pool_size=20 auth_user=pgb"
    assert entry_value(original, "postgresql://migrator@10.0.0.2:5433/app2") == \
        "host=10.0.0.2 port=5433 dbname=app2 pool_size=20 auth_user=pgb"


def test_entry_value_adds_what_the_entry_did_not_say():
    # An entry with no host/port uses PgBouncer's defaults; the new one must say them.
    assert entry_value("dbname=app pool_mode=session", "host=10.0.0.2 port=5433 dbname=app") == \
        "dbname=app pool_mode=session host=10.0.0.2 port=5433"


def test_entry_value_keeps_a_quoted_setting_quoted():
    value = entry_value("host=a port=1 dbname=app application_name='my app'", "host=b port=2 dbname=app")
    assert value == "host=b port=2 dbname=app application_name='my app'"


def test_entry_value_never_copies_the_dsns_credentials():
    value = entry_value("host=a port=1 dbname=app", "postgresql://migrator:Pw-secret@b:2/app?sslmode=require")
    assert "Pw-secret" not in value and "migrator" not in value and "sslmode" not in value
    assert value == "host=b port=2 dbname=app"


def test_entry_for_routes_to_a_dsns_server_without_secrets():
    assert entry_for("postgresql://u:Pw-secret@10.0.0.2:5433/app") == "host=10.0.0.2 port=5433 dbname=app"
    assert entry_for("dbname=app") == "host=localhost port=5432 dbname=app"


# --------------------------------------------------------------------------- an entry's own settings
# A real entry: PgBouncer's own keys beside where it routes. libpq refuses pool_size, so
# reading it as a libpq DSN made `plan` think it routed nowhere (issue 21).

OWN_SETTINGS = ("pool_mode=transaction pool_size=30 max_db_connections=40 reserve_pool=5 auth_user=pgb "
                "connect_query='SELECT ''x'' AS y' application_name='my app'")


def test_an_entry_is_read_as_pgbouncer_reads_it():
    settings = entry_settings(f"host=10.0.0.1  port = 6432 dbname=app {OWN_SETTINGS}")
    assert settings == {"host": "10.0.0.1", "port": "6432", "dbname": "app", "pool_mode": "transaction",
                        "pool_size": "30", "max_db_connections": "40", "reserve_pool": "5",
                        "auth_user": "pgb", "connect_query": "SELECT 'x' AS y", "application_name": "my app"}


@pytest.mark.parametrize("value", ["host=a port", "host=a =b", "host=a port=", "host='a", "host=a dbname=''"])
def test_what_pgbouncer_refuses_is_refused(value):
    with pytest.raises(EntryError, match="not a PgBouncer connection string"):
        parse_entry(value)


def test_the_reroute_changes_host_port_and_dbname_and_keeps_every_other_setting_as_written():
    original = f"host=10.0.0.1 port=5432 dbname=app {OWN_SETTINGS}"
    rerouted = entry_value(original, "postgresql://migrator:Pw-x@10.0.0.2:5433/files")
    assert rerouted == f"host=10.0.0.2 port=5433 dbname=files {OWN_SETTINGS}"
    assert {k: v for k, v in entry_settings(rerouted).items() if k not in ("host", "port", "dbname")} == \
        {k: v for k, v in entry_settings(original).items() if k not in ("host", "port", "dbname")}


def test_a_value_that_needs_quoting_is_quoted_as_pgbouncer_reads_it():
    rerouted = entry_value("dbname=app pool_size=3", "host=db.example port=5432 dbname='it\\'s app'")
    assert rerouted == "dbname='it''s app' pool_size=3 host=db.example port=5432"
    assert entry_settings(rerouted)["dbname"] == "it's app"


def test_a_dsn_listing_several_hosts_is_never_written_into_an_entry():
    # PgBouncer round-robins a host list: half the connections would reach a standby.
    dsn = "postgresql://u:Pw-x@db1:5432,db2:5433/app?target_session_attrs=read-write"
    for build in (lambda: entry_value("host=db1 dbname=app pool_size=3", dsn), lambda: entry_for(dsn)):
        with pytest.raises(EntryError, match="lists 2 hosts: PgBouncer would round-robin them") as caught:
            build()
        assert "Pw-x" not in str(caught.value)


@pytest.mark.parametrize(("value", "dsn", "routes"), [
    ("host=127.0.0.1 port=5432 dbname=app pool_size=30 pool_mode=session", "host=localhost dbname=app", True),
    ("host=127.0.0.1", "host=127.0.0.1 port=5432 dbname=app_files", True),      # dbname: the entry's name
    ("host=127.0.0.1 dbname=app", "host=127.0.0.1 port=5433 dbname=app", False),   # port 5432 by default
    ("host=db2 port=5433 dbname=app auth_user=pgb",
     "postgresql://u@db1:5432,db2:5433/app?target_session_attrs=read-write", True),  # the promoted one
    ("host=db3 port=5433 dbname=app", "postgresql://u@db1:5432,db2:5433/app", False),
])
def test_where_an_entry_routes(value, dsn, routes):
    assert EntryRoute.of("app_files", value).points_at(dsn) is routes


def test_an_entry_rebuilt_from_show_databases_keeps_what_the_console_tells():
    # A row of PgBouncer 1.18's SHOW DATABASES, and its SHOW CONFIG: what a command-rerouted
    # entry without a `show` command is rebuilt from.
    row = {"name": "app_files", "host": "10.0.0.1", "port": 5432, "database": "app", "force_user": None,
           "pool_size": 30, "min_pool_size": 0, "reserve_pool": 0, "pool_mode": "transaction",
           "max_connections": 40, "current_connections": 3, "paused": 0, "disabled": 0}
    config = {"default_pool_size": "20", "min_pool_size": "0", "reserve_pool_size": "0", "max_db_connections": "0"}
    value = value_from_show(row, config)
    assert value == "host=10.0.0.1 port=5432 dbname=app pool_mode=transaction pool_size=30 max_db_connections=40"
    assert entry_value(value, "host=10.0.0.2 port=5433 dbname=app") == \
        "host=10.0.0.2 port=5433 dbname=app pool_mode=transaction pool_size=30 max_db_connections=40"
    inherited = {**row, "pool_size": 20, "max_connections": 0, "pool_mode": None, "force_user": "app"}
    assert value_from_show(inherited, config) == "host=10.0.0.1 port=5432 dbname=app user=app"
