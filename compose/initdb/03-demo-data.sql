-- The demo data, as `migrator sandbox up --scale 10` seeds it.
-- Generated from migrator's code by tests/test_compose.py; do not edit.
\connect app
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
    FROM generate_series(1, 10000) g;
INSERT INTO public.file_versions (file_id, version, content_hash, size_bytes, created_at)
    SELECT f, v, sha256(convert_to(f::text || ':' || v::text, 'UTF8')), (f * v) % 1000000,
           now() - (f % 1000) * interval '1 hour' + v * interval '1 minute'
    FROM generate_series(1, 10000) f, generate_series(1, 3) v;
INSERT INTO public.file_comments (file_id, author_id, body)
    SELECT 1 + g % 10000, 1 + g % 500, 'comment ' || g || ' ' || repeat('lorem ipsum ', 1 + g % 5)
    FROM generate_series(1, 10000) g;
ANALYZE;
