"""`status --watch`: a live view of a running move from a second terminal (rich Live,
refreshed every second): the step, the copy per table with bytes, rate and ETA, the lag,
the pause window while it happens. Not a terminal: one plain line per refresh."""

from __future__ import annotations

import time

from rich.console import Group
from rich.table import Table
from rich.text import Text

from migrator.output.base import escape

_BAR = 24


def _bar(done: int, total: int) -> str:
    filled = round(_BAR * done / total) if total else 0
    return "█" * filled + "·" * (_BAR - filled)


def live_renderable(view):
    from migrator.playbook import format_duration, format_size

    report = view.report
    lines = [Text.from_markup(f"[bold]{escape(report.move)}[/]: {escape(report.state)}", emoji=False)]
    lines += [Text(f"waiting: {text}", style="yellow") for text in view.waiting]
    if view.running:
        lines.append(Text.from_markup(f"step: [bold yellow]{escape(view.running)}[/] running"))
    if view.cutover_phase and view.cutover_phase not in ("resumed", "aborted"):
        lines.append(Text.from_markup(f"[bold red]pause window open[/]: cutover phase {escape(view.cutover_phase)}"))
    if view.copy:
        share = f"{view.copy_done / view.copy_total:.0%}" if view.copy_total else ""
        lines.append(Text(f"copy: {format_size(view.copy_done)} of {format_size(view.copy_total)} {share}"))
        table = Table(box=None, pad_edge=False, show_header=True)
        for name, justify in (("table", "left"), ("", "left"), ("copied", "right"), ("of", "right"),
                              ("rate", "right"), ("ETA", "right")):
            table.add_column(name, justify=justify, no_wrap=True)
        for t in view.copy:
            rate = f"{format_size(int(t.rate))}/s" if t.rate else ""
            eta = "done" if t.done >= t.total else (format_duration(t.eta) if t.eta is not None else "?")
            table.add_row(escape(t.table), _bar(t.done, t.total), format_size(t.done), format_size(t.total),
                          rate, eta)
        lines.append(table)
    rep = report.replication
    lag = format_size(view.lag_bytes) if view.lag_bytes is not None else "unknown"
    if rep.broken:
        lines.append(Text(f"replication: broken: {rep.broken}", style="red"))
    else:
        lines.append(Text(f"replication: {rep.direction}, lag {lag}" if rep.direction != "none"
                          else "replication: none"))
    if report.last_cutover:
        w = report.last_cutover
        lines.append(Text(f"last pause window: {(w.get('total') or 0) * 1000:,.0f} ms ({w.get('outcome')})"))
    lines.append(Text.from_markup(f"[dim]refreshed {time.strftime('%H:%M:%S')} · Ctrl-C to stop watching[/]"))
    return Group(*lines)


def plain_line(view) -> str:
    from migrator.playbook import format_size

    parts = [time.strftime("%H:%M:%S"), view.report.state]
    if view.running:
        parts.append(f"step {view.running}")
    if view.copy_total:
        parts.append(f"copy {format_size(view.copy_done)} of {format_size(view.copy_total)}")
    if view.lag_bytes is not None:
        parts.append(f"lag {format_size(view.lag_bytes)}")
    parts += [f"waiting: {text}" for text in view.waiting]
    return " | ".join(parts)


class WatchScreens:
    def watch(self, fetch, *, every: float = 1.0) -> None:
        """Show fetch() every `every` seconds until Ctrl-C, then leave the terminal clean."""
        if self.json_mode:
            try:
                while True:
                    self.document(fetch().to_dict())
                    time.sleep(every)
            except KeyboardInterrupt:
                return
        if not self.console.is_terminal:
            try:
                while True:
                    self.line(plain_line(fetch()))
                    time.sleep(every)
            except KeyboardInterrupt:
                self.line("stopped watching")
                return
        from rich.live import Live

        try:
            with Live(live_renderable(fetch()), console=self.console, refresh_per_second=4,
                      transient=False) as live:
                while True:
                    time.sleep(every)
                    live.update(live_renderable(fetch()))
        except KeyboardInterrupt:
            pass
        self.line("stopped watching")
