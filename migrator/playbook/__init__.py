"""The playbook: the user's contract (DESIGN section 2), its units and its table names.

Import from here; the modules behind it are the package's own business.
"""

from migrator.playbook.model import (
    CutoverSettings,
    EntryCommand,
    IndexSettings,
    PgBouncerEntry,
    Playbook,
    RestartSettings,
    Server,
    load_playbook,
    parse_playbook,
)
from migrator.playbook.tables import TableName
from migrator.playbook.units import (
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)

__all__ = [
    "CutoverSettings",
    "EntryCommand",
    "IndexSettings",
    "PgBouncerEntry",
    "Playbook",
    "RestartSettings",
    "Server",
    "TableName",
    "format_duration",
    "format_size",
    "load_playbook",
    "parse_duration",
    "parse_playbook",
    "parse_size",
]
