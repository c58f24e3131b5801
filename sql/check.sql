-- Statements of `jules-cache check`, and of a hit re-registering an orphan file.
-- Run against an attached manifest (USE manifest).

-- name: entry_files
-- Every entry's file, the size recorded when it was published, and where its view link is.
SELECT key, path, bytes, feature, symbol, result_schema FROM entries ORDER BY key;

-- name: keys_without_rows
-- Which of these keys (hit from files) have no row: orphans of a killed rm or GC.
SELECT key FROM (SELECT unnest($keys::VARCHAR[]) AS key) AS hit
WHERE key NOT IN (SELECT key FROM entries);
