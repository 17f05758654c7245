"""Impact: how much of the database's work a table (or a group) is.

AAS, average active sessions: over the samples, how many backends were active in a
transaction that held the table (its own locks, or its indexes', TOAST's, sequences').
A session that holds two tables is active on both, so tables' AAS may add up to more
than the database's; a group's AAS counts such a session once. Split by what the
sessions waited on (CPU when on no wait event, IO, heavyweight lock, other), and with
the reads and writes per second pg_stat_user_tables counted over the same window.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from migrator.analyze.sampling import WAIT_CLASSES, Counters, Samples
from migrator.playbook import TableName


@dataclass(frozen=True)
class Impact:
    aas: float
    aas_share: float                       # of the database's AAS
    waits: Mapping[str, float] = field(default_factory=dict)   # AAS by wait class
    reads_per_s: float | None = None       # rows read (sequential + index fetches)
    writes_per_s: float | None = None      # rows inserted, updated, deleted
    transactions: int = 0                  # sampled transactions that touched it

    def to_dict(self) -> dict:
        return {"aas": round(self.aas, 4), "aas_share": round(self.aas_share, 4),
                "waits": {k: round(v, 4) for k, v in self.waits.items()},
                "reads_per_s": _round(self.reads_per_s), "writes_per_s": _round(self.writes_per_s),
                "transactions": self.transactions}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def database_aas(samples: Samples) -> float:
    return sum(samples.active.values()) / samples.ticks if samples.ticks else 0.0


def impact(
    tables: Iterable[TableName],
    samples: Samples,
    *,
    before: Counters | None,
    after: Counters | None,
    relids: Mapping[TableName, int],
    transactions: int = 0,
) -> Impact:
    """The impact of a set of tables taken together (one table: a set of one)."""
    tables = frozenset(tables)
    ticks = samples.ticks or 1
    waits = dict.fromkeys(WAIT_CLASSES, 0.0)
    for (held, klass), count in samples.active.items():
        if held & tables:
            waits[klass] += count / ticks
    aas = sum(waits.values())
    total = database_aas(samples)
    reads = writes = None
    if before is not None and after is not None and after.at > before.at:
        seconds = after.at - before.at
        reads = writes = 0.0
        for table in tables:
            relid = relids.get(table)
            if relid is None:
                continue
            r0, w0 = before.tables.get(relid, (0, 0))
            r1, w1 = after.tables.get(relid, (r0, w0))
            reads += max(0, r1 - r0) / seconds
            writes += max(0, w1 - w0) / seconds
    return Impact(aas=aas, aas_share=aas / total if total else 0.0, waits=waits,
                  reads_per_s=reads, writes_per_s=writes, transactions=transactions)
