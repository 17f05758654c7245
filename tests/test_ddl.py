"""The group's DDL from catalog facts, with no server: order, quoting, grants, comments."""

from __future__ import annotations

from migrator.playbook import TableName
from migrator.postgres.catalog import (
    ColumnFacts,
    ConstraintFacts,
    ExistingObjects,
    ForeignKey,
    Grant,
    GroupCatalog,
    IndexFacts,
    RoutineFacts,
    SchemaFacts,
    TableFacts,
    TypeFacts,
)
from migrator.postgres.catalog.reader import _creation_order
from migrator.postgres.ddl import (
    AppPrivilege,
    DeferredIndex,
    group_schema,
)
from migrator.postgres.grants import switch_statements
from migrator.postgres.statement import Statement

ACCOUNTS, ORDERS = TableName("public", "accounts"), TableName("public", "orders")


def text(statement) -> str:
    return Statement("target", statement).text


def column(name, type_="text", **kw) -> ColumnFacts:
    return ColumnFacts(name=name, type=type_, not_null=kw.pop("not_null", False), default=None, identity=None,
                       generated=None, generated_kind=None, collation=None, **kw)


def pk(table: TableName) -> tuple[ConstraintFacts, IndexFacts]:
    name = f"{table.name}_pkey"
    return (ConstraintFacts(name, "primary key", "PRIMARY KEY (id)"),
            IndexFacts(table=table, name=name, definition=f"CREATE UNIQUE INDEX {name} ON {table} (id)",
                       is_primary=True, is_replica_identity=False, is_constraint=True, constraints=(name,),
                       owner_constraint=name))


def fk_onto_unique_index() -> GroupCatalog:
    fk = ForeignKey(name="orders_account_email_fkey", table=ORDERS, columns=("account_email",),
                    references=ACCOUNTS, referenced_columns=("email",),
                    definition="FOREIGN KEY (account_email) REFERENCES public.accounts(email)",
                    crosses_group=False, comment="by email")
    email = IndexFacts(table=ACCOUNTS, name="accounts_email",
                       definition="CREATE UNIQUE INDEX accounts_email ON public.accounts USING btree (email)",
                       is_primary=False, is_replica_identity=False, is_constraint=True,
                       constraints=(fk.name,), is_unique=True)
    note = IndexFacts(table=ORDERS, name="orders_note",
                      definition="CREATE INDEX orders_note ON public.orders USING btree (note)",
                      is_primary=False, is_replica_identity=False, is_constraint=False, comment="it's for search")
    a_pk, a_pk_index = pk(ACCOUNTS)
    o_pk, o_pk_index = pk(ORDERS)
    accounts = TableFacts(
        name=ACCOUNTS, exists=True, kind="table",
        columns=(column("id", "bigint", not_null=True),
                 column("email", comment="login", grants=(Grant("reporting", ("SELECT", "UPDATE")),
                                                          Grant("app", ("SELECT",))))),
        constraints=(a_pk,), indexes=(a_pk_index, email), foreign_keys=(fk,), comment="who pays",
        grants=(Grant("app", ("INSERT", "SELECT"), ()), Grant("PUBLIC", ("SELECT",), ("SELECT",))),
    )
    orders = TableFacts(
        name=ORDERS, exists=True, kind="table",
        columns=(column("id", "bigint", not_null=True), column("account_email"), column("note")),
        constraints=(o_pk,), indexes=(o_pk_index, note), foreign_keys=(fk,),
    )
    return GroupCatalog(tables={ACCOUNTS: accounts, ORDERS: orders})


def test_a_foreign_key_onto_a_plain_unique_index_comes_after_the_index():
    statements = [text(s) for s in group_schema(fk_onto_unique_index(), ExistingObjects(), ["app"]).statements()]
    index = statements.index("CREATE UNIQUE INDEX accounts_email ON public.accounts USING btree (email)")
    fk = next(i for i, s in enumerate(statements) if "ADD CONSTRAINT \"orders_account_email_fkey\"" in s)
    assert index < fk
    # The primary keys come with their constraints, not as indexes of their own.
    assert not any(s.startswith("CREATE UNIQUE INDEX accounts_pkey") for s in statements)


def test_the_index_a_foreign_key_needs_is_not_deferred():
    schema = group_schema(fk_onto_unique_index(), ExistingObjects(), ["app"])
    assert [i.name for i in schema.secondary_indexes] == ["orders_note"]


def test_grants_comments_and_app_privileges():
    schema = group_schema(fk_onto_unique_index(), ExistingObjects(), ["app"])
    statements = [text(s) for s in schema.statements()]
    assert 'GRANT SELECT ("email") ON TABLE "public"."accounts" TO "reporting"' in statements
    assert 'GRANT UPDATE ("email") ON TABLE "public"."accounts" TO "reporting"' in statements
    assert 'GRANT SELECT ON TABLE "public"."accounts" TO PUBLIC WITH GRANT OPTION' in statements
    assert not any('TO "app"' in s for s in statements), "app roles are granted only at the cutover"
    assert 'COMMENT ON TABLE "public"."accounts" IS \'who pays\'' in statements
    assert 'COMMENT ON COLUMN "public"."accounts"."email" IS \'login\'' in statements
    assert 'COMMENT ON CONSTRAINT "orders_account_email_fkey" ON "public"."orders" IS \'by email\'' in statements
    assert 'COMMENT ON INDEX "public"."orders_note" IS \'it\'\'s for search\'' in statements
    assert set(schema.app_privileges) == {
        AppPrivilege("TABLE", "public", "accounts", "app", "INSERT"),
        AppPrivilege("TABLE", "public", "accounts", "app", "SELECT"),
        AppPrivilege("TABLE", "public", "accounts", "app", "SELECT", "email"),
    }


def test_app_privileges_switch_with_their_columns():
    privileges = [AppPrivilege("TABLE", "public", "accounts", "app", "SELECT", "email").to_list(),
                  ["TABLE", "public", "accounts", "app", "UPDATE", "email"],
                  ["TABLE", "public", "UserEvents", "app", "SELECT"]]  # a checkpoint of an older run
    assert [text(s) for s in switch_statements(privileges, grant=False)] == [
        'REVOKE SELECT ON TABLE "public"."UserEvents" FROM "app"',
        'REVOKE SELECT ("email"), UPDATE ("email") ON TABLE "public"."accounts" FROM "app"',
    ]


def test_types_are_created_after_what_they_are_made_of():
    currency = TypeFacts("Money", "currency", "enum", None, labels=("EUR", "USD"))
    amount = TypeFacts("public", "money_amount", "composite", None,
                       attributes=(("currency", '"Money".currency', None), ("cents", "bigint", None)),
                       depends_on=(TableName("Money", "currency"),))
    positive = TypeFacts("Money", "positive_amount", "domain", None, base="public.money_amount",
                         checks=(("positive_amount_check", "CHECK (((VALUE).cents >= 0))"),),
                         depends_on=(TableName("public", "money_amount"),))
    ordered = _creation_order([positive, amount, currency, amount])
    assert [t.name for t in ordered] == ["currency", "money_amount", "positive_amount"]
    group = GroupCatalog(tables={}, types=ordered, schemas=(SchemaFacts("Money"),))
    statements = [text(s) for s in group_schema(group, ExistingObjects(), []).statements()]
    assert statements == [
        'CREATE SCHEMA IF NOT EXISTS "Money"',
        'CREATE TYPE "Money"."currency" AS ENUM (\'EUR\', \'USD\')',
        'CREATE TYPE "public"."money_amount" AS ("currency" "Money".currency, "cents" bigint)',
        'CREATE DOMAIN "Money"."positive_amount" AS public.money_amount '
        'CONSTRAINT "positive_amount_check" CHECK (((VALUE).cents >= 0))',
    ]


def test_what_the_target_has_already_is_not_created():
    currency = TypeFacts("Money", "currency", "enum", None, labels=("EUR",))
    routine = RoutineFacts(TableName("public", "touch"), "", "CREATE FUNCTION public.touch() ...")
    group = GroupCatalog(tables={}, types=(currency,), routines=(routine,), schemas=(SchemaFacts("Money"),))
    existing = ExistingObjects(schemas=frozenset({"Money"}), types=frozenset({currency.identity}),
                               routines=frozenset({routine.signature}))
    assert group_schema(group, existing, []).statements() == []
    assert routine.signature == "public.touch()"
    assert RoutineFacts(TableName("Sales", "Touch"), "integer", "").signature == '"Sales"."Touch"(integer)'


def test_a_deferred_index_round_trips_through_the_checkpoint_and_keeps_its_comment():
    index = DeferredIndex(TableName("Sales", "Order Items"), "Order Items_note",
                          'CREATE INDEX "Order Items_note" ON "Sales"."Order Items" USING btree (note)', "why")
    again = DeferredIndex.from_dict(index.to_dict())
    assert again == index
    assert [text(s) for s in again.build()] == [
        'CREATE INDEX IF NOT EXISTS "Order Items_note" ON "Sales"."Order Items" USING btree (note)',
        'COMMENT ON INDEX "Sales"."Order Items_note" IS \'why\'',
    ]
    assert text(again.drop()) == 'DROP INDEX IF EXISTS "Sales"."Order Items_note"'
