"""What the state store records, by name: a step's and a move's status, the kinds of
sample, and where the store is by default. No database library here: `plan` reads these
without opening a store (migrator.move.state is the store itself)."""

from __future__ import annotations

import enum
import os
from pathlib import Path

STATE_ENV = "MIGRATOR_STATE"


class StepStatus(str, enum.Enum):
    """Values are stored; they never change."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    UNDOING = "undoing"
    UNDONE = "undone"


class MoveStatus(str, enum.Enum):
    ACTIVE = "active"
    COMPLETED = "completed"


class SampleKind(str, enum.Enum):
    """Values are stored; they never change."""

    COPY = "copy"            # bytes copied of the initial copy: done, total
    LAG = "lag"              # replication lag: bytes (and seconds when known), direction
    INDEXES = "indexes"      # deferred indexes rebuilt: done, total
    VERIFY = "verify"        # one verify run: identical, tables, rows compared, differences
    FINDINGS = "findings"    # the preflight's findings at execute time


def default_url(playbook_path: Path | None) -> str:
    """MIGRATOR_STATE, else a SQLite file beside the playbook (.migrator/state.db)."""
    if os.environ.get(STATE_ENV):
        return os.environ[STATE_ENV]
    base = Path(playbook_path).parent if playbook_path else Path.cwd()
    return f"sqlite:///{(base / '.migrator' / 'state.db').absolute()}"
