"""A real application's schema that nobody here wrote moves, and the application keeps
working: Pagila, the PostgreSQL port of MySQL's Sakila sample database
(https://github.com/devrimgunduz/pagila; its schema file, licence header included, is
tests/data/pagila-schema.sql). It has views (one over an aggregate of its own), a
materialized view, an enum and domains (one used by nothing), SQL and PL/pgSQL
functions (one returning SETOF a table, one building SQL at run time), an aggregate,
`last_updated` triggers on every table and a full-text trigger, sequences used by
defaults only, and a partitioned table whose partitions carry their own foreign keys.

Synthetic rows are loaded (its data file is 3 MB), and while the tool runs a client
plays the application through PgBouncer: its views, functions and triggers, reads and
writes. After each cutover the client goes on on the side that now serves, with no
failed transaction, and the rows are identical on both sides.

- 15 -> 18 and back, the group named table by table: `pg_dump --schema-only` of both
  databases is the same once the known differences of the two majors' catalogs are
  normalised (KNOWN_18_DIFFERENCES).
- a whole-database move (`schemas: [public]`), 15 -> 15: `pg_dump --schema-only` of the
  two databases is identical apart from the tool's own objects and the app role's grants.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest
from catalogkit import CatalogMove, on_both, run_cli, wait_rows_identical, writer

from migrator.lab.binaries import postgres_bindir
from migrator.lab.sandbox import APP_DB, APP_ROLE
from migrator.playbook import TableName

PAGILA = (Path(__file__).parent / "data" / "pagila-schema.sql").read_text()

ROWS = """
INSERT INTO public.language (name) SELECT l FROM unnest(ARRAY['English', 'Italian', 'Japanese', 'Mandarin',
                                                               'French', 'German']) l;
INSERT INTO public.country (country) SELECT 'country ' || g FROM generate_series(1, 20) g;
INSERT INTO public.city (city, country_id) SELECT 'city ' || g, 1 + g % 20 FROM generate_series(1, 60) g;
INSERT INTO public.address (address, district, city_id, postal_code, phone)
    SELECT g || ' Main Street', 'district ' || g % 7, 1 + g % 60, lpad(g::text, 5, '0'), '555-' || g
    FROM generate_series(1, 300) g;
INSERT INTO public.category (name) SELECT 'category ' || g FROM generate_series(1, 16) g;
INSERT INTO public.actor (first_name, last_name) SELECT 'first' || g, 'last' || g FROM generate_series(1, 100) g;
INSERT INTO public.store (manager_staff_id, address_id) VALUES (1, 1), (2, 2);
INSERT INTO public.staff (first_name, last_name, address_id, email, store_id, username)
    VALUES ('Mike', 'Hillyer', 3, 'mike@example.com', 1, 'Mike'), ('Jon', 'Stephens', 4, 'jon@example.com', 2, 'Jon');
INSERT INTO public.customer (store_id, first_name, last_name, email, address_id, active)
    SELECT 1 + g % 2, 'first' || g, 'last' || g, 'c' || g || '@example.com', 5 + g % 290, 1
    FROM generate_series(1, 200) g;
INSERT INTO public.film (title, description, release_year, language_id, rental_duration, rental_rate, length,
                         replacement_cost, rating, special_features)
    SELECT 'film ' || g, 'a story about ' || g, 2000 + g % 20, 1 + g % 6, 3 + g % 5, 0.99 + g % 5, 60 + g % 120,
           9.99 + g % 20, (enum_range(NULL::public.mpaa_rating))[1 + g % 5], ARRAY['Trailers']
    FROM generate_series(1, 200) g;
INSERT INTO public.film_actor (actor_id, film_id)
    SELECT DISTINCT 1 + (g * 7) % 100, 1 + g % 200 FROM generate_series(1, 600) g;
INSERT INTO public.film_category (film_id, category_id) SELECT g, 1 + g % 16 FROM generate_series(1, 200) g;
INSERT INTO public.inventory (film_id, store_id) SELECT 1 + g % 200, 1 + g % 2 FROM generate_series(1, 800) g;
INSERT INTO public.rental (rental_date, inventory_id, customer_id, return_date, staff_id)
    SELECT timestamptz '2022-01-01' + g * interval '3 hours', 1 + g % 800, 1 + g % 200,
           CASE WHEN g % 7 <> 0 THEN timestamptz '2022-01-04' + g * interval '3 hours' END, 1 + g % 2
    FROM generate_series(1, 1500) g;
INSERT INTO public.payment (customer_id, staff_id, rental_id, amount, payment_date)
    SELECT customer_id, staff_id, rental_id, 0.99 + rental_id % 10, rental_date + interval '1 hour'
    FROM public.rental;
REFRESH MATERIALIZED VIEW public.rental_by_category;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO app;
ANALYZE;
"""

TABLES = ["actor", "address", "category", "city", "country", "customer", "film", "film_actor", "film_category",
          "inventory", "language", "payment", "rental", "staff", "store"]
LEAVES = [TableName("public", t) for t in TABLES if t != "payment"] + [
    TableName("public", f"payment_p2022_0{m}") for m in range(1, 8)]


class TheApplication:
    """Pagila's application, one client: browse the film list (a view over an aggregate
    of its own), ask its functions (SQL calling PL/pgSQL), rent and pay (a row into a
    partitioned table), touch rows (their triggers fire); now and then its reports.
    Remembers which server answered each iteration."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, conn: psycopg.Connection, i: int) -> None:
        film, customer, store = 1 + i % 200, 1 + i % 200, 1 + i % 2
        conn.execute("SELECT * FROM film_list WHERE fid = %s", (film,)).fetchall()
        conn.execute("SELECT count(*) FROM film_in_stock(%s, %s)", (film, store)).fetchone()
        conn.execute("SELECT inventory_held_by_customer(%s)", (1 + i % 800,)).fetchone()
        rental = conn.execute(
            "INSERT INTO rental (rental_date, inventory_id, customer_id, staff_id) "
            "VALUES (clock_timestamp(), %s, %s, %s) RETURNING rental_id", (1 + i % 800, customer, store)).fetchone()[0]
        conn.execute("INSERT INTO payment (customer_id, staff_id, rental_id, amount, payment_date) "
                     "VALUES (%s, %s, %s, 2.99, timestamptz '2022-07-15' + %s * interval '1 second')",
                     (customer, store, rental, i))
        conn.execute("UPDATE customer SET email = email WHERE customer_id = %s", (customer,))
        conn.execute("UPDATE film SET description = description || '.' WHERE film_id = %s", (film,))
        if i % 10 == 0:
            conn.execute("SELECT * FROM sales_by_store").fetchall()
            conn.execute("SELECT * FROM customer_list WHERE id = %s", (customer,)).fetchall()
            conn.execute("SELECT * FROM actor_info WHERE actor_id = %s", (1 + i % 100,)).fetchall()
            conn.execute("SELECT last_day(now()), count(*) FROM rewards_report(1, 0.01)").fetchone()
        # asked last: the server that ran the iteration's last statement
        port = conn.execute("SELECT pg_catalog.current_setting('port')::int").fetchone()[0]
        with self.lock:
            self.ports.append(port)

    def since(self, mark: int) -> set[int]:
        with self.lock:
            return set(self.ports[mark:])

    def mark(self) -> int:
        with self.lock:
            return len(self.ports)


def counts(demo: CatalogMove, side: str) -> tuple[int, int]:
    with psycopg.connect(getattr(demo.move, side).dsn(APP_DB)) as conn:
        return conn.execute("SELECT (SELECT count(*) FROM public.rental), (SELECT count(*) FROM public.payment)").fetchone()


def pagila(make_move, tmp_path, *, name: str, target_version: int | None = None, **playbook) -> CatalogMove:
    move = make_move(target_version=target_version)
    on_both(move, "DO $$ BEGIN CREATE ROLE postgres; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    with psycopg.connect(move.source.dsn(APP_DB), autocommit=True) as conn:
        conn.execute(PAGILA)
        conn.execute(ROWS)
    doc = move.playbook_doc(playbook.pop("tables", []), name=name)
    doc.update(playbook)
    if not doc["tables"]:
        del doc["tables"]
    path = move.write_playbook(tmp_path / "playbook.yaml", doc)
    return CatalogMove(move, path, f"sqlite:///{tmp_path / 'state.db'}", [TableName("public", t) for t in TABLES])


def run_under_load(demo: CatalogMove, app: TheApplication, verb: str, *args: str, serving_port: int) -> None:
    """`verb` while the application runs; afterwards the application goes on for a while,
    now on the side that serves, and no transaction of it failed."""
    with writer(demo.move, app, max_iterations=100_000, interval=0.005) as load:
        ran = demo.run(verb, *args, timeout=150)
        assert ran.code == 0, ran.why()
        after, wanted, deadline = app.mark(), load.done + 15, time.monotonic() + 30
        while load.done < wanted and not load.failures:
            assert time.monotonic() < deadline, f"the application stalled after {verb}"
            time.sleep(0.05)
    assert load.failures == [], load.failures[:5]
    assert app.since(after) == {serving_port}, f"after {verb} the application ran on {app.since(after)}"


def dump(demo: CatalogMove, side: str) -> list[str]:
    """`pg_dump --schema-only` of the whole database (pg_dump 18), one line each, sorted:
    without the tool's own objects (its schema, publications, subscriptions, fence
    triggers, DDL guard) and the app role's grants, which switch sides by design."""
    cluster = getattr(demo.move, side)
    out = subprocess.run(
        [str(postgres_bindir(18) / "pg_dump"), "--schema-only", "--exclude-schema=migrator", "--no-publications",
         "--no-subscriptions", "-d", cluster.dsn(APP_DB)],
        check=True, capture_output=True, text=True, timeout=60).stdout
    lines = []
    for line in out.splitlines():
        if not line.strip() or line.startswith(("--", "SET ", "SELECT pg_catalog.set_config", "\\restrict",
                                                 "\\unrestrict")):
            continue
        if "migrator" in line or re.match(rf"^(GRANT|REVOKE) .* (TO|FROM) {APP_ROLE};$", line):
            continue
        lines.append(line)
    return sorted(lines)


def first_differences(source: list[str], target: list[str]) -> str:
    only_source = [line for line in source if line not in target][:12]
    only_target = [line for line in target if line not in source][:12]
    return f"only on the source: {only_source}\nonly on the target: {only_target}"


# What pg_dump prints differently for the same objects on a PostgreSQL 18 server than on
# a 15 one, each with a pattern that makes the two the same.
KNOWN_18_DIFFERENCES = [
    # 18 records a partition's NOT NULL as a constraint of its own, named after its column
    # ("amount numeric(5,2) CONSTRAINT payment_amount_not_null NOT NULL,")
    (r" CONSTRAINT \S+_not_null NOT NULL", " NOT NULL"),
]
# A group named table by table leaves the target's public schema as it was (its owner and
# privileges move only with schemas:, the whole-database mode).
PUBLIC_SCHEMA = ("ALTER SCHEMA public OWNER TO", "GRANT ALL ON SCHEMA public TO PUBLIC;",
                 "REVOKE USAGE ON SCHEMA public FROM PUBLIC;")


def normalised(lines: list[str]) -> list[str]:
    for pattern, replacement in KNOWN_18_DIFFERENCES:
        lines = [re.sub(pattern, replacement, line) for line in lines]
    return sorted(line for line in lines if line and not line.startswith(PUBLIC_SCHEMA))


@pytest.mark.pg(18)
@pytest.mark.timeout(300)
def test_pagila_moves_from_15_to_18_and_back_under_load(make_move, tmp_path):
    demo = pagila(make_move, tmp_path, name="pagila", target_version=18, tables=[f"public.{t}" for t in TABLES],
                  objects={"include": ['public."bıgınt"']})
    planned = demo.plan("--json")
    assert planned.code == 0, planned.why()
    objects = planned.json()["objects"]
    assert objects["crossing"] == [] and objects["unparsed"] == []
    assert {"public.film_list", "public.actor_info", "public.sales_by_store"} <= set(objects["creates"]["views"])
    assert {"public.group_concat(text)", "public.rewards_report(integer, numeric)",
            "public.last_updated()"} <= set(objects["creates"]["routines"])
    assert 'public."bıgınt"' in objects["creates"]["types"]

    app = TheApplication()
    run_under_load(demo, app, "execute", serving_port=demo.move.target.port)
    wait_rows_identical(demo.move, LEAVES)
    source, target = normalised(dump(demo, "source")), normalised(dump(demo, "target"))
    assert source == target, first_differences(source, target)
    assert demo.verify().code == 0

    run_under_load(demo, app, "rollback", serving_port=demo.move.source.port)
    # Every rental and payment the application made, on either side, is on the source now.
    assert counts(demo, "source") == (1500 + app.mark(), 1500 + app.mark())


@pytest.mark.timeout(240)
def test_pagila_whole_database_moves_15_to_15_and_the_dumps_are_identical(make_move, tmp_path):
    demo = pagila(make_move, tmp_path, name="pagila-whole", schemas=["public"])
    planned = demo.plan("--json")
    assert planned.code == 0, planned.why()
    doc = planned.json()
    assert sorted(doc["playbook"]["tables"]) == sorted(f"public.{t}" for t in TABLES)
    assert doc["objects"]["left_behind"] == []     # nothing of the database stays behind

    app = TheApplication()
    run_under_load(demo, app, "execute", serving_port=demo.move.target.port)
    wait_rows_identical(demo.move, LEAVES)
    assert counts(demo, "target") == (1500 + app.mark(), 1500 + app.mark())
    source, target = dump(demo, "source"), dump(demo, "target")
    for what in ("CREATE AGGREGATE public.group_concat", 'CREATE DOMAIN public."bıgınt"', "CREATE MATERIALIZED VIEW",
                 "ALTER SCHEMA public OWNER TO postgres", "ATTACH PARTITION", "CREATE TRIGGER last_updated"):
        assert any(what in line for line in source), f"the dump has no {what}: the comparison would prove little"
    assert source == target, first_differences(source, target)
    # The group was fixed when the move started: a table created since is not the move's,
    # and plan names it as staying behind.
    with psycopg.connect(demo.move.source.dsn(APP_DB), autocommit=True) as conn:
        conn.execute("CREATE TABLE public.added_later (id int PRIMARY KEY)")
    during = run_cli("plan", str(demo.path), "--state", demo.state_url, "--json")
    assert during.code == 0, during.json()["blocking"]     # past the cutover: PgBouncer routes to the target
    doc = during.json()
    assert "public.added_later" not in doc["playbook"]["tables"]
    assert {"object": "table public.added_later", "why": "a table nothing moves"} in doc["objects"]["left_behind"]
    assert [f["code"] for f in doc["findings"] if f["code"] == "move.in_flight"] == ["move.in_flight"]
    assert demo.verify("--state", demo.state_url).code == 0   # the move's tables, not the one added since
