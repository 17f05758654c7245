"""The group's schema as statements: catalog facts in, `sql.Composable`s out.

Nothing here reads a server: `migrator.postgres.catalog` reads the source once and
this module turns what it read into the DDL the target needs, in an order where every
object exists before what needs it (pg_dump's sections are the reference: schemas,
types, sequences, functions, tables, constraints, indexes, foreign keys, triggers,
ownership, grants, comments). The plan prints these statements and the schema step
runs them, so what a person approves is what runs.

Definitions are the server's own deparsed text (format_type, pg_get_expr,
pg_get_constraintdef, pg_get_indexdef, pg_get_triggerdef, pg_get_functiondef), read
with an empty search_path; every identifier is composed with `sql.Identifier`.
"""

from migrator.postgres.ddl.indexes import DeferredIndex
from migrator.postgres.ddl.privileges import AppPrivilege
from migrator.postgres.ddl.schema import GroupSchema, group_schema

__all__ = [
    "AppPrivilege",
    "DeferredIndex",
    "GroupSchema",
    "group_schema",
]
