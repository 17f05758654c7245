"""What the move tests share: a demo move ready to run, the CLI, and a both-sides comparison.

The comparison is deliberately independent of `migrator verify`: it pulls an ordered
digest of every row from each side, so a bug in verify cannot hide a lost row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import psycopg
from click.testing import CliRunner
from psycopg import sql

from migrator.cli import cli
from migrator.lab.sandbox import APP_DB, GROUP_TABLES, MoveTopology, create_demo_schema
from migrator.playbook import Playbook, load_playbook


@dataclass
class DemoMove:
    move: MoveTopology
    path: Path
    state_url: str

    @property
    def playbook(self) -> Playbook:
        return load_playbook(self.path)

    def cli(self, *args: str):
        """Run `migrator ARGS... PLAYBOOK --state URL` in-process; returns click's Result."""
        verb, *rest = args
        return CliRunner().invoke(cli, [verb, str(self.path), "--state", self.state_url, *rest])

    def cli_json(self, *args: str) -> tuple[int, dict]:
        result = self.cli(*args, "--json")
        return result.exit_code, json.loads(result.stdout or "{}")


def demo_move(move: MoveTopology, directory: Path, *, scale: int = 2, tables=GROUP_TABLES,
              **cutover) -> DemoMove:
    create_demo_schema(move.source.dsn(APP_DB), scale=scale)
    doc = move.playbook_doc(tables)
    doc["cutover"].update(cutover)
    path = move.write_playbook(directory / "playbook.yaml", doc)
    return DemoMove(move, path, f"sqlite:///{directory / 'state.db'}")


def table_digest(dsn: str, table: str) -> tuple[int, str | None]:
    """(row count, md5 over every row in primary-key order) of one table."""
    schema, name = table.split(".")
    with psycopg.connect(dsn) as conn:
        key = conn.execute(
            """
            SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY array_position(i.indkey, a.attnum))
            FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
            WHERE i.indrelid = to_regclass(%s) AND i.indisprimary
            """,
            (table,),
        ).fetchone()[0]
        query = sql.SQL("SELECT count(*), md5(string_agg(md5(t::text), '' ORDER BY {})) FROM {} t").format(
            sql.SQL(key), sql.Identifier(schema, name))
        return conn.execute(query).fetchone()


def assert_sides_identical(move: MoveTopology, tables=GROUP_TABLES, *, source_cluster=None) -> dict[str, int]:
    """source_cluster: the source's server when it is no longer move.source (a promoted standby)."""
    counts = {}
    for table in tables:
        source = table_digest((source_cluster or move.source).dsn(APP_DB), table)
        target = table_digest(move.target.dsn(APP_DB), table)
        assert source == target, f"{table} differs: source {source} target {target}"
        counts[table] = source[0]
    return counts


def wait_sides_identical(move: MoveTopology, tables=GROUP_TABLES, timeout: float = 30, *,
                         source_cluster=None) -> dict[str, int]:
    """Compare both sides once replication (either way) has had time to catch up."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            return assert_sides_identical(move, tables, source_cluster=source_cluster)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
