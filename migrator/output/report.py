"""`migrator report`: the move's record as one self-contained HTML page (inline CSS and
SVG, no script, nothing fetched: it opens from a ticket attachment offline), and a short
summary on the terminal. The page draws the steps on a timeline, every pause window to
scale with its parts, lag and copy progress over time, verify results, the findings at
execute time and the event log."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape as h
from pathlib import Path

from migrator.masking import mask_secrets
from migrator.output.base import escape, plural
from migrator.output.plan import finding_groups, subjects_text

_PART_COLOURS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
                 "#ff9da7", "#9c755f", "#bab0ac"]
_STATUS_COLOURS = {"done": "#59a14f", "failed": "#e15759", "running": "#edc948", "undoing": "#f28e2b",
                   "undone": "#4e79a7", "pending": "#bab0ac"}

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1100px;
color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%} td,th{padding:3px 8px;border-bottom:1px solid #eee;
text-align:left;vertical-align:top} th{background:#f6f6f6} .num{text-align:right;white-space:nowrap}
.ok{color:#2e7d32} .warn{color:#b26a00} .block,.bad{color:#c62828;font-weight:bold} .dim{color:#777}
code{font:12px ui-monospace,monospace;white-space:pre-wrap;word-break:normal;overflow-wrap:anywhere}
svg text{font:12px system-ui,sans-serif} .legend span{display:inline-block;margin-right:14px}
.swatch{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px}
"""


def _time(at: float | None) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S") if at else ""


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def timeline_svg(record, width: int = 1060) -> str:
    """The steps as bars on one time axis, with their durations."""
    from migrator.playbook import format_duration

    ran = [s for s in record.steps if s["started_at"]]
    if not ran:
        return "<p class=dim>no step has run yet</p>"
    start = min(s["started_at"] for s in ran)
    end = max((s["finished_at"] or s["started_at"]) for s in ran)
    for e in record.events:
        end = max(end, e["at"])
    span = max(end - start, 0.001)
    left, row = 140, 26
    plot = width - left - 90
    height = row * len(record.steps) + 34
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'role="img" aria-label="timeline of the steps">']
    for tick in range(6):
        x = left + plot * tick / 5
        out.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height - 20}" stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{height - 6}" text-anchor="middle" fill="#777">'
                   f'+{h(format_duration(span * tick / 5))}</text>')
    for i, s in enumerate(record.steps):
        y = i * row + 4
        out.append(f'<text x="{left - 8}" y="{y + 15}" text-anchor="end">{h(s["step"])}</text>')
        if not s["started_at"]:
            out.append(f'<text x="{left + 4}" y="{y + 15}" fill="#999">{h(s["status"])}</text>')
            continue
        x0 = left + plot * (s["started_at"] - start) / span
        x1 = left + plot * ((s["finished_at"] or end) - start) / span
        colour = _STATUS_COLOURS.get(s["status"], "#999")
        out.append(f'<rect x="{x0:.1f}" y="{y}" width="{max(2.0, x1 - x0):.1f}" height="{row - 8}" '
                   f'fill="{colour}"><title>{h(s["step"])}: {h(s["status"])}</title></rect>')
        label = format_duration(s["seconds"]) if s["seconds"] is not None else s["status"]
        out.append(f'<text x="{max(x0, x1) + 6:.1f}" y="{y + 15}">{h(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def pause_windows_svg(windows: list[dict], width: int = 1060) -> str:
    """Every pause window on one millisecond scale, split into its parts."""
    if not windows:
        return "<p class=dim>no cutover has paused the traffic yet</p>"
    longest = max((w.get("total") or 0) for w in windows) or 0.001
    left, row = 190, 34
    plot = width - left - 100
    parts = list(dict.fromkeys(p for w in windows for p in (w.get("parts") or {})))
    colour = {p: _PART_COLOURS[i % len(_PART_COLOURS)] for i, p in enumerate(parts)}
    height = row * len(windows) + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'role="img" aria-label="pause windows to scale">']
    for tick in range(5):
        x = left + plot * tick / 4
        out.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height - 18}" stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{height - 4}" text-anchor="middle" fill="#777">'
                   f'{longest * 1000 * tick / 4:,.0f} ms</text>')
    for i, w in enumerate(windows):
        y = i * row + 4
        total = w.get("total") or 0
        out.append(f'<text x="{left - 8}" y="{y + 18}" text-anchor="end">#{i + 1} {h(str(w.get("direction")))} '
                   f'· {h(str(w.get("outcome")))}</text>')
        x = float(left)
        for part, seconds in (w.get("parts") or {}).items():
            size = plot * seconds / longest
            out.append(f'<rect x="{x:.1f}" y="{y}" width="{max(1.0, size):.1f}" height="{row - 10}" '
                       f'fill="{colour[part]}"><title>{h(part)}: {_ms(seconds)}</title></rect>')
            x += size
        if not w.get("parts"):
            out.append(f'<rect x="{left}" y="{y}" width="{max(1.0, plot * total / longest):.1f}" '
                       f'height="{row - 10}" fill="#4e79a7"/>')
        out.append(f'<text x="{left + plot * total / longest + 6:.1f}" y="{y + 18}">'
                   f'<tspan font-weight="bold">{_ms(total)}</tspan></text>')
    out.append("</svg>")
    legend = "".join(f'<span><i class=swatch style="background:{colour[p]}"></i>{h(p)}</span>' for p in parts)
    return "".join(out) + f'<div class=legend>{legend}</div>'


def series_svg(points: list[tuple[float, float]], *, label: str, unit, width: int = 1060,
               height: int = 180) -> str:
    """A line of (time, value) samples with its axis labels."""
    if not points:
        return f"<p class=dim>no {h(label)} sample recorded</p>"
    t0, t1 = points[0][0], points[-1][0]
    top = max(v for _, v in points) or 1
    left, bottom = 80, 22
    plot_w, plot_h = width - left - 20, height - bottom - 10
    span = max(t1 - t0, 0.001)
    xy = " ".join(f"{left + plot_w * (t - t0) / span:.1f},{10 + plot_h * (1 - v / top):.1f}" for t, v in points)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
            f'aria-label="{h(label)}">'
            f'<line x1="{left}" y1="{10 + plot_h}" x2="{left + plot_w}" y2="{10 + plot_h}" stroke="#999"/>'
            f'<line x1="{left}" y1="10" x2="{left}" y2="{10 + plot_h}" stroke="#999"/>'
            f'<text x="{left - 6}" y="16" text-anchor="end" fill="#777">{h(unit(top))}</text>'
            f'<text x="{left - 6}" y="{10 + plot_h}" text-anchor="end" fill="#777">0</text>'
            f'<text x="{left}" y="{height - 4}" fill="#777">{h(_time(t0))}</text>'
            f'<text x="{left + plot_w}" y="{height - 4}" text-anchor="end" fill="#777">{h(_time(t1))} UTC</text>'
            f'<polyline fill="none" stroke="#4e79a7" stroke-width="2" points="{xy}"/>'
            + "".join(f'<circle cx="{p.split(",")[0]}" cy="{p.split(",")[1]}" r="2" fill="#4e79a7"/>'
                      for p in xy.split()[-200:])
            + "</svg>")


def report_html(record) -> str:
    from migrator.plan.finding import Finding
    from migrator.playbook import format_duration, format_size

    windows = record.pause_windows
    parts: list[str] = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>migrator report: {h(record.move)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Move <code>{h(record.move)}</code></h1>",
        f"<p>status <b>{h(record.status or 'never run')}</b> · {plural(len(record.tables), 'table')}: "
        f"{h(', '.join(record.tables[:12]))}{' …' if len(record.tables) > 12 else ''}"
        f" · generated {h(record.generated_at)}</p>",
        "<h2 id=timeline>Timeline of the steps</h2>", timeline_svg(record),
        "<table><tr><th>step</th><th>status</th><th>started (UTC)</th><th class=num>time</th><th>error</th></tr>",
    ]
    for s in record.steps:
        parts.append(f"<tr><td>{h(s['step'])}</td><td>{h(s['status'])}</td><td>{h(_time(s['started_at']))}</td>"
                     f"<td class=num>{h(format_duration(s['seconds'])) if s['seconds'] is not None else ''}</td>"
                     f"<td><code>{h(s['error'] or '')}</code></td></tr>")
    parts.append("</table>")
    parts += [f"<h2 id=pauses>Pause windows ({len(windows)}), to scale</h2>", pause_windows_svg(windows)]
    if windows:
        parts.append("<table><tr><th>#</th><th>direction</th><th>outcome</th><th class=num>pause</th>"
                     "<th>parts</th><th>reason</th></tr>")
        for i, w in enumerate(windows, 1):
            detail = ", ".join(f"{p} {_ms(v)}" for p, v in (w.get("parts") or {}).items())
            parts.append(f"<tr><td>{i}</td><td>{h(str(w.get('direction')))}</td><td>{h(str(w.get('outcome')))}</td>"
                         f"<td class=num><b>{_ms(w.get('total') or 0)}</b></td><td>{h(detail)}</td>"
                         f"<td>{h(w.get('reason') or '')}</td></tr>")
        parts.append("</table>")
    parts += ["<h2 id=lag>Replication lag over time</h2>",
              series_svg([(s["at"], s.get("bytes") or 0) for s in record.lag], label="lag", unit=format_size),
              "<h2 id=copy>Initial copy</h2>",
              series_svg([(s["at"], s.get("done") or 0) for s in record.copy], label="copy progress",
                         unit=format_size)]
    parts.append("<h2 id=verify>Verify</h2>")
    if not record.verify:
        parts.append("<p class=dim>no verify recorded (run <code>migrator verify PLAYBOOK</code>)</p>")
    for v in record.verify:
        verdict = "<b class=ok>identical</b>" if v.get("identical") else "<b class=bad>DIFFERENT</b>"
        rows = sum(t.get("source_rows") or 0 for t in v.get("tables", []))
        parts.append(f"<p>{h(_time(v['at']))} UTC: {verdict}, {plural(len(v.get('tables', [])), 'table')}, "
                     f"{rows:,} rows per side, {h(format_size(v.get('bytes') or 0))} in "
                     f"{h(format_duration(v.get('seconds') or 0))}</p>")
        bad = [t for t in v.get("tables", []) if not t.get("identical")]
        for t in bad:
            parts.append(f"<p class=bad>{h(t['table'])}: {t.get('source_rows')} rows on the source, "
                         f"{t.get('target_rows')} on the target {h(t.get('problem') or '')}</p>")
    parts.append("<h2 id=findings>Findings at execute time</h2>")
    findings = [Finding(**f) for f in record.findings]
    if not findings:
        parts.append("<p class=dim>no preflight recorded</p>")
    else:
        parts.append("<table><tr><th>level</th><th>code</th><th>finding</th></tr>")
        for level, code, fs in finding_groups(findings):
            subjects = list(dict.fromkeys(f.subject for f in fs if f.subject))
            text = fs[0].message if len(fs) == 1 else subjects_text(code, subjects or [f.message for f in fs], fs[0].noun)
            hint = f"<br><span class=dim>→ {h(fs[0].hint)}</span>" if fs[0].hint and level != "ok" else ""
            parts.append(f"<tr><td class={level}>{level}</td><td><code>{h(code)}</code></td>"
                         f"<td>{h(text)}{hint}</td></tr>")
        parts.append("</table>")
    parts.append(f"<h2 id=events>Event log ({len(record.events)})</h2><table>"
                 "<tr><th>at (UTC)</th><th>step</th><th>kind</th><th>message</th></tr>")
    for e in record.events:
        sql = f"<br><code>{h(e['sql'])}</code>" if e.get("sql") else ""
        parts.append(f"<tr><td class=num>{h(_time(e['at']))}</td><td>{h(e['step'] or '')}</td>"
                     f"<td>{h(e['kind'])}</td><td>{h(e['message'])}{sql}</td></tr>")
    parts.append("</table></body></html>\n")
    return mask_secrets("".join(parts))


class ReportScreens:
    def move_record(self, record, *, html_file: Path | None = None) -> None:
        doc = {"ok": True, **record.to_dict()}
        if html_file is not None:
            html_file.write_text(report_html(record))
            doc["html_file"] = str(html_file)
        if self.json_mode:
            self.document(doc)
            return
        done = sum(s["status"] == "done" for s in record.steps)
        self.markup(f"[bold]report of {escape(record.move)}[/]: {escape(record.status or 'never run')}, "
                    f"{done} of {plural(len(record.steps), 'step')} done, "
                    f"{plural(len(record.pause_windows), 'pause window')}, "
                    f"{plural(len(record.lag), 'lag sample')}, {plural(len(record.verify), 'verify run')}, "
                    f"{plural(len(record.events), 'event')}")
        for i, w in enumerate(record.pause_windows, 1):
            self.line(f"  pause #{i} {w.get('direction')} {w.get('outcome')}: {_ms(w.get('total') or 0)}")
        if html_file is not None:
            self.pair("written:", str(html_file), width=9)
