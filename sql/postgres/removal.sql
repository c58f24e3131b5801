-- The one way entries leave a shared catalog (PostgreSQL), the counterpart of sql/removal.sql:
-- rm, GC and check --fix. An entry's object is deleted inside the transaction deleting its row
-- (postgres_catalog.drop_entries): if S3 refuses, the row stays and the entry is whole; if the
-- COMMIT fails after the object went, the row left is a miss, which GC collects as dangling.
-- Never the other way: an object without a row is served by every hit (hits need no row).

-- name: removable
-- Which of these entries a removal takes (lock_entries first, in the same transaction): each
-- with a row or, with a last-access time per key (GC), each not accessed since the plan was
-- made. Asked before their objects are deleted: only the rows of objects that went are deleted.
SELECT e.key
FROM entries AS e
JOIN unnest(%(keys)s::text[], %(last_accessed)s::timestamp[]) AS d(key, last_accessed_at)
  ON e.key = d.key
WHERE d.last_accessed_at IS NULL OR e.last_accessed_at = d.last_accessed_at;

-- name: delete_entries
-- Delete entries by key (lock_entries first, in the same transaction). With a last-access
-- time per key (GC), a row accessed since the plan was made is spared; NULL deletes
-- unconditionally. Returns what was really deleted.
DELETE FROM entries AS e
USING unnest(%(keys)s::text[], %(last_accessed)s::timestamp[]) AS d(key, last_accessed_at)
WHERE e.key = d.key
  AND (d.last_accessed_at IS NULL OR e.last_accessed_at = d.last_accessed_at)
RETURNING e.key, e.feature;

-- name: delete_entry_inputs
-- Every other per-key table follows its entry in the same transaction.
DELETE FROM entry_inputs WHERE key = ANY(%(keys)s::text[]);

-- name: keys_without_rows
-- Which of these keys (objects found) have no row: orphans of a killed rm or GC.
SELECT k.key FROM unnest(%(keys)s::text[]) AS k(key)
WHERE NOT EXISTS (SELECT 1 FROM entries AS e WHERE e.key = k.key);

-- name: orphan_rows
-- Rows of per-key tables whose entry is gone: `check` reports them, --fix deletes them.
SELECT DISTINCT 'entry_inputs' AS table_name, key
FROM entry_inputs AS i
WHERE NOT EXISTS (SELECT 1 FROM entries AS e WHERE e.key = i.key)
ORDER BY key;

-- name: keys_with_rows
-- Which of these keys have a row right now.
SELECT key FROM entries WHERE key = ANY(%(keys)s::text[]);
