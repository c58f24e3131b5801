-- Statements of `jules-cache check` and of the store's corrupt-file path.
-- Run against an attached manifest (USE manifest).

-- name: entry_files
-- Every entry's file, the size recorded when it was published, and its feature.
SELECT key, path, bytes, feature FROM entries ORDER BY key;

-- name: bump_counter
-- DEPRECATED: entries.sql's bump_counter is the one statement that bumps a counter. This copy is
-- kept only because store.py (being split by the storage-seam work) still reads it for
-- corrupt_files; delete it once that call reads entries.sql's (issue 15).
INSERT INTO counters VALUES ($name, $delta)
ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value;

-- name: keys_without_rows
-- Which of these keys (hit from files) have no row: orphans of a killed rm or GC.
SELECT key FROM (SELECT unnest($keys::VARCHAR[]) AS key) AS hit
WHERE key NOT IN (SELECT key FROM entries);
