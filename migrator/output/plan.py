"""The plan's screens: the verdict first, findings grouped by code (one line per code with
the objects it covers), one line per step with its statement counts; `--sql` adds every
statement. `--json` carries everything, one finding per object."""

from __future__ import annotations

from itertools import groupby

from rich import box
from rich.table import Table

from migrator.masking import mask_secrets
from migrator.output.base import LEVEL_ORDER, LEVEL_STYLE, escape, listing, plural

# Beyond this many tables the plan shows the largest and any with a problem; --json has all.
TABLES_SHOWN = 8


def finding_groups(findings) -> list[tuple[str, str, list]]:
    """(level, code, findings) by code, blocking codes first, in the checks' order within."""
    order = {}
    for f in findings:
        order.setdefault((f.level, f.code), len(order))
    keyed = sorted(findings, key=lambda f: (LEVEL_ORDER[f.level], order[(f.level, f.code)]))
    return [(level, code, list(group)) for (level, code), group in
            groupby(keyed, key=lambda f: (f.level, f.code))]


# What the subjects of a code's findings are, by the code's family.
_NOUNS = {"table": "table", "fk": "table", "index": "index", "sequence": "sequence", "role": "role",
          "server": "server", "pgbouncer": "PgBouncer", "view": "view", "routine": "routine",
          "target": "table", "owner": "role", "move": "object", "source": "transaction",
          "guard": "role", "schema": "table"}
_PLURALS = {"index": "indexes", "chain": "chains"}


def subjects_text(code: str, subjects: list[str], noun: str = "") -> str:
    """'40 tables: shop.a, shop.b, ... and 34 more'; `noun` says what the subjects are
    when the code's family does not (a table check about extensions)."""
    noun = noun or _NOUNS.get(code.split(".")[0], "object")
    return f"{plural(len(subjects), noun, _PLURALS.get(noun))}: {listing(subjects)}"


def statement_counts(statements) -> str:
    """'2 on source, 41 on target, 3 on PgBouncer, 1 config file', or 'no statement'."""
    counts: dict[str, int] = {}
    for s in statements:
        where = (s.on if s.on in ("source", "target") else
                 "PgBouncer" if s.on.startswith("pgbouncers[") else "config file")
        counts[where] = counts.get(where, 0) + 1
    if not counts:
        return "no statement"
    return ", ".join(plural(n, "config file") if where == "config file" else f"{n:,} on {where}"
                     for where, n in counts.items())


def _shown(statement) -> str:
    """A statement as `--sql` shows it: its SQL (a `;` after one that runs on a server)
    and its note as a comment."""
    text = statement.text + (";" if statement.on in ("source", "target") else "")
    return text + (f"  -- {mask_secrets(statement.note)}" if statement.note else "")


class PlanScreens:
    def plan(self, plan, *, sql: bool = False) -> None:
        """The plan: the verdict, where, the findings by code, the tables, the steps, the estimate."""
        if self.json_mode:
            self.document(plan.to_dict())
            return
        book, snap = plan.playbook, plan.snapshot
        where = f" ({book.path})" if book.path else ""
        self.markup(f"[bold]plan[/] for move [bold]{escape(book.name)}[/]{escape(where)}")
        self._plan_verdict(plan)
        self.line()
        for side in (snap.source, snap.target):
            self.pair(side.side, f"{side.display}  PostgreSQL {side.version.split()[0]}")
        for bouncer in snap.pgbouncers:
            self.pair("pgbouncer", f"{bouncer.display} entry {bouncer.database}")
            self.pair("  config", str(bouncer.config_file))
        self._plan_findings(plan)
        self._plan_tables(plan)
        self._plan_steps(plan, sql=sql)
        self._plan_estimate(plan)
        if not plan.blocking:
            target = str(book.path) if book.path else "PLAYBOOK"
            self.pair("next:", f"migrator execute {target}", width=6)

    def _plan_verdict(self, plan) -> None:
        blocked = plan.blocking
        warnings = [f for f in plan.findings if f.level == "warn"]
        warn_codes = len({f.code for f in warnings})
        about = (f"{plural(len(warnings), 'warning')} of {plural(warn_codes, 'kind')}"
                 if warn_codes > 1 else plural(len(warnings), "warning"))
        if blocked:
            codes = listing(dict.fromkeys(f.code for f in blocked), limit=4)
            self.prose(f"[bold red]blocked[/]: {plural(len(blocked), 'blocking finding')} ({escape(codes)}) "
                       f"and {about} — fix them and plan again")
        else:
            self.prose(f"[bold green]ready[/]: nothing blocks the move ({about})")

    def _plan_findings(self, plan) -> None:
        groups = finding_groups(plan.findings)
        problems = [(level, code, fs) for level, code, fs in groups if level != "ok"]
        passed = [(code, fs) for level, code, fs in groups if level == "ok"]
        self.line()
        self.markup(f"[bold]findings[/] by code ({plural(len(plan.findings), 'finding')}; "
                    "--json lists each one)")
        width = max((len(code) for _, code, _ in problems), default=0) + 2
        for level, code, fs in problems:
            subjects = list(dict.fromkeys(f.subject for f in fs if f.subject))
            if len(fs) == 1:
                text = fs[0].message
            else:
                text = subjects_text(code, subjects or [f.message for f in fs], fs[0].noun)
            self.prose(f"{LEVEL_STYLE[level]}{' ' * (6 - len(level))}[dim]{code:<{width}}[/]"
                       f"{escape(mask_secrets(text))}", hang=6 + width)
            hints = list(dict.fromkeys(f.hint for f in fs if f.hint))
            if len(fs) > 1:
                self.prose(f"[dim]e.g. {escape(mask_secrets(fs[0].message))}[/]", indent=6 + width)
            for hint in hints[:2]:
                self.prose(f"[dim]→ {escape(mask_secrets(hint))}[/]", indent=6 + width)
        if passed:
            names = ", ".join(code + (f" ×{len(fs)}" if len(fs) > 1 else "") for code, fs in passed)
            self.prose(f"{LEVEL_STYLE['ok']}    [dim]{plural(len(passed), 'check')} passed: "
                       f"{escape(names)}[/]", hang=6)
        for _, fs in passed:
            for f in fs:
                if f.code in ("index.deferred", "objects.moved"):
                    self.prose(f"[dim]{escape(mask_secrets(f.message))}[/]", indent=6)

    def _plan_tables(self, plan) -> None:
        from migrator.playbook import format_size

        snap = plan.snapshot
        tables = list(snap.tables.values())
        present = [t for t in tables if t.exists]
        rows = [t.estimated_rows for t in present]
        known = "?" if any(r is None for r in rows) else f"about {sum(r or 0 for r in rows):,}"
        self.line()
        self.markup(f"[bold]tables[/]: {plural(len(tables), 'table')}, {known} rows, "
                    f"{format_size(sum(t.copy_bytes for t in present))} of data, "
                    f"{format_size(sum(t.index_bytes for t in present))} of indexes")

        def notable(t) -> bool:
            return not t.exists or not t.identifies_rows or t.on_target == "has rows"

        shown = tables
        if len(tables) > TABLES_SHOWN:
            largest = sorted(present, key=lambda t: -t.copy_bytes)[:5]
            shown = [t for t in tables if notable(t) or t in largest]
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, show_edge=False)
        for name, justify in (("table", "left"), ("rows", "right"), ("data", "right"),
                              ("indexes", "right"), ("key", "left"), ("on target", "left")):
            table.add_column(name, justify=justify, no_wrap=True)
        for t in shown:
            if not t.exists:
                table.add_row(escape(str(t.name)), "", "", "", "[red]missing[/]", "")
                continue
            key = ("primary key" if t.primary_key and t.replica_identity == "default" else
                   f"identity {t.replica_identity}" if t.identifies_rows else "[red]none[/]")
            table.add_row(
                escape(str(t.name)),
                f"{t.estimated_rows:,}" if t.estimated_rows is not None else "?",
                format_size(t.copy_bytes), format_size(t.index_bytes), key,
                "[red]has rows[/]" if t.on_target == "has rows" else t.on_target,
            )
        self.console.print(table, soft_wrap=False)
        if len(shown) < len(tables):
            self.prose(f"[dim]the {plural(len(shown), 'largest or notable table')} of "
                       f"{len(tables):,}; `plan --json` lists every table[/]", indent=2)

    def _plan_steps(self, plan, *, sql: bool) -> None:
        self.line()
        total = sum(len(s.statements) for s in plan.steps)
        self.markup(f"[bold]steps[/] ({plural(total, 'statement')}"
                    + ("" if sql else "; --sql prints every one") + ")")
        if sql:
            for number, step in enumerate(plan.steps, 1):
                self._step(number, step.name, step.title, step.statements, step.notes)
            return
        width = max(len(s.name) for s in plan.steps) + 2
        for number, step in enumerate(plan.steps, 1):
            self.prose(f"{number}. [bold]{step.name:<{width}}[/]{escape(step.title)} "
                       f"[dim]({statement_counts(step.statements)})[/]", hang=3 + width)

    def _plan_estimate(self, plan) -> None:
        from migrator.playbook import format_duration, format_size

        est = plan.estimate
        rows = f"about {est.estimated_rows:,} rows, " if est.estimated_rows is not None else ""
        self.line()
        self.prose(
            f"[bold]estimate[/]: copy {rows}{format_size(est.bytes_to_copy)} of table data at "
            f"{format_size(est.copy_rate_bytes_per_s)}/s ≈ [bold]{format_duration(est.copy_seconds)}[/]"
            + (f"; then rebuild {format_size(est.index_bytes_to_rebuild)} of indexes"
               if est.index_bytes_to_rebuild else "")
        )

    def _step(self, number: int, name: str, title: str, statements, notes) -> None:
        """One step with its notes and every statement, grouped by where they run. SQL goes
        out whole, one statement per line, so a terminal never breaks it inside a token."""
        self.markup(f"[bold]{number}. {name}[/] — {escape(title)}")
        for note in notes:
            self.prose(f"[dim]{escape(mask_secrets(note))}[/]", indent=3)
        for on, run in groupby(statements, key=lambda statement: statement.on):
            self.line(f"   {mask_secrets(on)}:", style="cyan")
            self.verbatim("     " + _shown(statement).replace("\n", "\n     ") for statement in run)

    def rollback_plan(self, plan) -> None:
        """`rollback --dry-run`: the undo of each step, in the order the rollback runs them."""
        if self.json_mode:
            self.document(plan.to_dict())
            return
        if not plan.steps:
            self.markup("[bold]nothing to roll back[/]: no step of this move has run")
            return
        self.markup(f"[bold]rollback of {escape(plan.move)}[/] would run (dry run: nothing changed)")
        for number, (step, undo) in enumerate(plan.steps, 1):
            self._step(number, step.name, f"undo: {step.title}", undo.statements, undo.notes)

    def plan_summary(self, plan) -> None:
        if self.json_mode:
            return
        from migrator.playbook import format_duration, format_size

        levels = {level: sum(1 for f in plan.findings if f.level == level) for level in ("ok", "warn", "block")}
        self.err.print(f"  findings: [green]{levels['ok']} ok[/], [yellow]{levels['warn']} warn[/], "
                       f"[red]{levels['block']} block[/]; steps: {', '.join(s.name for s in plan.steps)}")
        est = plan.estimate
        self.err.print(f"  to copy: {format_size(est.bytes_to_copy)} in {plural(est.tables, 'table')}, "
                       f"about {format_duration(est.copy_seconds)}")
