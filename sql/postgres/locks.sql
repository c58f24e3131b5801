-- Advisory locks of a shared cache (PostgreSQL). A lock is a 64-bit number: a hash of the
-- cache's schema and the key (jules_cache/storage/postgres_catalog.py, lock_id).
--
-- Session locks (try_lock/unlock) are single-flight across hosts: held while a key is computed,
-- released by unlock, or by the server when the session ends -- a process that dies closes its
-- socket at once; a host that vanishes is noticed by TCP keepalive (see the module). A pooler
-- in transaction mode (PgBouncer's default) hands the session to someone else between
-- transactions and so breaks them: connect directly or through session-mode pooling.
-- Transaction locks (xact_lock) serialise migrations and counter flushes; COMMIT frees them.

-- name: try_lock
SELECT pg_try_advisory_lock(%(lock)s::bigint);

-- name: unlock
SELECT pg_advisory_unlock(%(lock)s::bigint);

-- name: xact_lock
SELECT pg_advisory_xact_lock(%(lock)s::bigint);

-- name: lock_holder
-- Who holds a session lock: for the message of a lock timeout. A bigint advisory lock shows
-- in pg_locks as classid (high 32 bits) and objid (low 32 bits) with objsubid 1.
SELECT a.application_name, host(a.client_addr), a.pid, now() - a.backend_start
FROM pg_locks AS l
JOIN pg_stat_activity AS a USING (pid)
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid::bigint = %(classid)s::bigint AND l.objid::bigint = %(objid)s::bigint
LIMIT 1;
