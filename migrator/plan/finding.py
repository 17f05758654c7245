"""One finding: what the snapshot means for the move on one point, ok, warn or block,
with the object it is about and what to do. The checks that produce findings live in
server_checks and table_checks; findings runs them in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from migrator.plan.inspection import ServerFacts, Snapshot
    from migrator.playbook import Playbook

Level = Literal["ok", "warn", "block"]
OK: Level = "ok"
WARN: Level = "warn"
BLOCK: Level = "block"


@dataclass(frozen=True)
class Finding:
    level: Level
    code: str
    subject: str
    message: str
    hint: str = ""
    noun: str = ""                 # what the subject is ('extension', 'routine'), when not the code's family

    def to_dict(self) -> dict[str, str]:
        return {
            "level": self.level, "code": self.code, "subject": self.subject,
            "message": self.message, "hint": self.hint, "noun": self.noun,
        }

    def __str__(self) -> str:
        text = f"{self.level}: {self.message}"
        return f"{text} — {self.hint}" if self.hint else text


Check = Callable[["Snapshot", "Playbook", frozenset[str]], Iterator[Finding]]


def codes(*pairs: tuple[str, str]) -> Callable[[Check], Check]:
    """The codes a check may report, each with one line on what it checks (findings
    gathers them into CODES, which the README's list is tested against)."""
    def attach(function: Check) -> Check:
        function.codes = pairs  # type: ignore[attr-defined]
        return function

    return attach


def sides(snapshot: Snapshot) -> tuple[ServerFacts, ServerFacts]:
    return snapshot.source, snapshot.target


def plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


def listing(items: Iterable[object], limit: int = 6) -> str:
    items = [str(i) for i in items]
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
