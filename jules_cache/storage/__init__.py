"""Storage: where results and the manifest live. Layout of the root, locks, the manifest
(DuckDB), result files, no-follow file operations and the one removal path."""
