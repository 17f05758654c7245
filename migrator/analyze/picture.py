"""The co-access graph as a picture: people read a cluster structure faster than an
edge list. DOT text, drawn to SVG by Graphviz's `dot` when it is installed; without
Graphviz the DOT file itself is written (any Graphviz viewer draws it later).

Each candidate group is a box holding all its members; the playbook's group members are filled; a node says
its table and AAS; an edge's width follows its weight and its label says how many
sampled transactions (and statement calls) touched both tables.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from migrator.errors import OperationFailed
from migrator.playbook import TableName


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(report) -> str:
    graph = report.graph
    group = set(report.group)
    # every candidate's members are drawn, sampled or not (a table joined to its group
    # only by a foreign key may not have been seen in a short window)
    proposed = {t for candidate in report.candidates for t in candidate.tables}
    shown = {t for t, d in graph.nodes(data=True) if d.get("aas", 0) > 0 or graph.degree(t) > 0} | group | proposed
    heaviest = max((d["weight"] for _, _, d in graph.edges(data=True)), default=1.0) or 1.0
    title = f"co-access graph of {report.source}" + (f", move {report.move}" if report.move else "")
    lines = [
        "graph coaccess {",
        f"  label={_quote(title + f' ({report.seconds:.0f} s, {report.samples} samples)')};",
        "  labelloc=t; fontname=Helvetica; layout=dot; rankdir=LR; nodesep=0.4;",
        '  node [shape=box, style="rounded,filled", fillcolor=white, fontname=Helvetica, fontsize=11];',
        "  edge [fontname=Helvetica, fontsize=9, color=gray40];",
    ]

    def node(table: TableName) -> str:
        aas = graph.nodes[table].get("aas", 0.0) if table in graph else 0.0
        fill = ', fillcolor="#9ecae1", penwidth=2' if table in group else ""
        label = _quote(f"{table}\nAAS {aas:.3f}")
        return f"  {_quote(str(table))} [label={label}{fill}];"

    placed: set[TableName] = set()
    for number, candidate in enumerate(report.candidates, 1):
        members = [t for t in candidate.tables if t in shown]
        if not members:
            continue
        mark = " = the playbook's group" if candidate.is_group else ""
        lines.append(f"  subgraph cluster_{number} {{")
        label = _quote(f"candidate {number}: AAS {candidate.impact.aas:.3f}{mark}")
        lines.append(f"    label={label};")
        lines.append('    style="rounded,dashed"; color=gray50;')
        lines.extend("  " + node(t) for t in members)
        lines.append("  }")
        placed.update(members)
    lines.extend(node(t) for t in sorted(shown - placed))
    for a, b, data in sorted(graph.edges(data=True), key=lambda e: sorted(e[:2])):
        if a not in shown or b not in shown:
            continue
        width = 1 + 4 * data["weight"] / heaviest
        label = f"{data['transactions']} tx"
        if data["statement_calls"]:
            label += f" + {data['statement_calls']} calls"
        crossing = (a in group) != (b in group) and group
        colour = ", color=red, fontcolor=red" if crossing else ""
        lines.append(f"  {_quote(str(a))} -- {_quote(str(b))} [penwidth={width:.1f}, "
                     f"label={_quote(label)}{colour}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_picture(report, path: Path) -> tuple[Path, str]:
    """Write the graph to path: SVG when Graphviz is installed, else DOT (to path with
    a .dot suffix when an .svg was asked for). Returns (the file written, its format)."""
    path = Path(path)
    dot_text = to_dot(report)
    dot = shutil.which("dot")
    try:
        if dot is not None and path.suffix.lower() != ".dot":
            drawn = subprocess.run([dot, "-Tsvg"], input=dot_text, capture_output=True, text=True, timeout=60)
            if drawn.returncode == 0:
                path.write_text(drawn.stdout)
                return path, "svg"
        if path.suffix.lower() == ".svg":
            path = path.with_suffix(".dot")
        path.write_text(dot_text)
        return path, "dot"
    except OSError as exc:
        raise OperationFailed(f"cannot write the graph to {path}: {exc}") from exc
