"""Storage: where results and rows live, and nothing above that. The root's layout, locks,
the DuckDB manifest, result files, no-follow file operations, the PostgreSQL catalog and the
S3 objects of a shared root."""
