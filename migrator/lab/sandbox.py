"""The local sandbox: a source and a target cluster, a PgBouncer and demo data.

The layout is Figma's: one PgBouncer [databases] entry for the whole application
(`app`) and one dedicated to the table group being moved (`app_files`), both routing
to the source until the move reroutes the dedicated one. The test fixtures build the
same topology through `build_move_topology`.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from pathlib import Path

import yaml
from psycopg import sql

from migrator.errors import OperationFailed
from migrator.lab.topology import Topology, remove_tree
from migrator.postgres.connection import connect

APP_DB = "app"
APP_ROLE = "app"
WHOLE_ENTRY = "app"          # the whole application's PgBouncer entry
GROUP_ENTRY = "app_files"    # the entry dedicated to the moved group
STATE_FILE = "sandbox.json"
PASSFILE = "pgpass"
GROUP_TABLES = ("public.files", "public.file_versions", "public.file_comments")

DEMO_SCHEMA = """
CREATE TYPE public.file_kind AS ENUM ('document', 'image', 'video', 'other');
CREATE SEQUENCE public.file_number_seq;

-- Outside the group: stays on the source.
CREATE TABLE public.teams (
    id bigserial PRIMARY KEY,
    name text NOT NULL UNIQUE
);
CREATE TABLE public.users (
    id bigserial PRIMARY KEY,
    team_id bigint NOT NULL REFERENCES public.teams(id),
    email text NOT NULL UNIQUE
);

-- The group: files and what hangs off them. owner_id refers to users by value
-- only: a foreign key across the group boundary could not survive the move.
CREATE TABLE public.files (
    id bigserial PRIMARY KEY,
    uuid uuid NOT NULL DEFAULT gen_random_uuid(),
    number bigint NOT NULL DEFAULT nextval('public.file_number_seq'),
    owner_id bigint NOT NULL,
    kind public.file_kind NOT NULL DEFAULT 'document',
    name text NOT NULL,
    size_bytes bigint NOT NULL DEFAULT 0,
    metadata jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX files_uuid_key ON public.files (uuid);
CREATE INDEX files_owner_idx ON public.files (owner_id, created_at);
CREATE INDEX files_name_idx ON public.files (lower(name));

CREATE TABLE public.file_versions (
    id bigserial PRIMARY KEY,
    file_id bigint NOT NULL REFERENCES public.files(id) ON DELETE CASCADE,
    version integer NOT NULL,
    content_hash bytea NOT NULL,
    size_bytes bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (file_id, version)
);
CREATE INDEX file_versions_created_idx ON public.file_versions (created_at);
-- Blobs are content-addressed: finding a version by its hash is a random-order index.
CREATE INDEX file_versions_hash_idx ON public.file_versions (content_hash);

CREATE TABLE public.file_comments (
    id bigserial PRIMARY KEY,
    file_id bigint NOT NULL REFERENCES public.files(id) ON DELETE CASCADE,
    author_id bigint NOT NULL,
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX file_comments_file_idx ON public.file_comments (file_id);
"""

# Set-based seeding on the server: a client-side loop would dominate `sandbox up`.
SEED = """
INSERT INTO public.teams (name) SELECT 'team-' || g FROM generate_series(1, 20) g;
INSERT INTO public.users (team_id, email)
    SELECT 1 + g % 20, 'user' || g || '@example.com' FROM generate_series(1, 500) g;
INSERT INTO public.files (owner_id, kind, name, size_bytes, metadata, created_at)
    SELECT 1 + g % 500,
           (ARRAY['document','image','video','other'])[1 + g % 4]::public.file_kind,
           'file-' || g || '.' || (ARRAY['doc','png','mp4','bin'])[1 + g % 4],
           (g::bigint * 7919) % 10000000,
           jsonb_build_object('tags', jsonb_build_array('t' || g % 7), 'rev', g % 13),
           now() - (g % 1000) * interval '1 hour'
    FROM generate_series(1, %(files)s) g;
INSERT INTO public.file_versions (file_id, version, content_hash, size_bytes, created_at)
    SELECT f, v, sha256(convert_to(f::text || ':' || v::text, 'UTF8')), (f * v) % 1000000,
           now() - (f % 1000) * interval '1 hour' + v * interval '1 minute'
    FROM generate_series(1, %(files)s) f, generate_series(1, 3) v;
INSERT INTO public.file_comments (file_id, author_id, body)
    SELECT 1 + g % %(files)s, 1 + g % 500, 'comment ' || g || ' ' || repeat('lorem ipsum ', 1 + g % 5)
    FROM generate_series(1, %(comments)s) g;
ANALYZE;
"""


@dataclasses.dataclass
class MoveTopology:
    """A source, a target and PgBouncer(s) routing `app` and `app_files` to the source."""

    topology: Topology
    app_password: str
    directory: Path

    @property
    def source(self):
        return self.topology.clusters["source"]

    @property
    def target(self):
        return self.topology.clusters["target"]

    @property
    def standby(self):
        """The source's physical standby, when the topology has one (source_standby=)."""
        return self.topology.clusters.get("standby")

    @property
    def pgbouncer(self):
        return next(iter(self.topology.pgbouncers.values()))

    @property
    def pgbouncers(self):
        return list(self.topology.pgbouncers.values())

    def app_dsn(self, entry: str = GROUP_ENTRY, pgbouncer=None) -> str:
        """How the application connects: through PgBouncer, as the app role."""
        return (pgbouncer or self.pgbouncer).dsn(entry, APP_ROLE)

    def playbook_doc(self, tables=GROUP_TABLES, *, name: str = "files-partition", urls: bool = True) -> dict:
        return {
            "name": name,
            "source": {"dsn": self.source.url(APP_DB)},
            "target": {"dsn": self.target.url(APP_DB)},
            "tables": list(tables),
            "app_roles": [APP_ROLE],
            "pgbouncers": [
                {"admin_dsn": b.admin_url(), "database": GROUP_ENTRY, "config_file": str(b.config_file)}
                for b in self.pgbouncers
            ],
            "cutover": {"max_pause": "2s", "grace": "500ms", "max_lag": "16MB"},
            "indexes": {"defer": True},
        }

    def write_playbook(self, path: Path, doc: dict | None = None, **kwargs) -> Path:
        path.write_text(yaml.safe_dump(doc or self.playbook_doc(**kwargs), sort_keys=False))
        return path


def build_move_topology(
    root: Path,
    *,
    durable: bool = False,
    source_version: int | None = None,
    target_version: int | None = None,
    pgbouncers: int = 1,
    password: str | None = None,
    templates: dict | None = None,
    source_standby: str | None = None,
) -> MoveTopology:
    """Start a source and target cluster with the `app` database and role, and PgBouncers.

    source_standby: also a physical standby of the source ("standby"), that synchronises
    the source's failover slots ("slot-sync", PostgreSQL 17+) or does not ("plain")."""
    if source_standby not in (None, "slot-sync", "plain"):
        raise ValueError(f"source_standby: {source_standby!r} is not slot-sync or plain")
    password = password or secrets.token_urlsafe(12)
    app_password = secrets.token_urlsafe(12)
    topo = Topology(root=root)
    try:
        for name, version in (("source", source_version), ("target", target_version)):
            template = (templates or {}).get(version)
            cluster = topo.add_cluster(
                name, version=version, password=password, durable=durable, template=template
            )
            create_app_database(cluster, app_password)
        if source_standby:
            topo.add_standby("standby", topo.clusters["source"], slot_sync=source_standby == "slot-sync",
                             dbname=APP_DB, durable=durable)
        users = {topo.clusters["source"].superuser: password, APP_ROLE: app_password}
        for index in range(pgbouncers):
            name = "pgbouncer" if index == 0 else f"pgbouncer{index + 1}"
            source = topo.clusters["source"]
            topo.add_pgbouncer(name, {WHOLE_ENTRY: source, GROUP_ENTRY: source}, users, dbname=APP_DB)
    except BaseException:
        topo.stop()
        raise
    return MoveTopology(topology=topo, app_password=app_password, directory=Path(root))


def create_app_database(cluster, app_password: str) -> None:
    """The `app` role and database on a fresh server (any object with `.dsn(dbname)`);
    both topology back-ends, local and containers, set up their servers with this."""
    role, database = sql.Identifier(APP_ROLE), sql.Identifier(APP_DB)
    with connect(cluster.dsn(), purpose="lab setup") as conn:
        # CREATE ROLE takes no bind parameters: the password goes in as a literal.
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(role, sql.Literal(app_password)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(database))
    with connect(cluster.dsn(APP_DB), purpose="lab setup") as conn:
        # PG 15 no longer lets every role create in public; the app only reads/writes.
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(role))


def create_direct_role(dsn: str, role: str, password: str) -> None:
    """A role of its own with the app's rights on the demo tables, for a client that
    connects to the server directly (a cron job): what `migrator analyze` must catch."""
    name = sql.Identifier(role)
    with connect(dsn, purpose="lab direct-role") as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(name, sql.Literal(password)))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(name))
        conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}").format(name))
        conn.execute(sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(name))


def create_demo_schema(dsn: str, *, scale: int = 0, app_role: str = APP_ROLE) -> None:
    """The demo schema on one server, seeded with `scale` thousand files when scale > 0."""
    with connect(dsn, purpose="lab demo-schema") as conn:
        conn.execute(DEMO_SCHEMA)
        conn.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {app_role}; "
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {app_role}"
        )
        if scale > 0:
            files = scale * 1000
            conn.execute(SEED.replace("%(files)s", str(files)).replace("%(comments)s", str(files)))


# --------------------------------------------------------------------------- the verbs


@dataclasses.dataclass
class SandboxInfo:
    directory: Path
    playbook: Path
    created: bool
    processes: list[int]
    source_url: str
    target_url: str
    app_url: str
    group_url: str
    admin_url: str
    scale: int

    def to_dict(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}


def _info(directory: Path, move: MoveTopology, created: bool, scale: int) -> SandboxInfo:
    passfile = directory / PASSFILE
    suffix = f"?passfile={passfile}"
    return SandboxInfo(
        directory=directory,
        playbook=directory / "playbook.yaml",
        created=created,
        processes=move.topology.processes(),
        source_url=f"postgresql://{move.source.superuser}@127.0.0.1:{move.source.port}/{APP_DB}{suffix}",
        target_url=f"postgresql://{move.target.superuser}@127.0.0.1:{move.target.port}/{APP_DB}{suffix}",
        app_url=f"postgresql://{APP_ROLE}@127.0.0.1:{move.pgbouncer.port}/{WHOLE_ENTRY}{suffix}",
        group_url=f"postgresql://{APP_ROLE}@127.0.0.1:{move.pgbouncer.port}/{GROUP_ENTRY}{suffix}",
        admin_url=f"postgresql://{move.pgbouncer.admin_user}@127.0.0.1:{move.pgbouncer.port}/pgbouncer{suffix}",
        scale=scale,
    )


def sandbox_up(directory: Path, *, scale: int = 10) -> SandboxInfo:
    """Start the sandbox in directory (or restart a stopped one); harmless when it is up."""
    directory = Path(directory).absolute()
    state = directory / STATE_FILE
    if state.exists():
        topo, doc = Topology.load(state)
        topo.start()
        move = MoveTopology(topology=topo, app_password=doc["app_password"], directory=directory)
        return _info(directory, move, created=False, scale=doc.get("scale", scale))
    if directory.exists() and any(directory.iterdir()):
        raise OperationFailed(
            f"{directory} is not empty and holds no sandbox",
            hint="choose a new or empty directory for --dir",
        )
    directory.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    move = build_move_topology(directory, durable=True)
    try:
        create_demo_schema(move.source.dsn(APP_DB), scale=scale)
        _write_passfile(directory, move)
        info = _info(directory, move, created=True, scale=scale)
        doc = move.playbook_doc()
        doc["source"]["dsn"] = info.source_url
        doc["target"]["dsn"] = info.target_url
        doc["pgbouncers"][0]["admin_dsn"] = info.admin_url
        move.write_playbook(info.playbook, doc)
        move.topology.save(state, {"app_password": move.app_password, "scale": scale,
                                   "seconds_to_build": round(time.monotonic() - started, 1)})
    except BaseException:
        move.topology.stop()
        remove_tree(directory)
        raise
    return info


def _write_passfile(directory: Path, move: MoveTopology) -> None:
    # The playbook never holds a secret: libpq reads them from this passfile, which
    # the servers' OS user must read too (subscriptions connect from the target).
    passfile = directory / PASSFILE
    lines = [
        f"127.0.0.1:*:*:{move.source.superuser}:{move.source.password}",
        f"127.0.0.1:*:*:{APP_ROLE}:{move.app_password}",
    ]
    passfile.write_text("\n".join(lines) + "\n")
    passfile.chmod(0o600)
    if move.topology.run_as:
        import os
        import pwd

        entry = pwd.getpwnam(move.topology.run_as)
        os.chown(passfile, entry.pw_uid, entry.pw_gid)


def sandbox_down(directory: Path) -> list[int]:
    """Stop every process of the sandbox and remove its directory; returns pids left (none)."""
    directory = Path(directory).absolute()
    state = directory / STATE_FILE
    if not state.exists():
        if directory.exists() and any(directory.iterdir()):
            raise OperationFailed(f"{directory} holds no sandbox ({STATE_FILE} missing); not removing it")
        remove_tree(directory)
        return []
    topo, _ = Topology.load(state)
    topo.stop()
    left = topo.processes()
    if left:
        raise OperationFailed(f"sandbox processes still running: {left}")
    remove_tree(directory)
    return left


def sandbox_status(directory: Path) -> SandboxInfo:
    directory = Path(directory).absolute()
    state = directory / STATE_FILE
    if not state.exists():
        raise OperationFailed(f"no sandbox in {directory}", hint=f"start one: migrator sandbox up --dir {directory}")
    topo, doc = Topology.load(state)
    move = MoveTopology(topology=topo, app_password=doc["app_password"], directory=directory)
    return _info(directory, move, created=False, scale=doc.get("scale", 0))
