"""Fingerprints: what makes a key. Data (frames and files), config, code, and the key itself.

Nothing here touches the cache root: every function turns a caller's input into a digest.
"""
