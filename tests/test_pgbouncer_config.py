"""The PgBouncer config file's [databases] entry: read, rewritten in two stages, and the
new value built from the old one; on temporary ini files, no PgBouncer."""

from __future__ import annotations

from pathlib import Path

import pytest
from faultkit import unwritable

from migrator.errors import OperationFailed
from migrator.pgbouncer.config import (
    entry_for,
    entry_value,
    prepare_rewrite,
    read_entry,
    rewrite_entry,
)

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
