"""Fingerprints: what makes a key. Data (frames and files), config, code, and the key itself.

Every module turns a caller's input into a digest and writes nothing, except ``memo``: it keeps
input files' digests in the manifest's ``file_fingerprints`` table, so a file is hashed once.
"""
