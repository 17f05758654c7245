-- The demo schema and the app role's grants (migrator.lab.sandbox.create_demo_schema).
-- Generated from migrator's code by tests/test_compose.py; do not edit.
\connect app
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
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app; GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO app;
