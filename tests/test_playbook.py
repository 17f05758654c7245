"""The playbook as the user writes it: what parses, and the one-line errors for what doesn't."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from psycopg import sql
from pydantic import ValidationError

from migrator.errors import PlaybookError
from migrator.playbook import (
    CutoverSettings,
    Server,
    TableName,
    format_duration,
    format_size,
    load_playbook,
    parse_duration,
    parse_playbook,
    parse_size,
)

PASSWORD = "s3cr3t-pw"
ENV = {"PGPASS": PASSWORD}

GOOD = """\
name: files-partition
source:
  dsn: postgresql://migrator:${PGPASS}@db-main:5432/app
target:
  dsn: host=db-files port=5433 dbname=app user=migrator password=${PGPASS}
tables:
  - public.files
  - file_versions
  - Audit.Log
  - '"My Table"'
  - sales."Order"
app_roles: [app_files, app_reports]
pgbouncers:
  - admin_dsn: postgresql://pgbouncer:${PGPASS}@pgb-1:6432/pgbouncer
    database: app_files
    config_file: ${PGB_CONFIG:-/etc/pgbouncer/pgbouncer.ini}
  - admin_dsn: postgresql://pgbouncer@pgb-2:6432/pgbouncer
    database: app_files
    config_file: /etc/pgbouncer/pgbouncer.ini
cutover:
  max_pause: 1.5s
  grace: 250ms
  max_lag: 8MB
indexes:
  defer: false
"""

# The smallest valid playbook, with the password written into both DSNs so every
# error case below can check that it never reaches the message.
MINIMAL: dict[str, Any] = {
    "name": "files-partition",
    "source": {"dsn": f"postgresql://migrator:{PASSWORD}@db-main:5432/app"},
    "target": {"dsn": f"postgresql://migrator:{PASSWORD}@db-files:5432/app"},
    "tables": ["public.files", "public.file_versions"],
    "pgbouncers": [
        {
            "admin_dsn": f"postgresql://pgbouncer:{PASSWORD}@pgb-1:6432/pgbouncer",
            "database": "app_files",
            "config_file": "/etc/pgbouncer/pgbouncer.ini",
        }
    ],
}


def playbook_yaml(**changes: Any) -> str:
    """MINIMAL with top-level keys replaced (None removes a key), as YAML text."""
    data = copy.deepcopy(MINIMAL)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return yaml.safe_dump(data, sort_keys=False)


def with_cutover(**settings: Any) -> str:
    return playbook_yaml(cutover=settings)


PGBOUNCER = MINIMAL["pgbouncers"][0]
MINIMAL_TABLES = (TableName("public", "files"), TableName("public", "file_versions"))


# --- a good playbook -----------------------------------------------------------


def test_a_full_playbook_parses_into_typed_values() -> None:
    playbook = parse_playbook(GOOD, env=ENV)

    assert playbook.name == "files-partition"
    assert playbook.slug == "files_partition"
    assert playbook.source.dsn == f"postgresql://migrator:{PASSWORD}@db-main:5432/app"
    assert playbook.source.display == "migrator@db-main:5432/app"
    assert playbook.target.display == "migrator@db-files:5433/app"
    assert playbook.tables == (
        TableName("public", "files"),
        TableName("public", "file_versions"),
        TableName("audit", "log"),
        TableName("public", "My Table"),
        TableName("sales", "Order"),
    )
    assert playbook.app_roles == ("app_files", "app_reports")
    assert [(p.database, p.config_file) for p in playbook.pgbouncers] == [
        ("app_files", Path("/etc/pgbouncer/pgbouncer.ini")),
        ("app_files", Path("/etc/pgbouncer/pgbouncer.ini")),
    ]
    assert playbook.pgbouncers[0].admin_dsn.endswith(f":{PASSWORD}@pgb-1:6432/pgbouncer")
    assert playbook.cutover == CutoverSettings(max_pause=1.5, grace=0.25, max_lag=8 * 1024**2)
    assert playbook.indexes.defer is False
    assert playbook.path is None


def test_optional_sections_take_their_defaults() -> None:
    playbook = parse_playbook(playbook_yaml(pgbouncers=None), env={})

    assert playbook.app_roles == ()
    assert playbook.pgbouncers == ()
    assert playbook.cutover.max_pause == 2.0
    assert playbook.cutover.grace == 0.5
    assert playbook.cutover.max_lag == 16 * 1024**2
    assert playbook.indexes.defer is True


def test_an_empty_section_means_its_defaults() -> None:
    text = playbook_yaml() + "cutover:\nindexes:\napp_roles:\n"

    playbook = parse_playbook(text, env={})

    assert playbook.cutover == CutoverSettings()
    assert playbook.indexes.defer is True


def test_environment_variables_default_and_escape() -> None:
    roles = ["${ROLE}", "${MISSING:-fallback}", "${EMPTY:-used}", "$${KEEP}"]
    text = playbook_yaml(app_roles=roles)

    playbook = parse_playbook(text, env={"ROLE": "app_files", "EMPTY": ""})

    assert playbook.app_roles == ("app_files", "fallback", "used", "${KEEP}")


def test_interpolation_cannot_inject_yaml() -> None:
    text = playbook_yaml(app_roles=["${ROLE}"])

    playbook = parse_playbook(text, env={"ROLE": "x]\ntables: [evil"})

    assert playbook.app_roles == ("x]\ntables: [evil",)
    assert playbook.tables == MINIMAL_TABLES


def test_load_playbook_reads_the_file_and_os_environ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "files.yaml"
    path.write_text(GOOD)
    monkeypatch.setenv("PGPASS", PASSWORD)
    monkeypatch.setenv("PGB_CONFIG", "/srv/pgb.ini")

    playbook = load_playbook(path)

    assert playbook.path == path
    assert playbook.pgbouncers[0].config_file == Path("/srv/pgb.ini")
    assert load_playbook(str(path), env=ENV).pgbouncers[0].config_file == Path(
        "/etc/pgbouncer/pgbouncer.ini"
    )


def test_a_playbook_is_immutable() -> None:
    playbook = parse_playbook(playbook_yaml(), env={})

    with pytest.raises(ValidationError):
        playbook.name = "other"  # type: ignore[misc]
    assert hash(playbook) == hash(parse_playbook(playbook_yaml(), env={}))


def test_repr_and_str_never_show_a_password() -> None:
    playbook = parse_playbook(GOOD, env=ENV)

    for text in (repr(playbook), str(playbook), repr(playbook.source), str(playbook.target),
                 repr(playbook.pgbouncers[0])):
        assert PASSWORD not in text
    assert "migrator@db-main:5432/app" in repr(playbook)
    assert str(Server(dsn=f"host=h password={PASSWORD} dbname=app")) == "h:5432/app"


# --- table names ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "schema", "name", "qualified"),
    [
        ("files", "public", "files", "public.files"),
        ("public.files", "public", "files", "public.files"),
        ("Sales.Orders", "sales", "orders", "sales.orders"),
        ('"My Table"', "public", "My Table", 'public."My Table"'),
        ('sales."Order"', "sales", "Order", 'sales."Order"'),
        ('"a.b"."say ""hi"""', "a.b", 'say "hi"', '"a.b"."say ""hi"""'),
    ],
)
def test_table_names_fold_like_postgres(text: str, schema: str, name: str, qualified: str) -> None:
    table = TableName.parse(text)

    assert (table.schema, table.name) == (schema, name)
    assert table.qualified == qualified == str(table)
    assert table.identifier == sql.Identifier(schema, name)


def test_table_names_are_hashable_and_sort_by_schema_then_name() -> None:
    names = [TableName.parse(t) for t in ("sales.b", "public.z", "files", "public.files")]

    assert sorted(set(names)) == [
        TableName("public", "files"),
        TableName("public", "z"),
        TableName("sales", "b"),
    ]


# --- units ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("2s", 2.0), ("1.5s", 1.5), ("1m", 60.0), ("2min", 120.0),
     ("250us", 0.00025), ("1h", 3600.0), ("220 ms", 0.22)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", [2, 2.5, "2", "2 seconds", "fast", "2S", "", None, True])
def test_parse_duration_refuses(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("text", "size"),
    [("16MB", 16 * 1024**2), ("512kB", 512 * 1024), ("512KB", 512 * 1024), ("1GB", 1024**3),
     ("1TB", 1024**4), ("100B", 100), (4096, 4096), ("4096", 4096), ("1.5kB", 1536),
     ("16.0 MB", 16 * 1024**2)],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["16 mb", "16 parsecs", "MB", "1.5", 1.5, None, True])
def test_parse_size_refuses(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 ms"), (0.00025, "250 us"), (0.22, "220 ms"), (1.5, "1.5 s"), (2, "2 s"),
     (90, "1.5 min"), (7200, "2 h"), (-0.5, "-500 ms")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 B"), (512, "512 B"), (16 * 1024**2, "16.0 MB"), (1536 * 1024**2, "1.5 GB"),
     (2048, "2.0 kB"), (3 * 1024**4, "3.0 TB")],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text


# --- bad playbooks: one clear line each ----------------------------------------

BAD_PLAYBOOKS = [
    pytest.param(
        playbook_yaml(tabels=["public.files"]),
        "unknown key 'tabels' (did you mean 'tables'?)",
        id="unknown-top-level-key",
    ),
    pytest.param(
        with_cutover(max_paus="2s"),
        "cutover: unknown key 'max_paus' (did you mean 'max_pause'?)",
        id="unknown-nested-key",
    ),
    pytest.param(
        playbook_yaml(pgbouncers=[{**PGBOUNCER, "databse": "x"}]),
        "pgbouncers[0]: unknown key 'databse' (did you mean 'database'?)",
        id="unknown-key-in-list-item",
    ),
    pytest.param(playbook_yaml(path="/tmp/x"), "unknown key 'path'", id="path-is-not-a-key"),
    pytest.param(playbook_yaml(tables="public.files"), "tables: expected a list, got text",
                 id="tables-not-a-list"),
    pytest.param(playbook_yaml(tables=["public.files", 7]),
                 "tables[1]: expected a table name such as public.files, got a number",
                 id="table-not-text"),
    pytest.param(
        playbook_yaml(source="db-main"),
        "source: expected a mapping with keys dsn, got text",
        id="source-not-a-mapping",
    ),
    pytest.param(
        with_cutover(max_pause="2 seconds"),
        "cutover.max_pause: '2 seconds' is not a duration"
        " — use a number with a unit: 500ms, 2s, 1m",
        id="bad-duration-unit",
    ),
    pytest.param(with_cutover(max_pause=2), "cutover.max_pause: 2 needs a unit such as 500ms or 2s",
                 id="bare-number-duration"),
    pytest.param(with_cutover(grace="500"), "cutover.grace: '500' needs a unit such as 500ms or 2s",
                 id="bare-number-duration-as-text"),
    pytest.param(with_cutover(max_lag="16 parsecs"), "cutover.max_lag: '16 parsecs' is not a size",
                 id="bad-size"),
    pytest.param(with_cutover(max_lag="0MB"), "cutover.max_lag: must be greater than 0",
                 id="zero-max-lag"),
    pytest.param(with_cutover(max_pause="0s"), "cutover.max_pause: must be greater than 0",
                 id="zero-max-pause"),
    pytest.param(with_cutover(max_pause="-1s"), "cutover.max_pause: must be greater than 0",
                 id="negative-max-pause"),
    pytest.param(with_cutover(grace="-1ms"), "cutover.grace: must not be negative",
                 id="negative-grace"),
    pytest.param(
        with_cutover(max_pause="2s", grace="2s"),
        "cutover: grace (2 s) must be shorter than max_pause (2 s)",
        id="grace-not-below-max-pause",
    ),
    pytest.param(with_cutover(max_pause="200ms"),
                 "cutover: grace (500 ms) must be shorter than max_pause (200 ms)",
                 id="default-grace-above-max-pause"),
    pytest.param(playbook_yaml(indexes={"defer": "maybe"}),
                 "indexes.defer: expected true or false, got text", id="defer-not-a-bool"),
    pytest.param(
        playbook_yaml(tables=["files", "public.file_versions", "public.files"]),
        "tables[2]: public.files is listed twice (also tables[0])",
        id="duplicate-table-after-normalisation",
    ),
    pytest.param(playbook_yaml(tables=[]), "tables: the list is empty", id="empty-tables"),
    pytest.param(playbook_yaml(tables=None), "tables: field required", id="missing-tables"),
    pytest.param(playbook_yaml(tables=["my table"]), "tables[0]: 'my table' is not a table name",
                 id="unquoted-table-with-space"),
    pytest.param(playbook_yaml(tables=["app.public.files"]),
                 "tables[0]: 'app.public.files' is not a table name", id="three-part-table-name"),
    pytest.param(playbook_yaml(source={}), "source.dsn: field required", id="missing-source-dsn"),
    pytest.param(playbook_yaml(source={"dsn": ""}), "source.dsn: must not be empty",
                 id="empty-source-dsn"),
    pytest.param(
        playbook_yaml(source={"dsn": "postgresql://migrator:${PGPASS_MAIN}@db-main/app"}),
        "source.dsn: environment variable PGPASS_MAIN is not set",
        id="missing-environment-variable",
    ),
    pytest.param(playbook_yaml(target={"dsn": "${TARGET"}),
                 "target.dsn: '${' must be followed by a variable name and '}'",
                 id="malformed-interpolation"),
    pytest.param(
        playbook_yaml(source={"dsn": f"host=db-main password={PASSWORD} dbname"}),
        "source.dsn: not a valid connection string",
        id="unparseable-dsn",
    ),
    pytest.param(
        playbook_yaml(source={"dsn": f"postgresql://migrator:{PASSWORD} x@db-main/app"}),
        "source.dsn: not a valid connection string (unexpected spaces",
        id="unparseable-dsn-space-in-password",
    ),
    pytest.param(playbook_yaml(target={"dsn": f"postgresql://m:{PASSWORD}@db-files:port/app"}),
                 "target.dsn: port 'port' is not a number", id="dsn-port-not-a-number"),
    pytest.param(
        playbook_yaml(pgbouncers=[PGBOUNCER, {"admin_dsn": "host=pgb-2", "config_file": "/x"}]),
        "pgbouncers[1].database: field required",
        id="pgbouncer-database-missing",
    ),
    pytest.param(
        playbook_yaml(pgbouncers=[PGBOUNCER, PGBOUNCER]),
        "pgbouncers[1]: database app_files on pgb-1:6432 is listed twice (also pgbouncers[0])",
        id="duplicate-pgbouncer",
    ),
    pytest.param(playbook_yaml(app_roles=["app_files", " "]), "app_roles[1]: must not be empty",
                 id="empty-app-role"),
    pytest.param("- public.files\n- public.files2\n", "must be a mapping", id="top-level-list"),
    pytest.param("just a string\n", "must be a mapping", id="top-level-scalar"),
    pytest.param("", "found an empty file", id="empty-file"),
    pytest.param(
        f"name: x\nsource:\n  dsn: postgresql://migrator:{PASSWORD}@db-main/app\n  - oops\n",
        "line 4, column 3:",
        id="yaml-syntax-error",
    ),
    pytest.param(playbook_yaml() + "tables: [a]\n", "key 'tables' is given twice",
                 id="yaml-duplicate-key"),
    pytest.param(
        playbook_yaml(name="Files Partition"),
        "name: 'Files Partition' is not a valid name",
        id="invalid-name",
    ),
    pytest.param(playbook_yaml(name="x" * 41), "is not a valid name", id="name-too-long"),
    pytest.param(
        playbook_yaml(target={"dsn": f"host=db-main dbname=app user=other password={PASSWORD}"}),
        "target.dsn: is the same database as source.dsn (db-main:5432/app)",
        id="identical-source-and-target",
    ),
    pytest.param(
        playbook_yaml(target={"dsn": f"postgresql://m:{PASSWORD}@db-files:5432,db-main:5432/app"
                                     "?target_session_attrs=read-write"}),
        "target.dsn: is the same database as source.dsn (db-main:5432/app)",
        id="a-host-of-a-list-is-the-source",
    ),
    pytest.param(
        playbook_yaml(source={"dsn": f"host=db-a,db-b,db-c port=5432,5433 dbname=app password={PASSWORD}"}),
        "source.dsn: 3 hosts but 2 ports: give one port, or one port per host",
        id="host-list-with-the-wrong-number-of-ports",
    ),
    pytest.param(
        with_cutover(session_clients="kick"),
        "cutover.session_clients: 'kick' is not one of refuse, close",
        id="unknown-session-clients",
    ),
    pytest.param(with_cutover(session_clients=True), "cutover.session_clients: expected text, got true/false",
                 id="session-clients-not-text"),
    pytest.param(playbook_yaml(restarts={"wait": "0s"}), "restarts.wait: must be greater than 0",
                 id="zero-restart-wait"),
    pytest.param(playbook_yaml(restarts={"wiat": "5s"}), "restarts: unknown key 'wiat' (did you mean 'wait'?)",
                 id="unknown-restarts-key"),
]


def test_a_source_may_list_several_hosts_and_follows_the_primary() -> None:
    dsn = f"postgresql://migrator:{PASSWORD}@db-1:5432,db-2:5433/app?target_session_attrs=read-write"
    book = parse_playbook(playbook_yaml(source={"dsn": dsn}), env=ENV)
    assert book.source.dsn == dsn
    assert book.source.display == "migrator@db-1:5432,db-2:5433/app"
    assert PASSWORD not in repr(book) and PASSWORD not in str(book.source)


def test_restarts_are_waited_for_a_minute_unless_said_otherwise() -> None:
    assert parse_playbook(playbook_yaml(), env=ENV).restarts.wait == 60.0
    assert parse_playbook(playbook_yaml(restarts={"wait": "2m"}), env=ENV).restarts.wait == 120.0


def test_session_clients_defaults_to_refuse_and_may_close() -> None:
    assert parse_playbook(playbook_yaml(), env=ENV).cutover.session_clients == "refuse"
    assert parse_playbook(with_cutover(session_clients="close"), env=ENV).cutover.session_clients == "close"


@pytest.mark.parametrize(("text", "fragment"), BAD_PLAYBOOKS)
def test_a_bad_playbook_is_one_clear_error(text: str, fragment: str) -> None:
    with pytest.raises(PlaybookError) as caught:
        parse_playbook(text, source="files.yaml", env=ENV)

    message = str(caught.value)
    assert fragment in message
    assert message.startswith("invalid playbook files.yaml: ")
    assert caught.value.exit_code == 2
    assert "Traceback" not in message
    assert "pydantic" not in message
    assert PASSWORD not in message
    assert PASSWORD not in repr(caught.value.problems)
    assert all("\n" not in problem for problem in caught.value.problems)


def test_every_problem_is_reported_at_once() -> None:
    text = playbook_yaml(
        name="Bad Name",
        tables=["files", "public.files"],
        cutover={"max_pause": "2", "max_lag": "lots"},
        source={"dsn": "${NOPE}"},
    )

    with pytest.raises(PlaybookError) as caught:
        parse_playbook(text, env={})

    assert [p.split(":")[0] for p in caught.value.problems] == [
        "source.dsn", "name", "cutover.max_pause", "cutover.max_lag", "tables[1]",
    ]


def test_a_misspelt_key_is_not_also_reported_missing() -> None:
    text = playbook_yaml(tables=None, tabels=["public.files"])

    with pytest.raises(PlaybookError) as caught:
        parse_playbook(text, env={})

    assert caught.value.problems == ["unknown key 'tabels' (did you mean 'tables'?)"]


def test_an_unresolved_variable_hides_its_consequences() -> None:
    # With the host unknown, both DSNs would look alike; only the real cause is reported.
    text = playbook_yaml(
        source={"dsn": "postgresql://m@${HOST}/app"}, target={"dsn": "postgresql://m@${HOST}/app"}
    )

    with pytest.raises(PlaybookError) as caught:
        parse_playbook(text, env={})

    assert caught.value.problems == [
        "source.dsn: environment variable HOST is not set",
        "target.dsn: environment variable HOST is not set",
    ]


def test_a_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"

    with pytest.raises(PlaybookError) as caught:
        load_playbook(path)

    assert str(caught.value) == f"invalid playbook {path}: file not found"
    assert caught.value.exit_code == 2


def test_a_yaml_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ntables: [a, b\nsource: {}\n")

    with pytest.raises(PlaybookError) as caught:
        load_playbook(path)

    assert str(caught.value).startswith(f"invalid playbook {path}: line 3, column ")


def test_a_directory_is_not_a_playbook(tmp_path: Path) -> None:
    with pytest.raises(PlaybookError, match="is a directory"):
        load_playbook(tmp_path)


def test_python_callers_may_give_seconds_directly() -> None:
    assert CutoverSettings(max_pause=3, grace=1).max_pause == 3.0
    with pytest.raises(ValidationError):
        CutoverSettings(max_pause=1, grace=1)


def test_the_slug_is_the_name_usable_inside_postgres_object_names() -> None:
    playbook = parse_playbook(playbook_yaml(name="a-b_c9"), env={})

    assert playbook.slug == "a_b_c9"
