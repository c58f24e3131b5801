-- Reads and writes of catalog entries (PostgreSQL): the counterpart of sql/entries.sql, with
-- the same result shapes (`SELECT *` of entries gives the columns of models.Entry), run by
-- jules_cache/storage/postgres_catalog.py inside the cache's schema.
-- Parameters are psycopg's %(name)s; NULL-able ones carry a cast so PostgreSQL knows the type.
-- Row locks are taken in key order (lock_entries) by every statement that writes many rows,
-- so two hosts flushing or deleting overlapping keys never deadlock.

-- name: upsert_entry
-- Publish: the row is the truth. A row left for the key (its object was lost and is being
-- recomputed) is replaced whole, its hit count starting again at 0.
INSERT INTO entries (
    key, feature, symbol, path, key_schema, data_fingerprint, data_method,
    config_fingerprint, config_json, code_fingerprint, code_version, result_schema,
    rows, bytes, time_column, min_time, max_time, compute_seconds,
    created_at, last_accessed_at, hit_count, library_versions, code_functions, expires_at
) VALUES (
    %(key)s, %(feature)s, %(symbol)s, %(path)s, %(key_schema)s, %(data_fingerprint)s,
    %(data_method)s, %(config_fingerprint)s, %(config_json)s, %(code_fingerprint)s,
    %(code_version)s::text, %(result_schema)s, %(rows)s, %(bytes)s, %(time_column)s::text,
    %(min_time)s::timestamp, %(max_time)s::timestamp, %(compute_seconds)s,
    %(created_at)s, %(last_accessed_at)s, 0, %(library_versions)s, %(code_functions)s::text,
    %(expires_at)s::timestamp
)
ON CONFLICT (key) DO UPDATE SET
    feature = excluded.feature, symbol = excluded.symbol, path = excluded.path,
    key_schema = excluded.key_schema, data_fingerprint = excluded.data_fingerprint,
    data_method = excluded.data_method, config_fingerprint = excluded.config_fingerprint,
    config_json = excluded.config_json, code_fingerprint = excluded.code_fingerprint,
    code_version = excluded.code_version, result_schema = excluded.result_schema,
    rows = excluded.rows, bytes = excluded.bytes, time_column = excluded.time_column,
    min_time = excluded.min_time, max_time = excluded.max_time,
    compute_seconds = excluded.compute_seconds, created_at = excluded.created_at,
    last_accessed_at = excluded.last_accessed_at, hit_count = 0,
    library_versions = excluded.library_versions, code_functions = excluded.code_functions,
    expires_at = excluded.expires_at;

-- name: delete_entry_inputs
DELETE FROM entry_inputs WHERE key = %(key)s;

-- name: insert_entry_inputs
INSERT INTO entry_inputs (key, position, path, size, mtime_ns, inode, ctime_ns, method, digest)
SELECT %(key)s, i.position, i.path, i.size, i.mtime_ns, i.inode, i.ctime_ns, %(method)s, i.digest
FROM unnest(%(positions)s::integer[], %(paths)s::text[], %(sizes)s::bigint[],
            %(mtimes)s::bigint[], %(inodes)s::bigint[], %(ctimes)s::bigint[],
            %(digests)s::text[])
     AS i(position, path, size, mtime_ns, inode, ctime_ns, digest);

-- name: entry_inputs
SELECT position, path, size, mtime_ns, inode, ctime_ns, method, digest
FROM entry_inputs WHERE key = %(key)s ORDER BY position;

-- name: lock_entries
-- Lock the rows of these keys in key order before a batch writes them (see the header).
SELECT key FROM entries WHERE key = ANY(%(keys)s::text[]) ORDER BY key FOR UPDATE;

-- name: flush_hits
-- Apply a batch of hits recorded in memory: one row per key with its count and latest time.
UPDATE entries AS e
SET hit_count        = e.hit_count + h.hits,
    last_accessed_at = greatest(e.last_accessed_at, h.last_access)
FROM unnest(%(keys)s::text[], %(hits)s::bigint[], %(times)s::timestamp[])
     AS h(key, hits, last_access)
WHERE e.key = h.key;

-- name: bump_counter
-- An upsert: a counter no migration created starts at its first delta.
INSERT INTO counters AS c (name, value) VALUES (%(name)s, %(delta)s)
ON CONFLICT (name) DO UPDATE SET value = c.value + excluded.value;

-- name: count_calls
-- Add a batch of hits and misses counted in memory (one row per key) to the cumulative
-- counters; a hit saved the compute time of the entry it read (0 if the row is gone).
INSERT INTO call_counters AS cc (feature, symbol, hits, misses, seconds_saved)
SELECT c.feature, c.symbol, sum(c.hits), sum(c.misses),
       coalesce(sum(c.hits * e.compute_seconds), 0)
FROM unnest(%(keys)s::text[], %(features)s::text[], %(symbols)s::text[], %(hits)s::bigint[],
            %(misses)s::bigint[]) AS c(key, feature, symbol, hits, misses)
LEFT JOIN entries AS e USING (key)
GROUP BY c.feature, c.symbol
ORDER BY c.feature, c.symbol
ON CONFLICT (feature, symbol) DO UPDATE SET
    hits          = cc.hits + excluded.hits,
    misses        = cc.misses + excluded.misses,
    seconds_saved = cc.seconds_saved + excluded.seconds_saved;

-- name: number_symbols
-- Give the symbols counted for the first time the next ordinals (by name within a batch).
-- Runs under the flush lock, so two hosts never hand out the same ordinal.
INSERT INTO counter_symbols (symbol, ordinal)
SELECT symbol, coalesce((SELECT max(ordinal) FROM counter_symbols), 0)
               + row_number() OVER (ORDER BY symbol)
FROM (SELECT DISTINCT unnest(%(symbols)s::text[]) AS symbol) AS new
WHERE NOT EXISTS (SELECT 1 FROM counter_symbols AS s WHERE s.symbol = new.symbol);

-- name: counters
SELECT name, value FROM counters;

-- name: get_entry
SELECT * FROM entries WHERE key = %(key)s;

-- name: list_entries
-- Newest first; NULL filters match everything.
SELECT *
FROM entries
WHERE (%(feature)s::text IS NULL OR feature = %(feature)s::text)
  AND (%(symbol)s::text IS NULL OR symbol = %(symbol)s::text)
  AND (%(since)s::timestamp IS NULL OR created_at >= %(since)s::timestamp)
ORDER BY created_at DESC, key;

-- name: match_entries
-- Entries matching every given filter (NULL matches all); the key filter is a prefix.
SELECT *
FROM entries
WHERE (%(key)s::text IS NULL OR starts_with(key, %(key)s::text))
  AND (%(feature)s::text IS NULL OR feature = %(feature)s::text)
  AND (%(symbol)s::text IS NULL OR symbol = %(symbol)s::text)
ORDER BY created_at, key;

-- name: entries_like
-- Entries of one feature and symbol, for explaining a miss.
SELECT * FROM entries WHERE feature = %(feature)s AND symbol = %(symbol)s
ORDER BY created_at DESC;

-- name: stats_by_feature
-- Live entries (what is stored now) next to the cumulative call counters (what was ever
-- served): a feature whose entries all went keeps its counts. Sums cast back to bigint
-- (PostgreSQL sums bigints as numeric).
WITH live AS (
    SELECT feature, count(*) AS entries, sum(bytes)::bigint AS bytes,
           sum(compute_seconds) AS compute_seconds
    FROM entries GROUP BY feature
), calls AS (
    SELECT feature, sum(hits)::bigint AS hits, sum(misses)::bigint AS misses,
           sum(seconds_saved) AS seconds_saved
    FROM call_counters GROUP BY feature
)
SELECT feature,
       coalesce(live.entries, 0)         AS entries,
       coalesce(live.bytes, 0)           AS bytes,
       coalesce(calls.hits, 0)           AS hits,
       coalesce(live.compute_seconds, 0) AS compute_seconds,
       coalesce(calls.seconds_saved, 0)  AS seconds_saved,
       coalesce(calls.misses, 0)         AS misses
FROM live FULL OUTER JOIN calls USING (feature)
ORDER BY feature;

-- name: stats_by_symbol
-- Cumulative calls per symbol: the first `limit` symbols ever counted by name, the others
-- summed as '__other__' (listed last).
WITH labelled AS (
    SELECT CASE WHEN s.ordinal <= %(limit)s::bigint THEN c.symbol END AS symbol,
           min(s.ordinal) AS ordinal, sum(c.hits)::bigint AS hits,
           sum(c.misses)::bigint AS misses, sum(c.seconds_saved) AS seconds_saved
    FROM call_counters AS c JOIN counter_symbols AS s USING (symbol)
    GROUP BY 1
)
SELECT coalesce(symbol, '__other__'), hits, misses, seconds_saved
FROM labelled
ORDER BY symbol IS NULL, ordinal;

-- name: get_file_fingerprint
SELECT digest FROM file_fingerprints
WHERE path = %(path)s AND method = %(method)s AND size = %(size)s
  AND mtime_ns = %(mtime_ns)s AND inode = %(inode)s AND ctime_ns = %(ctime_ns)s;

-- name: put_file_fingerprint
INSERT INTO file_fingerprints
VALUES (%(path)s, %(method)s, %(size)s, %(mtime_ns)s, %(inode)s, %(ctime_ns)s, %(digest)s,
        %(computed_at)s)
ON CONFLICT (path, method) DO UPDATE SET
    size = excluded.size, mtime_ns = excluded.mtime_ns, inode = excluded.inode,
    ctime_ns = excluded.ctime_ns, digest = excluded.digest, computed_at = excluded.computed_at;

-- name: footer_entry_inputs
-- Inputs of entries keyed by Parquet footer only (fingerprint="footer"), for `verify`.
SELECT i.key, i.path, i.size, i.mtime_ns, i.inode, i.ctime_ns, i.digest
FROM entry_inputs AS i
JOIN entries AS e USING (key)
WHERE i.method = 'footer'
ORDER BY i.key, i.position;
