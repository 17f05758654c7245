"""The demo's screens: headings, summaries of each phase, and the figures at the end."""

from __future__ import annotations

from rich.table import Table

from migrator.output.base import escape


class DemoScreens:
    def demo_heading(self, text: str) -> None:
        if not self.json_mode:
            self.err.rule(f"[bold cyan]{escape(text)}[/]", align="left")

    def demo_phase(self, name: str, seconds: float) -> None:
        if not self.json_mode:
            self.err.print(f"[dim]{escape(name)} took {seconds:.1f}s[/]")

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
        self.markup(verdict + (f" — the sandbox is still up in {escape(figures.directory)}" if kept else ""))
