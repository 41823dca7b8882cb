"""Cairn's engine: catalog, chunking, codecs, packs, trees, snapshots, storage.

Synchronous and thread-safe; it imports none of Cairn's other packages.
"""
