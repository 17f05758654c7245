"""Everything a person reads goes through here: rich for people, JSON for scripts.

No other module prints. Commands hand this module plain data (dataclasses, dicts)
and it decides how to show it.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from migrator.dsn import mask_secrets


@dataclass
class Output:
    """Where a command's report goes: a rich console, or one JSON document on stdout."""

    json_mode: bool = False
    console: Console = field(default_factory=lambda: Console(highlight=False, soft_wrap=True))
    err: Console = field(default_factory=lambda: Console(stderr=True, highlight=False, soft_wrap=True))

    # generic ------------------------------------------------------------------

    def document(self, doc: Any) -> None:
        """Print one JSON document, secrets masked."""
        text = json.dumps(doc, indent=2, default=str, sort_keys=False)
        sys.stdout.write(mask_secrets(text) + "\n")
        sys.stdout.flush()

    def line(self, text: str = "", style: str | None = None) -> None:
        if not self.json_mode:
            self.console.print(mask_secrets(text), style=style, markup=False)

    def markup(self, text: str) -> None:
        if not self.json_mode:
            self.console.print(mask_secrets(text))

    def error(self, message: str, hint: str | None = None) -> None:
        """One clean line on stderr (and a JSON twin on stdout with --json)."""
        message = mask_secrets(message)
        if self.json_mode:
            self.document({"ok": False, "error": message, "hint": mask_secrets(hint) if hint else None})
        self.err.print(f"[bold red]error:[/] {_escape(message)}")
        if hint:
            self.err.print(f"[dim]hint:[/] {_escape(mask_secrets(hint))}")

    def traceback(self) -> None:
        self.err.print_exception(show_locals=False)

    @contextmanager
    def status(self, text: str):
        if self.json_mode or not self.err.is_terminal:
            yield
            return
        with self.err.status(text):
            yield

    # sandbox ------------------------------------------------------------------

    def sandbox_info(self, info, *, verb: str) -> None:
        doc = {"ok": True, **info.to_dict()}
        if self.json_mode:
            self.document(doc)
            return
        headline = {
            "up": "sandbox is up" if info.created else "sandbox was already there; it is up",
            "status": "sandbox",
        }[verb]
        self.markup(f"[bold green]{headline}[/] in {_escape(str(info.directory))}")
        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        rows = [
            ("playbook", str(info.playbook)),
            ("source", info.source_url),
            ("target", info.target_url),
            ("app (PgBouncer)", info.app_url),
            ("files group (PgBouncer)", info.group_url),
            ("PgBouncer console", info.admin_url),
            ("processes", ", ".join(map(str, info.processes)) or "none running"),
            ("scale", f"{info.scale} (x1000 files)"),
        ]
        for key, value in rows:
            table.add_row(key, mask_secrets(value))
        self.console.print(table)
        if verb == "up":
            self.line("")
            self.line("Try a query through PgBouncer:")
            self.line(f"  psql '{info.group_url}' -c 'SELECT count(*) FROM files'")
            self.line(f"Plan the move:  migrator plan {info.playbook}")

    def sandbox_down(self, directory, left: list[int]) -> None:
        if self.json_mode:
            self.document({"ok": True, "directory": str(directory), "processes_left": left})
        else:
            self.markup(f"[bold]sandbox removed[/]: {_escape(str(directory))} (no process left)")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
