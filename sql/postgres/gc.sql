-- Garbage collection of a shared cache (PostgreSQL side), the counterpart of sql/gc.sql.
-- The plan itself is sql/gc.sql's `plan`, run by DuckDB over two snapshots: the objects listed
-- from S3 (gc_files) and `entries_snapshot` below, read while the objects are listed; the
-- planned orphans' rows are read again after the listing (entries.sql's `keys_with_rows`), so
-- an object published between the two is never an orphan. Each candidate is re-checked under its key's
-- advisory lock, and rows are deleted (removal.sql) before objects.

-- name: entries_snapshot
-- The columns the plan needs.
SELECT key, bytes, last_accessed_at, expires_at FROM entries;

-- name: entry_objects
-- Every entry's object name, the size recorded when it was published, and its feature
-- (`check`: rows whose object is missing or of another size).
SELECT key, path, bytes, feature FROM entries ORDER BY key;

-- name: start_run
INSERT INTO gc_runs (started_at, dry_run, status, parameters)
VALUES (%(started_at)s, %(dry_run)s, 'running', %(parameters)s)
RETURNING id;

-- name: finish_run
UPDATE gc_runs
SET finished_at         = %(finished_at)s,
    status              = %(status)s,
    error               = %(error)s::text,
    orphan_files        = %(orphan_files)s,        orphan_bytes      = %(orphan_bytes)s,
    dangling_rows       = %(dangling_rows)s,       dangling_bytes    = %(dangling_bytes)s,
    expired_entries     = %(expired_entries)s,     expired_bytes     = %(expired_bytes)s,
    over_budget_entries = %(over_budget_entries)s, over_budget_bytes = %(over_budget_bytes)s,
    stale_tmp_files     = %(stale_tmp_files)s,     stale_tmp_bytes   = %(stale_tmp_bytes)s,
    stale_lock_files    = %(stale_lock_files)s,    stale_lock_bytes  = %(stale_lock_bytes)s,
    skipped             = %(skipped)s,
    max_lock_hold_ms    = %(max_lock_hold_ms)s::double precision
WHERE id = %(id)s;

-- name: last_run
SELECT * FROM gc_runs ORDER BY id DESC LIMIT 1;
