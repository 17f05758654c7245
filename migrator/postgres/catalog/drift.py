"""Drift: how the group's tables differ between the two sides, from catalog facts alone.

`compare(source, target)` takes the facts `table_facts` (or `tree_facts`) read on each
side, keyed by table, and returns every difference in the tables' shape: a table on one
side only (or of another kind), a column on one side only, a column whose type, NOT
NULL, default, identity, generated expression or collation differs, and a primary key,
unique, check, exclusion or foreign key constraint on one side only or with another
definition. A partition is compared like any table, except for what it only inherits:
what its parent already differs by, said once, at the parent.

Not drift, because the move makes it differ on purpose or replication does not care:
indexes (the target's secondary indexes are dropped for the copy and rebuilt), triggers,
grants, owners, comments, statistics targets, storage and compression, row security,
replica identity, and the order of the columns.

Pure: no I/O, so it is tested without a server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from migrator.playbook import TableName
from migrator.postgres.catalog.facts import (
    ColumnFacts,
    ConstraintFacts,
    ForeignKey,
    TableFacts,
)

__all__ = ["Difference", "compare"]

SOURCE, TARGET = "source", "target"


@dataclass(frozen=True)
class Difference:
    """One way a group table differs between the sides.

    `what` names the object and, for a column's attribute, the attribute ('table',
    'column note', 'column note type', 'constraint files_size_check'). `source` and
    `target` say how each side has it; None means that side does not have the object
    at all (an absent attribute is a word: 'no default', 'nullable')."""

    table: TableName
    what: str
    source: str | None
    target: str | None

    def to_dict(self) -> dict[str, str | None]:
        """For `--json`: the fields, and `text`, the line a person reads."""
        return {"table": str(self.table), "what": self.what, "source": self.source, "target": self.target,
                "text": str(self)}

    @property
    def only_on(self) -> str | None:
        """'source' or 'target' when the object is on one side only."""
        if self.target is None:
            return SOURCE
        if self.source is None:
            return TARGET
        return None

    @property
    def detail(self) -> str:
        """How the sides differ, in words, without the table and the object."""
        if self.only_on is not None:
            shown = self.source if self.only_on == SOURCE else self.target
            return f"only on the {self.only_on}" + (f" ({shown})" if shown else "")
        return f"{self.source} on the source, {self.target} on the target"

    @property
    def sentence(self) -> str:
        """The difference as a sentence that starts with the table (plan's findings)."""
        if self.what == "table":
            return f"{self.table} exists {self.detail}"
        return f"{self.table} differs between the source and the target: {self.what} {self.detail}"

    def __str__(self) -> str:
        if self.what == "table":
            return f"table {self.table}: {self.detail}"
        return f"{self.table} {self.what}: {self.detail}"


def compare(source: Mapping[TableName, TableFacts], target: Mapping[TableName, TableFacts]) -> list[Difference]:
    """Every difference between the two sides' tables, table by table in the source's
    order (then the tables only the target lists), each partitioned table followed by its
    tree, level by level; each table's columns, then its constraints."""
    names = _tree_order(list(dict.fromkeys([*source, *target])), source, target)
    raw = {name: _table(name, _present(source.get(name)), _present(target.get(name))) for name in names}
    out: list[Difference] = []
    for name in names:
        parents = [p for p in (_parent(source.get(name)), _parent(target.get(name))) if p in raw]
        inherited = {d for p in dict.fromkeys(parents) for d in _inherited_view(raw[p], name)}
        missing_parent = {d.only_on for p in parents for d in raw[p] if d.what == "table" and d.only_on}
        for difference in raw[name]:
            if difference.what == "table" and difference.only_on in missing_parent:
                continue  # its parent is missing there too: said at the parent
            if difference in inherited:
                continue  # the parent's difference, which the partition inherits
            out.append(difference)
    return out


def _tree_order(names: list[TableName], *sides: Mapping[TableName, TableFacts]) -> list[TableName]:
    def parent(name: TableName) -> TableName | None:
        found = (_parent(side.get(name)) for side in sides)
        return next((p for p in found if p is not None and p in position), None)

    def key(name: TableName) -> tuple[int, int, int]:
        root, depth, seen = name, 0, {name}
        while (up := parent(root)) is not None and up not in seen:
            root, depth = up, depth + 1
            seen.add(up)
        return position[root], depth, position[name]

    position = {name: i for i, name in enumerate(names)}
    return sorted(names, key=key)


def _present(facts: TableFacts | None) -> TableFacts | None:
    return facts if facts is not None and facts.exists else None


def _parent(facts: TableFacts | None) -> TableName | None:
    return facts.partition_of if facts is not None and facts.exists else None


def _inherited_view(parent: list[Difference], child: TableName) -> Iterable[Difference]:
    """The parent's column differences as the child inherits them."""
    for d in parent:
        if d.what.startswith("column "):
            yield Difference(child, d.what, d.source, d.target)


def _table(name: TableName, source: TableFacts | None, target: TableFacts | None) -> list[Difference]:
    if source is None and target is None:
        return []  # on neither side: nothing to compare (plan says so for the source)
    if source is None or target is None:
        return [Difference(name, "table", _table_kind(source), _table_kind(target))]
    out: list[Difference] = []
    if _table_kind(source) != _table_kind(target):
        out.append(Difference(name, "kind", _table_kind(source), _table_kind(target)))
    # A partition's identity is its parent's: from PostgreSQL 17 the partitions show it
    # too, before they do not, so across majors only the parent's is compared.
    partition = source.partition_of is not None or target.partition_of is not None
    out += _columns(name, source.columns, target.columns, skip=("identity",) if partition else ())
    out += _constraints(name, source, target)
    return out


def _table_kind(facts: TableFacts | None) -> str | None:
    if facts is None:
        return None
    if facts.partition_of is not None:
        return f"{facts.kind}, a partition of {facts.partition_of}"
    return facts.kind


# --------------------------------------------------------------------------- columns


def _columns(table: TableName, source: Iterable[ColumnFacts], target: Iterable[ColumnFacts], *,
             skip: tuple[str, ...] = ()) -> list[Difference]:
    on_source = {c.name: c for c in source}
    on_target = {c.name: c for c in target}
    out: list[Difference] = []
    for name in dict.fromkeys([*on_source, *on_target]):
        s, t = on_source.get(name), on_target.get(name)
        what = f"column {name}"
        if s is None or t is None:
            out.append(Difference(table, what, column_text(s) if s else None, column_text(t) if t else None))
            continue
        for attribute, render in _ATTRIBUTES:
            if attribute in skip:
                continue
            a, b = render(s), render(t)
            if a != b:
                out.append(Difference(table, f"{what} {attribute}", a, b))
    return out


def _generated(c: ColumnFacts) -> str:
    if c.generated is None:
        return "not generated"
    return f"GENERATED ALWAYS AS ({c.generated}) {(c.generated_kind or 'stored').upper()}"


def _identity(c: ColumnFacts) -> str:
    return f"GENERATED {c.identity.upper()} AS IDENTITY" if c.identity else "not an identity"


_ATTRIBUTES = (
    ("type", lambda c: c.type),
    ("not null", lambda c: "NOT NULL" if c.not_null else "nullable"),
    ("default", lambda c: c.default if c.default is not None else "no default"),
    ("identity", _identity),
    ("generated", _generated),
    ("collation", lambda c: c.collation or "the type's collation"),
)


def column_text(c: ColumnFacts) -> str:
    """A column as its definition reads: 'integer NOT NULL DEFAULT 0'."""
    parts = [c.type]
    if c.collation:
        parts.append(f"COLLATE {c.collation}")
    if c.not_null:
        parts.append("NOT NULL")
    if c.default is not None:
        parts.append(f"DEFAULT {c.default}")
    if c.identity:
        parts.append(_identity(c))
    if c.generated is not None:
        parts.append(_generated(c))
    return " ".join(parts)


# --------------------------------------------------------------------------- constraints


def _constraints(table: TableName, source: TableFacts, target: TableFacts) -> list[Difference]:
    on_source, on_target = _constraint_map(source), _constraint_map(target)
    out: list[Difference] = []
    for name in dict.fromkeys([*on_source, *on_target]):
        s, t = on_source.get(name), on_target.get(name)
        if _inherited_everywhere(s, t):
            continue  # a partition's copy of its parent's: the parent's is compared
        a = s.definition if s is not None else None
        b = t.definition if t is not None else None
        if a != b:
            out.append(Difference(table, f"constraint {name}", a, b))
    return out


def _constraint_map(facts: TableFacts) -> dict[str, ConstraintFacts | ForeignKey]:
    """The table's own constraints by name: keys, checks, exclusions, and the foreign
    keys it holds (not those of other tables that reference it)."""
    found: dict[str, ConstraintFacts | ForeignKey] = {c.name: c for c in facts.constraints}
    found |= {fk.name: fk for fk in facts.foreign_keys if fk.table == facts.name}
    return found


def _inherited_everywhere(*constraints: ConstraintFacts | ForeignKey | None) -> bool:
    present = [c for c in constraints if c is not None]
    return bool(present) and all(isinstance(c, ConstraintFacts) and c.inherited for c in present)
