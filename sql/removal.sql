-- How entries leave the manifest: rm and quarantine (engine/manifest_catalog.py drop_entries),
-- GC, check --fix and verify --fix (maintenance/removal.py). Run against an attached manifest.

-- name: removable
-- Which of these entries a removal takes: each with a row or, with a last-access time per key
-- (GC), each not accessed since the plan was made. Asked, under the exclusive lock, before
-- their files are deleted: only the rows of files that went are deleted then.
SELECT entries.key
FROM entries
JOIN (
    SELECT unnest($keys::VARCHAR[]) AS key, unnest($last_accessed::TIMESTAMP[]) AS last_accessed_at
) AS doomed ON entries.key = doomed.key
WHERE doomed.last_accessed_at IS NULL OR entries.last_accessed_at = doomed.last_accessed_at;

-- name: delete_entries
-- Delete entries by key. With a last-access time per key (GC), a row accessed since the plan
-- was made is spared; NULL deletes unconditionally. Returns what was really deleted.
DELETE FROM entries
USING (
    SELECT unnest($keys::VARCHAR[]) AS key, unnest($last_accessed::TIMESTAMP[]) AS last_accessed_at
) AS doomed
WHERE entries.key = doomed.key
  AND (doomed.last_accessed_at IS NULL OR entries.last_accessed_at = doomed.last_accessed_at)
RETURNING entries.key, entries.feature, entries.symbol, entries.result_schema;

-- name: delete_entry_inputs
-- Every other per-key table follows its entry in the same transaction.
DELETE FROM entry_inputs WHERE key IN (SELECT unnest($keys::VARCHAR[]));

-- name: keys_with_rows
-- Which of these keys have a row right now (checked under the lock before a file goes).
SELECT key FROM entries WHERE key IN (SELECT unnest($keys::VARCHAR[]));

-- name: orphan_rows
-- Rows of per-key tables whose entry is gone: `check` reports them, --fix deletes them.
SELECT DISTINCT 'entry_inputs' AS table_name, key
FROM entry_inputs
WHERE key NOT IN (SELECT key FROM entries)
ORDER BY key;
