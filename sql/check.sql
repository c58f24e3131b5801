-- Statements of `jules-cache check` and of the store's corrupt-file path.
-- Run against an attached manifest (USE manifest).

-- name: entry_files
-- Every entry's file and the size recorded when it was published.
SELECT key, path, bytes FROM entries ORDER BY key;

-- name: delete_entry
DELETE FROM entries WHERE key = $key;

-- name: register_entry
-- Re-register a result file from its own metadata (an orphan, or a manifest rebuild). Hit
-- counts are unknown; the last access is set to now so a rebuild never makes GC expire
-- everything at once.
INSERT OR REPLACE INTO entries (
    key, feature, symbol, path, key_schema, data_fingerprint, data_method,
    config_fingerprint, config_json, code_fingerprint, code_version, result_schema,
    rows, bytes, time_column, min_time, max_time, compute_seconds,
    created_at, last_accessed_at, hit_count, library_versions
) VALUES (
    $key, $feature, $symbol, $path, $key_schema, $data_fingerprint, $data_method,
    $config_fingerprint, $config_json, $code_fingerprint, $code_version, $result_schema,
    $rows, $bytes, $time_column, $min_time, $max_time, $compute_seconds,
    $created_at, $last_accessed_at, 0, $library_versions
);

-- name: bump_counter
-- An upsert, for counters no migration created (rare events: corrupt files found on read).
INSERT INTO counters VALUES ($name, $delta)
ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value;
