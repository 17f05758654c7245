"""Checks on what the application reaches besides the tables: views, routines, the types
and extensions they need, and what they use that does not move.

After the cutover the application's queries run on the target, so what they read or
call, and what fires on their writes, must be there and find every table it uses there
(DESIGN sections 7 and 12). A crossing is told with the chain that reaches it from the
group, so a person sees why a routine that names no group table matters.
"""

from __future__ import annotations

from collections.abc import Iterator

from migrator.plan.finding import BLOCK, OK, WARN, Finding, codes, listing, plural
from migrator.plan.inspection import Snapshot
from migrator.playbook import Playbook
from migrator.postgres.catalog import Crossing


@codes(
    ("view.crosses_group", "no view reads group tables and tables outside the group"),
    ("routine.crosses_group", "no routine the group reaches uses tables outside the group (a write blocks, a read warns)"),
    ("routine.name_search", "routines whose SQL is built at run time were searched by name only"),
    ("routine.unparsed", "every routine the group reaches could be analysed"),
    ("objects.extension_missing", "the extensions moving routines, views and types need are on the target"),
    ("objects.missing_on_target", "what moving objects need and the move does not create is on the target"),
    ("objects.moved", "the views, routines and types the group needs move with it"),
    ("owner.missing", "the roles that own the group's tables and views exist on the target"),
)
def dependents(snapshot: Snapshot, playbook: Playbook, expected: frozenset[str]) -> Iterator[Finding]:
    catalog = snapshot.catalog
    if catalog is None or not catalog.existing:
        return
    bad = 0
    for crossing in catalog.crossings:
        finding = _crossing(crossing)
        bad += finding.level == BLOCK
        yield finding
    for name in catalog.name_searched:
        yield Finding(
            WARN, "routine.name_search", name,
            f"{name} builds SQL at run time (EXECUTE of a string); its text names a group table, so "
            "it may use the group",
            "if the application calls it on the group, add it to objects.include", noun="routine",
        )
    for name, why in catalog.unparsed:
        yield Finding(
            WARN, "routine.unparsed", name,
            f"{name} could not be analysed ({why}): what its body reads and writes is not known",
            "check what it uses by hand; objects.include moves it, objects.exclude leaves it behind",
            noun="routine",
        )
    target = snapshot.target
    on_tables = {e for t in catalog.relations for e in t.extensions}
    for extension, users in sorted(catalog.extensions.items()):
        if extension in target.extensions or extension in on_tables:
            continue  # a table needs it too: table.extension_missing says so
        bad += 1
        available = extension in target.available_extensions
        yield Finding(
            BLOCK, "objects.extension_missing", extension,
            f"{listing(users)} need{'s' if len(users) == 1 else ''} extension {extension}, which is not "
            f"installed on the target {target.display}",
            f'CREATE EXTENSION "{extension}" in the target database'
            if available else f"install the {extension} extension's package on the target server, "
            f'then CREATE EXTENSION "{extension}"',
            noun="extension",
        )
    present = snapshot.existing.requirements if snapshot.existing is not None else frozenset()
    for requirement in catalog.requirements:
        if requirement.name in present:
            continue
        bad += 1
        yield Finding(
            BLOCK, "objects.missing_on_target", requirement.name,
            f"{listing(requirement.chain)} need{'s' if len(requirement.chain) == 1 else ''} "
            f"{requirement.name}, which the move does not create and the target does not have",
            f"create {requirement.name} on the target first (or move it: objects.include, schemas:)",
            noun=requirement.kind,
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
        schema = snapshot.schema
        views = schema.views if schema else ()
        routines = schema.routines if schema else ()
        types = schema.types if schema else ()
        left = [name for name, _ in catalog.left_behind]
        yield Finding(
            OK, "objects.moved", "views and routines",
            f"{plural(len(views), 'view')}, {plural(len(routines), 'routine')} and {plural(len(types), 'type')} "
            "move with the group" + (f"; left behind: {listing(left)}" if left else ""),
        )


def _crossing(crossing: Crossing) -> Finding:
    inside, outside = listing(crossing.inside), listing(crossing.outside)
    if crossing.kind == "view":
        return Finding(
            BLOCK, "view.crosses_group", crossing.name,
            f"view {crossing.name} reads {inside} (in the group) and {outside} (outside it): "
            "after the move it would work on neither server",
            f"add {outside} to tables:, or change or drop the view (objects.exclude: leaves it "
            "behind, broken)",
        )
    writes = crossing.writes_outside
    if crossing.moves:
        # The group needs it (a trigger, a default, a view that moves calls it): it moves,
        # and on the target what it touches outside is not there.
        return Finding(
            BLOCK if writes else WARN, "routine.crosses_group", crossing.name,
            f"{crossing.path}: {crossing.name} moves with the group, and after the cutover "
            + ("its writes there fail" if writes else "its reads there fail or see nothing"),
            f"add {outside} to tables:, or change {crossing.name} to use only the group's tables",
            noun="routine",
        )
    uses = f"uses {inside} (in the group) and {outside} (outside it)" if crossing.inside else f"uses {outside}"
    return Finding(
        BLOCK if writes else WARN, "routine.crosses_group", crossing.name,
        f"{crossing.name} {uses}" + (", and writes outside the group" if writes else "")
        + ": after the move it works on neither server",
        f"add {outside} to tables:, or split the routine; objects.include moves it anyway, "
        "objects.exclude leaves it behind",
        noun="routine",
    )
