"""The engine: the two ways a cache is stored, each over storage, maintenance and query.

backend       the seam the façade calls: hit, miss, counts, inspection, upkeep, SQL
local         one directory: flock locks, the DuckDB manifest, publish by rename
shared        many hosts: S3 objects, a PostgreSQL catalog, advisory locks
shared_upkeep the shared root's GC, check, verify and removal of objects
shared_sql    the shared root's SQL source: a snapshot of the catalog in DuckDB
"""
