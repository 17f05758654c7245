"""The facts the catalog model reads: immutable values, one identity per object
(schema and name as a value, composed with `sql.Identifier`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from migrator.playbook import TableName


@dataclass(frozen=True)
class ColumnFacts:
    name: str
    type: str                      # format_type(): schema-qualified unless pg_catalog
    not_null: bool
    default: str | None            # expression text, None for generated columns
    identity: str | None           # 'always' | 'by default'
    generated: str | None          # the expression of a generated column
    generated_kind: str | None     # 'stored' | 'virtual' (PostgreSQL 18)
    collation: str | None          # only when it differs from the type's default
    comment: str | None = None
    grants: tuple[Grant, ...] = ()  # column-level privileges (GRANT SELECT (col) ...)
    type_oid: int = 0               # the type's oid on this server (verify hashes by type)
    statistics: int | None = None   # ALTER COLUMN SET STATISTICS, when not the default
    compression: str | None = None  # 'p' pglz | 'l' lz4, when set on the column
    storage: str | None = None      # 'p' | 'e' | 'm' | 'x' when it differs from the type's
    local: bool = True              # False: inherited from the partitioned parent


@dataclass(frozen=True)
class ConstraintFacts:
    """A primary key, unique, check or exclusion constraint (foreign keys: ForeignKey)."""

    name: str
    kind: str                      # 'primary key' | 'unique' | 'check' | 'exclusion'
    definition: str
    comment: str | None = None
    inherited: bool = False        # a partition's copy of its parent's (made by the parent's)


@dataclass(frozen=True)
class TypeFacts:
    """A type a table's columns need that is not built in (directly or inside an array,
    domain, range or composite)."""

    schema: str
    name: str
    kind: str                      # 'enum' | 'domain' | 'composite' | 'range' | 'base' | ...
    extension: str | None          # the extension that provides it, if any
    labels: tuple[str, ...] = ()   # enum labels in sort order
    base: str | None = None        # a domain's base type
    not_null: bool = False         # a domain's NOT NULL
    default: str | None = None     # a domain's default expression
    checks: tuple[tuple[str, str], ...] = ()   # a domain's (constraint name, CHECK (...))
    attributes: tuple[tuple[str, str, str | None], ...] = ()  # a composite's (name, type, collation)
    subtype: str | None = None     # a range's subtype
    depends_on: tuple[TableName, ...] = ()     # the listed types this one is made of
    comment: str | None = None
    owner: str | None = None

    @property
    def identity(self) -> TableName:
        return TableName(self.schema, self.name)

    @property
    def qualified(self) -> str:
        return str(self.identity)

    @property
    def movable(self) -> bool:
        """Created by the move (not an extension's, and a kind DDL can make)."""
        return self.extension is None and self.kind in ("enum", "domain", "composite", "range")


@dataclass(frozen=True)
class IndexFacts:
    table: TableName
    name: str
    definition: str                # pg_get_indexdef(): a complete CREATE INDEX statement
    is_primary: bool
    is_replica_identity: bool
    is_constraint: bool            # a constraint depends on it (its own, or a foreign key's)
    constraints: tuple[str, ...] = ()
    is_unique: bool = False
    is_valid: bool = True
    size_bytes: int = 0
    owner_constraint: str | None = None   # the PK/unique/exclusion constraint that made it
    columns: tuple[str, ...] = ()         # key columns in order (empty: an expression is one)
    parent_index: TableName | None = None  # the partitioned index it is attached to
    comment: str | None = None

    @property
    def secondary(self) -> bool:
        """May be dropped for the bulk copy and rebuilt after: the apply worker does not
        need it and no constraint depends on it."""
        return not (self.is_primary or self.is_replica_identity or self.is_constraint)

    @property
    def qualified(self) -> TableName:
        return TableName(self.table.schema, self.name)


@dataclass(frozen=True)
class SequenceUse:
    """One column's use of one sequence: owned by it (serial, OWNED BY), its identity,
    and/or called from its default (nextval('seq'), a bare sequence counts too)."""

    table: TableName
    column: str
    sequence: TableName
    owned: bool
    identity: bool
    in_default: bool
    data_type: str = "bigint"
    start: int = 1
    increment: int = 1
    minimum: int = 1
    maximum: int = 2**63 - 1
    cache: int = 1
    cycle: bool = False


@dataclass(frozen=True)
class ForeignKey:
    name: str
    table: TableName               # the referencing table
    columns: tuple[str, ...]
    references: TableName          # the referenced table
    referenced_columns: tuple[str, ...]
    definition: str                # pg_get_constraintdef()
    crosses_group: bool            # exactly one of the two tables is in the group
    comment: str | None = None


@dataclass(frozen=True)
class TableRelation:
    """A relation that serves ordinary tables: the table itself, one of its indexes, its
    TOAST table or TOAST index, or a sequence its columns use (which may serve several).
    A lock on it is a use of those tables."""

    relid: int
    kind: str                      # 'table' | 'index' | 'toast' | 'sequence'
    tables: tuple[TableName, ...]


@dataclass(frozen=True)
class TriggerFacts:
    name: str
    definition: str                # pg_get_triggerdef(): a complete CREATE TRIGGER
    enabled: str                   # 'origin' | 'always' | 'replica' | 'disabled'
    function: str                  # schema-qualified name of the trigger function
    comment: str | None = None
    inherited: bool = False        # cloned from the partitioned parent's trigger


@dataclass(frozen=True)
class PolicyFacts:
    """A row-level security policy."""

    name: str
    command: str                   # '*' all | 'r' SELECT | 'a' INSERT | 'w' UPDATE | 'd' DELETE
    permissive: bool
    roles: tuple[str, ...]         # role names, or PUBLIC
    using: str | None
    check: str | None


@dataclass(frozen=True)
class Grant:
    grantee: str                   # a role name, or PUBLIC
    privileges: tuple[str, ...]
    grantable: tuple[str, ...] = ()  # the privileges held WITH GRANT OPTION


@dataclass(frozen=True)
class TableFacts:
    """One table of the group, as it is on the source (and whether the target has it)."""

    name: TableName
    exists: bool
    kind: str = "missing"          # 'table' | 'partitioned table' | 'view' | ... | 'missing'
    unlogged: bool = False
    partition_of: TableName | None = None
    partitions: tuple[TableName, ...] = ()
    owner: str | None = None
    owned_by_dsn_role: bool = False
    replica_identity: str = "default"    # 'default' | 'full' | 'index' | 'nothing'
    row_security: bool = False
    heap_bytes: int = 0
    toast_bytes: int = 0
    index_bytes: int = 0
    estimated_rows: int | None = None    # None: never analyzed
    columns: tuple[ColumnFacts, ...] = ()
    constraints: tuple[ConstraintFacts, ...] = ()
    indexes: tuple[IndexFacts, ...] = ()
    sequences: tuple[SequenceUse, ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = ()
    triggers: tuple[TriggerFacts, ...] = ()
    types: tuple[TypeFacts, ...] = ()
    extensions: tuple[str, ...] = ()
    grants: tuple[Grant, ...] = ()
    large_object_columns: tuple[str, ...] = ()
    on_target: str = "absent"            # 'absent' | 'empty' | 'has rows' | 'unknown'
    comment: str | None = None
    partition_key: str | None = None     # pg_get_partkeydef: 'RANGE (created_at)'
    partition_bound: str | None = None   # 'FOR VALUES FROM (...) TO (...)' | 'DEFAULT'
    options: tuple[str, ...] = ()        # storage parameters (reloptions): 'fillfactor=70'
    row_security_forced: bool = False
    policies: tuple[PolicyFacts, ...] = ()

    @property
    def copy_bytes(self) -> int:
        """What the initial copy moves: the heap and TOAST (indexes are built, not copied)."""
        return self.heap_bytes + self.toast_bytes

    @property
    def primary_key(self) -> ConstraintFacts | None:
        return next((c for c in self.constraints if c.kind == "primary key"), None)

    @property
    def replica_identity_index(self) -> IndexFacts | None:
        return next((i for i in self.indexes if i.is_replica_identity), None)

    @property
    def key(self) -> tuple[str, ...]:
        """The columns that identify a row: the primary key's, else the replica identity
        index's; empty when there is neither."""
        index = next((i for i in self.indexes if i.is_primary), None) or self.replica_identity_index
        return index.columns if index is not None else ()

    @property
    def identifies_rows(self) -> bool:
        """Can UPDATE and DELETE be replicated? (Postgres refuses them otherwise once
        the table is in a publication that publishes them.)"""
        if self.replica_identity == "full":
            return True
        if self.replica_identity == "index":
            return self.replica_identity_index is not None
        return self.replica_identity == "default" and self.primary_key is not None

    @property
    def secondary_indexes(self) -> tuple[IndexFacts, ...]:
        return tuple(i for i in self.indexes if i.secondary)

    @property
    def generated_columns(self) -> tuple[ColumnFacts, ...]:
        return tuple(c for c in self.columns if c.generated is not None)


@dataclass(frozen=True)
class RoutineFacts:
    """A routine the group needs: one its defaults, generated columns, constraints,
    index expressions, triggers or views call, or whose body uses group tables. Its
    identity is (schema, name, argument types)."""

    name: TableName                # (schema, name), composed with sql.Identifier
    arguments: str                 # oidvectortypes(proargtypes): the argument types, qualified
    definition: str                # pg_get_functiondef(): a complete CREATE FUNCTION ('' for an aggregate)
    comment: str | None = None
    kind: str = "function"         # 'function' | 'procedure' | 'aggregate' | 'window'
    sql_body: bool = False         # BEGIN ATOMIC: parsed at creation, so after what it uses
    aggregate: AggregateParts | None = None
    why: str = ""                  # why it moves, in words
    owner: str | None = None
    # The relations whose row types its signature uses (RETURNS SETOF a table): it is
    # created after them, as pg_dump orders it.
    after: tuple[TableName, ...] = ()

    @property
    def signature(self) -> str:
        """'"schema"."name"(args)': text for to_regprocedure(), never for composing SQL."""
        return f"{self.name.qualified}({self.arguments})"


@dataclass(frozen=True)
class AggregateParts:
    """What CREATE AGGREGATE needs (pg_aggregate), names as the server prints them."""

    arguments: str                 # pg_get_function_arguments()
    transition: str                # SFUNC
    state_type: str                # STYPE
    final: str | None = None
    combine: str | None = None
    initial: str | None = None     # INITCOND
    functions: tuple[TableName, ...] = ()   # the user functions among SFUNC, FINALFUNC, COMBINEFUNC


@dataclass(frozen=True)
class ViewFacts:
    """A view or materialized view that reads only the group's tables (or such views):
    it moves with the group, so the application's queries on it work on the target."""

    name: TableName
    materialized: bool
    definition: str                # pg_get_viewdef(): the query
    options: tuple[str, ...] = ()  # reloptions: check_option, security_barrier, ...
    reads: tuple[TableName, ...] = ()
    routines: tuple[tuple[TableName, str], ...] = ()   # (name, argument types) it calls
    comment: str | None = None
    owner: str | None = None
    grants: tuple[Grant, ...] = ()
    indexes: tuple[str, ...] = ()  # a materialized view's (pg_get_indexdef)
    types: tuple[TableName, ...] = ()    # the types its query names (casts, a composite's fields)
    extensions: tuple[str, ...] = ()     # extensions whose members its query uses


@dataclass(frozen=True)
class Crossing:
    """A view or routine that uses group tables and objects outside the group: after the
    move it works on neither side. `chain` says how the group reaches it, from the group's
    side (`trigger t on a`, `function f`): a trigger function reaches its table through
    NEW and OLD and may name no group table at all."""

    kind: str                      # 'view' | 'routine'
    name: str                      # as a person reads it (a routine with its arguments)
    inside: tuple[TableName, ...]
    outside: tuple[TableName, ...]
    writes_outside: bool = False
    chain: tuple[str, ...] = ()    # from the group to it: ('trigger t on public.a', 'function public.f()')
    moves: bool = False            # it moves all the same (the group needs it)

    @property
    def path(self) -> str:
        """'trigger t on a → function f → writes b (outside the group)'."""
        verb = "writes" if self.writes_outside else "reads"
        what = ", ".join(str(t) for t in self.outside)
        return " → ".join([*self.chain, f"{verb} {what} (outside the group)"])


@dataclass(frozen=True)
class Requirement:
    """Something an object that moves needs and that does not move with it: an operator,
    cast or operator class a user made, a type or routine the playbook excludes. The
    target must have it already, or `plan` blocks naming the chain."""

    kind: str                      # pg_identify_object_as_address's type: 'operator', 'cast', 'type', ...
    name: str                      # as a person reads it (pg_describe_object)
    address: tuple[str, tuple[str, ...], tuple[str, ...]]   # (type, object_names, object_args)
    chain: tuple[str, ...] = ()    # what needs it: ('view public.v',)


@dataclass(frozen=True)
class CollationFacts:
    """A collation a column uses that is not built in."""

    name: TableName
    provider: str                  # 'c' libc | 'i' icu | 'd' the database default
    collate: str | None
    ctype: str | None
    locale: str | None             # ICU (and builtin) locale
    deterministic: bool = True


@dataclass(frozen=True)
class SchemaFacts:
    """A schema (other than public) that holds something of the group, with its ACL."""

    name: str
    grants: tuple[Grant, ...] = ()
    comment: str | None = None
    owner: str | None = None
    listed: bool = False           # named in the playbook's `schemas:` (its owner, ACL and comment move)


@dataclass(frozen=True)
class SequenceFacts:
    """One sequence the group uses, once, however many columns use it."""

    name: TableName
    data_type: str
    start: int
    increment: int
    minimum: int
    maximum: int
    cache: int
    cycle: bool
    identity: bool                        # an identity column's: its table makes it
    owned_by: tuple[TableName, str] | None  # (table, column) of OWNED BY (serial)
    grants: tuple[Grant, ...] = ()
    owner: str | None = None                # set for a sequence no table owns
    comment: str | None = None


@dataclass(frozen=True)
class GroupCatalog:
    """Everything the group is and needs on one server, read at one moment."""

    tables: Mapping[TableName, TableFacts]          # in playbook order; missing ones too
    # The partitions under the group's partitioned tables, parents before children.
    partitions: Mapping[TableName, TableFacts] = field(default_factory=dict)
    types: tuple[TypeFacts, ...] = ()               # in creation order (dependencies first)
    sequences: tuple[SequenceFacts, ...] = ()
    routines: tuple[RoutineFacts, ...] = ()
    schemas: tuple[SchemaFacts, ...] = ()
    # Sequences the group uses that tables outside the group use too.
    shared_sequences: Mapping[TableName, tuple[TableName, ...]] = field(default_factory=dict)
    views: tuple[ViewFacts, ...] = ()               # that move, in creation order
    collations: tuple[CollationFacts, ...] = ()
    crossings: tuple[Crossing, ...] = ()            # views and routines that use both sides
    name_searched: tuple[str, ...] = ()             # routines only a name search could read
    left_behind: tuple[tuple[str, str], ...] = ()   # (object, why) it stays on the source
    # Routines the closure reaches whose body could not be analysed: (routine, why).
    unparsed: tuple[tuple[str, str], ...] = ()
    # Extensions what moves needs besides the tables' own (TableFacts.extensions):
    # extension -> the routines, views and types that need it.
    extensions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    requirements: tuple[Requirement, ...] = ()     # what moving objects need that does not move
    # Names in objects.include / objects.exclude that match no view, routine or type:
    # ('objects.include[1]', name).
    unmatched: tuple[tuple[str, TableName], ...] = ()

    @property
    def existing(self) -> list[TableFacts]:
        return [t for t in self.tables.values() if t.exists]

    @property
    def relations(self) -> list[TableFacts]:
        """Every table the move creates: the group's, then their partitions."""
        return self.existing + [t for t in self.partitions.values() if t.exists]

    @property
    def sequence_uses(self) -> tuple[SequenceUse, ...]:
        return tuple(u for t in self.relations for u in t.sequences)

    @property
    def partitioned(self) -> bool:
        return any(t.kind == "partitioned table" for t in self.existing)


@dataclass(frozen=True)
class ExistingObjects:
    """Which of the group's objects the other server already has (not ours to create,
    drop or grant on)."""

    schemas: frozenset[str] = frozenset()
    types: frozenset[TableName] = frozenset()
    sequences: frozenset[TableName] = frozenset()
    routines: frozenset[str] = frozenset()       # signatures
    tables: frozenset[TableName] = frozenset()
    views: frozenset[TableName] = frozenset()
    collations: frozenset[TableName] = frozenset()
    roles: frozenset[str] = frozenset()          # the owners the other side has
    current_user: str | None = None
    requirements: frozenset[str] = frozenset()   # the Requirement names it has
