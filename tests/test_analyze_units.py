"""analyze's pure parts, no server: relations to tables, routes to findings, crossings,
candidate groups, statements to tables, the picture."""

from __future__ import annotations

from types import SimpleNamespace

from migrator.analyze.findings import CODES, isolation_findings, routing_findings
from migrator.analyze.isolation import (
    Touch,
    candidate_groups,
    coaccess_graph,
    crossings,
)
from migrator.analyze.picture import to_dot
from migrator.analyze.routing import DIRECT, ENTRY, Route, route_uses
from migrator.analyze.sampling import Transaction, tables_of, wait_class
from migrator.analyze.statements import StatementUse, statement_tables
from migrator.playbook import TableName
from migrator.postgres.catalog import ForeignKey, TableRelation

T = TableName.parse
FILES, VERSIONS, USERS, TEAMS = T("files"), T("file_versions"), T("users"), T("teams")
GROUP = frozenset({FILES, VERSIONS})
BOUNCER = "migrator@127.0.0.1:6432/pgbouncer"

RELATIONS = {
    1: TableRelation(1, "table", (FILES,)), 2: TableRelation(2, "index", (FILES,)),
    3: TableRelation(3, "toast", (FILES,)), 4: TableRelation(4, "sequence", (FILES,)),
    5: TableRelation(5, "table", (USERS,)),
    6: TableRelation(6, "sequence", (FILES, USERS)),   # shared by a table in and one outside
}


def test_indexes_toast_and_sequences_count_for_their_table():
    assert tables_of([2, 3, 4], RELATIONS) == {FILES}
    assert tables_of([999], RELATIONS) == frozenset()          # a catalog, a view
    # A shared sequence is the table of the same transaction that uses it ...
    assert tables_of([1, 6], RELATIONS) == {FILES}
    # ... and only alone stands for every table that uses it.
    assert tables_of([6], RELATIONS) == {FILES, USERS}
    assert [wait_class(w) for w in (None, "IO", "Lock", "LWLock")] == ["cpu", "io", "lock", "other"]


def entry(name: str) -> Route:
    return Route(kind=ENTRY, role="app", pgbouncer=BOUNCER, entry=name)


def txn(query: str) -> Transaction:
    seen = Transaction(vxid="3/1", backend=(1, 0.0))
    for text in ("BEGIN", query, query, "COMMIT"):
        seen.saw(text)
    assert seen.query == query          # control statements and repeats left out
    return seen


def test_routes_that_break_at_the_cutover_and_only_those():
    cron = Route(kind=DIRECT, role="nightly", application_name="sweep", client="10.0.0.7")
    seen = [
        (txn("SELECT 1 FROM files"), entry("app_files"), frozenset({FILES}), frozenset()),
        (txn("SELECT 1 FROM users"), entry("app"), frozenset({USERS}), frozenset()),
        (txn("SELECT * FROM files"), entry("app"), frozenset({FILES}), frozenset({"10.0.0.9 (web)"})),
        (txn("SELECT * FROM teams"), entry("app_files"), frozenset({TEAMS}), frozenset()),
        (txn("UPDATE files"), cron, frozenset({FILES}), frozenset()),
        (txn("UPDATE users"), cron, frozenset({USERS}), frozenset()),
    ]
    report = route_uses(seen, GROUP, {BOUNCER: "app_files"})
    assert {(u.route.entry, u.table) for u in report.wrong_entry} == {("app", FILES), ("app_files", TEAMS)}
    assert [(u.route.role, u.table) for u in report.direct] == [("nightly", FILES)]
    findings = routing_findings(report)
    assert [f.code for f in findings] == ["routing.wrong_entry", "routing.wrong_entry", "routing.direct"]
    assert all(f.level == "block" and f.code in CODES for f in findings)
    by_subject = {f.subject: f for f in findings}
    assert "10.0.0.9 (web)" in by_subject["public.files via entry app"].message
    assert "not in the group" in by_subject["public.teams via entry app_files"].message
    assert "role nightly, application_name 'sweep', client 10.0.0.7" in findings[2].message
    # Clean traffic: nothing said.
    assert routing_findings(route_uses(seen[:2], GROUP, {BOUNCER: "app_files"})) == []
    # No playbook: uses only.
    assert route_uses(seen, frozenset(), {}).wrong_entry == ()


def test_crossings_from_samples_and_statements_and_candidates_kept_whole_along_foreign_keys():
    touches = [Touch(frozenset({FILES, VERSIONS}), 3, "entry app_files", "INSERT ...")] * 5
    touches += [Touch(frozenset({USERS, TEAMS}), 2, "entry app", "SELECT ...")] * 4
    touches += [Touch(frozenset({FILES, USERS}), 1, "entry app_files", "INSERT INTO files ...")]
    statements = [StatementUse("SELECT ... FROM users JOIN files", 40, frozenset({FILES, USERS}))]
    found = crossings(touches, statements, GROUP)
    assert len(found) == 1 and found[0].transactions == 1 and found[0].statement_calls == 40
    assert found[0].inside == (FILES,) and found[0].outside == (USERS,)
    (finding,) = isolation_findings(found, {})
    assert finding.code == "isolation.crossing_transaction" and "public.users" in finding.message

    comments = T("file_comments")
    graph = coaccess_graph([FILES, VERSIONS, USERS, TEAMS, comments], touches[:9], [],
                           {FILES: 0.3, VERSIONS: 0.2, USERS: 0.1, TEAMS: 0.1})
    fk = ForeignKey("c_fk", comments, ("file_id",), FILES, ("id",), "", crosses_group=False)
    groups = candidate_groups(graph, [fk])
    assert groups == [frozenset({FILES, VERSIONS, comments}), frozenset({USERS, TEAMS})]


def test_statements_name_their_tables_whatever_the_spelling():
    known = [FILES, USERS, T("audit.files")]
    assert statement_tables("WITH users AS (SELECT 1) SELECT * FROM users, public.files", known) == {FILES}
    assert statement_tables("UPDATE users SET a = $1 FROM audit.files f", known) == {USERS, T("audit.files")}
    assert statement_tables("SELECT * FROM nowhere", known) == frozenset()
    assert statement_tables("not sql at all", known) is None


def test_the_picture_marks_the_group_and_the_crossing_edges():
    touches = [Touch(frozenset({FILES, VERSIONS}), 3, "e", None), Touch(frozenset({FILES, USERS}), 1, "e", None)]
    graph = coaccess_graph([FILES, VERSIONS, USERS], touches, [], {FILES: 0.2, VERSIONS: 0.1, USERS: 0.05})
    candidate = SimpleNamespace(tables=(VERSIONS, FILES, USERS), is_group=False, impact=SimpleNamespace(aas=0.3))
    report = SimpleNamespace(graph=graph, group=tuple(sorted(GROUP)), candidates=[candidate], source="db",
                             move="files", seconds=2.0, samples=200)
    dot = to_dot(report)
    assert dot.startswith("graph coaccess {") and "subgraph cluster_1" in dot
    assert dot.count('fillcolor="#9ecae1"') == 2                       # the two group tables
    assert '"public.files" -- "public.users"' in dot and "color=red" in dot


def test_the_picture_draws_a_candidate_member_that_no_sample_saw():
    # a table in a candidate only through its foreign key, unseen in a short window
    graph = coaccess_graph([FILES, VERSIONS], [Touch(frozenset({FILES}), 2, "e", None)], [], {FILES: 0.2})
    candidate = SimpleNamespace(tables=(VERSIONS, FILES), is_group=False, impact=SimpleNamespace(aas=0.2))
    report = SimpleNamespace(graph=graph, group=(), candidates=[candidate], source="db",
                             move=None, seconds=2.0, samples=200)
    dot = to_dot(report)
    cluster = dot[dot.index("subgraph cluster_1"):]
    assert f'"{VERSIONS}" [label=' in cluster and "AAS 0.000" in cluster


def test_the_readme_lists_every_analyze_code_and_the_json_keys():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## Analyze"):readme.index("## Plan")]
    for code in CODES:
        assert f"| `{code}` | block |" in section, code
    for key in ("duration_s", "interval_ms", "samples", "tables", "group", "routing", "isolation",
                "candidates", "findings"):
        assert f"`{key}`" in section, key
