"""Checks on what the application calls besides the tables: views and routines.

After the cutover the application's queries run on the target, so what they read or
call must be there and find every table it uses there (DESIGN section 7).
"""

from __future__ import annotations

from collections.abc import Iterator

from migrator.plan.finding import BLOCK, OK, WARN, Finding, codes, listing, plural
from migrator.plan.inspection import Snapshot
from migrator.playbook import Playbook


@codes(
    ("view.crosses_group", "no view reads group tables and tables outside the group"),
    ("routine.crosses_group", "no routine's body uses group tables and tables outside the group"),
    ("routine.name_search", "routines whose SQL is built at run time were searched by name only"),
    ("objects.moved", "the views and routines the group needs move with it"),
    ("owner.missing", "the roles that own the group's tables and views exist on the target"),
)
def dependents(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    catalog = snapshot.catalog
    if catalog is None or not catalog.existing:
        return
    bad = 0
    for crossing in catalog.crossings:
        inside, outside = listing(crossing.inside), listing(crossing.outside)
        if crossing.kind == "view":
            bad += 1
            yield Finding(
                BLOCK, "view.crosses_group", crossing.name,
                f"view {crossing.name} reads {inside} (in the group) and {outside} (outside it): "
                "after the move it would work on neither server",
                f"add {outside} to tables:, or change or drop the view (objects.exclude: leaves it "
                "behind, broken)",
            )
        else:
            writes = crossing.writes_outside
            bad += 1 if writes else 0
            yield Finding(
                BLOCK if writes else WARN, "routine.crosses_group", crossing.name,
                f"{crossing.name} uses {inside} (in the group) and {outside} (outside it)"
                + (", and writes outside the group" if writes else "")
                + ": after the move it works on neither server",
                f"add {outside} to tables:, or split the routine; objects.include moves it anyway, "
                "objects.exclude leaves it behind",
            )
    for name in catalog.name_searched:
        yield Finding(
            WARN, "routine.name_search", name,
            f"{name} builds SQL at run time (EXECUTE) or could not be parsed; its text names a "
            "group table, so it may use the group",
            "if the application calls it on the group, add it to objects.include",
        )
    existing = snapshot.existing
    if existing is not None and existing.current_user is not None:
        owned: dict[str, list[str]] = {}
        for t in catalog.relations:
            if t.owner:
                owned.setdefault(t.owner, []).append(str(t.name))
        for v in catalog.views:
            if v.owner:
                owned.setdefault(v.owner, []).append(str(v.name))
        for role, objects in sorted(owned.items()):
            if role not in existing.roles and role != existing.current_user:
                yield Finding(
                    WARN, "owner.missing", role,
                    f"role {role}, which owns {listing(objects)} on the source, does not exist on the "
                    f"target: there they will be owned by {existing.current_user}",
                    f"CREATE ROLE {role} on the target before the move to keep the ownership",
                )
    if not bad:
        views = snapshot.schema.views if snapshot.schema else ()
        routines = snapshot.schema.routines if snapshot.schema else ()
        left = [name for name, _ in catalog.left_behind]
        yield Finding(
            OK, "objects.moved", "views and routines",
            f"{plural(len(views), 'view')} and {plural(len(routines), 'routine')} move with the group"
            + (f"; left behind (objects.exclude): {listing(left)}" if left else ""),
        )
