"""Lag and progress samples: what a running move records for `status --watch` and `report`.

The runner wraps the person's reporter in a SampleRecorder, so every step's progress
also lands in the state store, at most one sample a second per step (and the last
one always), without the steps knowing about it.
"""

from __future__ import annotations

import time

from migrator.move.context import Reporter
from migrator.move.state import StateStore
from migrator.move.statuses import SampleKind

EVERY = 1.0  # seconds between two samples of one step


class SampleRecorder(Reporter):
    def __init__(self, inner: Reporter, store: StateStore, move: str, *, every: float = EVERY) -> None:
        self.inner, self.store, self.move, self.every = inner, store, move, every
        self._last: dict[str, float] = {}

    def step_started(self, step: str, title: str) -> None:
        self.inner.step_started(step, title)

    def step_finished(self, step: str, seconds: float, summary: str | None) -> None:
        self.inner.step_finished(step, seconds, summary)

    def note(self, text: str) -> None:
        self.inner.note(text)

    def progress(self, step: str, done: int, total: int, detail: str = "",
                 tables: dict[str, list[int]] | None = None) -> None:
        self.inner.progress(step, done, total, detail)
        now = time.time()
        if now - self._last.get(step, 0) < self.every and done < total:
            return
        self._last[step] = now
        try:
            if detail == "bytes":
                self.store.record_sample(self.move, SampleKind.COPY,
                                         {"done": done, "total": total, "tables": tables or {}}, step=step)
            elif detail.startswith("lag "):
                # _wait_for_lag reports max_lag - lag of max_lag
                self.store.record_sample(self.move, SampleKind.LAG,
                                         {"bytes": max(0, total - done), "max_lag": total}, step=step)
            elif detail == "indexes":
                self.store.record_sample(self.move, SampleKind.INDEXES, {"done": done, "total": total}, step=step)
        except Exception:  # noqa: BLE001 - a sample lost must never fail the move
            pass
