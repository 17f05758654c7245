"""The sandbox's screens: what is up, where, and how to reach it."""

from __future__ import annotations

from migrator.output.base import escape


class SandboxScreens:
    def sandbox_info(self, info, *, verb: str) -> None:
        doc = {"ok": True, **info.to_dict()}
        if self.json_mode:
            self.document(doc)
            return
        headline = {
            "up": "sandbox is up" if info.created else "sandbox was already there; it is up",
            "status": "sandbox",
        }[verb]
        self.markup(f"[bold green]{headline}[/] in {escape(str(info.directory))}")
        rows = [
            ("playbook", str(info.playbook)),
            ("source", info.source_url),
            ("target", info.target_url),
            ("app (PgBouncer)", info.app_url),
            ("files group (PgBouncer)", info.group_url),
            ("PgBouncer console", info.admin_url),
            ("processes", ", ".join(map(str, info.processes)) or "none running"),
            ("scale", f"{info.scale:,} (x1,000 files)"),
        ]
        for key, value in rows:
            # A URL too long for the line goes whole on the next one, never folded in a cell.
            self.pair(key, value, width=25)
        if verb == "up":
            self.line("")
            self.line("Try a query through PgBouncer:")
            self.line(f"  psql '{info.group_url}' -c 'SELECT count(*) FROM files'")
            self.line(f"Plan the move:  migrator plan {info.playbook}")

    def sandbox_down(self, directory, left: list[int]) -> None:
        if self.json_mode:
            self.document({"ok": True, "directory": str(directory), "processes_left": left})
        else:
            self.markup(f"[bold]sandbox removed[/]: {escape(str(directory))} (no process left)")
