"""A managed-Postgres profile for a test topology: nobody the tool logs in as is a superuser.

Shaped like the admin role of RDS/Aurora, Cloud SQL, Azure or Supabase: `mover` logs in
with a password (SCRAM) and holds CREATEROLE, REPLICATION, `pg_create_subscription`
(16+), `pg_signal_backend` and `pg_read_all_stats`, and owns the application's database.
The application's objects belong to a role of their own, `app_owner`, whose privileges
`mover` has (as a service's admin has those of the roles it made); the application
connects as `app`, with the privileges `app_owner` granted it.

`gaps` leaves some of that out, as a new user's first try would: the target's database
not owned by `mover` (no CREATE on it nor on schema public), a sequence owned by a role
`mover` has nothing of, no `pg_create_subscription`.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from migrator.lab.sandbox import APP_DB, APP_ROLE
from migrator.postgres.connection import connect

MOVER = "mover"
OWNER = "app_owner"
SEQUENCE_OWNER = "numbering"           # owns public.file_number_seq when `gaps` asks
GAPS = ("target_database", "sequence_owner", "create_subscription")


@dataclass(frozen=True)
class ManagedProfile:
    password: str
    gaps: tuple[str, ...] = ()

    def url(self, cluster) -> str:
        """The DSN the playbook gives for a side: the mover, its password in it."""
        return cluster.url(APP_DB, MOVER, self.password)

    def passwordless_url(self, cluster) -> str:
        """The same without the password (it would come from a passfile)."""
        return cluster.url(APP_DB, MOVER, "")


def make_managed(move, password: str, *, gaps: tuple[str, ...] = ()) -> ManagedProfile:
    """Give a MoveTopology (the demo schema already on its source) the managed profile."""
    unknown = set(gaps) - set(GAPS)
    if unknown:
        raise ValueError(f"unknown gaps: {sorted(unknown)}")
    for side in ("source", "target"):
        cluster = getattr(move, side)
        with connect(cluster.dsn(), purpose="lab managed") as conn:
            version = conn.info.server_version
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(OWNER)))
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} CREATEROLE REPLICATION").format(
                sql.Identifier(MOVER), sql.Literal(password)))
            granted = ["pg_signal_backend", "pg_read_all_stats"]
            if version >= 160000 and "create_subscription" not in gaps:
                granted.append("pg_create_subscription")
            conn.execute(sql.SQL("GRANT {} TO {}").format(
                sql.SQL(", ").join(sql.Identifier(r) for r in [*granted, OWNER]), sql.Identifier(MOVER)))
            if not (side == "target" and "target_database" in gaps):
                conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(APP_DB),
                                                                           sql.Identifier(MOVER)))
            if side == "source" and "sequence_owner" in gaps:
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(SEQUENCE_OWNER)))
        with connect(cluster.dsn(APP_DB), purpose="lab managed") as conn:
            # The owner made the application's objects there (on a target not yet set up: only USAGE).
            privileges = "USAGE" if side == "target" and "target_database" in gaps else "USAGE, CREATE"
            conn.execute(sql.SQL("GRANT {} ON SCHEMA public TO {}").format(sql.SQL(privileges),
                                                                          sql.Identifier(OWNER)))
            if side == "source":
                _hand_over(conn, "sequence_owner" in gaps)
    return ManagedProfile(password, tuple(gaps))


def _hand_over(conn, sequence_elsewhere: bool) -> None:
    """The application's objects to their owner role; its privileges granted by that owner."""
    rows = conn.execute(
        "SELECT c.relkind, n.nspname, c.relname FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'S', 'v', 'm') ORDER BY c.relkind DESC").fetchall()
    kinds = {"r": "TABLE", "p": "TABLE", "S": "SEQUENCE", "v": "VIEW", "m": "MATERIALIZED VIEW"}
    conn.execute(sql.SQL("ALTER TYPE public.file_kind OWNER TO {}").format(sql.Identifier(OWNER)))
    for kind, schema, name in rows:
        owner = SEQUENCE_OWNER if sequence_elsewhere and name == "file_number_seq" else OWNER
        if kind == "S" and conn.execute(
                "SELECT EXISTS (SELECT FROM pg_catalog.pg_depend d WHERE d.objid = %s::regclass "
                "AND d.deptype IN ('a', 'i'))", (f"{schema}.{name}",)).fetchone()[0]:
            continue   # owned by a column: it goes with its table
        conn.execute(sql.SQL("ALTER {} {} OWNER TO {}").format(
            sql.SQL(kinds[kind]), sql.Identifier(schema, name), sql.Identifier(owner)))
    # The app's privileges, granted again by their owners (the superuser's go).
    app, owner = sql.Identifier(APP_ROLE), sql.Identifier(OWNER)
    conn.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {}").format(app))
    conn.execute(sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {}").format(app))
    conn.execute(sql.SQL("SET ROLE {}").format(owner))
    conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}").format(app))
    conn.execute(sql.SQL("RESET ROLE"))
    for sequence_owner in ([OWNER, SEQUENCE_OWNER] if sequence_elsewhere else [OWNER]):
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(sequence_owner)))
        for (schema, name) in conn.execute(
                "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                "ON n.oid = c.relnamespace WHERE c.relkind = 'S' AND n.nspname = 'public' "
                "AND pg_catalog.pg_get_userbyid(c.relowner) = current_user").fetchall():
            conn.execute(sql.SQL("GRANT USAGE, SELECT ON SEQUENCE {} TO {}").format(
                sql.Identifier(schema, name), app))
        conn.execute(sql.SQL("RESET ROLE"))
