"""Query: SQL over cached results. Per-feature views, the plain-DuckDB catalog file, the
sandboxed ``store.sql`` layer and writing query output."""
