"""The move's screens: live steps, the run's result, pause windows, status."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from migrator.masking import mask_secrets
from migrator.output.base import escape


class MoveScreens:
    def step_reporter(self) -> StepReporter:
        return StepReporter(self)

    def run_result(self, result, *, verb: str, report=None) -> None:
        doc = {"ok": True, "verb": verb, **result.to_dict()}
        if report is not None:
            doc["status"] = report.to_dict()
        if self.json_mode:
            self.document(doc)
            return
        if result.stopped_before:
            self.markup(f"[bold]stopped before[/] {result.stopped_before}: run `migrator execute` again to go on")
        elif not result.ran:
            self.markup("[bold]nothing to do[/]: every step is already " + ("done" if verb == "execute" else "undone"))
        else:
            self.markup(f"[bold green]{verb} finished[/]")
        window = (report.last_cutover if report is not None else None)
        if window and any(step == "cutover" for step, _, _ in result.ran):
            self.pause_window(window)

    def pause_window(self, window: dict) -> None:
        total = window.get("total") or 0
        self.markup(f"[bold]pause window[/] ({window.get('direction')}): "
                    f"[bold]{total * 1000:.0f} ms[/] — {window.get('outcome')}")
        width = 50
        parts = window.get("parts") or {}
        for part, seconds in parts.items():
            bar = "█" * max(1, round(width * seconds / total)) if total else ""
            self.line(f"  {part:<20} {seconds * 1000:7.1f} ms  {bar}")

    def complete_result(self, result) -> None:
        if self.json_mode:
            self.document({"ok": True, **result.to_dict()})
            return
        self.markup(f"[bold green]move {escape(result.move)} completed[/]")
        for item in result.removed:
            self.line(f"  removed {item}")
        if result.dropped_source_tables:
            self.line(f"  dropped on the source: {', '.join(result.dropped_source_tables)}")
        else:
            self.line("  the source's old copy of the group is still there (drop it with --drop-source)")
        if result.source_fence_lift:
            self.line("  it stays fenced: it refuses writes from every session; on the source, lift the fence with")
            self.line(f"    {result.source_fence_lift}")

    def schema_change_result(self, result, *, dry_run: bool = False) -> None:
        if self.json_mode:
            self.document({"ok": True, "dry_run": dry_run, **result.to_dict()})
            return
        if dry_run:
            self.markup(f"[bold]{escape(result.kind)}[/] on {escape(result.table)} would run, in this order "
                        f"({escape(result.why)}):")
            for line in result.order:
                self.line(f"  {line}")
            return
        self.markup(f"[bold green]{escape(result.kind)} applied to {escape(result.table)}[/] on the "
                    f"{' then the '.join(result.order)} in {result.seconds:.2f}s")
        self.line(f"  {result.why}")

    def move_report(self, report) -> None:
        if self.json_mode:
            self.document({"ok": True, **report.to_dict()})
            return
        self.markup(f"[bold]{escape(report.move)}[/]: {escape(report.state)}")
        from migrator.playbook import format_duration, format_size

        table = Table(title="steps", title_justify="left")
        table.add_column("step", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("time", justify="right", no_wrap=True)
        colours = {"done": "green", "failed": "red", "running": "yellow", "undoing": "yellow",
                   "undone": "blue", "pending": "dim"}
        for step in report.steps:
            seconds = format_duration(step["seconds"]) if step["seconds"] is not None else ""
            table.add_row(step["step"], f"[{colours.get(step['status'], 'white')}]{step['status']}[/]",
                          seconds)
        self.console.print(table)
        for step in report.steps:
            if step["error"]:
                # Its own line, whole: an error often quotes SQL or a connection string.
                self.line(f"{step['step']}: {step['error']}", style="red")
        rep = report.replication
        if rep.error:
            self.line(f"replication: unknown ({rep.error})")
        elif rep.direction == "none":
            self.line("replication: none")
        elif rep.broken:
            self.line(f"replication: broken: {rep.broken}", style="red")
        else:
            lag_s = f", {format_duration(rep.lag_seconds)}" if rep.lag_seconds is not None else ""
            lag = format_size(rep.lag_bytes) if rep.lag_bytes is not None else "unknown"
            self.line(f"replication: {rep.direction} via slot {rep.slot}, lag {lag}{lag_s}")
        if rep.orphaned_slots:
            self.markup("[bold red]inactive replication slots (they retain WAL):[/] "
                        + escape(", ".join(rep.orphaned_slots)))
        self.line("guards: " + guards_text(report.guards))
        for route in report.routes:
            paused = " [bold red]PAUSED[/]" if route.paused else ""
            error = f" ({escape(route.error)})" if route.error else ""
            self.markup(f"traffic: {escape(route.pgbouncer)} entry {escape(route.entry)} → "
                        f"[bold]{route.points_to}[/]{paused} (config file: {route.config_points_to}){error}")
        self.move_drift(report)
        if report.last_cutover:
            self.pause_window(report.last_cutover)
        self.markup(f"[bold]next:[/] {escape(report.next_command)}")

    def move_drift(self, report) -> None:
        """The group's columns and constraints on both sides: `none`, or each difference
        on its own line, whole (a definition is often long); nothing when not compared."""
        error, differences = report.drift_error, report.drift
        if error:
            self.line(f"drift: unknown ({error})")
        elif differences is not None and not differences:
            self.line("drift: none (the group's columns and constraints are the same on both sides)")
        elif differences:
            from migrator.output.base import plural

            self.markup(f"[bold yellow]drift:[/] {plural(len(differences), 'difference')} between the source "
                        "and the target (change both with migrator ddl PLAYBOOK \"SQL\")")
            for difference in differences:
                self.line(f"  {difference['text']}", style="yellow")


def guards_text(per_side: dict[str, dict]) -> str:
    """'none', or per side: the DDL guard, the write fence and how many tables carry it."""
    parts = []
    for side, state in per_side.items():
        if "error" in state:
            parts.append(f"{side} unknown ({state['error']})")
            continue
        if not (state["ddl_guard"] or state["fence"] or state["fenced_tables"]):
            continue
        what = []
        if state["ddl_guard"]:
            what.append("DDL guard" + ("" if state["ddl_guard"] == 2 else " (half of it)"))
        if state["fence"] == "refuses":
            what.append(f"refuses writes ({state['fenced_tables']} tables fenced)")
        elif state["fence"] == "serving":
            what.append(f"writes pass ({state['fenced_tables']} tables fenced, serving)")
        elif state["fenced_tables"]:
            what.append(f"{state['fenced_tables']} fence triggers without their function")
        parts.append(f"{side}: " + ", ".join(what))
    return "; ".join(parts) or "none"


PLAIN_EVERY = 10.0  # seconds between two progress lines when stderr is not a terminal


def progress_text(done: int, total: int, detail: str) -> str:
    from migrator.playbook import format_size

    share = f" ({done / total:.0%})" if total else ""
    if detail == "bytes":
        return f"{format_size(done)} of {format_size(total)}{share}"
    if detail.startswith("lag "):
        return f"{detail}, waiting for it to go under {format_size(total)}"
    return f"{done:,} of {total:,} {detail}{share}"


class StepReporter:
    """Live progress of the steps: a line per step, a bar for long work."""

    def __init__(self, out) -> None:
        self.out = out
        self._bar: Progress | None = None
        self.task = None
        self._plain: dict[str, float] = {}

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def step_started(self, step: str, title: str) -> None:
        self._close()
        if not self.out.json_mode:
            self.out.err.print(f"[bold]→ {step}[/]: {escape(title)}")

    def step_finished(self, step: str, seconds: float, summary: str | None) -> None:
        self._close()
        if not self.out.json_mode:
            self.out.err.print(f"[green]✓ {step}[/] {seconds:.1f}s" + (f" — {escape(summary)}" if summary else ""))

    def progress(self, step: str, done: int, total: int, detail: str = "",
                 tables: dict[str, list[int]] | None = None) -> None:
        if self.out.json_mode:
            return
        if not self.out.err.is_terminal:
            # A log, not a terminal: a plain line now and then instead of a bar.
            import time

            now = time.monotonic()
            if now - self._plain.get(step, -PLAIN_EVERY) >= PLAIN_EVERY or done >= total:
                self._plain[step] = now
                self.out.err.print(f"  {step}: {progress_text(done, total, detail)}", markup=False)
            return
        if self._bar is None:
            self._bar = Progress(
                TextColumn("  {task.description}"), BarColumn(),
                DownloadColumn() if detail == "bytes" else MofNCompleteColumn(),
                TimeRemainingColumn(), console=self.out.err, transient=True)
            self._bar.start()
            self.task = self._bar.add_task(step, total=total)
        self._bar.update(self.task, completed=done, total=total)

    def note(self, text: str) -> None:
        if not self.out.json_mode:
            self.out.err.print(f"  {escape(mask_secrets(text))}")