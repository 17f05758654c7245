"""verify's screens: a bar of bytes compared, then the table of results."""

from __future__ import annotations

from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from migrator.output.base import escape


class VerifyScreens:
    @contextmanager
    def verify_progress(self):
        """A bar of table bytes compared; yields the progress callback verify() takes."""
        if self.json_mode or not self.err.is_terminal:
            yield None
            return
        from rich.progress import TransferSpeedColumn

        with Progress(TextColumn("  {task.description}"), BarColumn(), DownloadColumn(binary_units=True),
                      TransferSpeedColumn(), TimeRemainingColumn(), console=self.err,
                      transient=True) as bar:
            task = bar.add_task("verify", total=None)

            def update(done: int, total: int, table: str) -> None:
                bar.update(task, completed=done, total=total, description=table)

            yield update

    def verify_report(self, report) -> None:
        from migrator.playbook import format_duration, format_size

        if self.json_mode:
            self.document({"ok": report.identical, **report.to_dict()})
            return
        from rich import box

        self.markup(f"[bold]verify {escape(report.name)}[/]: source {escape(report.source)}, "
                    f"target {escape(report.target)}")
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        names = min(40, max((len(t.table) for t in report.tables), default=5))
        for name, justify in (("table", "left"), ("key", "left"), ("rows", "right"),
                              ("ranges", "right"), ("size", "right"), ("time", "right"),
                              ("result", "left")):
            table.add_column(name, justify=justify, overflow="fold",
                             min_width=names if name == "table" else None)
        for t in report.tables:
            if t.identical:
                result = "[green]identical[/]"
            elif t.problem:
                result = "[bold red]not compared[/]"
            else:
                result = "[bold red]different[/]"
            rows = (f"{t.source_rows:,}" if t.source_rows == t.target_rows
                    else f"{t.source_rows:,}≠{t.target_rows:,}")
            table.add_row(escape(t.table), escape(", ".join(t.key) or "(none)"), rows,
                          str(t.chunks), format_size(t.bytes), format_duration(t.seconds), result)
        self.console.print(table)
        for t in report.tables:
            if t.problem:
                self.markup(f"[bold red]{escape(t.table)}[/]: {escape(t.problem)}")
            for diff in t.differences:
                keys = ", ".join(_key_text(k) for k in diff.sample_keys)
                more = diff.differing_keys - len(diff.sample_keys)
                self.markup(
                    f"[bold red]{escape(t.table)}[/] {escape(diff.range)}: "
                    f"{diff.source_rows:,} rows on the source, {diff.target_rows:,} on the target; "
                    f"{diff.differing_keys} differ: {escape(keys)}" + (f" and {more} more" if more > 0 else "")
                )
        for note in report.notes:
            self.line(f"note: {note}")
        speed = (f"{format_size(report.bytes)} in {format_duration(report.seconds)} "
                 f"({report.mb_per_s:g} MB/s); {report.catch_up}")
        if report.identical:
            self.markup(f"[bold green]identical[/]: {len(report.tables)} tables, {escape(speed)}")
        else:
            different = sum(not t.identical for t in report.tables)
            self.markup(f"[bold red]different[/]: {different} of {len(report.tables)} tables; "
                        f"{escape(speed)}")


def _key_text(key) -> str:
    """A verify sample key: '42', or '(7, b)' for a key of several columns."""
    return f"({', '.join(map(str, key))})" if isinstance(key, list | tuple) else str(key)

