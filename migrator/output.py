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

    # plan ---------------------------------------------------------------------

    def plan(self, plan) -> None:
        """The plan: what was found, what blocks, the steps with their SQL, the estimate."""
        if self.json_mode:
            self.document(plan.to_dict())
            return
        from migrator.playbook import format_duration, format_size

        book, snap = plan.playbook, plan.snapshot
        where = f" ({book.path})" if book.path else ""
        self.markup(f"[bold]plan[/] for move [bold]{_escape(book.name)}[/]{_escape(where)}")
        head = Table(show_header=False, box=None, pad_edge=False)
        head.add_column(style="bold")
        head.add_column(overflow="fold")
        for side in (snap.source, snap.target):
            head.add_row(side.side, _escape(mask_secrets(f"{side.display}  PostgreSQL {side.version.split()[0]}")))
        head.add_row("tables", _escape(", ".join(str(t) for t in book.tables)))
        for bouncer in snap.pgbouncers:
            head.add_row("pgbouncer", _escape(mask_secrets(
                f"{bouncer.display} entry {bouncer.database}, {bouncer.config_file}")))
        self.console.print(head)

        findings = Table(title="findings", title_justify="left", expand=False)
        findings.add_column("", no_wrap=True)
        findings.add_column("code", no_wrap=True, style="dim")
        findings.add_column("finding", overflow="fold")
        for f in sorted(plan.findings, key=lambda f: _LEVEL_ORDER[f.level]):
            text = _escape(mask_secrets(f.message))
            if f.hint:
                text += f"\n[dim]→ {_escape(mask_secrets(f.hint))}[/]"
            findings.add_row(_LEVEL_STYLE[f.level], f.code, text)
        self.console.print(findings)

        tables = Table(title="tables", title_justify="left")
        for name, justify in (("table", "left"), ("rows", "right"), ("data", "right"),
                              ("indexes", "right"), ("key", "left"), ("on target", "left")):
            tables.add_column(name, justify=justify, overflow="fold")
        for t in snap.tables.values():
            if not t.exists:
                tables.add_row(_escape(str(t.name)), "", "", "", "[red]missing[/]", "")
                continue
            key = ("primary key" if t.primary_key and t.replica_identity == "default" else
                   f"identity {t.replica_identity}" if t.identifies_rows else "[red]none[/]")
            tables.add_row(
                _escape(str(t.name)),
                f"{t.estimated_rows:,}" if t.estimated_rows is not None else "?",
                format_size(t.copy_bytes), format_size(t.index_bytes), key,
                "[red]has rows[/]" if t.on_target == "has rows" else t.on_target,
            )
        self.console.print(tables)

        self.markup("[bold]steps[/]")
        for number, step in enumerate(plan.steps, 1):
            self._step(number, step.name, step.title, step.statements, step.notes)

        est = plan.estimate
        rows = f"about {est.estimated_rows:,} rows, " if est.estimated_rows is not None else ""
        self.markup(
            f"[bold]estimate[/]: copy {rows}{format_size(est.bytes_to_copy)} of table data at "
            f"{format_size(est.copy_rate_bytes_per_s)}/s ≈ [bold]{format_duration(est.copy_seconds)}[/]"
            + (f"; then rebuild {format_size(est.index_bytes_to_rebuild)} of indexes"
               if est.index_bytes_to_rebuild else "")
        )
        blocked = plan.blocking
        warnings = sum(1 for f in plan.findings if f.level == "warn")
        if blocked:
            self.markup(f"[bold red]blocked[/]: {len(blocked)} blocking finding"
                        f"{'s' if len(blocked) != 1 else ''} — fix them and plan again")
        else:
            target = str(book.path) if book.path else "PLAYBOOK"
            self.markup(f"[bold green]ready[/]: nothing blocks the move ({warnings} warning"
                        f"{'s' if warnings != 1 else ''}); next: migrator execute {_escape(target)}")

    # execute / rollback / status -------------------------------------------------

    def step_reporter(self) -> StepReporter:
        return StepReporter(self)

    def _step(self, number: int, name: str, title: str, statements, notes) -> None:
        """One step with its notes and statements, grouped by where they run."""
        self.markup(f"[bold]{number}. {name}[/] — {_escape(title)}")
        for note in notes:
            self.console.print(f"   [dim]{_escape(mask_secrets(note))}[/]")
        previous = None
        for statement in statements:
            if statement.on != previous:
                self.console.print(f"   [cyan]{_escape(mask_secrets(statement.on))}:[/]")
                previous = statement.on
            text = statement.text
            if statement.on in ("source", "target"):
                text += ";"
            if statement.note:
                text += f"  -- {mask_secrets(statement.note)}"
            self.line("     " + text.replace("\n", "\n     "))

    def rollback_plan(self, plan) -> None:
        """`rollback --dry-run`: the undo of each step, in the order the rollback runs them."""
        if self.json_mode:
            self.document(plan.to_dict())
            return
        if not plan.steps:
            self.markup("[bold]nothing to roll back[/]: no step of this move has run")
            return
        self.markup(f"[bold]rollback of {_escape(plan.move)}[/] would run (dry run: nothing changed)")
        for number, (step, undo) in enumerate(plan.steps, 1):
            self._step(number, step.name, f"undo: {step.title}", undo.statements, undo.notes)

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
        self.markup(f"[bold green]move {_escape(result.move)} completed[/]")
        for item in result.removed:
            self.line(f"  removed {item}")
        if result.dropped_source_tables:
            self.line(f"  dropped on the source: {', '.join(result.dropped_source_tables)}")
        else:
            self.line("  the source's old copy of the group is still there (drop it with --drop-source)")

    # demo ---------------------------------------------------------------------

    def demo_heading(self, text: str) -> None:
        if not self.json_mode:
            self.err.rule(f"[bold cyan]{_escape(text)}[/]", align="left")

    def demo_phase(self, name: str, seconds: float) -> None:
        if not self.json_mode:
            self.err.print(f"[dim]{_escape(name)} took {seconds:.1f}s[/]")

    def plan_summary(self, plan) -> None:
        if self.json_mode:
            return
        from migrator.playbook import format_duration, format_size

        levels = {level: sum(1 for f in plan.findings if f.level == level) for level in ("ok", "warn", "block")}
        self.err.print(f"  findings: [green]{levels['ok']} ok[/], [yellow]{levels['warn']} warn[/], "
                       f"[red]{levels['block']} block[/]; steps: {', '.join(s.name for s in plan.steps)}")
        est = plan.estimate
        self.err.print(f"  to copy: {format_size(est.bytes_to_copy)} in {est.tables} tables, "
                       f"about {format_duration(est.copy_seconds)}")

    def analyze_summary(self, report) -> None:
        if self.json_mode:
            return
        group = report.group_impact
        findings = len(report.findings)
        style = "green" if not findings else "red"
        self.err.print(f"  {report.samples} samples, {report.coverage.transactions_observed} transactions seen; "
                       f"group AAS {group.aas if group else 0:.3f}; [{style}]{findings} findings[/]"
                       + ("" if findings else " (routing and isolation clean)"))

    def demo_figures(self, figures, *, kept: bool) -> None:
        if self.json_mode:
            self.document({"ok": figures.ok, **figures.to_dict()})
            return
        self.err.rule("[bold]the figures[/]", align="left")
        timeline = Table(title="timeline", title_justify="left")
        timeline.add_column("phase")
        timeline.add_column("seconds", justify="right")
        for item in figures.timeline:
            timeline.add_row(item["phase"], f"{item['seconds']:.1f}")
        self.console.print(timeline)
        self.line("pause windows, drawn to scale (one █ = 10 ms):")
        for window in figures.pause_windows:
            total = window.get("total") or 0
            bar = "█" * max(1, round(total * 100))
            self.line(f"  {window.get('direction'):<8} {window.get('outcome'):<9} {total * 1000:6.0f} ms  {bar}")
        group, other = figures.group_load, figures.other_load
        failed = (group.get("failures") or 0) + (other.get("failures") or 0)
        style = "bold green" if failed == 0 else "bold red"
        self.markup(f"client transactions: {group.get('transactions', 0) + other.get('transactions', 0)}, "
                    f"[{style}]failed: {failed}[/]; longest stall on the group's entry "
                    f"{(group.get('longest_gap_s') or 0) * 1000:.0f} ms, on the other entry "
                    f"{(other.get('longest_gap_s') or 0) * 1000:.0f} ms")
        if figures.analyzed:
            found = len(figures.analyzed.get("findings") or [])
            self.line(f"analyze on the live load: {found} findings ({figures.analyzed.get('samples')} samples, "
                      f"{figures.analyzed.get('transactions_observed')} transactions seen)")
        for number, check in enumerate(figures.verified, start=1):
            self.line(f"verify #{number}: {'identical' if check['identical'] else 'DIFFERENT'}, "
                      f"{check['rows_compared']} rows compared per side")
        verdict = "[bold green]demo passed[/]" if figures.ok else "[bold red]demo found a problem[/]"
        self.markup(verdict + (f" — the sandbox is still up in {_escape(figures.directory)}" if kept else ""))

    def move_report(self, report) -> None:
        if self.json_mode:
            self.document({"ok": True, **report.to_dict()})
            return
        self.markup(f"[bold]{_escape(report.move)}[/]: {_escape(report.state)}")
        table = Table(title="steps", title_justify="left")
        table.add_column("step")
        table.add_column("status")
        table.add_column("time", justify="right")
        table.add_column("note", overflow="fold")
        colours = {"done": "green", "failed": "red", "running": "yellow", "undoing": "yellow",
                   "undone": "blue", "pending": "dim"}
        for step in report.steps:
            seconds = f"{step['seconds']:.1f}s" if step["seconds"] is not None else ""
            table.add_row(step["step"], f"[{colours.get(step['status'], 'white')}]{step['status']}[/]",
                          seconds, _escape(mask_secrets(step["error"] or "")))
        self.console.print(table)
        rep = report.replication
        if rep.error:
            self.line(f"replication: unknown ({rep.error})")
        elif rep.direction == "none":
            self.line("replication: none")
        else:
            lag_s = f", {rep.lag_seconds:.2f} s" if rep.lag_seconds is not None else ""
            self.line(f"replication: {rep.direction} via slot {rep.slot}, lag {rep.lag_bytes} bytes{lag_s}")
        if rep.orphaned_slots:
            self.markup("[bold red]inactive replication slots (they retain WAL):[/] "
                        + _escape(", ".join(rep.orphaned_slots)))
        for route in report.routes:
            paused = " [bold red]PAUSED[/]" if route.paused else ""
            error = f" ({_escape(route.error)})" if route.error else ""
            self.markup(f"traffic: {_escape(route.pgbouncer)} entry {_escape(route.entry)} → "
                        f"[bold]{route.points_to}[/]{paused} (config file: {route.config_points_to}){error}")
        if report.last_cutover:
            self.pause_window(report.last_cutover)
        self.markup(f"[bold]next:[/] {_escape(report.next_command)}")

    # verify -------------------------------------------------------------------

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

        self.markup(f"[bold]verify {_escape(report.name)}[/]: source {_escape(report.source)}, "
                    f"target {_escape(report.target)}")
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
            table.add_row(_escape(t.table), _escape(", ".join(t.key) or "(none)"), rows,
                          str(t.chunks), format_size(t.bytes), format_duration(t.seconds), result)
        self.console.print(table)
        for t in report.tables:
            if t.problem:
                self.markup(f"[bold red]{_escape(t.table)}[/]: {_escape(t.problem)}")
            for diff in t.differences:
                keys = ", ".join(_key_text(k) for k in diff.sample_keys)
                more = diff.differing_keys - len(diff.sample_keys)
                self.markup(
                    f"[bold red]{_escape(t.table)}[/] {_escape(diff.range)}: "
                    f"{diff.source_rows:,} rows on the source, {diff.target_rows:,} on the target; "
                    f"{diff.differing_keys} differ: {_escape(keys)}" + (f" and {more} more" if more > 0 else "")
                )
        for note in report.notes:
            self.line(f"note: {note}")
        speed = (f"{format_size(report.bytes)} in {format_duration(report.seconds)} "
                 f"({report.mb_per_s:g} MB/s); {report.catch_up}")
        if report.identical:
            self.markup(f"[bold green]identical[/]: {len(report.tables)} tables, {_escape(speed)}")
        else:
            different = sum(not t.identical for t in report.tables)
            self.markup(f"[bold red]different[/]: {different} of {len(report.tables)} tables; "
                        f"{_escape(speed)}")


    # analyze ------------------------------------------------------------------

    @contextmanager
    def analyze_progress(self):
        """A bar of the observation window; yields the callback the sampler takes."""
        if self.json_mode or not self.err.is_terminal:
            yield None
            return
        with Progress(TextColumn("  watching the traffic"), BarColumn(), TimeRemainingColumn(),
                      console=self.err, transient=True) as bar:
            task = bar.add_task("analyze", total=None)
            yield lambda done, total: bar.update(task, completed=done, total=total)

    def analyze_report(self, report, *, picture=None) -> None:
        """Impact, routing, isolation, candidate groups and the findings of one observation."""
        doc = report.to_dict()
        if picture is not None:
            doc["graph_file"] = {"path": str(picture[0]), "format": picture[1]}
        if self.json_mode:
            self.document(doc)
            return
        from rich import box

        cov = report.coverage
        what = f"move [bold]{_escape(report.move)}[/]" if report.move else "the whole database"
        self.markup(f"[bold]analyze[/] {what}: source {_escape(report.source)}, {report.seconds:.1f} s "
                    f"every {report.interval_ms:g} ms ({report.samples:,} samples"
                    + (f", {report.late_samples} late" if report.late_samples else "") + ")")
        share = f" ({cov.share:.0%})" if cov.share is not None else ""
        self.line(f"seen: {cov.transactions_observed:,} of about {cov.transactions_committed or 0:,} "
                  f"transactions{share}; {cov.statements}; database AAS {report.database_aas:.3f}")
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, title="impact",
                      title_justify="left")
        for name in ("table", "group", "AAS", "share", "cpu", "io", "lock", "other", "reads/s", "writes/s",
                     "txns seen"):
            table.add_column(name, justify="left" if name in ("table", "group") else "right")

        def row(label: str, mark: str, i, style: str = "") -> None:
            rate = (lambda v: "?" if v is None else f"{v:,.0f}")
            table.add_row(label, mark, f"{i.aas:.3f}", f"{i.aas_share:.0%}",
                          *(f"{i.waits.get(k, 0):.3f}" for k in ("cpu", "io", "lock", "other")),
                          rate(i.reads_per_s), rate(i.writes_per_s), f"{i.transactions:,}", style=style)

        for t in report.tables:
            row(_escape(str(t.table)), "●" if t.in_group else "", t.impact)
        if report.group_impact is not None:
            row(f"the group ({len(report.group)} tables)", "", report.group_impact, style="bold")
        self.console.print(table)
        routes = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="routing", title_justify="left")
        routes.add_column("route", overflow="fold")
        routes.add_column("tables (sampled transactions)", overflow="fold")
        by_route: dict[str, list[str]] = {}
        for use in report.routing.uses:
            mark = "●" if use.in_group else ""
            by_route.setdefault(use.route.label, []).append(f"{mark}{use.table} ({use.transactions})")
        for label, uses in by_route.items():
            routes.add_row(_escape(mask_secrets(label)), _escape(", ".join(uses)))
        self.console.print(routes)
        for fk in report.foreign_keys:
            self.line(f"foreign key across the group's boundary: {fk.name} ({fk.table} -> {fk.references})")
        cands = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="candidate groups (co-accessed tables, "
                      "kept whole along foreign keys)", title_justify="left")
        for name, justify in (("#", "right"), ("tables", "left"), ("AAS", "right"), ("share", "right"),
                              ("crossing txns", "right"), ("crossing calls", "right")):
            cands.add_column(name, justify=justify, overflow="fold")
        for number, c in enumerate(report.candidates, 1):
            names = ", ".join(map(str, c.tables)) + ("  ← the playbook's group" if c.is_group else "")
            cands.add_row(str(number), _escape(names), f"{c.impact.aas:.3f}", f"{c.impact.aas_share:.0%}",
                          str(c.crossing_transactions), str(c.crossing_statement_calls))
        self.console.print(cands)
        for f in report.findings:
            self.markup(f"{_LEVEL_STYLE[f.level]} [dim]{f.code}[/] {_escape(mask_secrets(f.message))}"
                        + (f"\n   [dim]→ {_escape(mask_secrets(f.hint))}[/]" if f.hint else ""))
        if picture is not None:
            self.line(f"graph: {picture[0]} ({picture[1].upper()})")
        if report.move is None:
            self.markup("[bold]suggested[/]: candidate 1 first; watch it with a playbook to check its routing")
        elif report.blocking:
            self.markup(f"[bold red]would break[/]: {len(report.blocking)} finding"
                        f"{'s' if len(report.blocking) != 1 else ''} — fix the traffic and analyze again")
        else:
            self.markup("[bold green]ready[/]: nothing observed would break at the cutover")


_LEVEL_STYLE = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "block": "[bold red]block[/]"}
_LEVEL_ORDER = {"block": 0, "warn": 1, "ok": 2}


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _key_text(key) -> str:
    """A verify sample key: '42', or '(7, b)' for a key of several columns."""
    return f"({', '.join(map(str, key))})" if isinstance(key, list | tuple) else str(key)


class StepReporter:
    """Live progress of the steps: a line per step, a bar for long work."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self._bar: Progress | None = None
        self.task = None

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def step_started(self, step: str, title: str) -> None:
        self._close()
        if not self.out.json_mode:
            self.out.err.print(f"[bold]→ {step}[/]: {_escape(title)}")

    def step_finished(self, step: str, seconds: float, summary: str | None) -> None:
        self._close()
        if not self.out.json_mode:
            self.out.err.print(f"[green]✓ {step}[/] {seconds:.1f}s" + (f" — {_escape(summary)}" if summary else ""))

    def progress(self, step: str, done: int, total: int, detail: str = "") -> None:
        if self.out.json_mode or not self.out.err.is_terminal:
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
            self.out.err.print(f"  {_escape(mask_secrets(text))}")
