-- Statements of `jules-cache overview` for a shared cache (PostgreSQL side), the counterpart
-- of sql/overview.sql. The last GC run is gc.sql's `last_run`.

-- name: totals
-- Entries and bytes in total, the oldest and newest entries, the least and most recent access.
SELECT count(*) AS entries,
       coalesce(sum(bytes), 0)::bigint AS bytes,
       min(created_at) AS oldest_created,
       max(created_at) AS newest_created,
       min(last_accessed_at) AS least_recent_access,
       max(last_accessed_at) AS most_recent_access
FROM entries;

-- name: by_feature_symbol
-- The same per feature and symbol, the largest first.
SELECT feature, symbol, count(*) AS entries, coalesce(sum(bytes), 0)::bigint AS bytes,
       min(created_at) AS oldest, max(created_at) AS newest,
       max(last_accessed_at) AS last_access
FROM entries
GROUP BY feature, symbol
ORDER BY bytes DESC, feature, symbol;
