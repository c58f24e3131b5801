-- Statements of `jules-cache check`, and of a hit re-registering an orphan file.
-- Run against an attached manifest (USE manifest).

-- name: entry_files
-- Every entry's file, the size recorded when it was published, and where its view link is.
SELECT key, path, bytes, feature, symbol, result_schema FROM entries ORDER BY key;

-- name: keys_without_rows
-- Which of these keys (hit from files) have no row: orphans of a killed rm or GC.
SELECT key FROM (SELECT unnest($keys::VARCHAR[]) AS key) AS hit
WHERE key NOT IN (SELECT key FROM entries);

-- name: keep_counters
-- A rebuild of a readable manifest (attached read-only as rebuild_source) keeps what the
-- files cannot tell: the counters that only grow, the view names given for good, GC history.
-- Run before the files are registered, so the views are built under their kept names.
DELETE FROM counters;
INSERT INTO counters BY NAME SELECT * FROM rebuild_source.counters;
INSERT INTO call_counters BY NAME SELECT * FROM rebuild_source.call_counters;
INSERT INTO counter_symbols BY NAME SELECT * FROM rebuild_source.counter_symbols;
INSERT INTO view_names BY NAME SELECT * FROM rebuild_source.view_names;
INSERT INTO gc_runs BY NAME SELECT * FROM rebuild_source.gc_runs;

-- name: keep_entry_stats
-- After the files are registered: each entry's hits, last access and compute time, which
-- only the old manifest knew (GC's LRU order and seconds_saved depend on them).
UPDATE entries
SET hit_count = old.hit_count,
    last_accessed_at = old.last_accessed_at,
    compute_seconds = old.compute_seconds
FROM rebuild_source.entries AS old
WHERE entries.key = old.key;
