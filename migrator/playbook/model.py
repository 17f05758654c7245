"""The playbook: a YAML file read into one validated, immutable `Playbook`.

Reading happens in three passes so that a user sees every problem at once, each on
one line that starts with the field path in the playbook's own terms:

1. YAML -> plain data, then `${VAR}` interpolation of string values (after parsing,
   so an environment variable can never inject YAML structure);
2. field-by-field validation by the pydantic models below;
3. rules that relate several fields (duplicates, source == target), run on the raw
   data so they are reported even when pass 2 found problems elsewhere.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, get_args

import psycopg
import yaml
from psycopg.conninfo import conninfo_to_dict
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainValidator,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from migrator.errors import PlaybookError
from migrator.masking import mask_secrets
from migrator.playbook.relations import relations
from migrator.playbook.tables import TableName, _table_name
from migrator.playbook.units import (
    _kind,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)
from migrator.postgres.connection import describe, server_addresses

__all__ = [
    "SESSION_CLIENTS",
    "CutoverSettings",
    "EntryCommand",
    "IndexSettings",
    "PgBouncerEntry",
    "Playbook",
    "RestartSettings",
    "Server",
    "load_playbook",
    "parse_playbook",
]

# ---------------------------------------------------------------------------
# Models


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {_kind(value)}")
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _check_dsn(dsn: str) -> str:
    """Refuse a DSN libpq cannot parse, without echoing any part of it back."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ValueError(
            f"not a valid connection string ({_libpq_reason(exc)}) — "
            "use postgresql://user@host:5432/dbname or 'host=... dbname=...'"
        ) from None
    port = params.get("port")
    if port and not all(p.strip().isdigit() for p in port.split(",")):
        raise ValueError(f"port {port!r} is not a number")
    try:
        server_addresses(dsn)
    except ValueError as exc:
        # libpq takes one port for every host, or one per host.
        raise ValueError(f"{exc}: give one port, or one port per host") from None
    return dsn


def _libpq_reason(exc: Exception) -> str:
    # libpq quotes the offending fragment of the DSN, which may be part of a password;
    # keep only quoted punctuation such as "=" that tells the user what is missing.
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unparseable"
    return re.sub(r'"([^"]*)"', lambda m: m[0] if re.fullmatch(r"\W", m[1]) else '"…"', first)


def _duration(value: Any, info: ValidationInfo) -> float:
    # Python callers pass seconds; only a playbook author must spell out the unit.
    from_playbook = bool(info.context and info.context.get("playbook"))
    if isinstance(value, int | float) and not isinstance(value, bool) and not from_playbook:
        return float(value)
    return parse_duration(value)


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError(f"must be greater than 0, got {format_duration(value)}")
    return value


Text = Annotated[str, PlainValidator(_text)]
Dsn = Annotated[str, PlainValidator(lambda value: _check_dsn(_text(value)))]
Duration = Annotated[float, BeforeValidator(_duration)]
PositiveDuration = Annotated[float, BeforeValidator(_duration), AfterValidator(_positive)]
Size = Annotated[int, BeforeValidator(parse_size)]


class _Section(BaseModel):
    # hide_input: a ValidationError raised by direct construction must not print a DSN.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


class Server(_Section):
    """One end of the move. Its repr shows user@host:port/dbname, never the password."""

    dsn: Dsn

    @property
    def display(self) -> str:
        return describe(self.dsn)

    def __repr_args__(self) -> Iterator[tuple[str, Any]]:
        yield "display", self.display

    def __str__(self) -> str:
        return self.display


class EntryCommand(_Section):
    """Shell commands (ssh, kubectl exec) that reroute a PgBouncer whose config the tool
    cannot write: `prepare` gets the new `[databases]` line on stdin before the pause,
    `activate` makes it live inside it, `show` prints the current value (see route.py)."""

    prepare: Text
    activate: Text
    show: Text | None = None
    timeout: PositiveDuration = 1.0


def _path_text(value: Any) -> Any:
    # Path() would accept '' as '.', which is never a PgBouncer config file.
    return None if value is None else _text(value)


class PgBouncerEntry(_Section):
    """A PgBouncer whose [databases] entry for the group is paused and rerouted.

    The entry is rerouted one of three ways: `config_file` alone (the tool rewrites
    the entry in it), `include_file` (a small file of the tool's own holding only the
    group's entries, which the main config pulls in with `%include`; `config_file`,
    if given too, is only read, to check that it does), or `command`."""

    admin_dsn: Dsn
    database: Text
    config_file: Annotated[Path | None, BeforeValidator(_path_text)] = None
    include_file: Annotated[Path | None, BeforeValidator(_path_text)] = None
    command: EntryCommand | None = None

    @model_validator(mode="after")
    def _one_way_to_reroute(self) -> PgBouncerEntry:
        if self.command is not None and (self.config_file or self.include_file):
            raise ValueError("give either command or config_file/include_file, not both: "
                             "a PgBouncer rerouted by command has its config where the tool cannot write it")
        if self.command is None and self.config_file is None and self.include_file is None:
            raise ValueError("say how to reroute the entry: config_file (rewritten), include_file (a file of "
                             "the tool's own that the config %includes) or command")
        return self

    @property
    def entry_file(self) -> Path | None:
        """The file the tool rewrites: the include file, or the config file itself."""
        if self.command is not None:
            return None
        return self.include_file or self.config_file

    @property
    def route_key(self) -> str:
        """Names this entry's route in the checkpoint (the entry file, as before)."""
        file = self.entry_file
        return str(file) if file is not None else f"command {describe(self.admin_dsn)}/{self.database}"

    def __repr_args__(self) -> Iterator[tuple[str, Any]]:
        yield "admin", describe(self.admin_dsn)
        yield "database", self.database
        yield "route", self.route_key


# What the cutover does with the clients of an entry PgBouncer pools in session mode
# (PAUSE waits for them to disconnect): refuse such an entry (plan blocks), or close
# its client connections after `grace` inside the pause, so they reconnect to the new route.
SESSION_CLIENTS = ("refuse", "close")


class CutoverSettings(_Section):
    max_pause: PositiveDuration = 2.0
    grace: Duration = 0.5
    max_lag: Size = 16 * 1024**2
    session_clients: str = "refuse"

    @field_validator("session_clients", mode="before")
    @classmethod
    def _known_session_clients(cls, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected text, got {_kind(value)}")
        if value not in SESSION_CLIENTS:
            raise ValueError(f"{value!r} is not one of {', '.join(SESSION_CLIENTS)} — close disconnects the "
                             "session clients of the group's entry after grace inside the pause")
        return value


    @field_validator("grace")
    @classmethod
    def _grace_not_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError(f"must not be negative, got {format_duration(value)}")
        return value

    @field_validator("max_lag")
    @classmethod
    def _positive_lag(cls, value: int) -> int:
        if value <= 0:
            raise ValueError(f"must be greater than 0, got {format_size(value)}")
        return value

    @model_validator(mode="after")
    def _grace_fits_in_pause(self) -> CutoverSettings:
        # Cancelling in-flight queries happens inside the pause; a grace as long as the
        # pause would leave no time to catch up and switch before the pause limit.
        if self.grace >= self.max_pause:
            raise ValueError(
                f"grace ({format_duration(self.grace)}) must be shorter than "
                f"max_pause ({format_duration(self.max_pause)})"
            )
        return self


class IndexSettings(_Section):
    defer: StrictBool = True


class RestartSettings(_Section):
    """How long a server or PgBouncer that stops answering (a restart, a failover) is
    waited for before the command gives up with the cause: `execute` and `rollback` do
    their step again, `verify` starts over, `status --watch` shows it."""

    wait: PositiveDuration = 60.0


class ObjectSettings(_Section):
    """Views, routines, types and domains to move beyond those detected (a routine whose
    body builds its SQL at run time), or to leave behind though detected. A name that
    matches none of them on the source is a playbook error, found by `plan`."""

    include: tuple[Annotated[TableName, PlainValidator(_table_name)], ...] = ()
    exclude: tuple[Annotated[TableName, PlainValidator(_table_name)], ...] = ()


_NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}")
ALL_SCHEMAS = "all"


def _schemas(value: Any) -> tuple[str, ...] | str | None:
    """`schemas: [public, billing]` or `schemas: all` (every schema a user made)."""
    if value is None or value == ALL_SCHEMAS:
        return value
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list of schema names or 'all', got {_kind(value)}")
    if not value:
        raise ValueError("the list is empty — name at least one schema, or write schemas: all")
    names: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"[{index}]: expected a schema name, got {_kind(item)}")
        name = _schema_name(item.strip())
        if name in names:
            raise ValueError(f"[{index}]: schema {item} is listed twice")
        names.append(name)
    return tuple(names)


def _schema_name(text: str) -> str:
    """A schema name as Postgres reads it: folded to lower case unless double-quoted."""
    if len(text) > 1 and text.startswith('"') and text.endswith('"'):
        return text[1:-1].replace('""', '"')
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", text):
        raise ValueError(f"{text!r} is not a schema name — a name with other characters must be "
                         """double-quoted, and in YAML the quotes need quoting: '"My Schema"'""")
    return text.lower()


class Playbook(_Section):
    """A validated playbook; build it with `load_playbook` or `parse_playbook`.

    Rules that relate several fields (duplicate tables or PgBouncers, source equal to
    target) are checked by those two functions, which report them with their index.
    """

    name: str
    source: Server
    target: Server
    tables: tuple[Annotated[TableName, PlainValidator(_table_name)], ...] = ()
    # Whole-database mode: every table, view, routine, type and sequence of these schemas
    # moves ('all': every schema a user made). `tables` then lists the schemas' tables once
    # the source has been read (migrator.move.group), `group_read` says it has.
    schemas: Annotated[tuple[str, ...] | str | None, BeforeValidator(_schemas)] = None
    app_roles: tuple[Text, ...] = ()
    pgbouncers: tuple[PgBouncerEntry, ...] = ()
    cutover: CutoverSettings = CutoverSettings()
    indexes: IndexSettings = IndexSettings()
    objects: ObjectSettings = ObjectSettings()
    restarts: RestartSettings = RestartSettings()
    path: Path | None = None
    group_read: bool = False

    @model_validator(mode="after")
    def _tables_or_schemas(self) -> Playbook:
        if not self.tables and self.schemas is None:
            raise ValueError("tables: field required — name the tables to move, or move whole schemas "
                             "with schemas: [public, ...] (or schemas: all)")
        return self

    @property
    def whole_database(self) -> bool:
        """Whole-database mode: the playbook names schemas, everything in them moves."""
        return self.schemas is not None

    @property
    def schema_names(self) -> tuple[str, ...]:
        """The whole-database mode's schemas, once read ('all' resolved); () otherwise."""
        return self.schemas if isinstance(self.schemas, tuple) else ()

    def with_group(self, tables: list[TableName], schemas: list[str]) -> Playbook:
        """This playbook with its whole-database group read from the source."""
        listed = list(self.tables)
        return self.model_copy(update={"tables": tuple(listed + [t for t in tables if t not in listed]),
                                       "schemas": tuple(schemas), "group_read": True})

    @model_validator(mode="before")
    @classmethod
    def _empty_section_means_defaults(cls, data: Any) -> Any:
        # `cutover:` with every setting commented out parses as null; treat it like
        # an absent section rather than as a type error.
        if isinstance(data, dict):
            optional = ("app_roles", "pgbouncers", "cutover", "indexes", "objects", "restarts", "schemas")
            return {k: v for k, v in data.items() if not (k in optional and v is None)}
        return data

    @field_validator("name", mode="before")
    @classmethod
    def _valid_name(cls, value: Any) -> str:
        # The name becomes part of replication slot and publication names, which
        # Postgres limits to 63 bytes and which we create unquoted.
        if not isinstance(value, str):
            raise ValueError(f"expected text, got {_kind(value)}")
        if not _NAME.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a valid name — use 1 to 40 lowercase letters, digits, "
                "'-' or '_', starting with a letter (e.g. files-partition)"
            )
        return value

    @field_validator("tables", mode="before")
    @classmethod
    def _some_tables(cls, value: Any) -> Any:
        if isinstance(value, list | tuple) and not value:
            raise ValueError("the list is empty — name at least one table, e.g. public.files")
        return value

    @property
    def slug(self) -> str:
        """The name as it appears inside Postgres object names (no '-')."""
        return self.name.replace("-", "_")


# `path` records where the playbook came from, `group_read` that its whole-database
# group was read; neither is something a user writes.
_INTERNAL = ("path", "group_read")
_YAML_KEYS = {
    model: [key for key in model.model_fields if key not in _INTERNAL]
    for model in (Playbook, Server, PgBouncerEntry, EntryCommand, CutoverSettings, IndexSettings, ObjectSettings,
                  RestartSettings)
}


# ---------------------------------------------------------------------------
# Loading


def load_playbook(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Playbook:
    """Read, interpolate and validate the playbook at path, or raise PlaybookError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlaybookError("file not found", source=str(path)) from None
    except IsADirectoryError:
        raise PlaybookError("is a directory, not a playbook file", source=str(path)) from None
    except UnicodeDecodeError:
        raise PlaybookError("is not UTF-8 text", source=str(path)) from None
    except OSError as exc:
        raise PlaybookError(f"cannot read the file: {exc.strerror}", source=str(path)) from None
    return _build(text, source=str(path), env=env, path=path)


def parse_playbook(
    text: str, *, source: str = "<playbook>", env: Mapping[str, str] | None = None
) -> Playbook:
    """Validate playbook text; source names it in error messages."""
    return _build(text, source=source, env=env, path=None)


def _build(text: str, *, source: str, env: Mapping[str, str] | None, path: Path | None) -> Playbook:
    data = _read_yaml(text, source)
    if not isinstance(data, dict):
        found = "an empty file" if data is None else _kind(data)
        raise PlaybookError(
            "the playbook must be a mapping of keys such as name:, source:, tables:; "
            f"found {found}",
            source=source,
        )
    env = os.environ if env is None else env
    unresolved: dict[str, str] = {}
    data = _interpolate(data, (), env, unresolved)
    problems = list(unresolved.values())
    for key in _INTERNAL:
        if key in data:
            problems.append(_unknown_key((), key))
            data = {k: v for k, v in data.items() if k != key}

    playbook = None
    try:
        playbook = Playbook.model_validate({**data, "path": path}, context={"playbook": True})
    except ValidationError as exc:
        problems += _translate(exc, unresolved)
    problems += [
        problem
        for involved, problem in relations(data)
        if not any(_under(where, unresolved) for where in involved)
    ]

    if problems or playbook is None:
        raise PlaybookError([mask_secrets(p) for p in problems], source=source)
    return playbook


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice (PyYAML would keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 — a SafeLoader subclass
    except yaml.YAMLError as exc:
        # str(exc) quotes the offending lines, which may hold a DSN with a password.
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = getattr(exc, "problem", None) or "not valid YAML"
        raise PlaybookError(f"{where}{what}", source=source) from None


# ${VAR}, ${VAR:-default}; $${ is a literal ${.
_REFERENCE = re.compile(
    r"\$\$\{|\$\{(?P<var>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}|\$\{"
)


def _interpolate(
    value: Any, loc: tuple[Any, ...], env: Mapping[str, str], unresolved: dict[str, str]
) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, (*loc, k), env, unresolved) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*loc, i), env, unresolved) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        where = _path(loc)
        if match[0] == "$${":
            return "${"
        if match["var"] is None:
            unresolved.setdefault(
                where,
                f"{where}: '${{' must be followed by a variable name and '}}', e.g. ${{PGPASS}}",
            )
            return ""
        found = env.get(match["var"])
        if match["default"] is not None and not found:
            return match["default"]
        if found is None:
            unresolved.setdefault(where, f"{where}: environment variable {match['var']} is not set")
            return ""
        return found

    return _REFERENCE.sub(substitute, value)


# ---------------------------------------------------------------------------
# Turning pydantic's errors into one line each


_EXPECTED = {
    "string_type": "text",
    "tuple_type": "a list",
    "list_type": "a list",
    "bool_type": "true or false",
    "int_type": "a whole number",
    "float_type": "a number",
    "path_type": "a file path",
    "dict_type": "a mapping",
}


def _translate(exc: ValidationError, unresolved: Mapping[str, str]) -> list[str]:
    errors = exc.errors(include_url=False)
    # A misspelt key also makes the real key "missing"; the suggestion says it all.
    suggested = {
        (e["loc"][:-1], _suggest(e["loc"][:-1], e["loc"][-1]))
        for e in errors
        if e["type"] == "extra_forbidden"
    }
    problems = []
    for error in errors:
        loc = error["loc"]
        if error["type"] != "extra_forbidden" and _under(_path(loc), unresolved):
            continue
        if error["type"] == "missing" and (loc[:-1], loc[-1]) in suggested:
            continue
        problems.append(_problem(error))
    return problems


def _problem(error: Any) -> str:
    loc, kind, value = error["loc"], error["type"], error.get("input")
    if kind == "extra_forbidden":
        return _unknown_key(loc[:-1], loc[-1])
    if kind == "missing":
        message = "field required"
    elif kind == "value_error":
        message = str(error["ctx"]["error"])
    elif kind in ("model_type", "model_attributes_type", "dataclass_type"):
        keys = ", ".join(_YAML_KEYS.get(_model_at(loc), []))
        message = f"expected a mapping with keys {keys}, got {_kind(value)}"
    elif kind in _EXPECTED:
        message = f"expected {_EXPECTED[kind]}, got {_kind(value)}"
    elif kind == "string_too_short":
        message = "must not be empty"
    else:
        message = error["msg"].splitlines()[0]
    where = _path(loc)
    return f"{where}: {message}" if where else message


def _unknown_key(parent: tuple[Any, ...], key: Any) -> str:
    suggestion = _suggest(parent, key)
    hint = f" (did you mean '{suggestion}'?)" if suggestion else ""
    where = _path(parent)
    return f"{where + ': ' if where else ''}unknown key '{key}'{hint}"


def _suggest(parent: tuple[Any, ...], key: Any) -> str | None:
    known = _YAML_KEYS.get(_model_at(parent), [])
    matches = difflib.get_close_matches(str(key), known, n=1)
    return matches[0] if matches else None


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model that validates the mapping at loc (list indices are skipped)."""
    model: type[BaseModel] = Playbook
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        candidates = (annotation, *get_args(annotation))
        models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not models:
            return None
        model = models[0]
    return model


def _path(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _under(where: str, unresolved: Mapping[str, str]) -> bool:
    return any(where == u or where.startswith((u + ".", u + "[")) for u in unresolved)
