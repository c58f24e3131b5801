-- Statements of `jules-cache check` and of the store's corrupt-file path.
-- Run against an attached manifest (USE manifest).

-- name: entry_files
-- Every entry's file and the size recorded when it was published.
SELECT key, path, bytes FROM entries ORDER BY key;

-- name: delete_entry
DELETE FROM entries WHERE key = $key;

-- name: bump_counter
-- An upsert, for counters no migration created (rare events: corrupt files found on read).
INSERT INTO counters VALUES ($name, $delta)
ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value;
