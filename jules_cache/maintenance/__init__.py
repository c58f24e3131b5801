"""Maintenance: garbage collection, consistency checks and repairs, run by the CLI and cron."""
