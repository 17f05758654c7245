"""analyze's screens: impact, routing, isolation, candidate groups and findings."""

from __future__ import annotations

from contextlib import contextmanager

from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from migrator.masking import mask_secrets
from migrator.output.base import LEVEL_STYLE, escape


class AnalyzeScreens:
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
        what = f"move [bold]{escape(report.move)}[/]" if report.move else "the whole database"
        self.markup(f"[bold]analyze[/] {what}: source {escape(report.source)}, {report.seconds:.1f} s "
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
            row(escape(str(t.table)), "●" if t.in_group else "", t.impact)
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
            routes.add_row(escape(mask_secrets(label)), escape(", ".join(uses)))
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
            cands.add_row(str(number), escape(names), f"{c.impact.aas:.3f}", f"{c.impact.aas_share:.0%}",
                          str(c.crossing_transactions), str(c.crossing_statement_calls))
        self.console.print(cands)
        for f in report.findings:
            self.markup(f"{LEVEL_STYLE[f.level]} [dim]{f.code}[/] {escape(mask_secrets(f.message))}"
                        + (f"\n   [dim]→ {escape(mask_secrets(f.hint))}[/]" if f.hint else ""))
        if picture is not None:
            self.line(f"graph: {picture[0]} ({picture[1].upper()})")
        if report.move is None:
            self.markup("[bold]suggested[/]: candidate 1 first; watch it with a playbook to check its routing")
        elif report.blocking:
            self.markup(f"[bold red]would break[/]: {len(report.blocking)} finding"
                        f"{'s' if len(report.blocking) != 1 else ''} — fix the traffic and analyze again")
        else:
            self.markup("[bold green]ready[/]: nothing observed would break at the cutover")
