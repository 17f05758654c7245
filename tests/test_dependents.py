"""What moves with the group besides its tables, decided with no server: routine bodies
parsed with pglast, views and routines sorted into moving and crossing."""

from __future__ import annotations

from migrator.playbook import TableName
from migrator.postgres.catalog import RoutineFacts, ViewFacts
from migrator.postgres.catalog.bodies import plpgsql_body, sql_body
from migrator.postgres.catalog.dependents import RoutineSource, TypeName, resolve, search_path

T = TableName.parse
ORDERS, LINES, USERS = T("shop.orders"), T("shop.lines"), T("public.users")
RELATIONS = {ORDERS: "r", LINES: "r", USERS: "r", T("shop.recent"): "v", T("shop.per_day"): "v",
             T("public.mixed"): "v"}


def test_a_sql_body_reads_tables_but_not_its_ctes_and_calls_functions():
    refs = sql_body("WITH o AS (SELECT * FROM shop.orders) SELECT count(*) FROM o JOIN lines USING (id) "
                    "WHERE shop.valid(o.id)")
    assert refs.reads == {("shop", "orders"), (None, "lines")}
    assert ("shop", "valid") in refs.calls and refs.parsed and not refs.dynamic


def test_a_plpgsql_body_knows_what_it_writes_and_when_it_builds_sql():
    refs = plpgsql_body("""CREATE FUNCTION shop.close(n int) RETURNS void LANGUAGE plpgsql AS $$
        DECLARE c int;
        BEGIN
            SELECT count(*) INTO c FROM shop.lines WHERE order_id = n;
            IF c > 0 THEN UPDATE shop.orders SET closed = true WHERE id = n; END IF;
            DELETE FROM public.users WHERE id = n;
            EXECUTE format('TRUNCATE %I', 'x');
        END $$""")
    assert {("shop", "lines"), ("shop", "orders"), ("public", "users")} <= refs.reads
    assert refs.writes == {("shop", "orders"), ("public", "users")}
    assert refs.dynamic


def test_a_body_that_does_not_parse_says_so():
    assert sql_body("SELEKT 1").parsed is False


def test_search_path_from_the_routines_own_setting():
    assert search_path(["search_path=shop, \"$user\", public"]) == ("shop", "public")
    assert search_path(None) == ("public",)


def routine(name: str, body: str, *, language: str = "sql", args: str = "") -> RoutineSource:
    facts = RoutineFacts(T(name), args, f"CREATE FUNCTION {name}() LANGUAGE {language} AS $$ {body} $$")
    return RoutineSource(facts, language, body, (), ("public",))


def test_views_and_routines_move_with_the_group_or_cross_it():
    views = [
        ViewFacts(T("shop.recent"), False, "SELECT ...", reads=(ORDERS,)),
        ViewFacts(T("shop.per_day"), True, "SELECT ...", reads=(T("shop.recent"), LINES)),
        ViewFacts(T("public.mixed"), False, "SELECT ...", reads=(ORDERS, USERS)),
        ViewFacts(T("public.elsewhere"), False, "SELECT ...", reads=(USERS,)),
    ]
    routines = [
        routine("shop.total", "SELECT sum(x) FROM shop.lines"),
        routine("shop.archive", "INSERT INTO public.users SELECT * FROM shop.orders"),
        routine("public.peek", "SELECT * FROM shop.orders JOIN public.users USING (id)"),
        routine("public.unrelated", "SELECT * FROM public.users"),
        routine("shop.wrapper", "SELECT shop.total()"),
    ]
    found = resolve({ORDERS, LINES}, [], views, routines, RELATIONS)
    # a view over a moving view comes after it
    assert [str(v.name) for v in found.views] == ["shop.recent", "shop.per_day"]
    assert {str(r.name) for r in found.routines} == {"shop.total"}
    crossing = {c.name: c for c in found.crossings}
    assert set(crossing) == {"public.mixed", "shop.archive()", "public.peek()"}
    assert crossing["shop.archive()"].writes_outside and not crossing["public.peek()"].writes_outside
    assert crossing["public.mixed"].outside == (USERS,)


def test_views_come_in_the_same_order_in_every_run():
    """Two plans of the same database show the same SQL in the same order (the order of a
    set of names changes from one process to the next): independent views by name, each
    after the views it reads."""
    names = [T(f"shop.v{i:02}") for i in range(40)]
    views = [ViewFacts(n, False, "SELECT ...", reads=(ORDERS,)) for n in reversed(names)]
    views.append(ViewFacts(T("shop.a_over_v07"), False, "SELECT ...", reads=(T("shop.v07"),)))
    found = resolve({ORDERS, LINES}, [], views, [], {**RELATIONS, **{n: "v" for n in names}})
    order = [str(v.name) for v in found.views]
    assert order.index("shop.a_over_v07") > order.index("shop.v07")
    assert [n for n in order if n != "shop.a_over_v07"] == [str(n) for n in names]


def test_what_the_playbook_includes_or_excludes_wins():
    views = [ViewFacts(T("public.mixed"), False, "SELECT ...", reads=(ORDERS, USERS))]
    routines = [routine("public.dyn", "SELECT 1", language="plpgsql")]
    found = resolve({ORDERS}, [], views, routines, RELATIONS, include=[T("public.dyn")],
                    exclude=[T("public.mixed")])
    assert found.crossings == ()
    assert [str(r.name) for r in found.routines] == ["public.dyn"]
    assert found.left_behind == (("public.mixed", "objects.exclude"),)


# --------------------------------------------------------------------------- PL/pgSQL read whole

def plpgsql(declare: str, body: str, *, header: str = "public.f() RETURNS trigger") -> str:
    return (f"CREATE OR REPLACE FUNCTION {header}\n LANGUAGE plpgsql\nAS $function$\n"
            f"DECLARE\n{declare}\nBEGIN\n{body}\nEND $function$\n")


def test_an_assignment_is_a_target_and_an_expression_not_a_query():
    refs = plpgsql_body(plpgsql("n bigint; arr int[]; r record;", """
        n := (SELECT count(*) FROM billing.lines WHERE invoice = NEW.invoice);
        arr[1] := (SELECT max(id) FROM billing.invoices);
        NEW.total = billing.price_of(NEW.id);
        RETURN NEW;"""))
    assert refs.parsed, refs.problem
    assert {("billing", "lines"), ("billing", "invoices")} <= refs.reads
    assert ("billing", "price_of") in refs.calls and not refs.dynamic


def test_variables_arguments_and_results_of_types_the_parser_cannot_know_parse():
    # Arrays of an extension's or a user's type made PL/pgSQL's parser fail ("pseudo-type _record").
    refs = plpgsql_body(plpgsql(
        """h public.hstore[]; m billing.money_amount := ROW('EUR', (SELECT 1 FROM billing.rates))::billing.money_amount;
           r billing.invoices%ROWTYPE; c billing.lines.cents%TYPE; k CONSTANT "Odd"."Type"(3)[] NOT NULL DEFAULT '{}';
           cur CURSOR FOR SELECT * FROM billing.archive;""",
        """h := ARRAY[public.hstore('n', '1')];
           r.id := 1;
           RETURN;""",
        header="billing.f(a public.hstore[], OUT b billing.money_amount[]) RETURNS billing.money_amount[]"))
    assert refs.parsed, refs.problem
    assert {("public", "hstore"), ("billing", "money_amount"), ("Odd", "Type")} <= refs.types
    assert refs.rowtypes == {("billing", "invoices"), ("billing", "lines")}
    # a default's query is read even where the parser drops it (a variable of an unknown type)
    assert {("billing", "rates"), ("billing", "archive")} <= refs.reads


def test_every_way_of_running_a_string_is_dynamic():
    for statement in ("RETURN QUERY EXECUTE 'SELECT 1';", "OPEN c FOR EXECUTE 'SELECT 2';",
                      "FOR r IN EXECUTE 'SELECT 3' LOOP END LOOP;", "EXECUTE 'SELECT 4';"):
        refs = plpgsql_body(plpgsql("c refcursor; r record;", statement, header="public.f() RETURNS SETOF int"))
        assert refs.parsed and refs.dynamic, statement


def test_a_body_that_cannot_be_analysed_says_why():
    refs = plpgsql_body(plpgsql("x int;", "IF x THEN RETURN 1;"))
    assert not refs.parsed and refs.problem and "syntax error" in refs.problem


# --------------------------------------------------------------------------- the closure

INVOICES, PAYMENTS, AUDIT_V = T("billing.invoices"), T("billing.payments"), T("audit.logs_v")
BILLING = {INVOICES: "r", PAYMENTS: "r", AUDIT_V: "v", T("audit.logs"): "r"}


def trigger_function(name: str, body: str) -> RoutineSource:
    facts = RoutineFacts(T(name), "", plpgsql("", body, header=f"{name}() RETURNS trigger"))
    return RoutineSource(facts, "plpgsql", body, (), ("public",))


def test_a_trigger_function_that_writes_outside_through_new_is_a_chain_that_blocks():
    log = trigger_function("billing.log_change", "INSERT INTO audit.logs_v (what) VALUES (NEW.id); RETURN NEW;")
    peek = trigger_function("billing.peek", "PERFORM count(*) FROM audit.logs; RETURN NEW;")
    found = resolve({INVOICES, PAYMENTS}, [((log.facts.name, ""), "trigger payments_audit on billing.payments"),
                                           ((peek.facts.name, ""), "trigger invoices_peek on billing.invoices")],
                    [], [log, peek], BILLING)
    assert {str(r.name) for r in found.routines} == {"billing.log_change", "billing.peek"}
    crossing = {c.name: c for c in found.crossings}
    write = crossing["billing.log_change()"]
    assert write.moves and write.writes_outside
    assert write.path == ("trigger payments_audit on billing.payments → function billing.log_change() → "
                          "writes audit.logs_v (outside the group)")
    read = crossing["billing.peek()"]
    assert read.moves and not read.writes_outside and read.path.endswith("reads audit.logs (outside the group)")


def test_signature_and_body_types_and_extension_calls_are_needed():
    types = {T("billing.amount_text"): TypeName("c", "c"), T("public.hstore"): TypeName("b", "", "hstore"),
             INVOICES: TypeName("c", "r")}
    show = RoutineSource(RoutineFacts(T("billing.show"), "billing.amount_text", "..."), "sql",
                         "SELECT public.digest('x')", (), ("public",), types=(T("billing.amount_text"),))
    report = RoutineSource(RoutineFacts(T("billing.report"), "", "..."), "sql", "SELECT 1", (), ("public",),
                           types=(INVOICES,))
    view = ViewFacts(T("billing.labels"), False, "SELECT ...", reads=(INVOICES,),
                     routines=((T("billing.show"), "billing.amount_text"),), types=(T("public.hstore"),))
    found = resolve({INVOICES}, [], [view], [show, report], BILLING, types=types,
                    extension_routines={T("public.digest"): "pgcrypto"})
    assert {str(r.name) for r in found.routines} == {"billing.show", "billing.report"}
    assert found.types == {T("billing.amount_text"): ("function billing.show(billing.amount_text)",)}
    assert found.extensions == {"hstore": ("view billing.labels",),
                                "pgcrypto": ("function billing.show(billing.amount_text)",)}
    # RETURNS SETOF a group table: created after the table
    assert next(r for r in found.routines if r.name.name == "report").after == (INVOICES,)


def test_include_and_exclude_take_types_and_name_what_matches_nothing():
    types = {T("billing.spare"): TypeName("d")}
    log = trigger_function("billing.log_change", "RETURN NEW;")
    found = resolve({INVOICES}, [((log.facts.name, ""), "trigger t on billing.invoices")], [], [log], BILLING,
                    types=types, include=[T("billing.spare"), T("billing.nope")], exclude=[log.facts.name])
    assert found.types == {T("billing.spare"): ("objects.include",)}
    assert found.unmatched == (("objects.include[1]", T("billing.nope")),)
    # an excluded trigger function is not made: the target must have it
    assert [(r.kind, r.name, r.chain) for r in found.requirements] == [
        ("function", "function billing.log_change()", ("trigger t on billing.invoices",))]


def test_whole_database_mode_moves_what_nothing_uses():
    cat = RoutineSource(RoutineFacts(T("billing.cat"), "text, text", "..."), "sql", "SELECT $1 || $2", (),
                        ("public",))
    other = RoutineSource(RoutineFacts(T("audit.trim"), "text", "..."), "sql", "SELECT $1", (), ("public",))
    types = {T("billing.percent"): TypeName("d"), T("billing.pair"): TypeName("c", "c"), INVOICES: TypeName("c", "r")}
    found = resolve({INVOICES}, [], [], [cat, other], BILLING, types=types, schemas=["billing"])
    assert [str(r.name) for r in found.routines] == ["billing.cat"]
    # a composite type is made; a table's row type comes with the table
    assert found.types == {T("billing.pair"): ("schema billing",), T("billing.percent"): ("schema billing",)}
