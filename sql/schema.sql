-- The manifest of a jules_cache root (manifest.duckdb).
--
-- Forward-only migrations: the store applies every `migration_N` whose N is greater than the
-- highest version in schema_version, each in its own transaction, in order. Never edit a
-- migration that has shipped; add the next one.
--
-- Times are UTC, stored as TIMESTAMP (no time zone).

-- name: create_schema_version
CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER   NOT NULL PRIMARY KEY,
    applied_at TIMESTAMP NOT NULL
);

-- name: current_version
SELECT coalesce(max(version), 0) FROM schema_version;

-- name: record_version
INSERT INTO schema_version VALUES ($version, $applied_at);

-- name: migration_1
-- One row per published result file.
CREATE TABLE entries (
    key                VARCHAR   NOT NULL PRIMARY KEY,  -- 32 hex chars; names the file
    feature            VARCHAR   NOT NULL,              -- compute_func's qualified name or name=
    symbol             VARCHAR   NOT NULL,
    path               VARCHAR   NOT NULL,              -- relative to the root, '/'-separated
    key_schema         INTEGER   NOT NULL,              -- version of the key derivation
    data_fingerprint   VARCHAR   NOT NULL,
    data_method        VARCHAR   NOT NULL,              -- 'frame' | 'file-bytes' | 'footer'
    config_fingerprint VARCHAR   NOT NULL,
    config_json        VARCHAR   NOT NULL,              -- canonical, readable JSON
    code_fingerprint   VARCHAR   NOT NULL,
    code_version       VARCHAR,                         -- the version= override, if given
    result_schema      VARCHAR   NOT NULL,              -- JSON {column: polars dtype}
    rows               BIGINT    NOT NULL,
    bytes              BIGINT    NOT NULL,
    time_column        VARCHAR,
    min_time           TIMESTAMP,
    max_time           TIMESTAMP,
    compute_seconds    DOUBLE    NOT NULL,
    created_at         TIMESTAMP NOT NULL,
    last_accessed_at   TIMESTAMP NOT NULL,
    hit_count          BIGINT    NOT NULL DEFAULT 0,
    library_versions   VARCHAR   NOT NULL               -- JSON {package: version}
);
-- Content digests of input files, keyed by what stat() says, so an unchanged large tick file
-- is fingerprinted in O(1) by every process.
CREATE TABLE file_fingerprints (
    path        VARCHAR   NOT NULL,
    method      VARCHAR   NOT NULL,
    size        BIGINT    NOT NULL,
    mtime_ns    BIGINT    NOT NULL,
    inode       BIGINT    NOT NULL,
    ctime_ns    BIGINT    NOT NULL,
    digest      VARCHAR   NOT NULL,
    computed_at TIMESTAMP NOT NULL,
    PRIMARY KEY (path, method)
);
-- Cache-wide event counters (misses, store failures, ...).
CREATE TABLE counters (
    name  VARCHAR NOT NULL PRIMARY KEY,
    value BIGINT  NOT NULL
);
INSERT INTO counters VALUES ('misses', 0), ('store_failures', 0);

-- name: migration_3
-- Per-function code digests, so `explain` can name the function whose change caused a miss.
ALTER TABLE entries ADD COLUMN code_functions VARCHAR;  -- JSON {qualified name: digest}
-- The input files an entry was computed from (Parquet path inputs only), as stat() saw them
-- when the entry was keyed: lets `explain` name the file that changed and `verify` find
-- footer-keyed entries whose input was rewritten under an identical footer.
CREATE TABLE entry_inputs (
    key      VARCHAR NOT NULL,
    position INTEGER NOT NULL,
    path     VARCHAR NOT NULL,
    size     BIGINT  NOT NULL,
    mtime_ns BIGINT  NOT NULL,
    inode    BIGINT  NOT NULL,
    ctime_ns BIGINT  NOT NULL,
    method   VARCHAR NOT NULL,  -- 'file-bytes' | 'footer'
    digest   VARCHAR NOT NULL,
    PRIMARY KEY (key, position)
);

-- name: migration_2
-- One row per GC run, dry or real: inserted as 'running' when it starts, finished as 'success'
-- or 'failed' (a run killed midway stays 'running'). Counts and bytes are per reason: what was
-- deleted (a real run) or would be (a dry run).
CREATE TABLE gc_runs (
    id                  BIGINT    NOT NULL PRIMARY KEY,
    started_at          TIMESTAMP NOT NULL,
    finished_at         TIMESTAMP,
    dry_run             BOOLEAN   NOT NULL,
    status              VARCHAR   NOT NULL CHECK (status IN ('running', 'success', 'failed')),
    error               VARCHAR,
    orphan_files        BIGINT    NOT NULL DEFAULT 0,  -- result files without a row
    orphan_bytes        BIGINT    NOT NULL DEFAULT 0,
    dangling_rows       BIGINT    NOT NULL DEFAULT 0,  -- rows without a file
    dangling_bytes      BIGINT    NOT NULL DEFAULT 0,
    expired_entries     BIGINT    NOT NULL DEFAULT 0,  -- last access older than the retention
    expired_bytes       BIGINT    NOT NULL DEFAULT 0,
    over_budget_entries BIGINT    NOT NULL DEFAULT 0,  -- least recently used beyond --max-size
    over_budget_bytes   BIGINT    NOT NULL DEFAULT 0,
    stale_tmp_files     BIGINT    NOT NULL DEFAULT 0,
    stale_tmp_bytes     BIGINT    NOT NULL DEFAULT 0,
    stale_lock_files    BIGINT    NOT NULL DEFAULT 0,
    stale_lock_bytes    BIGINT    NOT NULL DEFAULT 0,
    skipped             BIGINT    NOT NULL DEFAULT 0,  -- planned, spared by the re-check
    max_lock_hold_ms    DOUBLE,                        -- longest manifest lock hold
    parameters          VARCHAR   NOT NULL             -- JSON: retention, max size, grace, ...
);

-- name: migration_4
-- Hits and misses per feature and symbol that only grow (Prometheus counter semantics): an
-- entry's hit_count goes with the entry (rm, GC), these rows never do. Started from what the
-- live entries hold (misses: one per entry); the cache-wide `misses` counter stays the total.
CREATE TABLE call_counters (
    feature       VARCHAR NOT NULL,
    symbol        VARCHAR NOT NULL,
    hits          BIGINT  NOT NULL DEFAULT 0,
    misses        BIGINT  NOT NULL DEFAULT 0,
    seconds_saved DOUBLE  NOT NULL DEFAULT 0,  -- hits x the compute seconds of the hit entry
    PRIMARY KEY (feature, symbol)
);
INSERT INTO call_counters
SELECT feature, symbol, sum(hit_count), count(*), sum(hit_count * compute_seconds)
FROM entries GROUP BY feature, symbol;
-- The order in which symbols were first counted: the first N keep a label of their own in
-- the Prometheus output, the later ones share `__other__` (a fixed set, so no series shrinks).
CREATE TABLE counter_symbols (
    symbol  VARCHAR NOT NULL PRIMARY KEY,
    ordinal BIGINT  NOT NULL UNIQUE
);
INSERT INTO counter_symbols
SELECT symbol, row_number() OVER (ORDER BY min(created_at), symbol) FROM entries GROUP BY symbol;

-- name: migration_5
-- The SQL view name given to each feature, kept for good once given (also after its entries
-- are gone), so a saved query never breaks: a later feature whose name collides gets a
-- qualified name instead (jules_cache/query/views.py). Features of a root created before this
-- migration are named when the next new feature is published.
CREATE TABLE view_names (
    feature     VARCHAR   NOT NULL PRIMARY KEY,
    view_name   VARCHAR   NOT NULL UNIQUE,
    assigned_at TIMESTAMP NOT NULL
);

-- name: migration_6
-- When an entry written with `expire=` (a TTL) expires; NULL: never. Also in the result file's
-- footer, so a hit refuses an expired file without the manifest; GC deletes expired entries.
ALTER TABLE entries ADD COLUMN expires_at TIMESTAMP;
