-- The SQL catalog over a shared cache (PostgreSQL), the counterpart of sql/catalog.sql: what
-- the per-feature views over S3 objects are built from.

-- name: feature_names
SELECT DISTINCT feature FROM entries ORDER BY feature;

-- name: catalog_files
-- The objects a feature view reads, with the immutable entry metadata the view exposes as
-- columns. A NULL `features` means every feature. Newest first, as in sql/catalog.sql.
SELECT key, feature, symbol, path, code_fingerprint, code_version, config_json, created_at,
       result_schema, time_column, min_time, max_time, data_fingerprint, config_fingerprint
FROM entries
WHERE %(features)s::text[] IS NULL OR feature = ANY(%(features)s::text[])
ORDER BY feature, created_at DESC, key;

-- name: assigned_view_names
SELECT feature, view_name FROM view_names ORDER BY feature;

-- name: view_name_of
SELECT view_name FROM view_names WHERE feature = %(feature)s;

-- name: unnamed_features
SELECT DISTINCT feature FROM entries AS e
WHERE NOT EXISTS (SELECT 1 FROM view_names AS v WHERE v.feature = e.feature)
ORDER BY feature;

-- name: assign_view_names
-- Names are kept for good once given; a host that loses the race to name a feature keeps the
-- name the winner gave (ON CONFLICT DO NOTHING, then read back with view_name_of).
INSERT INTO view_names (feature, view_name, assigned_at)
SELECT f.feature, f.view_name, %(assigned_at)s
FROM unnest(%(features)s::text[], %(names)s::text[]) AS f(feature, view_name)
ON CONFLICT DO NOTHING;
