-- Garbage collection of a jules_cache root: the plan and the guarded deletes.
--
-- The plan is computed by DuckDB in one pass over two inputs:
--   gc_files  the result files on disk, listed by DuckDB itself (`list_files` below), and
--   entries   the manifest's rows.
-- Files are matched to rows by KEY, parsed from the file name (32 lowercase hex chars), never by
-- comparing path strings: however the root is spelled (relative, trailing slash, symlink, `..`)
-- a live file's name is its key. Only names of the cache's own scheme are candidates:
--   objects/<k[:2]>/<k>.parquet     result files  (orphans; presence for dangling rows)
-- Stale temp and lock files are not planned here: GC finds them as `check` does
-- (jules_cache/maintenance/leftovers.py). manifest.duckdb is never listed, so never a candidate.
--
-- Run it by hand in a plain `duckdb` shell (read-only, it deletes nothing):
--
--   CREATE TEMP TABLE gc_files AS
--     SELECT file AS filename FROM glob('/cache/objects/*/*.parquet');
--   ATTACH '/cache/manifest.duckdb' AS manifest (READ_ONLY);
--   USE manifest;
--   PREPARE plan AS <the `plan` statement below>;
--   EXECUTE plan(expire_before := now()::TIMESTAMP - INTERVAL 4 WEEK, max_bytes := NULL,
--                now := now()::TIMESTAMP);
--
-- Times in the manifest are naive UTC TIMESTAMPs.

-- name: list_files
-- Every file under objects/<xx>/ that looks like a result: names only (sizes come from the
-- manifest, an orphan's from stat). The pattern is bound (an absolute glob built from the
-- resolved root); no match is no row.
SELECT file AS filename FROM glob($objects_glob);

-- name: entries_snapshot
-- The columns the plan needs, read under the shared manifest lock AFTER the files were listed
-- (the plan then runs on this snapshot, outside the lock).
SELECT key, bytes, last_accessed_at, expires_at FROM entries;

-- name: entry_objects
-- Every entry's object name, the size recorded when it was published, and its feature (the
-- engine's `check` over a Catalog: rows whose object is missing or of another size).
SELECT key, path, bytes, feature FROM entries ORDER BY key;

-- name: plan
-- One row per thing to delete: reason, key, bytes (NULL for an orphan: GC stats its file),
-- and the row's last access as planned (the delete re-checks it).
-- Each entry gets at most one reason, in this order: dangling, expired, over_budget.
WITH matched AS (
    -- One regex per name (three cost a quarter of the plan's CPU at 100k names); no match
    -- gives empty groups.
    SELECT regexp_extract(filename, '[/\\]objects[/\\]([0-9a-f]{2})[/\\]([0-9a-f]{32})\.parquet$',
                          ['folder', 'key']) AS name
    FROM gc_files
),
results AS (
    -- The listed names of the cache's own scheme: objects/<k[:2]>/<k>.parquet, nothing else.
    SELECT name.key AS key
    FROM matched
    WHERE name.key <> '' AND name.folder = left(name.key, 2)
),
-- Files on disk ANTI JOIN entries, by key.
orphans AS (
    SELECT 'orphan' AS reason, r.key, NULL::BIGINT AS bytes, NULL::TIMESTAMP AS last_accessed_at
    FROM results AS r
    ANTI JOIN entries AS e ON e.key = r.key
),
-- Entries ANTI JOIN files on disk, by key: the next request recomputes them.
dangling AS (
    SELECT 'dangling' AS reason, e.key, e.bytes, e.last_accessed_at
    FROM entries AS e
    ANTI JOIN results AS r ON r.key = e.key
),
-- Live entries (row and file).
live AS (
    SELECT e.key, e.bytes, e.last_accessed_at,
           -- Last ACCESS older than the retention (creation time plays no part), or past the
           -- expiry the entry was written with (expire=, a TTL counted from its write).
           -- (coalesce: a NULL expiry never expires, and NOT NULL would spare it from eviction)
           e.last_accessed_at < $expire_before OR coalesce(e.expires_at <= $now, false)
               AS is_expired
    FROM entries AS e
    JOIN results AS r ON r.key = e.key
),
expired AS (
    SELECT 'expired' AS reason, key, bytes, last_accessed_at
    FROM live
    WHERE is_expired
),
-- Least recently used entries beyond the size cap: keep the most recently used entries whose
-- running total (newest access first) fits in max_bytes, evict the rest.
over_budget AS (
    SELECT 'over_budget' AS reason, key, bytes, last_accessed_at
    FROM (
        SELECT *,
               sum(bytes) OVER (
                   ORDER BY last_accessed_at DESC, key
                   ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
               ) AS running_bytes
        FROM live
        WHERE NOT is_expired
    )
    WHERE $max_bytes IS NOT NULL AND running_bytes > $max_bytes
)
SELECT * FROM orphans
UNION ALL SELECT * FROM dangling
UNION ALL SELECT * FROM expired
UNION ALL SELECT * FROM over_budget
ORDER BY reason, last_accessed_at NULLS FIRST, key;

-- name: start_run
INSERT INTO gc_runs (id, started_at, dry_run, status, parameters)
SELECT coalesce(max(id), 0) + 1, $started_at, $dry_run, 'running', $parameters
FROM gc_runs
RETURNING id;

-- name: finish_run
UPDATE gc_runs
SET finished_at       = $finished_at,
    status            = $status,
    error             = $error,
    orphan_files      = $orphan_files,      orphan_bytes      = $orphan_bytes,
    dangling_rows     = $dangling_rows,     dangling_bytes    = $dangling_bytes,
    expired_entries   = $expired_entries,   expired_bytes     = $expired_bytes,
    over_budget_entries = $over_budget_entries, over_budget_bytes = $over_budget_bytes,
    stale_tmp_files   = $stale_tmp_files,   stale_tmp_bytes   = $stale_tmp_bytes,
    stale_lock_files  = $stale_lock_files,  stale_lock_bytes  = $stale_lock_bytes,
    skipped           = $skipped,
    max_lock_hold_ms  = $max_lock_hold_ms
WHERE id = $id;

-- name: last_run
SELECT * FROM gc_runs ORDER BY id DESC LIMIT 1;
