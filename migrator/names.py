"""The names of the objects a move creates inside Postgres, derived from the playbook.

One place decides them so that plan, execute, rollback, status and complete all look
for the same publication, subscription and slot. Every name starts with `migrator_`
and the playbook's slug (lowercase letters, digits, '_'; at most 40 characters), so
it needs no quoting and stays well under Postgres' 63-byte limit, and an operator
who finds one in pg_replication_slots knows which move left it there.
"""

from __future__ import annotations

from typing import Protocol

PREFIX = "migrator_"
REVERSE_SUFFIX = "_reverse"

# The tool's own schema, created on both servers. The sync marker is a row the
# cutover commits on the serving side after the pause; once the other side has
# applied it, everything committed before the pause has been applied too. Each move
# has a marker table of its own, published only by its own publications: a table
# shared by every move would be copied again by each new subscription, and collide
# with the rows an earlier move left on the target (the copy then fails forever).
SCHEMA = "migrator"
SYNC_MARKER_PREFIX = "sync_marker_"


class _Named(Protocol):
    @property
    def slug(self) -> str: ...


def _slug(move: _Named | str) -> str:
    return move if isinstance(move, str) else move.slug


def publication(move: _Named | str) -> str:
    """The source's publication of the group (forward replication)."""
    return PREFIX + _slug(move)


def subscription(move: _Named | str) -> str:
    """The target's subscription to `publication` (forward replication)."""
    return PREFIX + _slug(move)


def slot(move: _Named | str) -> str:
    """The logical replication slot on the source that the forward subscription uses."""
    return PREFIX + _slug(move)


def reverse_publication(move: _Named | str) -> str:
    """The target's publication of the group, for replication back after the cutover."""
    return PREFIX + _slug(move) + REVERSE_SUFFIX


def reverse_subscription(move: _Named | str) -> str:
    """The source's subscription to `reverse_publication`."""
    return PREFIX + _slug(move) + REVERSE_SUFFIX


def reverse_slot(move: _Named | str) -> str:
    """The slot on the target that the reverse subscription uses."""
    return PREFIX + _slug(move) + REVERSE_SUFFIX


def all_objects(move: _Named | str) -> frozenset[str]:
    """Every publication, subscription and slot name this move may create."""
    return frozenset(
        f(move)
        for f in (publication, subscription, slot, reverse_publication, reverse_subscription, reverse_slot)
    )


# The guards (DESIGN section 9), on both servers while the move is in flight: an event
# trigger pair that refuses DDL on the group, and a statement trigger on every table of
# the group whose function refuses writes on the copy that does not serve.
GUARD_SETTING = "migrator.guard"   # a session that sets it to 'bypass' passes the DDL guard


def ddl_guard(move: _Named | str) -> str:
    """The event trigger (ddl_command_end) that refuses DDL on the group."""
    return PREFIX + _slug(move) + "_ddl_guard"


def drop_guard(move: _Named | str) -> str:
    """The event trigger (sql_drop) that refuses dropping the group's objects."""
    return PREFIX + _slug(move) + "_drop_guard"


def ddl_guard_function(move: _Named | str) -> tuple[str, str]:
    """(schema, name) of the function both event triggers run."""
    return SCHEMA, ddl_guard(move)


def fence(move: _Named | str) -> str:
    """The statement trigger on each group table that carries the write fence."""
    return PREFIX + _slug(move) + "_fence"


def fence_function(move: _Named | str) -> tuple[str, str]:
    """(schema, name) of the fence triggers' function: it refuses on the side that does
    not serve and does nothing on the one that does."""
    return SCHEMA, fence(move)


def sync_marker(move: _Named | str) -> tuple[str, str]:
    """(schema, table) of this move's marker table; compose it with
    sql.Identifier(*sync_marker(move))."""
    return SCHEMA, SYNC_MARKER_PREFIX + _slug(move)
