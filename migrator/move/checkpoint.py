"""What each step keeps in the checkpoint store: one typed, versioned model per step.

A step's data outlives the process that wrote it: the next run, the watchdog,
`status`, `report` and `rollback --dry-run` read it, maybe with another version of the
tool. So it is read and written through these models only, never as a dict read by
string keys. Each model carries `version`; a checkpoint written before the field
existed is version 1 (the same shape), one written by a newer tool is refused with a
clear message rather than half understood.

The JSON shapes are those of the checkpoints the tool wrote before the models existed
(lists for identities, the catalog model's own dicts for indexes), so a move begun by
an earlier version resumes and rolls back.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from migrator.errors import OperationFailed
from migrator.move.phases import CutoverPhase, DirectionName
from migrator.playbook import TableName
from migrator.postgres.connection import Side
from migrator.postgres.ddl import AppPrivilege, DeferredIndex

VERSION = 1


class StepData(BaseModel):
    """The base of every step's checkpoint data."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)
    step: ClassVar[str]
    version: int = VERSION


class PreflightData(StepData):
    step: ClassVar[str] = "preflight"
    # Each PgBouncer's group entry as it was before the move (by route_key): what a
    # rollback writes back, and what the reroute keeps of the entry's own options.
    original_entries: dict[str, str] = {}
    # server_version_num of each side when the move began: what the statements of
    # later steps depend on (a 16+ subscriber's run_as_owner), rendered without a server.
    source_version: int | None = None
    target_version: int | None = None


class SchemaData(StepData):
    step: ClassVar[str] = "schema"
    intent: bool = False       # the DDL was about to run (or ran): the objects are this move's
    created_schemas: list[str] = []
    created_types: list[tuple[str, str, str]] = []                   # schema, name, kind
    created_functions: list[tuple[str, str, str, str]] = []          # schema, name, arguments, kind
    created_views: list[tuple[str, str, bool]] = []                  # schema, name, materialized
    created_sequences: list[tuple[str, str]] = []
    app_privileges: list[tuple[str, str, str, str, str, str | None]] = []   # AppPrivilege.to_list()
    sequences: list[tuple[str, str]] = []                            # every sequence the group uses
    indexes: list[dict[str, Any]] = []                               # DeferredIndex.to_dict()
    partitioned: bool = False

    @property
    def privileges(self) -> list[AppPrivilege]:
        return [AppPrivilege.from_list(p) for p in self.app_privileges]

    @property
    def sequence_names(self) -> list[TableName]:
        return [TableName(*s) for s in self.sequences]

    @property
    def secondary_indexes(self) -> list[DeferredIndex]:
        return [DeferredIndex.from_dict(i) for i in self.indexes]

    @property
    def materialized_views(self) -> list[TableName]:
        return [TableName(s, n) for s, n, materialized in self.created_views if materialized]


class DeferIndexesData(StepData):
    step: ClassVar[str] = "defer-indexes"
    dropped: list[dict[str, Any]] = []                               # DeferredIndex.to_dict()

    @property
    def indexes(self) -> list[DeferredIndex]:
        return [DeferredIndex.from_dict(i) for i in self.dropped]


class ReplicateData(StepData):
    step: ClassVar[str] = "replicate"
    bytes_total: int | None = None


class RebuildIndexesData(StepData):
    step: ClassVar[str] = "rebuild-indexes"


class PrepareReverseData(StepData):
    step: ClassVar[str] = "prepare-reverse"


class CutoverData(StepData):
    """Where the cutover stands. `phase` and `undo` are what the next run, the watchdog
    and `status` decide by: written before the pause, and at its point of no return."""

    step: ClassVar[str] = "cutover"
    # A phase an older version recorded (`sync_marker`) reads as before the point of no return.
    phase: CutoverPhase | str | None = None
    direction: DirectionName = DirectionName.FORWARD
    serving: Side = Side.SOURCE
    pause_started: float | None = None
    # Whether the attempt switched the app's table privileges around the pause (every
    # relation fenced) or inside it: recovery finishes the same sequence.
    fenced: bool | None = None
    # The undo log of the attempt in flight: the inverse of every action of the pause,
    # written before the first PAUSE (see migrator.move.undo).
    undo: list[dict[str, Any]] = []
    # The watchdog of the attempt in flight (pid, host): the next run waits for it to be
    # done before it runs the same undo log.
    watchdog: dict[str, Any] | None = None
    last_window: dict[str, Any] | None = None
    history: list[dict[str, Any]] = []


class DdlData(StepData):
    """`migrator ddl`: the change being applied, until it is on both sides."""

    step: ClassVar[str] = "ddl"
    pending: dict[str, Any] | None = None


MODELS: dict[str, type[StepData]] = {m.step: m for m in (
    PreflightData, SchemaData, DeferIndexesData, ReplicateData, RebuildIndexesData, PrepareReverseData,
    CutoverData, DdlData)}


def model_for(step: str) -> type[StepData]:
    try:
        return MODELS[step]
    except KeyError:
        raise OperationFailed(f"no checkpoint model for step {step!r}") from None


def load(step: str, data: dict) -> StepData:
    """A step's checkpoint data as its model; refused with a clear message when a newer
    tool wrote it or it cannot be read."""
    model = model_for(step)
    version = data.get("version", 1)
    if not isinstance(version, int) or version > VERSION:
        raise OperationFailed(
            f"the checkpoint of step {step!r} was written by a newer migrator (checkpoint version {version}, "
            f"this one reads up to {VERSION})", hint="run the version of migrator that began this move")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or step}: {e['msg']}" for e in exc.errors()[:3])
        raise OperationFailed(f"the checkpoint of step {step!r} cannot be read: {problems}",
                              hint="it was written by another version of migrator, or edited by hand") from None


def dump(data: StepData) -> dict:
    """The JSON-ready form that the store keeps."""
    return data.model_dump(mode="json")


def merged(step: str, current: dict, changes: dict) -> dict:
    """`current` with `changes` applied, checked by the step's model; the store's form."""
    return dump(load(step, {**current, **_plain(changes)}))


def _plain(changes: dict) -> dict:
    """Values as the model takes them (a model, an enum, tuples: the JSON form)."""
    out = {}
    for key, value in changes.items():
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        out[key] = value
    return out
