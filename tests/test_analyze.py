"""`migrator analyze` on real servers: what it says about live traffic.

Each case runs the sandbox's own traffic through PgBouncer (the group's mix through
`app_files`, the rest of the application through `app`) and adds the one thing that
is wrong; clean traffic is watched several times and must never raise a finding.
"""

from __future__ import annotations

import json
import time

import psycopg
import pytest
from click.testing import CliRunner
from movekit import demo_move

from migrator.analyze.observe import analyze_playbook
from migrator.cli import cli
from migrator.lab.sandbox import (
    APP_DB,
    GROUP_ENTRY,
    GROUP_TABLES,
    WHOLE_ENTRY,
    create_direct_role,
)
from migrator.lab.workload import MIXES, Workload
from migrator.playbook import TableName
from migrator.postgres.catalog import table_relations
from migrator.postgres.connection import connect

T = TableName.parse
GROUP = {T(t) for t in GROUP_TABLES}
WATCH = "2s"


@pytest.fixture
def demo(move, tmp_path):
    return demo_move(move, tmp_path, scale=2)


def run_analyze(*args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(cli, ["analyze", *args, "--json"])
    return result.exit_code, json.loads(result.stdout)


def as_real_work(name: str):
    """A lab mix whose transactions hold their locks 20 ms, as real work does (the
    wrong-traffic mixes do the same): a 10 ms sampler then sees most of them. With
    sub-millisecond transactions a 2 s window once saw none of the group's holding a
    table lock."""
    base = MIXES[name]

    def mix(conn, rng, shared):
        base(conn, rng, shared)
        conn.execute("SELECT pg_catalog.pg_sleep(0.02)")
    return mix


def clean_traffic(move):
    """The application as it should be: the group's traffic on its entry, the rest on `app`."""
    return (Workload(move.app_dsn(GROUP_ENTRY), mix=as_real_work("group"), clients=4, rate=150),
            Workload(move.app_dsn(WHOLE_ENTRY), mix=as_real_work("app"), clients=2, rate=60))


class running:
    def __init__(self, *loads: Workload) -> None:
        self.loads = loads

    def __enter__(self):
        for load in self.loads:
            load.start()
        deadline = time.monotonic() + 20
        while any(load.result().transactions == 0 for load in self.loads):
            assert time.monotonic() < deadline, "a load completed nothing in 20 s"
            time.sleep(0.02)
        return self.loads

    def __exit__(self, *exc):
        for load in self.loads:
            seen = load.stop()
            assert seen.failures == 0, seen.failure_kinds


def test_clean_traffic_gives_no_finding_and_exit_0_run_after_run(demo):
    with running(*clean_traffic(demo.move)):
        code, doc = run_analyze(str(demo.path), "--duration", WATCH)
        reports = [analyze_playbook(demo.playbook, duration=2.0) for _ in range(3)]
    assert code == 0, doc["findings"]
    assert doc["findings"] == [] and doc["ok"] is True
    for key in ("duration_s", "interval_ms", "samples", "tables", "group", "routing", "isolation",
                "candidates", "findings"):
        assert key in doc
    assert doc["interval_ms"] == 10 and doc["samples"] > 100
    for report in reports:
        assert report.findings == (), [str(f) for f in report.findings]
        assert report.coverage.transactions_observed > 0
        entries = {(u.route.entry, u.table) for u in report.routing.uses}
        assert entries and all((entry == GROUP_ENTRY) == (table in GROUP) for entry, table in entries)
    # The group's sequences and indexes are its own, not a second table outside it.
    seen = {t["table"] for t in doc["tables"] if t["transactions"]}
    assert seen <= set(GROUP_TABLES) | {"public.users", "public.teams"}


def _misrouted_reads(move):
    return Workload(move.app_dsn(WHOLE_ENTRY), mix="file-reads", clients=2, rate=80)


def _direct_writer(move):
    create_direct_role(move.source.dsn(APP_DB), "nightly_sweep", "sweep-pw-1")
    dsn = move.source.dsn(APP_DB, user="nightly_sweep", password="sweep-pw-1")
    return Workload(dsn, mix="file-writes", clients=2, rate=80)


def _crossing(move):
    return Workload(move.app_dsn(GROUP_ENTRY), mix="crossing", clients=2, rate=80)


@pytest.mark.parametrize("case, code, named", [
    (_misrouted_reads, "routing.wrong_entry", ("public.files", f"entry {WHOLE_ENTRY}")),
    (_direct_writer, "routing.direct", ("public.files", "role nightly_sweep")),
    (_crossing, "isolation.crossing_transaction", ("public.files", "public.users")),
], ids=["misrouted-reads", "direct-writer", "crossing-transactions"])
def test_traffic_that_would_break_is_named_with_its_table_and_route_exit_3(demo, case, code, named):
    with running(*clean_traffic(demo.move), case(demo.move)):
        exit_code, doc = run_analyze(str(demo.path), "--duration", "3s")
    assert exit_code == 3, (doc["coverage"], doc["samples"], doc["late_samples"], doc["routing"]["uses"])
    found = [f for f in doc["findings"] if f["code"] == code]
    assert found, doc["findings"]
    assert all(f["level"] == "block" for f in doc["findings"])
    assert all(word in found[0]["message"] for word in named), found[0]["message"]
    assert doc["blocking"] == doc["findings"]


def _scan(table: str):
    def mix(conn, rng, shared):
        conn.execute(f"SELECT count(*), sum(n) FROM public.{table} WHERE n >= %s", (rng.randint(0, 5),))
        # Holding the table's lock 10 ms more, as real work does (as_real_work): a scan of
        # a few milliseconds at 20 a second once went unseen by a whole 4 s window.
        conn.execute("SELECT pg_catalog.pg_sleep(0.01)")
    mix.__name__ = f"scan-{table}"
    return mix


def test_a_table_under_six_times_the_load_gets_a_clearly_larger_aas(move, tmp_path):
    # Six times, not three: AAS is sampled, and on a busy machine a 3 s window once gave
    # the three-times table only 1.7 times the other's (its scans took a few ms each).
    with connect(move.source.dsn(APP_DB), purpose="lab test") as conn:
        for table in ("hot", "cold"):
            conn.execute(f"CREATE TABLE public.{table} (id int PRIMARY KEY, n int)")
            conn.execute(f"INSERT INTO public.{table} SELECT g, g % 97 FROM generate_series(1, 40000) g")
            conn.execute(f"GRANT SELECT ON public.{table} TO app")
        conn.execute("ANALYZE")
    path = move.write_playbook(tmp_path / "playbook.yaml", tables=["public.hot"])
    with running(Workload(move.app_dsn(GROUP_ENTRY), mix=_scan("hot"), clients=4, rate=120),
                 Workload(move.app_dsn(WHOLE_ENTRY), mix=_scan("cold"), clients=1, rate=20)):
        code, doc = run_analyze(str(path), "--duration", "4s")
    assert code == 0, doc["findings"]
    aas = {t["table"]: t for t in doc["tables"]}
    hot, cold = aas["public.hot"], aas["public.cold"]
    assert hot["aas"] > 2 * cold["aas"] > 0, (hot, cold)
    assert hot["aas_share"] > 0.5 and doc["group"]["aas"] == hot["aas"]
    assert hot["reads_per_s"] > 2 * cold["reads_per_s"]


def test_without_a_playbook_it_proposes_the_file_tables_as_one_group_and_draws_the_graph(demo, tmp_path):
    picture = tmp_path / "graph.svg"
    with running(*clean_traffic(demo.move)):
        # Longer than WATCH: every table of both groups must be seen at least once (a
        # short window missed the files group whole, once in CI).
        code, doc = run_analyze("--source", demo.move.source.dsn(APP_DB), "--duration", "4s",
                                "--graph", str(picture), "--pgbouncer", demo.move.pgbouncer.admin_dsn())
    assert code == 0 and doc["mode"] == "source" and doc["findings"] == []
    groups = [set(c["tables"]) for c in doc["candidates"]]
    assert set(GROUP_TABLES) in groups, groups
    assert {"public.users", "public.teams"} in groups
    written = doc["graph_file"]
    assert written["format"] in ("svg", "dot")
    text = open(written["path"]).read()
    assert "public.file_versions" in text and ("<svg" in text if written["format"] == "svg" else "graph" in text)


def test_pg_stat_statements_adds_every_crossing_statement(demo):
    source = demo.move.source
    with psycopg.connect(source.dsn(), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    source.restart()
    with psycopg.connect(source.dsn(APP_DB), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")

    def report_join(conn, rng, shared):
        conn.execute("SELECT u.email, count(f.id) FROM public.users u JOIN public.files f ON f.owner_id = u.id "
                     "WHERE u.id = %s GROUP BY u.email", (rng.randint(1, 500),)).fetchall()

    with running(Workload(demo.move.app_dsn(WHOLE_ENTRY), mix=report_join, clients=1, rate=5)):
        report = analyze_playbook(demo.playbook, duration=2.0)
    assert report.statements_available
    crossing = [c for c in report.crossings if c.statement_calls]
    assert crossing and T("public.users") in crossing[0].outside and T("public.files") in crossing[0].inside
    assert "JOIN public.files" in crossing[0].sample_query


def test_plan_observe_adds_the_findings_to_the_plan(demo):
    with running(*clean_traffic(demo.move), _misrouted_reads(demo.move)):
        result = CliRunner().invoke(cli, ["plan", str(demo.path), "--observe", WATCH, "--json"])
    doc = json.loads(result.stdout)
    assert result.exit_code == 3
    assert any(f["code"] == "routing.wrong_entry" and "public.files" in f["message"] for f in doc["blocking"])


def test_table_relations_map_indexes_toast_and_sequences_to_their_table(demo):
    with connect(demo.move.source.dsn(APP_DB), purpose="lab test") as conn:
        relations = table_relations(conn)
        oid = dict(conn.execute(
            "SELECT c.relname, c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public'").fetchall())
        toast = conn.execute("SELECT reltoastrelid FROM pg_class WHERE oid = 'public.files'::regclass").fetchone()[0]
    files = T("public.files")
    assert relations[oid["files"]].kind == "table" and relations[oid["files"]].tables == (files,)
    assert relations[oid["files_owner_idx"]].tables == (files,)
    assert relations[toast].kind == "toast" and relations[toast].tables == (files,)
    assert relations[oid["file_number_seq"]].kind == "sequence"      # a default's nextval
    assert relations[oid["file_number_seq"]].tables == (files,)
    assert relations[oid["files_id_seq"]].tables == (files,)
    assert relations[oid["users_email_key"]].tables == (T("public.users"),)
