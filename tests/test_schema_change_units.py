"""`migrator ddl`'s order of a change (pure: no server)."""

from __future__ import annotations

import pytest

from migrator.errors import PlaybookError
from migrator.move.schema_change import First, understand


@pytest.mark.parametrize("statement, first, kind", [
    ("ALTER TABLE public.files ADD COLUMN note text", First.SUBSCRIBING, "ADD COLUMN"),
    ("alter table files add column n int not null default -1;", First.SUBSCRIBING, "ADD COLUMN"),
    ("ALTER TABLE files ADD COLUMN at date DEFAULT '2026-01-01'::date", First.SUBSCRIBING, "ADD COLUMN"),
    ("ALTER TABLE files DROP COLUMN note", First.PUBLISHING, "DROP COLUMN"),
    ("ALTER TABLE files ADD CONSTRAINT size_ok CHECK (size >= 0)", First.PUBLISHING, "ADD CONSTRAINT"),
    ("ALTER TABLE files DROP CONSTRAINT size_ok", First.SUBSCRIBING, "DROP CONSTRAINT"),
    ("ALTER TABLE files ALTER COLUMN name SET NOT NULL", First.PUBLISHING, "SET NOT NULL"),
    ("ALTER TABLE files ALTER COLUMN name DROP NOT NULL", First.SUBSCRIBING, "DROP NOT NULL"),
    ("ALTER TABLE files ALTER COLUMN name SET DEFAULT 'x'", First.PUBLISHING, "SET/DROP DEFAULT"),
    ("CREATE INDEX files_name ON public.files (name)", First.SUBSCRIBING, "CREATE INDEX"),
    ("CREATE UNIQUE INDEX CONCURRENTLY files_key ON files (key)", First.PUBLISHING, "CREATE UNIQUE INDEX"),
    ("DROP INDEX public.files_name", First.SUBSCRIBING, "DROP INDEX"),
    ("COMMENT ON COLUMN public.files.name IS 'its name'", First.PUBLISHING, "COMMENT"),
])
def test_each_change_goes_first_where_replication_keeps_running(statement, first, kind):
    change = understand(statement)
    assert (change.first, change.kind) == (first, kind)
    assert not change.sql.endswith(";")


def test_the_table_and_the_index_are_read_from_the_statement():
    assert understand('ALTER TABLE "App"."UserEvents" ADD COLUMN x int').table == ("App", "UserEvents")
    assert understand("ALTER TABLE files ADD COLUMN x int").table == (None, "files")
    drop = understand("DROP INDEX CONCURRENTLY files_name")
    assert drop.index == (None, "files_name") and drop.concurrently
    assert understand("ALTER TABLE files DROP COLUMN note").dropped_column == "note"


@pytest.mark.parametrize("statement, reason", [
    ("ALTER TABLE files ALTER COLUMN size TYPE bigint", "type change cannot be ordered"),
    ("ALTER TABLE files RENAME COLUMN name TO title", "rename cannot be ordered"),
    ("ALTER TABLE files ADD COLUMN at timestamptz DEFAULT now()", "default is computed"),
    ("ALTER TABLE files ADD COLUMN n bigint GENERATED ALWAYS AS IDENTITY", "identity column"),
    ("ALTER TABLE files REPLICA IDENTITY FULL", "replica identity"),
    ("ALTER TABLE files ADD COLUMN a int, DROP COLUMN b", "separate statements"),
    ("ALTER TABLE files ADD COLUMN a int; ALTER TABLE files ADD COLUMN b int", "one statement at a time"),
    ("DROP TABLE files", "not DropStmt"),
    ("UPDATE files SET a = 1", "not UpdateStmt"),
    ("ALTER TABLE files ADD COLUM a int", "does not parse"),
    ("ALTER TABLE files ENABLE TRIGGER t", "does not know how to order EnableTrig"),
])
def test_what_cannot_be_ordered_safely_is_refused_with_the_reason(statement, reason):
    with pytest.raises(PlaybookError) as refused:
        understand(statement)
    assert reason in refused.value.message, refused.value.message
