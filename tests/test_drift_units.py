"""Drift from catalog facts alone, with no server: what differs between the two sides'
tables is named; what the move makes differ on purpose is not."""

from __future__ import annotations

from dataclasses import replace

from migrator.playbook import TableName
from migrator.postgres.catalog import (
    ColumnFacts,
    ConstraintFacts,
    ForeignKey,
    Grant,
    IndexFacts,
    TableFacts,
    TriggerFacts,
)
from migrator.postgres.catalog.drift import Difference, column_text, compare

FILES = TableName("public", "files")
VERSIONS = TableName("public", "file_versions")
EVENTS = TableName("public", "events")
EVENTS_2024 = TableName("public", "events_2024")
EVENTS_2025 = TableName("public", "events_2025")


def column(name: str, type: str = "bigint", **kw) -> ColumnFacts:
    fields = {"not_null": False, "default": None, "identity": None, "generated": None,
              "generated_kind": None, "collation": None}
    return ColumnFacts(name=name, type=type, **(fields | kw))


def files(**kw) -> TableFacts:
    base = TableFacts(
        name=FILES, exists=True, kind="table",
        columns=(column("id", not_null=True, identity="by default"),
                 column("name", "text", not_null=True),
                 column("size_bytes", not_null=True, default="0"),
                 column("created_at", "timestamp with time zone", not_null=True, default="now()")),
        constraints=(ConstraintFacts("files_pkey", "primary key", "PRIMARY KEY (id)"),
                     ConstraintFacts("files_size_check", "check", "CHECK ((size_bytes >= 0))")),
        indexes=(IndexFacts(FILES, "files_pkey", "CREATE UNIQUE INDEX files_pkey ON public.files USING btree (id)",
                            is_primary=True, is_replica_identity=False, is_constraint=True),
                 IndexFacts(FILES, "files_name_idx", "CREATE INDEX files_name_idx ON public.files USING btree (name)",
                            is_primary=False, is_replica_identity=False, is_constraint=False)),
    )
    return replace(base, **kw)


def versions(**kw) -> TableFacts:
    fk = ForeignKey("file_versions_file_id_fkey", VERSIONS, ("file_id",), FILES, ("id",),
                    "FOREIGN KEY (file_id) REFERENCES public.files(id) ON DELETE CASCADE", crosses_group=False)
    base = TableFacts(
        name=VERSIONS, exists=True, kind="table",
        columns=(column("id", not_null=True), column("file_id", not_null=True)),
        constraints=(ConstraintFacts("file_versions_pkey", "primary key", "PRIMARY KEY (id)"),),
        foreign_keys=(fk,),
    )
    return replace(base, **kw)


def group(*tables: TableFacts) -> dict[TableName, TableFacts]:
    return {t.name: t for t in tables}


def differences(source, target) -> list[tuple[str, str, str | None, str | None]]:
    return [(str(d.table), d.what, d.source, d.target) for d in compare(source, target)]


def test_identical_sides_have_no_drift():
    assert compare(group(files(), versions()), group(files(), versions())) == []


def test_what_the_move_changes_on_purpose_is_not_drift():
    target = files(
        indexes=files().indexes[:1],                       # the secondary index is dropped for the copy
        triggers=(TriggerFacts("files_audit", "CREATE TRIGGER ...", "replica", "public.audit()"),),
        grants=(Grant("app", ("SELECT",)),),
        comment="a comment", owner="someone_else", replica_identity="full", row_security=True,
        estimated_rows=12, heap_bytes=8192,
        columns=tuple(replace(c, comment="c", statistics=1000, storage="e", compression="l", type_oid=99,
                              grants=(Grant("app", ("UPDATE",)),))
                      for c in reversed(files().columns)),  # another order, other storage
        constraints=tuple(replace(c, comment="k") for c in files().constraints),
    )
    assert compare(group(files()), group(target)) == []


def test_a_table_missing_on_one_side():
    assert differences(group(files(), versions()), group(files())) == [
        ("public.file_versions", "table", "table", None)]
    assert differences(group(files()), group(files(), versions())) == [
        ("public.file_versions", "table", None, "table")]
    # Read but absent (exists=False) is the same as not listed.
    assert differences(group(files(), versions()), group(files(), TableFacts(VERSIONS, exists=False))) == [
        ("public.file_versions", "table", "table", None)]
    # Absent on both sides: nothing to compare.
    assert compare(group(TableFacts(VERSIONS, exists=False)), group(TableFacts(VERSIONS, exists=False))) == []


def test_a_column_on_one_side_only_is_named_with_its_definition():
    target = files(columns=(*files().columns, column("note", "text")))
    source = files(columns=(*files().columns, column("legacy", "integer", not_null=True, default="0")))
    assert differences(group(files()), group(target)) == [("public.files", "column note", None, "text")]
    assert differences(group(source), group(files())) == [
        ("public.files", "column legacy", "integer NOT NULL DEFAULT 0", None)]
    [only] = compare(group(files()), group(target))
    assert str(only) == "public.files column note: only on the target (text)"
    assert only.only_on == "target"
    assert only.to_dict() == {"table": "public.files", "what": "column note", "source": None, "target": "text",
                              "text": "public.files column note: only on the target (text)"}


def test_each_attribute_of_a_column_that_differs_is_its_own_difference():
    def with_size(**kw):
        columns = tuple(replace(c, **kw) if c.name == "size_bytes" else c for c in files().columns)
        return group(files(columns=columns))

    assert differences(group(files()), with_size(type="integer")) == [
        ("public.files", "column size_bytes type", "bigint", "integer")]
    assert differences(group(files()), with_size(not_null=False)) == [
        ("public.files", "column size_bytes not null", "NOT NULL", "nullable")]
    assert differences(group(files()), with_size(default=None)) == [
        ("public.files", "column size_bytes default", "0", "no default")]
    assert differences(group(files()), with_size(collation='public."de_DE"')) == [
        ("public.files", "column size_bytes collation", "the type's collation", 'public."de_DE"')]
    assert differences(group(files()), with_size(default=None, generated="(id * 2)", generated_kind="stored")) == [
        ("public.files", "column size_bytes default", "0", "no default"),
        ("public.files", "column size_bytes generated", "not generated", "GENERATED ALWAYS AS ((id * 2)) STORED")]
    assert differences(group(files()), with_size(identity="always", default=None)) == [
        ("public.files", "column size_bytes default", "0", "no default"),
        ("public.files", "column size_bytes identity", "not an identity", "GENERATED ALWAYS AS IDENTITY")]
    [one] = compare(group(files()), with_size(type="integer"))
    assert str(one) == "public.files column size_bytes type: bigint on the source, integer on the target"


def test_a_generated_expression_that_differs():
    source = files(columns=(*files().columns, column("kb", generated="(size_bytes / 1024)", generated_kind="stored")))
    target = files(columns=(*files().columns, column("kb", generated="(size_bytes / 1000)", generated_kind="stored")))
    assert differences(group(source), group(target)) == [
        ("public.files", "column kb generated", "GENERATED ALWAYS AS ((size_bytes / 1024)) STORED",
         "GENERATED ALWAYS AS ((size_bytes / 1000)) STORED")]


def test_constraints_on_one_side_or_with_another_definition():
    check = ConstraintFacts("files_name_check", "check", "CHECK ((name <> ''::text))")
    unique = ConstraintFacts("files_name_key", "unique", "UNIQUE (name)")
    exclusion = ConstraintFacts("files_no_overlap", "exclusion", "EXCLUDE USING gist (id WITH =)")
    target = files(constraints=(files().constraints[0],
                                ConstraintFacts("files_size_check", "check", "CHECK ((size_bytes > 0))"),
                                check, unique, exclusion))
    assert differences(group(files()), group(target)) == [
        ("public.files", "constraint files_size_check", "CHECK ((size_bytes >= 0))", "CHECK ((size_bytes > 0))"),
        ("public.files", "constraint files_name_check", None, "CHECK ((name <> ''::text))"),
        ("public.files", "constraint files_name_key", None, "UNIQUE (name)"),
        ("public.files", "constraint files_no_overlap", None, "EXCLUDE USING gist (id WITH =)")]
    no_key = files(constraints=files().constraints[1:])
    assert differences(group(files()), group(no_key)) == [
        ("public.files", "constraint files_pkey", "PRIMARY KEY (id)", None)]


def test_foreign_keys_are_compared_on_the_table_that_holds_them():
    fk = versions().foreign_keys[0]
    # The referenced table lists the key too (foreign_keys has both ends): it is said once.
    source = group(files(foreign_keys=(fk,)), versions())
    target = group(files(), versions(foreign_keys=()))
    assert differences(source, target) == [
        ("public.file_versions", "constraint file_versions_file_id_fkey",
         "FOREIGN KEY (file_id) REFERENCES public.files(id) ON DELETE CASCADE", None)]
    other = replace(fk, definition="FOREIGN KEY (file_id) REFERENCES public.files(id)")
    assert differences(group(files(), versions()), group(files(), versions(foreign_keys=(other,)))) == [
        ("public.file_versions", "constraint file_versions_file_id_fkey",
         "FOREIGN KEY (file_id) REFERENCES public.files(id) ON DELETE CASCADE",
         "FOREIGN KEY (file_id) REFERENCES public.files(id)")]


def test_a_table_of_another_kind():
    assert differences(group(files()), group(files(kind="partitioned table"))) == [
        ("public.files", "kind", "table", "partitioned table")]


# --------------------------------------------------------------------------- partitions


def events(**kw) -> TableFacts:
    base = TableFacts(
        name=EVENTS, exists=True, kind="partitioned table", partitions=(EVENTS_2024, EVENTS_2025),
        columns=(column("id", not_null=True), column("at", "date", not_null=True)),
        constraints=(ConstraintFacts("events_pkey", "primary key", "PRIMARY KEY (id, at)"),),
    )
    return replace(base, **kw)


def partition(name: TableName, **kw) -> TableFacts:
    base = TableFacts(
        name=name, exists=True, kind="table", partition_of=EVENTS,
        columns=(column("id", not_null=True, local=False), column("at", "date", not_null=True, local=False)),
        constraints=(ConstraintFacts(f"{name.name}_pkey", "primary key", "PRIMARY KEY (id, at)", inherited=True),),
    )
    return replace(base, **kw)


def tree(root: TableFacts | None = None, *partitions: TableFacts) -> dict[TableName, TableFacts]:
    parts = partitions or (partition(EVENTS_2024), partition(EVENTS_2025))
    return group(root or events(), *parts)


def test_each_partition_is_compared_too():
    assert compare(tree(), tree()) == []
    # A partition of its own on one side.
    assert differences(tree(), tree(None, partition(EVENTS_2024))) == [
        ("public.events_2025", "table", "table, a partition of public.events", None)]
    # A partition's own column default and its own check constraint.
    own = partition(EVENTS_2025, columns=(column("id", not_null=True, local=False, default="0"),
                                          column("at", "date", not_null=True, local=False)),
                    constraints=(*partition(EVENTS_2025).constraints,
                                 ConstraintFacts("recent", "check", "CHECK ((id > 0))")))
    assert differences(tree(), tree(None, partition(EVENTS_2024), own)) == [
        ("public.events_2025", "column id default", "no default", "0"),
        ("public.events_2025", "constraint recent", None, "CHECK ((id > 0))")]


def test_a_partitions_identity_is_its_parents():
    # PostgreSQL 17 shows the parent's identity on each partition, 15 does not.
    with_identity = partition(EVENTS_2024, columns=(column("id", not_null=True, local=False, identity="always"),
                                                    column("at", "date", not_null=True, local=False)))
    assert compare(tree(), tree(None, with_identity, partition(EVENTS_2025))) == []
    assert differences(tree(), tree(events(columns=with_identity.columns))) == [
        ("public.events", "column id identity", "not an identity", "GENERATED ALWAYS AS IDENTITY")]


def test_what_a_partition_inherits_is_said_once_at_its_parent():
    note = column("note", "text")
    root = events(columns=(*events().columns, note),
                  constraints=(*events().constraints, ConstraintFacts("events_note", "check", "CHECK ((note <> ''))")))
    parts = [partition(p, columns=(*partition(p).columns, replace(note, local=False)),
                       constraints=(*partition(p).constraints,
                                    ConstraintFacts("events_note", "check", "CHECK ((note <> ''))", inherited=True)))
             for p in (EVENTS_2024, EVENTS_2025)]
    assert differences(tree(), tree(root, *parts)) == [
        ("public.events", "column note", None, "text"),
        ("public.events", "constraint events_note", None, "CHECK ((note <> ''))")]
    # A key added to the parent makes one, named its own way, on each partition.
    keyless = events(constraints=())
    bare = [partition(p, constraints=()) for p in (EVENTS_2024, EVENTS_2025)]
    assert differences(tree(), tree(keyless, *bare)) == [
        ("public.events", "constraint events_pkey", "PRIMARY KEY (id, at)", None)]
    # The whole tree missing on the target is said once, at its root.
    assert differences(tree(), {EVENTS: TableFacts(EVENTS, exists=False)}) == [
        ("public.events", "table", "partitioned table", None)]


def test_a_sub_partitioned_tree_inherits_through_every_level():
    middle = TableName("public", "events_2025_h1")
    leaf = TableName("public", "events_2025_h1_jan")
    sub = partition(EVENTS_2025, kind="partitioned table", partitions=(middle,))
    mid = replace(partition(middle), partition_of=EVENTS_2025, kind="partitioned table", partitions=(leaf,))
    bottom = replace(partition(leaf), partition_of=middle)
    source = tree(None, partition(EVENTS_2024), sub, mid, bottom)

    def typed(t: TableFacts) -> TableFacts:
        return replace(t, columns=tuple(replace(c, type="integer") if c.name == "id" else c for c in t.columns))

    target = {name: typed(t) for name, t in source.items()}
    assert differences(source, target) == [("public.events", "column id type", "bigint", "integer")]


def test_column_text_reads_like_a_definition():
    assert column_text(column("n", "integer")) == "integer"
    assert column_text(column("n", "text", not_null=True, default="''::text", collation='"C"')) == \
        "text COLLATE \"C\" NOT NULL DEFAULT ''::text"
    assert column_text(column("n", not_null=True, identity="always")) == "bigint NOT NULL GENERATED ALWAYS AS IDENTITY"


def test_a_difference_reads_as_one_line():
    assert str(Difference(FILES, "table", "table", None)) == "table public.files: only on the source (table)"
    assert Difference(FILES, "table", None, "table").sentence == "public.files exists only on the target (table)"
    assert Difference(FILES, "column n type", "bigint", "integer").sentence == (
        "public.files differs between the source and the target: column n type bigint on the source, "
        "integer on the target")
    assert str(Difference(FILES, "constraint c", None, "CHECK ((a > 0))")) == \
        "public.files constraint c: only on the target (CHECK ((a > 0)))"


# --------------------------------------------------------------------------- status and plan


def _playbook(tmp_path, port: int = 1):
    """Nothing listens on ports 1 and 2: a refused connection, at once."""
    from migrator.playbook import load_playbook

    path = tmp_path / "move.yaml"
    path.write_text(f"""\
name: files-partition
source: {{dsn: "postgresql://migrator@127.0.0.1:{port}/app?connect_timeout=2"}}
target: {{dsn: "postgresql://migrator@127.0.0.1:{port + 1}/app?connect_timeout=2"}}
tables: [public.files]
""")
    return load_playbook(path)


def test_drift_is_compared_only_while_the_group_on_the_target_is_the_moves():
    from migrator.move.drift import in_flight
    from migrator.move.state import StepRecord
    from migrator.move.statuses import MoveStatus, StepStatus

    def schema(status):
        return StepRecord("schema", status, None, None, None, {})

    assert in_flight(schema(StepStatus.DONE), MoveStatus.ACTIVE)
    assert not in_flight(None, None)
    assert not in_flight(schema(StepStatus.PENDING), MoveStatus.ACTIVE)
    assert not in_flight(schema(StepStatus.RUNNING), MoveStatus.ACTIVE)
    assert not in_flight(schema(StepStatus.UNDONE), MoveStatus.ACTIVE)    # a full rollback
    assert not in_flight(schema(StepStatus.DONE), MoveStatus.COMPLETED)   # `complete`


def test_a_side_that_cannot_be_read_is_said_not_raised(tmp_path):
    from migrator.move.drift import read_drift, report_drift
    from migrator.move.state import StepRecord
    from migrator.move.statuses import MoveStatus, StepStatus

    playbook = _playbook(tmp_path)
    reading = read_drift(playbook)
    assert reading.differences == ()
    assert reading.error and reading.error.startswith("cannot connect to the source")
    done = StepRecord("schema", StepStatus.DONE, None, None, None, {})
    differences, error = report_drift(playbook, done, MoveStatus.ACTIVE)
    assert differences is None and error.startswith("cannot connect to the source")
    assert report_drift(playbook, None, MoveStatus.ACTIVE) == (None, None)   # not compared: not read


def _screen(**drift) -> str:
    import io

    from rich.console import Console

    from migrator.move.status import MoveReport, Replication
    from migrator.output import Output

    buffer = io.StringIO()
    console = Console(file=buffer, width=80, highlight=False, soft_wrap=True, color_system=None)
    report = MoveReport("files", "in progress: done up to rebuild-indexes", [], Replication("none", None, None, None),
                        [], None, "migrator execute move.yaml", [], **drift)
    Output(console=console, err=console).move_report(report)
    return buffer.getvalue()


def test_status_shows_each_difference_on_its_own_line_whole():
    long_check = "CHECK ((note <> ''::text) AND (length(note) < 1000) AND (note !~ '^\\s'::text))"
    found = [Difference(FILES, "column note", None, "text"),
             Difference(FILES, "constraint files_note_check", None, long_check)]
    text = _screen(drift=[d.to_dict() for d in found])
    lines = text.splitlines()
    assert "drift: 2 differences between the source and the target (change both with migrator ddl PLAYBOOK \"SQL\")" \
        in text.replace("\n", " ")
    assert "  public.files column note: only on the target (text)" in lines
    assert f"  public.files constraint files_note_check: only on the target ({long_check})" in lines
    assert "drift: none (the group's columns and constraints are the same on both sides)" in _screen(drift=[])
    assert "drift" not in _screen()   # not compared: nothing said
    assert "drift: unknown (cannot connect to the target (x@h:5432/app): refused)" in \
        _screen(drift_error="cannot connect to the target (x@h:5432/app): refused")


def test_plan_warns_of_each_difference_with_the_ddl_verb_as_the_fix(tmp_path):
    from types import SimpleNamespace

    from migrator.plan.findings import CODES
    from migrator.plan.table_checks import drift

    playbook = _playbook(tmp_path)
    found = (Difference(FILES, "column note", None, "text"),
             Difference(FILES, "column size_bytes type", "bigint", "integer"))
    findings = list(drift(SimpleNamespace(drift=found), playbook, frozenset()))
    assert [(f.level, f.code, f.subject) for f in findings] == [("warn", "schema.drift", "public.files")] * 2
    assert findings[0].message == \
        "public.files differs between the source and the target: column note only on the target (text)"
    assert findings[1].message.endswith("column size_bytes type bigint on the source, integer on the target")
    assert f'migrator ddl {playbook.path} "SQL"' in findings[0].hint
    assert [(f.level, f.code) for f in drift(SimpleNamespace(drift=()), playbook, frozenset())] == [
        ("ok", "schema.drift")]
    assert list(drift(SimpleNamespace(drift=None), playbook, frozenset())) == []   # not the move's target
    assert "schema.drift" in CODES


def test_a_tree_is_listed_under_its_root_whatever_order_it_was_read_in():
    changed = {name: replace(t, columns=(*t.columns, column("note", "text", local=t.partition_of is None)))
               for name, t in tree().items()}
    changed[EVENTS_2025] = replace(changed[EVENTS_2025], constraints=())
    source = {EVENTS: events(), VERSIONS: versions(), EVENTS_2024: partition(EVENTS_2024),
              EVENTS_2025: replace(partition(EVENTS_2025), constraints=(
                  ConstraintFacts("mine", "check", "CHECK (true)"),))}
    target = {**changed, VERSIONS: versions(foreign_keys=())}
    assert [(str(d.table), d.what) for d in compare(source, target)] == [
        ("public.events", "column note"),
        ("public.events_2025", "constraint mine"),
        ("public.file_versions", "constraint file_versions_file_id_fkey")]
