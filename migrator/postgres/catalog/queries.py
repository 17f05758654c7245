"""The catalog queries of the catalog model; only `reader` runs them.

The group is passed as two text arrays (schemas, names) and matched exactly against
the catalogs (`_GROUP`), so no name is ever parsed or quoted on the way.
"""

# The group as (relid, schema, name): names are passed as two text arrays and matched
# exactly against the catalogs, so no name is ever parsed or quoted on the way.
_GROUP = """
group_tables AS (
    SELECT c.oid AS relid, g.s AS schema_name, g.n AS table_name
    FROM ROWS FROM (pg_catalog.unnest(%(schemas)s::text[]), pg_catalog.unnest(%(names)s::text[])) AS g(s, n)
    JOIN pg_catalog.pg_namespace ns ON ns.nspname = g.s
    JOIN pg_catalog.pg_class c ON c.relnamespace = ns.oid AND c.relname = g.n
)"""


_SEQUENCE_USES = (
    "WITH" + _GROUP + """,
uses AS (
    -- serial / OWNED BY ('a') and identity ('i'): the sequence depends on the column
    SELECT d.refobjid AS relid, d.refobjsubid AS attnum, d.objid AS seqid,
           d.deptype = 'a' AS owned, d.deptype = 'i' AS identity, false AS in_default
    FROM pg_catalog.pg_depend d
    WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
      AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
      AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0
    UNION ALL
    -- nextval('seq') in a default: the default expression depends on the sequence
    SELECT ad.adrelid, ad.adnum, d.refobjid, false, false, true
    FROM pg_catalog.pg_attrdef ad
    JOIN pg_catalog.pg_depend d
      ON d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND d.objid = ad.oid
     AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
),
seq_uses AS (
    SELECT u.relid, u.attnum, u.seqid,
           pg_catalog.bool_or(u.owned) AS owned, pg_catalog.bool_or(u.identity) AS identity,
           pg_catalog.bool_or(u.in_default) AS in_default
    FROM uses u
    JOIN pg_catalog.pg_class s ON s.oid = u.seqid AND s.relkind = 'S'
    GROUP BY u.relid, u.attnum, u.seqid
)
SELECT tn.nspname, t.relname, a.attname, sn.nspname, s.relname,
       su.owned, su.identity, su.in_default,
       pg_catalog.format_type(q.seqtypid, NULL), q.seqstart, q.seqincrement,
       q.seqmin, q.seqmax, q.seqcache, q.seqcycle,
       su.relid IN (SELECT relid FROM group_tables) AS in_group
FROM seq_uses su
JOIN pg_catalog.pg_class t ON t.oid = su.relid
JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = su.relid AND a.attnum = su.attnum
JOIN pg_catalog.pg_class s ON s.oid = su.seqid
JOIN pg_catalog.pg_namespace sn ON sn.oid = s.relnamespace
JOIN pg_catalog.pg_sequence q ON q.seqrelid = su.seqid
JOIN (SELECT DISTINCT seqid FROM seq_uses WHERE relid IN (SELECT relid FROM group_tables)) w ON w.seqid = su.seqid
ORDER BY tn.nspname, t.relname, a.attnum, sn.nspname, s.relname
""")


_INDEXES = (
    "WITH" + _GROUP + """,
-- conindid: a unique/PK/exclusion constraint's own index, and the referenced table's
-- index of every foreign key (DROP INDEX refuses both); pg_constraint has no index on it
-- to look it up index by index
by_index AS (
    SELECT co.conindid, pg_catalog.array_agg(co.conname::text ORDER BY co.conname) AS names
    FROM pg_catalog.pg_constraint co WHERE co.conindid <> 0 GROUP BY co.conindid
)
SELECT g.schema_name, g.table_name, ic.relname, pg_catalog.pg_get_indexdef(i.indexrelid),
       i.indisprimary, i.indisreplident, i.indisunique, i.indisvalid,
       COALESCE(b.names, '{}'),
       pg_catalog.pg_relation_size(i.indexrelid),
       (SELECT co.conname::text FROM pg_catalog.pg_constraint co
         WHERE co.conindid = i.indexrelid AND co.conrelid = i.indrelid AND co.contype IN ('p', 'u', 'x')),
       -- the key columns in order; empty when one of them is an expression
       CASE WHEN 0 <> ALL (i.indkey::pg_catalog.int2[]) THEN ARRAY(
           SELECT a.attname::text
           FROM pg_catalog.unnest(i.indkey::pg_catalog.int2[]) WITH ORDINALITY k(attnum, n)
           JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
           WHERE k.n <= i.indnkeyatts ORDER BY k.n) END,
       (SELECT ARRAY[pn.nspname::text, pi.relname::text] FROM pg_catalog.pg_inherits h
          JOIN pg_catalog.pg_class pi ON pi.oid = h.inhparent
          JOIN pg_catalog.pg_namespace pn ON pn.oid = pi.relnamespace
         WHERE h.inhrelid = i.indexrelid)
FROM group_tables g
JOIN pg_catalog.pg_index i ON i.indrelid = g.relid
JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
LEFT JOIN by_index b ON b.conindid = i.indexrelid
ORDER BY g.schema_name, g.table_name, ic.relname
""")


_FOREIGN_KEYS = (
    "WITH" + _GROUP + """
SELECT co.conname, sn.nspname, sc.relname,
       ARRAY(SELECT a.attname::text FROM pg_catalog.unnest(co.conkey) WITH ORDINALITY k(n, o)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = co.conrelid AND a.attnum = k.n
             ORDER BY k.o),
       dn.nspname, dc.relname,
       ARRAY(SELECT a.attname::text FROM pg_catalog.unnest(co.confkey) WITH ORDINALITY k(n, o)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = co.confrelid AND a.attnum = k.n
             ORDER BY k.o),
       pg_catalog.pg_get_constraintdef(co.oid),
       co.conrelid IN (SELECT relid FROM group_tables),
       co.confrelid IN (SELECT relid FROM group_tables)
FROM pg_catalog.pg_constraint co
JOIN pg_catalog.pg_class sc ON sc.oid = co.conrelid
JOIN pg_catalog.pg_namespace sn ON sn.oid = sc.relnamespace
JOIN pg_catalog.pg_class dc ON dc.oid = co.confrelid
JOIN pg_catalog.pg_namespace dn ON dn.oid = dc.relnamespace
WHERE co.contype = 'f'
  -- a foreign key on a partitioned table is cloned onto each partition; keep the parent's
  AND co.conparentid = 0
  AND (co.conrelid IN (SELECT relid FROM group_tables)
       OR co.confrelid IN (SELECT relid FROM group_tables))
ORDER BY sn.nspname, sc.relname, co.conname
""")


_TABLES = """
SELECT g.ord, g.s, g.n, c.oid, c.relkind, c.relpersistence, c.relispartition,
       pg_catalog.pg_get_userbyid(c.relowner),
       pg_catalog.pg_has_role(c.relowner, 'USAGE'),
       c.relreplident, c.relrowsecurity,
       pg_catalog.pg_relation_size(c.oid),
       COALESCE(pg_catalog.pg_relation_size(NULLIF(c.reltoastrelid, 0)), 0),
       pg_catalog.pg_indexes_size(c.oid),
       c.reltuples,
       (SELECT ARRAY[pn.nspname::text, pc.relname::text]
          FROM pg_catalog.pg_inherits h
          JOIN pg_catalog.pg_class pc ON pc.oid = h.inhparent
          JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace
         WHERE h.inhrelid = c.oid AND c.relispartition),
       ARRAY(SELECT ARRAY[pn.nspname::text, pc.relname::text]
               FROM pg_catalog.pg_inherits h
               JOIN pg_catalog.pg_class pc ON pc.oid = h.inhrelid
               JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace
              WHERE h.inhparent = c.oid AND c.relkind = 'p'
              ORDER BY pn.nspname, pc.relname),
       ARRAY(SELECT ARRAY[x.grantee, x.privilege, x.grantable]
               FROM (SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                 ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END AS grantee,
                            a.privilege_type::text AS privilege, a.is_grantable::text AS grantable
                       FROM pg_catalog.aclexplode(c.relacl) a
                      WHERE a.grantee <> c.relowner) AS x
              ORDER BY x.grantee, x.privilege),
       CASE WHEN c.relkind = 'p' THEN pg_catalog.pg_get_partkeydef(c.oid) END,
       CASE WHEN c.relispartition THEN pg_catalog.pg_get_expr(c.relpartbound, c.oid) END,
       c.reloptions::text[],
       c.relforcerowsecurity
FROM ROWS FROM (pg_catalog.unnest(%(schemas)s::text[]), pg_catalog.unnest(%(names)s::text[])) WITH ORDINALITY AS g(s, n, ord)
LEFT JOIN pg_catalog.pg_namespace ns ON ns.nspname = g.s
LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = ns.oid AND c.relname = g.n
ORDER BY g.ord
"""


_COLUMNS = (
    "WITH" + _GROUP + """
SELECT g.schema_name, g.table_name, a.attname,
       pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
       CASE WHEN a.attcollation <> t.typcollation
            THEN (SELECT pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname)
                    FROM pg_catalog.pg_collation co
                    JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
                   WHERE co.oid = a.attcollation)
       END,
       -- large object references: oid, or a domain over it such as the lo extension's
       'pg_catalog.oid'::pg_catalog.regtype IN (t.oid, t.typbasetype),
       a.atttypid::int,
       -- nullable from PostgreSQL 17, -1 before: the default either way
       NULLIF(COALESCE(a.attstattarget::int, -1), -1),
       /*compression*/ NULLIF(a.attcompression::text, ''),
       CASE WHEN a.attstorage <> t.typstorage THEN a.attstorage::text END,
       a.attislocal
FROM group_tables g
JOIN pg_catalog.pg_attribute a ON a.attrelid = g.relid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
ORDER BY g.schema_name, g.table_name, a.attnum
""")


# pg_attribute.attcompression exists from PostgreSQL 14 (reader picks the spelling).
_NO_COMPRESSION = "/*compression*/ NULL::text"

_CONSTRAINTS = (
    "WITH" + _GROUP + """
SELECT g.schema_name, g.table_name, co.conname, co.contype, pg_catalog.pg_get_constraintdef(co.oid),
       co.conparentid <> 0 OR NOT co.conislocal
FROM group_tables g
JOIN pg_catalog.pg_constraint co ON co.conrelid = g.relid
-- 'n' (PostgreSQL 18's NOT NULL constraints) is carried by the columns' NOT NULL
WHERE co.contype IN ('p', 'u', 'x', 'c')
ORDER BY g.schema_name, g.table_name, pg_catalog.strpos('pucx', co.contype::text), co.conname
""")


_TRIGGERS = (
    "WITH" + _GROUP + """
SELECT g.schema_name, g.table_name, tg.tgname, pg_catalog.pg_get_triggerdef(tg.oid),
       tg.tgenabled, tg.tgfoid::pg_catalog.regproc::text,
       COALESCE((pg_catalog.to_jsonb(tg) ->> 'tgparentid')::pg_catalog.oid, 0) <> 0
FROM group_tables g
JOIN pg_catalog.pg_trigger tg ON tg.tgrelid = g.relid
JOIN pg_catalog.pg_proc tf ON tf.oid = tg.tgfoid
JOIN pg_catalog.pg_namespace tfn ON tfn.oid = tf.pronamespace
WHERE NOT tg.tgisinternal
  AND tfn.nspname <> 'migrator'          -- a move's own write fence is not the application's
ORDER BY g.schema_name, g.table_name, tg.tgname
""")


# What type `t` is made of, as x(typid): an array's element, a domain's base, a range's
# subtype, a composite's attribute types.
_MADE_OF = """
    CROSS JOIN LATERAL (
        SELECT t.typelem WHERE t.typelem <> 0
        UNION ALL SELECT t.typbasetype WHERE t.typbasetype <> 0
        UNION ALL SELECT r.rngsubtype FROM pg_catalog.pg_range r WHERE r.rngtypid = t.oid
        UNION ALL SELECT ca.atttypid FROM pg_catalog.pg_attribute ca
                  WHERE t.typtype = 'c' AND ca.attrelid = t.typrelid AND ca.attnum > 0
                    AND NOT ca.attisdropped
    ) AS x(typid)"""

# Every type the columns need, following arrays, domains, ranges and composites down
# to the built-ins (per group table): the types to create, and the extensions to need.
_USED_TYPES = """,
direct(relid, typid) AS (
    SELECT DISTINCT a.attrelid, a.atttypid
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid IN (SELECT relid FROM group_tables) AND a.attnum > 0 AND NOT a.attisdropped
),
-- followed once per distinct column type, not once per table: a thousand tables use a
-- few dozen types
closure(root, typid) AS (
    SELECT DISTINCT typid, typid FROM direct
    UNION
    SELECT c.root, x.typid
    FROM closure c
    JOIN pg_catalog.pg_type t ON t.oid = c.typid""" + _MADE_OF + """
),
used(relid, typid) AS (
    SELECT DISTINCT d.relid, c.typid FROM direct d JOIN closure c ON c.root = d.typid
)"""

# A type's facts (`t`, in `tn`, `tr` its relation if any): what CREATE TYPE or CREATE
# DOMAIN needs, and the types it is made of.
_TYPE_COLUMNS = """tn.nspname, t.typname,
       -- a composite that is a table's row type is the table, not a type to create
       CASE WHEN t.typtype = 'c' AND tr.relkind <> 'c' THEN 't' ELSE t.typtype END,
       (SELECT e.extname FROM pg_catalog.pg_depend d
          JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
         WHERE d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND d.objid = t.oid
           AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND d.deptype = 'e'),
       ARRAY(SELECT en.enumlabel::text FROM pg_catalog.pg_enum en
              WHERE en.enumtypid = t.oid ORDER BY en.enumsortorder),
       CASE WHEN t.typtype = 'd' THEN pg_catalog.format_type(t.typbasetype, t.typtypmod) END,
       t.typcategory = 'A',
       t.typnotnull, t.typdefault,
       ARRAY(SELECT ARRAY[k.conname::text, pg_catalog.pg_get_constraintdef(k.oid)]
               FROM pg_catalog.pg_constraint k WHERE k.contypid = t.oid AND k.contype = 'c'
              ORDER BY k.conname),
       ARRAY(SELECT ARRAY[ca.attname::text, pg_catalog.format_type(ca.atttypid, ca.atttypmod),
                          CASE WHEN ca.attcollation <> at.typcollation
                               THEN pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(cl.collname)
                          END]
               FROM pg_catalog.pg_attribute ca
               JOIN pg_catalog.pg_type at ON at.oid = ca.atttypid
               LEFT JOIN pg_catalog.pg_collation cl ON cl.oid = ca.attcollation
               LEFT JOIN pg_catalog.pg_namespace cn ON cn.oid = cl.collnamespace
              WHERE t.typtype = 'c' AND ca.attrelid = t.typrelid AND ca.attnum > 0 AND NOT ca.attisdropped
              ORDER BY ca.attnum),
       (SELECT pg_catalog.format_type(r.rngsubtype, NULL) FROM pg_catalog.pg_range r WHERE r.rngtypid = t.oid),
       -- the types this one is made of (an array stands for its element type)
       ARRAY(SELECT ARRAY[rn.nspname::text, rt.typname::text]
               FROM (SELECT t.typbasetype WHERE t.typbasetype <> 0
                     UNION SELECT r.rngsubtype FROM pg_catalog.pg_range r WHERE r.rngtypid = t.oid
                     UNION SELECT ca.atttypid FROM pg_catalog.pg_attribute ca
                            WHERE t.typtype = 'c' AND ca.attrelid = t.typrelid AND ca.attnum > 0
                              AND NOT ca.attisdropped) AS ref(typid)
               JOIN pg_catalog.pg_type rt0 ON rt0.oid = ref.typid
               JOIN pg_catalog.pg_type rt ON rt.oid = CASE WHEN rt0.typcategory = 'A' AND rt0.typelem <> 0
                                                         THEN rt0.typelem ELSE rt0.oid END
               JOIN pg_catalog.pg_namespace rn ON rn.oid = rt.typnamespace),
       pg_catalog.obj_description(t.oid, 'pg_type'),
       pg_catalog.pg_get_userbyid(t.typowner)
"""

# The used types, kept when not built in or when an extension provides them; each
# type's facts read once, however many tables use it.
_TYPES = (
    "WITH RECURSIVE" + _GROUP + _USED_TYPES + """,
details(typid, nspname, typname, kind, extension, labels, base, is_array, not_null, default_value, checks,
        attributes, subtype, depends_on, comment, owner) AS MATERIALIZED (
    SELECT t.oid, """ + _TYPE_COLUMNS + """FROM (SELECT DISTINCT typid FROM used) k
    JOIN pg_catalog.pg_type t ON t.oid = k.typid
    JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace
    LEFT JOIN pg_catalog.pg_class tr ON tr.oid = t.typrelid
    WHERE tn.nspname NOT IN ('pg_catalog', 'information_schema')
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND d.objid = t.oid
                    AND d.deptype = 'e')
)
SELECT g.schema_name, g.table_name, d.nspname, d.typname, d.kind, d.extension, d.labels, d.base, d.is_array,
       d.not_null, d.default_value, d.checks, d.attributes, d.subtype, d.depends_on, d.comment, d.owner
FROM used u
JOIN group_tables g ON g.relid = u.relid
JOIN details d ON d.typid = u.typid
ORDER BY g.schema_name, g.table_name, d.nspname, d.typname
""")

# The same for types named (schemas, names): those routines, views and the playbook
# name, followed through arrays, domains, ranges and composites, each row keyed by the
# type named first.
_NAMED_TYPES = """
WITH RECURSIVE named(schema_name, type_name, typid) AS (
    SELECT g.s, g.n, t.oid
    FROM ROWS FROM (pg_catalog.unnest(%(schemas)s::text[]), pg_catalog.unnest(%(names)s::text[])) AS g(s, n)
    JOIN pg_catalog.pg_namespace ns ON ns.nspname = g.s
    JOIN pg_catalog.pg_type t ON t.typnamespace = ns.oid AND t.typname = g.n
),
used(schema_name, type_name, typid) AS (
    SELECT * FROM named
    UNION
    SELECT u.schema_name, u.type_name, x.typid
    FROM used u
    JOIN pg_catalog.pg_type t ON t.oid = u.typid""" + _MADE_OF + """
)
SELECT u.schema_name, u.type_name, """ + _TYPE_COLUMNS + """FROM used u
JOIN pg_catalog.pg_type t ON t.oid = u.typid
JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace
LEFT JOIN pg_catalog.pg_class tr ON tr.oid = t.typrelid
ORDER BY 1, 2, tn.nspname, t.typname
"""


# Extensions whose members anything of the table depends on: column types (through
# the types above), functions in defaults and generated columns, operator classes
# and functions of indexes, constraints' functions, trigger functions' languages.
_EXTENSIONS = (
    "WITH RECURSIVE" + _GROUP + _USED_TYPES + """,
objects(relid, classid, objid) AS (
    SELECT g.relid, 'pg_catalog.pg_class'::pg_catalog.regclass, g.relid FROM group_tables g
    UNION ALL
    SELECT ad.adrelid, 'pg_catalog.pg_attrdef'::pg_catalog.regclass, ad.oid
    FROM pg_catalog.pg_attrdef ad WHERE ad.adrelid IN (SELECT relid FROM group_tables)
    UNION ALL
    SELECT i.indrelid, 'pg_catalog.pg_class'::pg_catalog.regclass, i.indexrelid
    FROM pg_catalog.pg_index i WHERE i.indrelid IN (SELECT relid FROM group_tables)
    UNION ALL
    SELECT co.conrelid, 'pg_catalog.pg_constraint'::pg_catalog.regclass, co.oid
    FROM pg_catalog.pg_constraint co WHERE co.conrelid IN (SELECT relid FROM group_tables)
    UNION ALL
    SELECT tg.tgrelid, 'pg_catalog.pg_trigger'::pg_catalog.regclass, tg.oid
    FROM pg_catalog.pg_trigger tg
    WHERE tg.tgrelid IN (SELECT relid FROM group_tables) AND NOT tg.tgisinternal
),
refs(relid, classid, objid) AS MATERIALIZED (
    SELECT o.relid, d.refclassid, d.refobjid
    FROM objects o
    JOIN pg_catalog.pg_depend d ON d.classid = o.classid AND d.objid = o.objid
    UNION ALL
    SELECT u.relid, 'pg_catalog.pg_type'::pg_catalog.regclass, u.typid FROM used u
)
SELECT DISTINCT g.schema_name, g.table_name, e.extname
FROM refs r
JOIN group_tables g ON g.relid = r.relid
JOIN pg_catalog.pg_depend x
  ON x.classid = r.classid AND x.objid = r.objid AND x.deptype = 'e'
 AND x.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
JOIN pg_catalog.pg_extension e ON e.oid = x.refobjid
ORDER BY 1, 2, 3
""")


_COMMENTS = (
    "WITH" + _GROUP + """
SELECT g.schema_name, g.table_name, 'table', NULL::text, d.description
FROM group_tables g
JOIN pg_catalog.pg_description d
  ON d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objoid = g.relid AND d.objsubid = 0
UNION ALL
SELECT g.schema_name, g.table_name, 'column', a.attname::text, d.description
FROM group_tables g
JOIN pg_catalog.pg_description d
  ON d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objoid = g.relid AND d.objsubid > 0
JOIN pg_catalog.pg_attribute a ON a.attrelid = g.relid AND a.attnum = d.objsubid
UNION ALL
SELECT g.schema_name, g.table_name, 'index', ic.relname::text, d.description
FROM group_tables g
JOIN pg_catalog.pg_index i ON i.indrelid = g.relid
JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
JOIN pg_catalog.pg_description d
  ON d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objoid = i.indexrelid AND d.objsubid = 0
UNION ALL
SELECT g.schema_name, g.table_name, 'constraint', co.conname::text, d.description
FROM group_tables g
JOIN pg_catalog.pg_constraint co ON co.conrelid = g.relid
JOIN pg_catalog.pg_description d
  ON d.classoid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND d.objoid = co.oid
UNION ALL
SELECT g.schema_name, g.table_name, 'trigger', tg.tgname::text, d.description
FROM group_tables g
JOIN pg_catalog.pg_trigger tg ON tg.tgrelid = g.relid AND NOT tg.tgisinternal
JOIN pg_catalog.pg_description d
  ON d.classoid = 'pg_catalog.pg_trigger'::pg_catalog.regclass AND d.objoid = tg.oid
""")


# Column-level privileges (GRANT SELECT (col) ON t): pg_attribute.attacl, apart from relacl.
_COLUMN_GRANTS = (
    "WITH" + _GROUP + """
SELECT g.schema_name, g.table_name, a.attname,
       CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(x.grantee)::text END,
       x.privilege_type::text, x.is_grantable::text
FROM group_tables g
JOIN pg_catalog.pg_class c ON c.oid = g.relid
JOIN pg_catalog.pg_attribute a
  ON a.attrelid = g.relid AND a.attnum > 0 AND NOT a.attisdropped AND a.attacl IS NOT NULL
CROSS JOIN LATERAL pg_catalog.aclexplode(a.attacl) x
WHERE x.grantee <> c.relowner
ORDER BY 1, 2, a.attnum, 4, 5
""")


_TARGET_TABLES = """
SELECT g.s, g.n, c.oid IS NOT NULL, c.oid IS NOT NULL AND pg_catalog.has_table_privilege(c.oid, 'SELECT')
FROM ROWS FROM (pg_catalog.unnest(%(schemas)s::text[]), pg_catalog.unnest(%(names)s::text[])) AS g(s, n)
LEFT JOIN pg_catalog.pg_namespace ns ON ns.nspname = g.s
LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = ns.oid AND c.relname = g.n
"""


# The routines the group's tables call, each with why: a trigger's function, a
# function in a column default or generated column, a constraint's or an index's.
# Built-ins and extension members come with the server or the extension.
_NEEDED_ROUTINES = (
    "WITH" + _GROUP + """,
used(fn, why, what, schema_name, table_name) AS (
    SELECT tg.tgfoid, 'trigger', tg.tgname::text, g.schema_name, g.table_name
    FROM group_tables g JOIN pg_catalog.pg_trigger tg ON tg.tgrelid = g.relid
    WHERE NOT tg.tgisinternal
    UNION
    SELECT d.refobjid, 'default of column', a.attname::text, g.schema_name, g.table_name
    FROM group_tables g
    JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = g.relid
    JOIN pg_catalog.pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
    JOIN pg_catalog.pg_depend d
      ON d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND d.objid = ad.oid
     AND d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass
    UNION
    SELECT d.refobjid, 'constraint', k.conname::text, g.schema_name, g.table_name
    FROM group_tables g
    JOIN pg_catalog.pg_constraint k ON k.conrelid = g.relid
    JOIN pg_catalog.pg_depend d
      ON d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND d.objid = k.oid
     AND d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass
    UNION
    SELECT d.refobjid, 'index', ic.relname::text, g.schema_name, g.table_name
    FROM group_tables g
    JOIN pg_catalog.pg_index i ON i.indrelid = g.relid
    JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
    JOIN pg_catalog.pg_depend d
      ON d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = i.indexrelid
     AND d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass
)
SELECT n.nspname, p.proname, pg_catalog.oidvectortypes(p.proargtypes), u.why, u.what, u.schema_name, u.table_name
FROM used u
JOIN pg_catalog.pg_proc p ON p.oid = u.fn
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e
                  WHERE e.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND e.objid = p.oid
                    AND e.deptype = 'e')
ORDER BY 1, 2, 3, 4 DESC, 5, 6, 7
""")


_RELATION_GRANTS = """
SELECT n.nspname, c.relname,
       CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(x.grantee)::text END,
       x.privilege_type::text, x.is_grantable::text
FROM ROWS FROM (pg_catalog.unnest(%(schemas)s::text[]), pg_catalog.unnest(%(names)s::text[])) AS g(s, n)
JOIN pg_catalog.pg_namespace n ON n.nspname = g.s
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = g.n
CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) x
WHERE x.grantee <> c.relowner
ORDER BY 1, 2, 3, 4
"""


_SCHEMA_COMMENTS = """
SELECT n.nspname, pg_catalog.obj_description(n.oid, 'pg_namespace'), pg_catalog.pg_get_userbyid(n.nspowner)
FROM pg_catalog.pg_namespace n WHERE n.nspname = ANY(%s::text[])
"""

# Collations the group's columns use that are not built in: the target needs them made.
_COLLATIONS = (
    "WITH" + _GROUP + """
SELECT DISTINCT cn.nspname, co.collname, co.collprovider::text, co.collcollate, co.collctype,
       COALESCE(pg_catalog.to_jsonb(co) ->> 'colllocale', pg_catalog.to_jsonb(co) ->> 'colliculocale'),
       co.collisdeterministic
FROM group_tables g
JOIN pg_catalog.pg_attribute a ON a.attrelid = g.relid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation
JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
WHERE cn.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY 1, 2
""")

_SCHEMA_GRANTS = """
SELECT n.nspname,
       CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(x.grantee)::text END,
       x.privilege_type::text, x.is_grantable::text
FROM pg_catalog.pg_namespace n CROSS JOIN LATERAL pg_catalog.aclexplode(n.nspacl) x
WHERE n.nspname = ANY(%s::text[]) AND x.grantee <> n.nspowner
ORDER BY 1, 2, 3
"""


# The partitions under each partitioned table of the group, parents before children.
_PARTITION_TREE = """
SELECT n.nspname, c.relname, t.isleaf
FROM ROWS FROM (pg_catalog.unnest(%(schemas)s::text[]), pg_catalog.unnest(%(names)s::text[])) AS g(s, n)
JOIN pg_catalog.pg_namespace gn ON gn.nspname = g.s
JOIN pg_catalog.pg_class gc ON gc.relnamespace = gn.oid AND gc.relname = g.n AND gc.relkind = 'p'
CROSS JOIN LATERAL pg_catalog.pg_partition_tree(gc.oid) t
JOIN pg_catalog.pg_class c ON c.oid = t.relid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE t.level > 0 AND c.relkind IN ('r', 'p', 'f')
ORDER BY t.level, n.nspname, c.relname
"""

# Every index on the given relations (qualified names), for the DDL guard.
_RELATION_INDEXES = """
SELECT n.nspname, i.relname
FROM ROWS FROM (pg_catalog.unnest(%(schemas)s::text[]), pg_catalog.unnest(%(names)s::text[])) AS g(s, n)
JOIN pg_catalog.pg_namespace gn ON gn.nspname = g.s
JOIN pg_catalog.pg_class gc ON gc.relnamespace = gn.oid AND gc.relname = g.n
JOIN pg_catalog.pg_index x ON x.indrelid = gc.oid
JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
JOIN pg_catalog.pg_namespace n ON n.oid = i.relnamespace
ORDER BY 1, 2
"""

_POLICIES = (
    "WITH" + _GROUP + """
SELECT g.schema_name, g.table_name, p.polname, p.polcmd::text, p.polpermissive,
       ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(r)::text END
               FROM pg_catalog.unnest(p.polroles) r ORDER BY 1),
       pg_catalog.pg_get_expr(p.polqual, p.polrelid), pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid)
FROM group_tables g
JOIN pg_catalog.pg_policy p ON p.polrelid = g.relid
ORDER BY 1, 2, 3
""")

# The leaf partitions under each partitioned table of the group.
_PARTITION_TREE_LEAVES = """
SELECT g.s, g.n, n.nspname, c.relname
FROM ROWS FROM (pg_catalog.unnest(%(schemas)s::text[]), pg_catalog.unnest(%(names)s::text[]))
     WITH ORDINALITY AS g(s, n, ord)
JOIN pg_catalog.pg_namespace gn ON gn.nspname = g.s
JOIN pg_catalog.pg_class gc ON gc.relnamespace = gn.oid AND gc.relname = g.n AND gc.relkind = 'p'
CROSS JOIN LATERAL pg_catalog.pg_partition_tree(gc.oid) t
JOIN pg_catalog.pg_class c ON c.oid = t.relid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE t.isleaf
ORDER BY g.ord, n.nspname, c.relname
"""


# What the group's tables, the database's views and its routines use that the move does
# not create and that a user made (not built in, not an extension's): operators, casts,
# operator classes and families, text search configurations and dictionaries,
# conversions; each with what uses it (kind, schema, name, a routine's argument types).
# pg_depend has these for indexes, constraints, defaults, a view's query and a
# SQL-standard body (not for other bodies, which are only text).
_REQUIRED = (
    "WITH" + _GROUP + """,
users(classid, objid, kind, schema_name, object_name, args) AS (
    -- a group table: its indexes, defaults and constraints
    SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, i.indexrelid, 'table', g.schema_name, g.table_name, NULL::text
    FROM group_tables g JOIN pg_catalog.pg_index i ON i.indrelid = g.relid
    UNION ALL
    SELECT 'pg_catalog.pg_attrdef'::pg_catalog.regclass, ad.oid, 'table', g.schema_name, g.table_name, NULL
    FROM group_tables g JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = g.relid
    UNION ALL
    SELECT 'pg_catalog.pg_constraint'::pg_catalog.regclass, co.oid, 'table', g.schema_name, g.table_name, NULL
    FROM group_tables g JOIN pg_catalog.pg_constraint co ON co.conrelid = g.relid
    UNION ALL
    SELECT 'pg_catalog.pg_rewrite'::pg_catalog.regclass, r.oid, 'view', n.nspname::text, v.relname::text, NULL::text
    FROM pg_catalog.pg_rewrite r
    JOIN pg_catalog.pg_class v ON v.oid = r.ev_class AND v.relkind IN ('v', 'm')
    JOIN pg_catalog.pg_namespace n ON n.oid = v.relnamespace
    UNION ALL
    SELECT 'pg_catalog.pg_proc'::pg_catalog.regclass, p.oid, 'routine', n.nspname::text, p.proname::text,
           pg_catalog.oidvectortypes(p.proargtypes)
    FROM pg_catalog.pg_proc p
    JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
)
SELECT u.kind, u.schema_name, u.object_name, u.args, a.type, a.object_names, a.object_args,
       pg_catalog.pg_describe_object(d.refclassid, d.refobjid, 0)
FROM users u
JOIN pg_catalog.pg_depend d ON d.classid = u.classid AND d.objid = u.objid AND d.deptype = 'n'
CROSS JOIN LATERAL pg_catalog.pg_identify_object_as_address(d.refclassid, d.refobjid, 0) a
WHERE d.refclassid IN ('pg_catalog.pg_operator'::pg_catalog.regclass, 'pg_catalog.pg_cast'::pg_catalog.regclass,
                       'pg_catalog.pg_opclass'::pg_catalog.regclass, 'pg_catalog.pg_opfamily'::pg_catalog.regclass,
                       'pg_catalog.pg_ts_config'::pg_catalog.regclass, 'pg_catalog.pg_ts_dict'::pg_catalog.regclass,
                       'pg_catalog.pg_conversion'::pg_catalog.regclass)
  AND d.refobjid >= 16384
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e
                  WHERE e.classid = d.refclassid AND e.objid = d.refobjid AND e.deptype = 'e')
ORDER BY 1, 2, 3, 4, 8
""")


# Owner and comment of the sequences the group uses, and whether a column owns them
# (an owned sequence takes its table's owner).
_SEQUENCE_DETAILS = """
SELECT n.nspname, c.relname, pg_catalog.pg_get_userbyid(c.relowner), pg_catalog.obj_description(c.oid, 'pg_class'),
       EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
               WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid
                 AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.deptype IN ('a', 'i'))
FROM ROWS FROM (pg_catalog.unnest(%(schemas)s::text[]), pg_catalog.unnest(%(names)s::text[])) AS g(s, n)
JOIN pg_catalog.pg_namespace n ON n.nspname = g.s
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = g.n
"""
