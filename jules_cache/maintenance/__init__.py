"""Maintenance: the commands that look after a cache root, run by the CLI, cron and the store.

gc         delete orphans, dangling rows, expired and over-budget entries, leftovers
check      compare the manifest with the files on disk; repair, deep-read, rebuild
verify     find footer-keyed entries whose input file was rewritten under the same footer
overview   what the cache holds, at a glance
leftovers  stale temp and lock files: found and removed one way, for gc and check
removal    the one way an entry leaves a local root: rows and file in one transaction
cron       the crontab line and the rotated log of scheduled GC runs
"""
