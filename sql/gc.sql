-- Garbage collection of a jules_cache root: the plan and the guarded deletes.
--
-- The plan is computed by DuckDB in one pass over two inputs:
--   gc_files  the files on disk, listed by DuckDB itself (`list_files` below), and
--   entries   the manifest's rows.
-- Files are matched to rows by KEY, parsed from the file name (32 lowercase hex chars), never by
-- comparing path strings: however the root is spelled (relative, trailing slash, symlink, `..`)
-- a live file's name is its key. Only names of the cache's own scheme are candidates:
--   objects/<k[:2]>/<k>.parquet     result files           (orphans; presence for dangling rows)
--   tmp/<k>.<unique>.parquet.tmp    in-flight writes       (stale after the grace period)
--   locks/<k>.lock                  single-flight locks    (stale after the grace period)
-- manifest.duckdb and manifest.lock are never listed, so never candidates.
--
-- Run it by hand in a plain `duckdb` shell (read-only, it deletes nothing):
--
--   CREATE TEMP TABLE gc_files AS
--     SELECT file AS filename, NULL::BIGINT AS size, NULL::TIMESTAMPTZ AS last_modified
--     FROM glob('/cache/objects/*/*.parquet')
--     UNION ALL
--     SELECT filename, size, last_modified
--     FROM read_blob(['/cache/tmp/*.tmp', '/cache/locks/*.lock']);
--   ATTACH '/cache/manifest.duckdb' AS manifest (READ_ONLY);
--   USE manifest;
--   PREPARE plan AS <the `plan` statement below>;
--   EXECUTE plan(expire_before := now()::TIMESTAMP - INTERVAL 4 WEEK,
--                max_bytes := NULL, stale_before := now() - INTERVAL 6 HOUR);
--
-- Times in the manifest are naive UTC TIMESTAMPs; file times (last_modified) are TIMESTAMPTZ.

-- name: list_files
-- Every file under the three areas GC looks at. Result files: names only (glob; sizes come from
-- the manifest, an orphan's from stat); temp and lock files: with size and modification time.
-- The patterns are bound (absolute globs built from the resolved root); no match is no row.
SELECT file AS filename, NULL::BIGINT AS size, NULL::TIMESTAMPTZ AS last_modified
FROM glob($objects_glob)
UNION ALL
SELECT filename, size, last_modified
FROM read_blob([$tmp_glob, $locks_glob]);

-- name: entries_snapshot
-- The columns the plan needs, read under the shared manifest lock AFTER the files were listed
-- (the plan then runs on this snapshot, outside the lock).
SELECT key, bytes, last_accessed_at FROM entries;

-- name: plan
-- One row per thing to delete: reason, key (NULL for temp/lock files), file name (for temp and
-- lock files), bytes, and the row's last access as planned (the delete re-checks it).
-- Each entry gets at most one reason, in this order: dangling, expired, over_budget.
WITH files AS (
    -- Parse every listed name once; anything not of the cache's own scheme gets area NULL.
    SELECT
        filename,
        size,
        last_modified,
        CASE
            WHEN regexp_extract(filename, '[/\\]objects[/\\]([0-9a-f]{2})[/\\][0-9a-f]{32}\.parquet$', 1)
                 = left(regexp_extract(filename, '([0-9a-f]{32})\.parquet$', 1), 2)
                 AND regexp_matches(filename, '[/\\]objects[/\\][0-9a-f]{2}[/\\][0-9a-f]{32}\.parquet$')
                THEN 'objects'
            WHEN regexp_matches(filename, '[/\\]tmp[/\\][0-9a-f]{32}\.[^/\\]+\.parquet\.tmp$')
                THEN 'tmp'
            WHEN regexp_matches(filename, '[/\\]locks[/\\][0-9a-f]{32}\.lock$')
                THEN 'locks'
        END AS area,
        regexp_extract(filename, '([0-9a-f]{32})[^/\\]*$', 1) AS key,
        regexp_extract(filename, '([^/\\]+)$', 1) AS name
    FROM gc_files
),
results AS (
    SELECT key, size FROM files WHERE area = 'objects'
),
-- Files on disk ANTI JOIN entries, by key.
orphans AS (
    SELECT 'orphan' AS reason, r.key, NULL AS name, r.size AS bytes,
           NULL::TIMESTAMP AS last_accessed_at
    FROM results AS r
    ANTI JOIN entries AS e ON e.key = r.key
),
-- Entries ANTI JOIN files on disk, by key: the next request recomputes them.
dangling AS (
    SELECT 'dangling' AS reason, e.key, NULL AS name, e.bytes, e.last_accessed_at
    FROM entries AS e
    ANTI JOIN results AS r ON r.key = e.key
),
-- Live entries (row and file).
live AS (
    SELECT e.key, e.bytes, e.last_accessed_at
    FROM entries AS e
    JOIN results AS r ON r.key = e.key
),
-- Last ACCESS older than the retention; creation time plays no part.
expired AS (
    SELECT 'expired' AS reason, key, NULL AS name, bytes, last_accessed_at
    FROM live
    WHERE last_accessed_at < $expire_before
),
-- Least recently used entries beyond the size cap: keep the most recently used entries whose
-- running total (newest access first) fits in max_bytes, evict the rest.
over_budget AS (
    SELECT 'over_budget' AS reason, key, NULL AS name, bytes, last_accessed_at
    FROM (
        SELECT *,
               sum(bytes) OVER (
                   ORDER BY last_accessed_at DESC, key
                   ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
               ) AS running_bytes
        FROM live
        WHERE last_accessed_at >= $expire_before
    )
    WHERE $max_bytes IS NOT NULL AND running_bytes > $max_bytes
),
-- Temp and lock files untouched for longer than the grace period.
stale AS (
    SELECT CASE area WHEN 'tmp' THEN 'stale_tmp' ELSE 'stale_lock' END AS reason,
           key, name, size AS bytes, NULL::TIMESTAMP AS last_accessed_at
    FROM files
    WHERE area IN ('tmp', 'locks') AND last_modified < $stale_before
)
SELECT * FROM orphans
UNION ALL SELECT * FROM dangling
UNION ALL SELECT * FROM expired
UNION ALL SELECT * FROM over_budget
UNION ALL SELECT * FROM stale
ORDER BY reason, last_accessed_at NULLS FIRST, key, name;

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
