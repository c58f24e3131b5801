-- What store.sql copies from a shared cache's catalog into its DuckDB, one REPEATABLE READ
-- transaction per query (postgres_catalog.changes_since; the triggers are schema.sql's
-- migration_4). Parameters are psycopg's named placeholders.

-- name: position
-- The snapshot's oldest running transaction (every older one is committed or gone, so its rows
-- are in this snapshot) and the next transaction id, both as 64-bit ids that never wrap.
SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint,
       pg_snapshot_xmax(pg_current_snapshot())::text::bigint;

-- name: tables
SELECT table_name FROM information_schema.tables
WHERE table_schema = %(schema)s AND table_type = 'BASE TABLE'
ORDER BY table_name;

-- name: primary_keys
-- Each table's primary key columns, in key order.
SELECT c.relname::text, array_agg(a.attname::text ORDER BY k.position)
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position)
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
WHERE i.indisprimary AND n.nspname = %(schema)s
GROUP BY c.relname;

-- name: tracked_tables
-- Tables whose deletions are noted: an enabled row trigger on DELETE and UPDATE (tgtype bits
-- ROW 1, DELETE 8, UPDATE 16) and an enabled TRUNCATE trigger (32), both note_row_deletion.
SELECT c.relname::text
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_proc p ON p.oid = t.tgfoid AND p.pronamespace = n.oid
WHERE n.nspname = %(schema)s AND p.proname = 'note_row_deletion'
  AND NOT t.tgisinternal AND t.tgenabled <> 'D'
GROUP BY c.relname
HAVING bool_or(t.tgtype & 25 = 25) AND bool_or(t.tgtype & 32 = 32);

-- name: deletions_since
-- Keys deleted by transactions at or after the previous snapshot's oldest running one (a NULL
-- key: the whole table was truncated). Complete only if that is newer than pruned_through.
SELECT table_name, key_values FROM row_deletions WHERE deleted_by >= %(since)s::text::xid8;

-- name: pruned_through
-- The newest transaction whose deletion notes GC dropped (0: none dropped yet).
SELECT coalesce(max(through), '0'::xid8)::text::bigint FROM row_deletions_pruned;

-- name: prune_deletions
-- Drop the notes older than %(older_than)s seconds and remember the newest transaction dropped.
WITH dropped AS (
    DELETE FROM row_deletions
    WHERE noted_at < (now() AT TIME ZONE 'UTC') - make_interval(secs => %(older_than)s)
    RETURNING deleted_by
)
INSERT INTO row_deletions_pruned (only_row, through)
SELECT true, max(deleted_by) FROM dropped HAVING count(*) > 0
ON CONFLICT (only_row) DO UPDATE SET through = greatest(row_deletions_pruned.through, excluded.through);
