"""The catalog model's queries over the whole database rather than the group: every
view, routine and relation of the database's own schemas, to find what uses the group.
Only `reader` runs them."""

# A referenced type `d.refobjid` as `t`, its element type when it is an array.
_ELEMENT = """
                 ON t.oid = (SELECT CASE WHEN a.typcategory = 'A' AND a.typelem <> 0 THEN a.typelem ELSE a.oid END
                               FROM pg_catalog.pg_type a WHERE a.oid = d.refobjid)"""

# The extension `e` a dependency `d` (pg_depend) points into: its referenced object, or
# for a type the array's element, is a member of it.
_MEMBER_OF = """
               JOIN pg_catalog.pg_depend x
                 ON x.classid = d.refclassid AND x.deptype = 'e'
                AND x.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
                AND x.objid = CASE WHEN d.refclassid <> 'pg_catalog.pg_type'::pg_catalog.regclass THEN d.refobjid
                                   ELSE (SELECT CASE WHEN a.typcategory = 'A' AND a.typelem <> 0 THEN a.typelem
                                                     ELSE a.oid END
                                           FROM pg_catalog.pg_type a WHERE a.oid = d.refobjid) END
               JOIN pg_catalog.pg_extension e ON e.oid = x.refobjid"""


# Every view and materialized view of the database's own schemas (not an extension's),
# with the relations and routines its query uses (the rule's pg_depend entries).
_VIEWS = ("""
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
              WHERE i.indrelid = v.oid ORDER BY i.indexrelid),
       -- the types its query names (casts; a composite's field: that is the composite's
       -- pg_class row among the relations above), an array standing for its element type
       ARRAY(SELECT DISTINCT ARRAY[tn.nspname::text, t.typname::text]
               FROM pg_catalog.pg_rewrite r
               JOIN pg_catalog.pg_depend d
                 ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = r.oid
                AND d.refclassid = 'pg_catalog.pg_type'::pg_catalog.regclass
               JOIN pg_catalog.pg_type t""" + _ELEMENT + """
               JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace
              WHERE r.ev_class = v.oid AND tn.nspname NOT IN ('pg_catalog', 'information_schema')),
       ARRAY(SELECT DISTINCT e.extname::text
               FROM pg_catalog.pg_rewrite r
               JOIN pg_catalog.pg_depend d
                 ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = r.oid""" + _MEMBER_OF + """
              WHERE r.ev_class = v.oid)
FROM pg_catalog.pg_class v
JOIN pg_catalog.pg_namespace n ON n.oid = v.relnamespace
WHERE v.relkind IN ('v', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%%'
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e
                  WHERE e.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND e.objid = v.oid
                    AND e.deptype = 'e')
ORDER BY 1, 2
""")

# Every routine of the database's own schemas (not an extension's): what its body is
# written in, and for a SQL-standard body (BEGIN ATOMIC) the relations pg_depend knows.
_ALL_ROUTINES = ("""
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
          FROM pg_catalog.pg_aggregate a WHERE a.aggfnoid = p.oid),
       -- its argument and result types (and a SQL-standard body's), arrays as their element
       ARRAY(SELECT DISTINCT ARRAY[tn.nspname::text, t.typname::text]
               FROM pg_catalog.pg_depend d
               JOIN pg_catalog.pg_type t""" + _ELEMENT + """
               JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace
              WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = p.oid
                AND d.refclassid = 'pg_catalog.pg_type'::pg_catalog.regclass
                AND tn.nspname NOT IN ('pg_catalog', 'information_schema')),
       -- the extensions whose members those types, or a SQL-standard body, use
       ARRAY(SELECT DISTINCT e.extname::text
               FROM pg_catalog.pg_depend d""" + _MEMBER_OF + """
              WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = p.oid)
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
JOIN pg_catalog.pg_language l ON l.oid = p.prolang
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e
                  WHERE e.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND e.objid = p.oid
                    AND e.deptype = 'e')
ORDER BY 1, 2, 3
""")

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


# Every type of the database's own and its extensions' schemas that is not an array,
# to resolve the type names routine bodies spell: its kind, the relation kind when it
# is a relation's row type, and the extension it belongs to.
_TYPE_NAMES = """
SELECT n.nspname, t.typname, t.typtype::text, COALESCE(c.relkind::text, ''),
       (SELECT e.extname::text FROM pg_catalog.pg_depend x
          JOIN pg_catalog.pg_extension e ON e.oid = x.refobjid
         WHERE x.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND x.objid = t.oid AND x.deptype = 'e'
           AND x.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass)
FROM pg_catalog.pg_type t
JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
LEFT JOIN pg_catalog.pg_class c ON c.oid = t.typrelid
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'
  AND NOT (t.typcategory = 'A' AND t.typelem <> 0)
"""

# The routines extensions provide, by name, to tell which extension a body's call needs.
_EXTENSION_ROUTINES = """
SELECT DISTINCT n.nspname, p.proname, e.extname::text
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
JOIN pg_catalog.pg_depend x
  ON x.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND x.objid = p.oid AND x.deptype = 'e'
 AND x.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
JOIN pg_catalog.pg_extension e ON e.oid = x.refobjid
"""


# Whole-database mode (`schemas:`). The schemas of the database a user made: not the
# system's, not the tool's, not an extension's.
_USER_SCHEMAS = """
SELECT n.nspname::text
FROM pg_catalog.pg_namespace n
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'migrator') AND n.nspname NOT LIKE 'pg\\_%%'
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e
                  WHERE e.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND e.objid = n.oid
                    AND e.deptype = 'e')
ORDER BY 1
"""

# The tables of those schemas (a partition comes with its root), not an extension's.
_SCHEMA_TABLES = """
SELECT n.nspname::text, c.relname::text
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(%(schemas)s::text[]) AND c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e
                  WHERE e.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND e.objid = c.oid
                    AND e.deptype = 'e')
ORDER BY 1, 2
"""

# The sequences of those schemas that no identity column makes, with what CREATE
# SEQUENCE needs, their owner, comment, privileges and the column that owns them.
_SCHEMA_SEQUENCES = """
SELECT n.nspname, c.relname, pg_catalog.format_type(q.seqtypid, NULL), q.seqstart, q.seqincrement,
       q.seqmin, q.seqmax, q.seqcache, q.seqcycle
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_sequence q ON q.seqrelid = c.oid
WHERE c.relkind = 'S' AND n.nspname = ANY(%(schemas)s::text[])
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid
                    AND d.deptype IN ('i', 'e'))
ORDER BY 1, 2
"""

# Every object of the database a user made, to tell by name what stays behind: schemas,
# relations, routines, types, and the kinds the tool does not create (operators, casts,
# operator classes, collations, text search objects, conversions, statistics objects,
# rules, event triggers, foreign servers, publications). Extension members come with
# their extension; the tool's own objects are left out.
_DATABASE_OBJECTS = """
WITH objects(classid, objid) AS (
    SELECT 'pg_catalog.pg_namespace'::pg_catalog.regclass, oid FROM pg_catalog.pg_namespace
    UNION ALL SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, oid FROM pg_catalog.pg_class
              WHERE relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
    UNION ALL SELECT 'pg_catalog.pg_proc'::pg_catalog.regclass, oid FROM pg_catalog.pg_proc
    UNION ALL SELECT 'pg_catalog.pg_type'::pg_catalog.regclass, t.oid FROM pg_catalog.pg_type t
              LEFT JOIN pg_catalog.pg_class c ON c.oid = t.typrelid
              WHERE (c.oid IS NULL OR c.relkind = 'c') AND NOT (t.typcategory = 'A' AND t.typelem <> 0)
                AND t.typtype <> 'm'
    UNION ALL SELECT 'pg_catalog.pg_operator'::pg_catalog.regclass, oid FROM pg_catalog.pg_operator
    UNION ALL SELECT 'pg_catalog.pg_cast'::pg_catalog.regclass, oid FROM pg_catalog.pg_cast
    UNION ALL SELECT 'pg_catalog.pg_opclass'::pg_catalog.regclass, oid FROM pg_catalog.pg_opclass
    UNION ALL SELECT 'pg_catalog.pg_opfamily'::pg_catalog.regclass, oid FROM pg_catalog.pg_opfamily
    UNION ALL SELECT 'pg_catalog.pg_collation'::pg_catalog.regclass, oid FROM pg_catalog.pg_collation
    UNION ALL SELECT 'pg_catalog.pg_conversion'::pg_catalog.regclass, oid FROM pg_catalog.pg_conversion
    UNION ALL SELECT 'pg_catalog.pg_ts_config'::pg_catalog.regclass, oid FROM pg_catalog.pg_ts_config
    UNION ALL SELECT 'pg_catalog.pg_ts_dict'::pg_catalog.regclass, oid FROM pg_catalog.pg_ts_dict
    UNION ALL SELECT 'pg_catalog.pg_statistic_ext'::pg_catalog.regclass, oid FROM pg_catalog.pg_statistic_ext
    UNION ALL SELECT 'pg_catalog.pg_rewrite'::pg_catalog.regclass, oid FROM pg_catalog.pg_rewrite
              WHERE rulename <> '_RETURN'
    UNION ALL SELECT 'pg_catalog.pg_event_trigger'::pg_catalog.regclass, oid FROM pg_catalog.pg_event_trigger
    UNION ALL SELECT 'pg_catalog.pg_foreign_server'::pg_catalog.regclass, oid FROM pg_catalog.pg_foreign_server
    UNION ALL SELECT 'pg_catalog.pg_publication'::pg_catalog.regclass, oid FROM pg_catalog.pg_publication
)
SELECT o.classid::text, i.type, i.schema, i.name, i.identity, pg_catalog.pg_describe_object(o.classid, o.objid, 0)
FROM objects o
CROSS JOIN LATERAL pg_catalog.pg_identify_object(o.classid, o.objid, 0) i
WHERE o.objid >= 16384
  AND COALESCE(i.schema, '') NOT IN ('pg_catalog', 'information_schema', 'migrator')
  AND COALESCE(i.schema, '') NOT LIKE 'pg\\_%%'
  AND NOT (o.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
           AND (i.identity IN ('pg_catalog', 'information_schema', 'migrator', 'public')
                OR i.identity LIKE 'pg\\_%%'))
  AND NOT (o.classid = 'pg_catalog.pg_publication'::pg_catalog.regclass AND i.identity LIKE 'migrator\\_%%')
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e
                  WHERE e.classid = o.classid AND e.objid = o.objid AND e.deptype IN ('e', 'i'))
ORDER BY 2, 5
"""
