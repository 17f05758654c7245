"""The catalog model: the ONE reader of everything a table group depends on.

`read_group` reads a server's catalogs once, inside the caller's transaction, into
immutable facts: the tables with their columns, constraints, indexes (with the
constraints that own or need them), foreign keys, triggers, grants (table and column)
and comments; the types the columns need, followed recursively through arrays,
domains, ranges and composites, in creation order; the sequences they use; the
routines their defaults, constraints, indexes and triggers call; the schemas that
hold all of it. `plan`'s findings and SQL, the schema step, index deferral and
rebuild, the sequence copy and the cutover all ask this model; nothing else in the
product queries pg_class, pg_index, pg_depend, pg_type or pg_proc for the group.

Definitions are read with `search_path` emptied for the duration, as pg_dump does,
so every name the server's deparsers print comes back schema-qualified and means the
same thing on the other server. Names are passed to the server as two text arrays
and matched exactly, so no name is ever parsed or quoted on the way; every object's
identity is a (schema, name) value composed only with `sql.Identifier`.
"""

from migrator.postgres.catalog.facts import (
    AggregateParts,
    CollationFacts,
    ColumnFacts,
    ConstraintFacts,
    Crossing,
    ExistingObjects,
    ForeignKey,
    Grant,
    GroupCatalog,
    IndexFacts,
    PolicyFacts,
    Requirement,
    RoutineFacts,
    SchemaFacts,
    SequenceFacts,
    SequenceUse,
    TableFacts,
    TableRelation,
    TriggerFacts,
    TypeFacts,
    ViewFacts,
)
from migrator.postgres.catalog.reader import (
    existing_objects,
    foreign_keys,
    guarded_objects,
    leaf_tables,
    read_group,
    schema_tables,
    secondary_indexes,
    sequences_used,
    table_facts,
    table_relations,
    target_tables,
    tree_facts,
    user_schemas,
)

__all__ = [
    "AggregateParts",
    "CollationFacts",
    "ColumnFacts",
    "ConstraintFacts",
    "Crossing",
    "ExistingObjects",
    "ForeignKey",
    "Grant",
    "GroupCatalog",
    "IndexFacts",
    "PolicyFacts",
    "Requirement",
    "RoutineFacts",
    "SchemaFacts",
    "SequenceFacts",
    "SequenceUse",
    "TableFacts",
    "TableRelation",
    "TriggerFacts",
    "TypeFacts",
    "ViewFacts",
    "existing_objects",
    "foreign_keys",
    "guarded_objects",
    "leaf_tables",
    "read_group",
    "schema_tables",
    "secondary_indexes",
    "sequences_used",
    "table_facts",
    "table_relations",
    "target_tables",
    "tree_facts",
    "user_schemas",
]
