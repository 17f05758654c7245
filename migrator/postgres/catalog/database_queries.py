"""The catalog model's queries over the whole database rather than the group: every
view, routine and relation of the database's own schemas, to find what uses the group.
Only `reader` runs them."""

# Every view and materialized view of the database's own schemas (not an extension's),
# with the relations and routines its query uses (the rule's pg_depend entries).
_VIEWS = """
SELECT n.nspname, v.relname, v.relkind::text, pg_catalog.pg_get_viewdef(v.oid), v.reloptions::text[],
       ARRAY(SELECT DISTINCT ARRAY[rn.nspname::text, rc.relname::text, rc.relkind::text]
               FROM pg_catalog.pg_rewrite r
               JOIN pg_catalog.pg_depend d
                 ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = r.oid
                AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid <> v.oid
               JOIN pg_catalog.pg_class rc ON rc.oid = d.refobjid
               JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace
              WHERE r.ev_class = v.oid),
       ARRAY(SELECT DISTINCT ARRAY[pn.nspname::text, p.proname::text, pg_catalog.oidvectortypes(p.proargtypes)]
               FROM pg_catalog.pg_rewrite r
               JOIN pg_catalog.pg_depend d
                 ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = r.oid
                AND d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass
               JOIN pg_catalog.pg_proc p ON p.oid = d.refobjid
               JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
              WHERE r.ev_class = v.oid AND pn.nspname NOT IN ('pg_catalog', 'information_schema')),
       pg_catalog.obj_description(v.oid, 'pg_class'),
       pg_catalog.pg_get_userbyid(v.relowner),
       ARRAY(SELECT ARRAY[CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END,
                          a.privilege_type::text, a.is_grantable::text]
               FROM pg_catalog.aclexplode(v.relacl) a WHERE a.grantee <> v.relowner
              ORDER BY a.grantee, a.privilege_type),
       ARRAY(SELECT pg_catalog.pg_get_indexdef(i.indexrelid) FROM pg_catalog.pg_index i
              WHERE i.indrelid = v.oid ORDER BY i.indexrelid)
FROM pg_catalog.pg_class v
JOIN pg_catalog.pg_namespace n ON n.oid = v.relnamespace
WHERE v.relkind IN ('v', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%%'
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e
                  WHERE e.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND e.objid = v.oid
                    AND e.deptype = 'e')
ORDER BY 1, 2
"""

# Every routine of the database's own schemas (not an extension's): what its body is
# written in, and for a SQL-standard body (BEGIN ATOMIC) the relations pg_depend knows.
_ALL_ROUTINES = """
SELECT n.nspname, p.proname, pg_catalog.oidvectortypes(p.proargtypes), p.prokind::text, l.lanname,
       p.prosrc,
       CASE WHEN p.prokind <> 'a' THEN pg_catalog.pg_get_functiondef(p.oid) END,
       pg_catalog.to_jsonb(p) ->> 'prosqlbody' IS NOT NULL,
       ARRAY(SELECT DISTINCT ARRAY[rn.nspname::text, rc.relname::text]
               FROM pg_catalog.pg_depend d
               JOIN pg_catalog.pg_class rc ON rc.oid = d.refobjid
               JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace
              WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = p.oid
                AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass),
       p.proconfig::text[],
       pg_catalog.obj_description(p.oid, 'pg_proc'),
       pg_catalog.pg_get_userbyid(p.proowner),
       -- an aggregate's parts
       (SELECT ARRAY[a.aggtransfn::pg_catalog.regproc::text, pg_catalog.format_type(a.aggtranstype, NULL),
                     NULLIF(a.aggfinalfn::pg_catalog.oid, 0)::pg_catalog.regproc::text,
                     NULLIF(a.aggcombinefn::pg_catalog.oid, 0)::pg_catalog.regproc::text,
                     a.agginitval, a.aggkind::text,
                     pg_catalog.pg_get_function_arguments(p.oid)]
          FROM pg_catalog.pg_aggregate a WHERE a.aggfnoid = p.oid)
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
JOIN pg_catalog.pg_language l ON l.oid = p.prolang
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e
                  WHERE e.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND e.objid = p.oid
                    AND e.deptype = 'e')
ORDER BY 1, 2, 3
"""

# The relations of the database's own schemas, to tell a table a body names from a
# name that is not one (a CTE, a record, a temporary table).
_RELATIONS = """
SELECT n.nspname, c.relname, c.relkind::text
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'
"""


# Every relation of the database that serves an ordinary table, with the table(s) it
# serves: the table itself, its indexes, its TOAST table and that one's index, and the
# sequences its columns use (owned, identity, or called from a default; a sequence
# several tables use serves each of them). What a relation lock in pg_locks is about.
_TABLE_RELATIONS = """
WITH tables AS (
    SELECT c.oid, n.nspname, c.relname, c.reltoastrelid
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
),
sequence_uses AS (
    SELECT d.objid AS seqid, d.refobjid AS relid
    FROM pg_catalog.pg_depend d
    WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
      AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
      AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0
    UNION
    SELECT d.refobjid, ad.adrelid
    FROM pg_catalog.pg_attrdef ad
    JOIN pg_catalog.pg_depend d
      ON d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND d.objid = ad.oid
     AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
)
SELECT t.oid, 'table', t.nspname, t.relname FROM tables t
UNION ALL
SELECT i.indexrelid, 'index', t.nspname, t.relname
FROM tables t JOIN pg_catalog.pg_index i ON i.indrelid = t.oid
UNION ALL
SELECT t.reltoastrelid, 'toast', t.nspname, t.relname FROM tables t WHERE t.reltoastrelid <> 0
UNION ALL
SELECT i.indexrelid, 'toast', t.nspname, t.relname
FROM tables t JOIN pg_catalog.pg_index i ON i.indrelid = t.reltoastrelid WHERE t.reltoastrelid <> 0
UNION ALL
SELECT u.seqid, 'sequence', t.nspname, t.relname
FROM sequence_uses u
JOIN tables t ON t.oid = u.relid
JOIN pg_catalog.pg_class s ON s.oid = u.seqid AND s.relkind = 'S'
ORDER BY 1, 3, 4
"""
