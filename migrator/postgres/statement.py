"""A statement of a step: the SQL object that runs, and where it runs.

`plan` prints these, the step runs them, the event log records them, and
`rollback --dry-run` prints the ones an undo would run: one object, so the text a
person approves is the text that runs (secrets masked in every rendering).
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from migrator.masking import mask_secrets


@dataclass(frozen=True)
class Statement:
    on: str                        # 'source' | 'target' | 'pgbouncers[i] user@host:port/pgbouncer' | a file
    sql: sql.Composable | str
    note: str = ""                 # why, or when it is a summary rather than the exact text

    @property
    def text(self) -> str:
        """The SQL as a person reads it: rendered without a connection, secrets masked."""
        return mask_secrets(self.sql if isinstance(self.sql, str) else self.sql.as_string(None))

    def to_dict(self) -> dict[str, str]:
        return {"on": self.on, "sql": self.text, "note": self.note}
