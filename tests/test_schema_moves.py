"""A real application's schema moves whole, and the application still works after.

The schema below was written for these tests to hold what an application's pg_dump
prints: several schemas and quoted names, an enum, a domain, a composite and a range
type, an identity column with options, a partition tree (range, then list, with default
partitions) and a hash-partitioned table, check, exclusion and deferrable constraints,
expression, partial and INCLUDE indexes, storage parameters, a statistics target,
triggers (a `last_updated` one and one keeping a tsvector), row-level security with a
policy, comments, column grants, views (one over another), a materialized view with an
index, a SQL function and a PL/pgSQL one that the application calls, and an aggregate.

While `execute` (and then `rollback`) runs, a client calls those views and functions
through PgBouncer; afterwards it has seen no failed or aborted transaction, the rows are
identical per leaf partition, and `pg_dump --schema-only` of the schemas gives the same
statements on both sides (order aside; the app role's grants differ by design: they are
switched to the serving side).
"""

from __future__ import annotations

import re
import subprocess

import psycopg
import pytest
from catalogkit import (
    CatalogMove,
    all_events,
    catalog_move,
    on_both,
    run_cli,
    wait_rows_identical,
    writer,
)

from migrator.lab.binaries import postgres_bindir
from migrator.lab.sandbox import APP_DB, APP_ROLE
from migrator.playbook import TableName

SCHEMA = """
CREATE SCHEMA "Shop";
CREATE SCHEMA lookup;
GRANT USAGE ON SCHEMA "Shop", lookup TO app;
CREATE TYPE lookup.status AS ENUM ('new', 'paid', 'shipped');
CREATE DOMAIN lookup.price AS numeric(12, 2) CHECK (VALUE >= 0);
CREATE TYPE lookup.address AS (street text, city text);
CREATE TYPE lookup.span AS RANGE (subtype = integer);
COMMENT ON TYPE lookup.address IS 'where it goes';

CREATE TABLE "Shop".customers (
    id bigint GENERATED ALWAYS AS IDENTITY (START WITH 1000 INCREMENT BY 5) PRIMARY KEY,
    "Name" text NOT NULL,
    home lookup.address,
    tags text[] DEFAULT '{}',
    search tsvector,
    last_updated timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT name_not_blank CHECK ("Name" <> '')
) WITH (fillfactor = 90);
ALTER TABLE "Shop".customers ALTER COLUMN "Name" SET STATISTICS 400;
CREATE UNIQUE INDEX customers_lower_name ON "Shop".customers (lower("Name")) INCLUDE (id);
COMMENT ON TABLE "Shop".customers IS 'who buys';
COMMENT ON COLUMN "Shop".customers."Name" IS 'as written';

CREATE FUNCTION "Shop".touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.last_updated := now(); RETURN NEW; END $$;
CREATE FUNCTION "Shop".index_name() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.search := to_tsvector('simple', NEW."Name"); RETURN NEW; END $$;
CREATE TRIGGER customers_touch BEFORE UPDATE ON "Shop".customers FOR EACH ROW EXECUTE FUNCTION "Shop".touch();
CREATE TRIGGER customers_search BEFORE INSERT OR UPDATE ON "Shop".customers
    FOR EACH ROW EXECUTE FUNCTION "Shop".index_name();

CREATE TABLE "Shop"."Orders" (
    id bigserial,
    customer bigint NOT NULL REFERENCES "Shop".customers (id) DEFERRABLE INITIALLY DEFERRED,
    placed date NOT NULL,
    region text NOT NULL,
    status lookup.status NOT NULL DEFAULT 'new',
    total lookup.price NOT NULL,
    slots lookup.span,
    PRIMARY KEY (id, placed, region)
) PARTITION BY RANGE (placed);
CREATE TABLE "Shop"."Orders 2024" PARTITION OF "Shop"."Orders"
    FOR VALUES FROM ('2024-01-01') TO ('2025-01-01') PARTITION BY LIST (region);
CREATE TABLE "Shop"."Orders 2024 eu" PARTITION OF "Shop"."Orders 2024" FOR VALUES IN ('eu');
CREATE TABLE "Shop"."Orders 2024 rest" PARTITION OF "Shop"."Orders 2024" DEFAULT;
CREATE TABLE "Shop"."Orders later" PARTITION OF "Shop"."Orders" DEFAULT;
CREATE INDEX orders_customer ON "Shop"."Orders" (customer);
CREATE INDEX orders_open ON "Shop"."Orders" (placed) WHERE status <> 'shipped';
COMMENT ON INDEX "Shop".orders_customer IS 'by customer';

CREATE TABLE "Shop".stock (sku int PRIMARY KEY, shelf lookup.span NOT NULL) PARTITION BY HASH (sku);
CREATE TABLE "Shop".stock_0 PARTITION OF "Shop".stock FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE "Shop".stock_1 PARTITION OF "Shop".stock FOR VALUES WITH (MODULUS 2, REMAINDER 1);
CREATE TABLE "Shop".shelves (id int PRIMARY KEY, span lookup.span NOT NULL, EXCLUDE USING gist (span WITH &&));
ALTER TABLE "Shop".stock ENABLE ROW LEVEL SECURITY;
CREATE POLICY stock_visible ON "Shop".stock FOR SELECT TO app USING (sku >= 0);
CREATE POLICY stock_app ON "Shop".stock FOR ALL TO app USING (true) WITH CHECK (true);

CREATE VIEW "Shop"."Recent Orders" AS
    SELECT o.id, o.customer, o.placed, o.region, o.total FROM "Shop"."Orders" o WHERE o.placed >= '2024-06-01';
CREATE VIEW "Shop".region_totals AS
    SELECT region, sum(total) AS total, count(*) AS orders FROM "Shop"."Recent Orders" GROUP BY region;
CREATE MATERIALIZED VIEW "Shop".daily AS
    SELECT placed, count(*) AS orders FROM "Shop"."Orders" GROUP BY placed;
CREATE UNIQUE INDEX daily_placed ON "Shop".daily (placed);
COMMENT ON VIEW "Shop"."Recent Orders" IS 'since June';

CREATE FUNCTION "Shop".order_total(who bigint) RETURNS numeric LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(total), 0) FROM "Shop"."Orders" WHERE customer = who $$;
CREATE FUNCTION "Shop".place_order(who bigint, at date, amount numeric) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE made bigint;
BEGIN
    INSERT INTO "Shop"."Orders" (customer, placed, region, total)
    VALUES (who, at, CASE WHEN who % 2 = 0 THEN 'eu' ELSE 'us' END, amount) RETURNING id INTO made;
    UPDATE "Shop".customers SET tags = array_append(tags, 'buyer') WHERE id = who AND NOT 'buyer' = ANY (tags);
    RETURN made;
END $$;
CREATE FUNCTION lookup.join_text(state text, next text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN state = '' THEN next ELSE state || ',' || next END $$;
CREATE AGGREGATE lookup.joined(text) (SFUNC = lookup.join_text, STYPE = text, INITCOND = '');
CREATE VIEW "Shop".customer_names AS SELECT lookup.joined("Name" ORDER BY id) AS names FROM "Shop".customers;
COMMENT ON FUNCTION "Shop".place_order(bigint, date, numeric) IS 'what the checkout calls';

CREATE ROLE reporting;
GRANT SELECT (id, "Name") ON "Shop".customers TO reporting;
ALTER TABLE "Shop".shelves OWNER TO shop_owner;
GRANT SELECT, INSERT, UPDATE, DELETE ON "Shop".customers, "Shop"."Orders", "Shop".stock, "Shop".shelves TO app;
GRANT SELECT ON "Shop"."Recent Orders", "Shop".region_totals, "Shop".daily, "Shop".customer_names TO app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA "Shop" TO app;

INSERT INTO "Shop".customers ("Name", home) SELECT 'customer ' || g, ROW('street ' || g, 'city')::lookup.address
    FROM generate_series(1, 200) g;
INSERT INTO "Shop"."Orders" (customer, placed, region, total)
    SELECT 1000 + 5 * (g % 200), date '2024-01-01' + g % 600, (ARRAY['eu', 'us'])[1 + g % 2], g % 90
    FROM generate_series(1, 2000) g;
INSERT INTO "Shop".stock SELECT g, lookup.span(g * 10, g * 10 + 5) FROM generate_series(1, 100) g;
INSERT INTO "Shop".shelves SELECT g, lookup.span(g * 10, g * 10 + 5) FROM generate_series(1, 50) g;
REFRESH MATERIALIZED VIEW "Shop".daily;
"""

TABLES = ['"Shop".customers', '"Shop"."Orders"', '"Shop".stock', '"Shop".shelves']
LEAVES = [TableName("Shop", n) for n in ("customers", "Orders 2024 eu", "Orders 2024 rest", "Orders later",
                                         "stock_0", "stock_1", "shelves")]
ORDERS_AT_START = 2000


def the_application(conn: psycopg.Connection, i: int) -> None:
    """One client iteration: views, functions and an aggregate, reads and writes."""
    customer = 1000 + 5 * (i % 200)
    conn.execute('SELECT count(*) FROM "Shop"."Recent Orders"').fetchone()
    conn.execute('SELECT * FROM "Shop".region_totals').fetchall()
    conn.execute('SELECT "Shop".order_total(%s)', (customer,)).fetchone()
    conn.execute('SELECT "Shop".place_order(%s, %s, %s)', (customer, f"2024-0{1 + i % 9}-15", i % 50))
    conn.execute('UPDATE "Shop".customers SET "Name" = "Name" WHERE id = %s', (customer,))
    if i % 10 == 0:
        conn.execute('SELECT names FROM "Shop".customer_names').fetchone()
        conn.execute('SELECT count(*) FROM "Shop".daily').fetchone()


def the_schema(make_move, tmp_path, **versions) -> CatalogMove:
    move = make_move(**versions)
    on_both(move, "CREATE EXTENSION IF NOT EXISTS btree_gist")  # not needed, but any move may
    for role in ("reporting", "shop_owner"):
        on_both(move, f"DO $$ BEGIN CREATE ROLE {role}; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    return catalog_move(move, tmp_path, SCHEMA.replace("CREATE ROLE reporting;", ""), TABLES, name="shop")


def dump(move, side: str) -> list[str]:
    """pg_dump --schema-only of the test's schemas, one line each, as a sorted list;
    the app role's grants are left out (they are switched to the serving side)."""
    cluster = getattr(move, side)
    pg_dump = postgres_bindir(18) / "pg_dump"
    out = subprocess.run(
        [str(pg_dump), "--schema-only", "-n", '"Shop"', "-n", "lookup", "-d", cluster.dsn(APP_DB)],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    lines = []
    for line in out.splitlines():
        if not line.strip() or line.startswith(("--", "SET ", "SELECT pg_catalog.set_config", "\\restrict",
                                                 "\\unrestrict")):
            continue
        if re.match(rf"^(GRANT|REVOKE) .* (TO|FROM) {APP_ROLE};$", line):
            continue
        lines.append(line)
    return sorted(lines)


def objects(move, side: str) -> list[str]:
    """The dump's table of contents (kind, schema, name, owner of every object)."""
    bindir = postgres_bindir(18)
    archive = subprocess.run(
        [str(bindir / "pg_dump"), "--schema-only", "-Fc", "-n", '"Shop"', "-n", "lookup",
         "-d", getattr(move, side).dsn(APP_DB)], check=True, capture_output=True, timeout=60).stdout
    listing = subprocess.run([str(bindir / "pg_restore"), "-l"], input=archive, check=True,
                             capture_output=True, timeout=60).stdout.decode()
    # "215; 1259 16390 TABLE \"Shop\" customers migrator": the ids differ, the rest must not
    entries = [re.sub(r"^\d+; \d+ \d+ ", "", line) for line in listing.splitlines() if not line.startswith(";")]
    entries = [e for e in entries if not re.match(rf"^ACL .* {APP_ROLE}$", e)]
    assert len(entries) > 50, entries
    return sorted(e for e in entries if not e.startswith("ACL "))


def assert_no_drift(demo: CatalogMove) -> None:
    """Quoted names, domains, identities, generated defaults, deferrable keys, exclusion
    constraints, a two-level partition tree: `status` and `plan` find no drift."""
    status = demo.run("status", "--json").json()
    assert status["drift"] == [] and status["drift_error"] is None, status["drift"] or status["drift_error"]
    plan = demo.plan("--json").json()
    assert [f["level"] for f in plan["findings"] if f["code"] == "schema.drift"] == ["ok"]


def run(demo: CatalogMove, verb: str) -> int:
    """`verb` while the application runs; returns how many orders it placed."""
    with writer(demo.move, the_application, max_iterations=4000) as load:
        ran = demo.run(verb, timeout=120)
    assert ran.code == 0, ran.why()
    assert load.failures == [], load.failures[:5]
    assert load.done > 30, f"the application barely ran ({load.done} iterations)"
    return load.done


def orders_on(demo: CatalogMove, side: str) -> int:
    with psycopg.connect(getattr(demo.move, side).dsn(APP_DB)) as conn:
        return conn.execute('SELECT count(*) FROM "Shop"."Orders"').fetchone()[0]


@pytest.mark.timeout(240)
def test_the_whole_schema_moves_and_the_application_keeps_working(make_move, tmp_path):
    demo = the_schema(make_move, tmp_path)
    planned = demo.plan("--json")
    assert planned.code == 0, planned.why()
    created = planned.json()["objects"]["creates"]
    assert sorted(created["views"]) == ['"Shop"."Recent Orders"', '"Shop".customer_names', '"Shop".region_totals']
    # a view over a view is created after it
    assert created["views"].index('"Shop"."Recent Orders"') < created["views"].index('"Shop".region_totals')
    assert created["materialized views"] == ['"Shop".daily']
    assert {'"Shop".order_total(bigint)', '"Shop".place_order(bigint, date, numeric)',
            "lookup.joined(text)", "lookup.join_text(text, text)"} <= set(created["routines"])
    assert sorted(created["partitions"]) == sorted(
        ['"Shop"."Orders 2024"', '"Shop"."Orders 2024 eu"', '"Shop"."Orders 2024 rest"', '"Shop"."Orders later"',
         '"Shop".stock_0', '"Shop".stock_1'])

    placed = run(demo, "execute")
    wait_rows_identical(demo.move, LEAVES)
    assert_no_drift(demo)
    # Quoted names and a two-level partition tree: the fence covered every relation on
    # both sides, so the privileges switched around the pause, not inside it.
    cutover = [e.message for e in all_events(demo.state_url, demo.name) if e.step == "cutover"]
    assert any("traffic resumed on the target" in m for m in cutover), cutover
    assert not any("the write fence is missing" in m for m in cutover), cutover
    source, target = dump(demo.move, "source"), dump(demo.move, "target")
    for what in ('CREATE VIEW "Shop"."Recent Orders" AS', "CREATE MATERIALIZED VIEW", "CREATE AGGREGATE",
                 "ATTACH PARTITION", "CREATE POLICY", "EXCLUDE USING gist", "COMMENT ON INDEX",
                 'ALTER TABLE "Shop".shelves OWNER TO shop_owner'):
        assert any(what in line for line in source), f"the dump has no {what}: the comparison would prove little"
    assert source == target
    assert demo.verify().code == 0

    placed += run(demo, "rollback")
    # Every order the application placed, on either side, is on the source now.
    assert orders_on(demo, "source") == ORDERS_AT_START + placed
    with psycopg.connect(demo.move.target.dsn(APP_DB)) as conn:
        left = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname IN ('Shop', 'lookup')").fetchone()[0]
    assert left == 0, "a full rollback leaves nothing of the group on the target"


@pytest.mark.pg(18)
@pytest.mark.timeout(240)
def test_the_whole_schema_moves_from_15_to_18_and_back(make_move, tmp_path):
    demo = the_schema(make_move, tmp_path, target_version=18)
    assert demo.plan().code == 0
    placed = run(demo, "execute")
    wait_rows_identical(demo.move, LEAVES)
    with psycopg.connect(demo.move.target.dsn(APP_DB)) as conn:
        assert conn.execute("SHOW server_version_num").fetchone()[0].startswith("18")
    assert_no_drift(demo)   # 18 prints NOT NULL as constraints of their own: carried by the columns here
    # Across majors the text differs by design (18 names inherited NOT NULL constraints
    # and deparses views more tersely): the same objects, each with the same owner.
    assert objects(demo.move, "source") == objects(demo.move, "target")
    assert demo.verify().code == 0
    placed += run(demo, "rollback")
    assert orders_on(demo, "source") == ORDERS_AT_START + placed


CROSSING = """
CREATE TABLE public.inside (id int PRIMARY KEY, v text);
CREATE TABLE public.outside (id int PRIMARY KEY, w text);
CREATE VIEW public.both_sides AS SELECT i.id, i.v, o.w FROM public.inside i JOIN public.outside o USING (id);
CREATE FUNCTION public.copy_out(n int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.outside SELECT id, v FROM public.inside WHERE id = n; END $$;
CREATE EXTENSION citext;
CREATE TABLE public.tagged (id int PRIMARY KEY, tag citext);
CREATE ROLE lonely_owner;
ALTER TABLE public.tagged OWNER TO lonely_owner;
"""


def test_what_crosses_the_boundary_and_a_missing_extension_block_the_plan(make_move, tmp_path):
    move = make_move()
    demo = catalog_move(move, tmp_path, CROSSING, ["public.inside", "public.tagged"], name="crossing")
    ran = demo.plan("--json")
    assert ran.code == 3, ran.why()
    blocking = {f["code"]: f for f in ran.json()["blocking"]}
    view = blocking["view.crosses_group"]
    assert "public.both_sides" in view["message"]
    assert "public.inside" in view["message"] and "public.outside" in view["message"]
    routine = blocking["routine.crosses_group"]
    assert "public.copy_out(integer)" in routine["message"] and "writes outside" in routine["message"]
    assert "citext" in blocking["table.extension_missing"]["message"]
    # Roles are the cluster's: one made on the source only is missing on the target.
    owner = next(f for f in ran.json()["findings"] if f["code"] == "owner.missing")
    assert owner["level"] == "warn" and "lonely_owner" in owner["message"] and "public.tagged" in owner["message"]

    # Left behind on purpose, and the extension installed: ready.
    doc = move.playbook_doc(["public.inside", "public.tagged"], name="crossing")
    doc["objects"] = {"exclude": ["public.both_sides", "public.copy_out"]}
    path = move.write_playbook(tmp_path / "excluding.yaml", doc)
    with psycopg.connect(move.target.dsn(APP_DB), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION citext")
    again = run_cli("plan", str(path), "--json")
    assert again.code == 0, again.why()
    left = again.json()["objects"]["left_behind"]
    assert {item["object"] for item in left} == {"public.both_sides", "public.copy_out"}
