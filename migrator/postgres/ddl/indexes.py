"""A secondary index deferred for the bulk copy: recorded, dropped, built again."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from psycopg import sql

from migrator.playbook import TableName
from migrator.postgres.catalog import IndexFacts
from migrator.postgres.ddl.privileges import comment_statement


@dataclass(frozen=True)
class DeferredIndex:
    """A secondary index dropped for the bulk copy and rebuilt after it, as recorded in
    the checkpoint (so a crash in between still knows what to rebuild)."""

    table: TableName
    name: str
    definition: str                # pg_get_indexdef: CREATE [UNIQUE] INDEX name ON [ONLY] ...
    comment: str | None = None
    # On a partitioned table: the partitions' indexes attached to it (any depth), each
    # built on its own and attached, as pg_dump makes them: (index, its parent index).
    attached: tuple[tuple[DeferredIndex, TableName], ...] = ()
    # The group table whose initial copy brings this index's rows (a partition's root):
    # the index can be built as soon as that copy is done.
    copied_with: TableName | None = None

    @classmethod
    def of(cls, index: IndexFacts, children: Iterable[tuple[IndexFacts, TableName]] = (),
           copied_with: TableName | None = None) -> DeferredIndex:
        return cls(index.table, index.name, index.definition, index.comment,
                   tuple((cls.of(child), parent) for child, parent in children), copied_with)

    @property
    def identity(self) -> TableName:
        return TableName(self.table.schema, self.name)

    def drop(self) -> sql.Composable:
        return sql.SQL("DROP INDEX IF EXISTS {}").format(self.identity.identifier)

    def build(self) -> list[sql.Composable]:
        """CREATE INDEX IF NOT EXISTS (safe to run again) and the index's comment, which
        went with the DROP; on a partitioned table, then each partition's index and its
        ATTACH (a no-op when attached already)."""
        head, rest = self.definition.split(" INDEX ", 1)
        out: list[sql.Composable] = [sql.SQL(f"{head} INDEX IF NOT EXISTS {rest}")]
        if self.comment is not None:
            out.append(comment_statement("INDEX", self.identity.identifier, self.comment))
        for child, _ in self.attached:
            out += child.build()
        out += [sql.SQL("ALTER INDEX {} ATTACH PARTITION {}").format(parent.identifier, child.identity.identifier)
                for child, parent in self.attached]
        return out

    def to_dict(self) -> dict:
        return {"table": [self.table.schema, self.table.name], "name": self.name,
                "definition": self.definition, "comment": self.comment,
                "attached": [[child.to_dict(), [parent.schema, parent.name]] for child, parent in self.attached],
                "copied_with": [self.copied_with.schema, self.copied_with.name] if self.copied_with else None}

    @classmethod
    def from_dict(cls, data: dict) -> DeferredIndex:
        return cls(TableName(*data["table"]), data["name"], data["definition"], data.get("comment"),
                   tuple((cls.from_dict(child), TableName(*parent)) for child, parent in data.get("attached", ())),
                   TableName(*data["copied_with"]) if data.get("copied_with") else None)
