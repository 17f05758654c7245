"""The screens at 80 columns, with no server: URLs whole on a line, human units, plurals."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from migrator.lab.sandbox import SandboxInfo
from migrator.move.status import MoveReport, Replication
from migrator.output import Output
from migrator.output.base import plural
from migrator.output.plan import statement_counts
from migrator.postgres.statement import Statement


def _output(width: int = 80) -> tuple[Output, io.StringIO]:
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, highlight=False, soft_wrap=True, color_system=None)
    return Output(console=console, err=console), buffer


def test_sandbox_status_keeps_every_url_whole_at_80_columns():
    directory = Path("/var/tmp/a-rather-long-directory-name/for-the-sandbox-of-the-team")
    passfile = f"?passfile={directory}/.pgpass"
    urls = [f"postgresql://postgres@127.0.0.1:{port}/app{passfile}" for port in (5432, 5433)] + [
        f"postgresql://app@127.0.0.1:6432/{entry}{passfile}" for entry in ("app", "app_files", "pgbouncer")]
    info = SandboxInfo(directory, directory / "playbook.yaml", False, [101, 102], *urls, 10)
    out, buffer = _output(80)

    out.sandbox_info(info, verb="status")

    lines = buffer.getvalue().splitlines()
    for url in urls:
        assert any(url in line for line in lines), (url, buffer.getvalue())
    assert "10 (x1,000 files)" in buffer.getvalue()


def test_status_shows_lag_and_times_in_human_units():
    steps = [{"step": "replicate", "status": "done", "seconds": 4520.0, "error": None},
             {"step": "cutover", "status": "failed", "seconds": 0.25,
              "error": "could not connect to postgresql://migrator:****@db-files.example.internal:5432/app"}]
    report = MoveReport("files", "cutover failed", steps, Replication("forward", "migrator_files", 11968512, 2.5),
                        [], None, "migrator execute playbook.yaml", [])
    out, buffer = _output(80)

    out.move_report(report)

    text = buffer.getvalue()
    assert "lag 11.4 MB, 2.5 s" in text and "11968512" not in text
    assert "1.3 h" in text and "250 ms" in text
    assert any("postgresql://migrator:****@db-files.example.internal:5432/app" in line for line in text.splitlines())


def test_plurals_and_statement_counts():
    assert plural(1, "warning") == "1 warning" and plural(2, "warning") == "2 warnings"
    assert plural(1200, "index", "indexes") == "1,200 indexes"
    statements = [Statement("source", "SELECT 1"), Statement("target", "SELECT 1"), Statement("target", "SELECT 2"),
                  Statement("pgbouncers[0] x@y:6432/pgbouncer", "PAUSE app"), Statement("/etc/pgb.ini", "[databases]")]
    assert statement_counts(statements) == "1 on source, 2 on target, 1 on PgBouncer, 1 config file"
    assert statement_counts([]) == "no statement"


def test_a_grouped_finding_says_what_its_subjects_are():
    from migrator.output.plan import subjects_text

    # issue 19: "3 tables: citext, pg_trgm, pgcrypto" were extensions
    assert subjects_text("table.extension_missing", ["citext", "pg_trgm", "pgcrypto"], "extension") == \
        "3 extensions: citext, pg_trgm, pgcrypto"
    assert subjects_text("table.triggers", ["a.b", "a.c"]) == "2 tables: a.b, a.c"
    assert subjects_text("guard.ddl_unavailable", ["source role x", "target role x"]).startswith("2 roles")


def test_a_json_document_is_what_the_standard_library_writes():
    """--json goes through orjson for speed; the text is json.dumps(indent=2, default=str)'s:
    non-ASCII escaped, dates, paths, decimals and dataclasses as str() gives them."""
    import datetime
    import decimal
    import json

    from migrator.move.statuses import StepStatus
    from migrator.output.base import json_text

    document = {
        "name": "café ✓ 😀 \u2028", "control": "\x00\x01\b\f\t\n\r\x1f\x7f\"\\/",
        "numbers": [1, 2.5, -3, None, True], 7: {"tuple": (1, "x")},
        "at": datetime.datetime(2026, 12, 5, 16, 0, tzinfo=datetime.UTC), "size": decimal.Decimal("1.50"),
        "path": Path("/var/tmp/a b"), "status": StepStatus.DONE, "statement": Statement("source", "SELECT 1"),
        "huge": 2**70, "empty": {}, "nested": [[], [{}]],
    }
    assert json_text(document) == json.dumps(document, indent=2, default=str)
    del document["huge"]   # the fallback above; orjson itself below
    assert json_text(document) == json.dumps(document, indent=2, default=str)


def test_plan_does_not_import_the_state_store_without_a_store():
    """SQLAlchemy takes a quarter of a second to import: `plan` on a playbook without a
    checkpoint store never needs it (benchmarks/plan_bench.py)."""
    import subprocess
    import sys

    code = ("import sys, migrator.cli, migrator.plan.build, migrator.output.plan; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy' or m == 'migrator.move.state'))")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert shown.stdout.strip() == "[]"


def test_plan_sql_shows_each_statement_exactly_as_it_runs():
    """`plan --sql` prints the SQL that runs: no emoji code made an emoji, no tab made
    spaces, a multi-line statement indented under its side, secrets masked."""
    out, buffer = _output(80)
    statements = [
        Statement("target", "SELECT ':smile:', E'a\tb'"),
        Statement("target", "CREATE SUBSCRIPTION s CONNECTION 'host=h password=hunter2' PUBLICATION p",
                  note="the copy"),
        Statement("source", "SELECT 1\nFROM t"),
        Statement("pgbouncers[0] admin@127.0.0.1:6432/pgbouncer", "PAUSE app"),
    ]
    out._step(4, "replicate", "Replicate", statements, [])
    shown = buffer.getvalue().splitlines()
    assert shown[1:] == [
        "   target:",
        "     SELECT ':smile:', E'a\tb';",
        "     CREATE SUBSCRIPTION s CONNECTION 'host=h password=****' PUBLICATION p;  -- the copy",
        "   source:",
        "     SELECT 1",
        "     FROM t;",
        "   pgbouncers[0] admin@127.0.0.1:6432/pgbouncer:",
        "     PAUSE app",
    ], shown


def test_a_name_with_an_emoji_code_in_it_is_shown_as_it_is(capsys):
    out = Output()
    out.line('table public.":x:" moves')
    out.prose('[bold]view[/] public."a:smile:b" moves too')
    assert capsys.readouterr().out == 'table public.":x:" moves\nview public."a:smile:b" moves too\n'
