"""Catalog tables. Only `blobs`, `inodes` and `dirents` grow with data.

Images add a row per disk and per disk and snapshot: their block maps are
blobs in the pool (engine/blockmap.py), so a version adds one row, not one
per block.

Every change here needs an Alembic revision in `migrations/versions`.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)

metadata = MetaData()

pools = Table(
    "pools",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("backend", Text, nullable=False),  # JSON backend configuration
    Column("structure", Integer, nullable=False),
    Column("created", Float, nullable=False),
    Column("codec", Text, nullable=False, server_default="{}"),  # JSON: how new blobs are encoded
)

packs = Table(
    "packs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("pool_id", Integer, ForeignKey("pools.id"), nullable=False),
    Column("name", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("blob_count", Integer, nullable=False),
    Column("created", Float, nullable=False),
    UniqueConstraint("pool_id", "name"),
)

blobs = Table(
    "blobs",
    metadata,
    Column("pool_id", Integer, ForeignKey("pools.id"), primary_key=True),
    Column("id", LargeBinary(32), primary_key=True),
    Column("pack_id", Integer, ForeignKey("packs.id"), nullable=False, index=True),
    Column("offset", BigInteger, nullable=False),
    Column("length", Integer, nullable=False),
    Column("raw_length", Integer, nullable=False),
    Column("kind", SmallInteger, nullable=False),
)

keys = Table(
    "keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("purpose", String(32), nullable=False, unique=True),
    Column("material", LargeBinary, nullable=False),
)

sources = Table(
    "sources",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("created", Float, nullable=False),
    Column("next_ino", BigInteger, nullable=False),
)

inodes = Table(
    "inodes",
    metadata,
    Column("source_id", Integer, ForeignKey("sources.id"), primary_key=True),
    Column("ino", BigInteger, primary_key=True),
    Column("kind", SmallInteger, nullable=False),
    Column("mode", Integer, nullable=False),
    Column("uid", BigInteger, nullable=False),
    Column("gid", BigInteger, nullable=False),
    Column("rdev", BigInteger, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("atime_ns", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("ctime_ns", BigInteger, nullable=False),
    Column("nlink", Integer, nullable=False),
    Column("origin", BigInteger, nullable=False),  # the client's inode number, for quick checks
    Column("target", LargeBinary),  # symlink target
    Column("content", LargeBinary),  # packed chunk list
    Column("xattrs", LargeBinary),  # packed extended attributes
    Column("tree_id", LargeBinary(32)),  # a directory's tree blob, while unchanged
    # Content references blobs that were not yet stored when the row was written.
    Column("pending", Boolean, nullable=False),
    # The rows a load repairs: few, so only they are indexed.
    Index("ix_inodes_pending", "source_id", sqlite_where=text("pending"), postgresql_where=text("pending")),
)

dirents = Table(
    "dirents",
    metadata,
    Column("source_id", Integer, ForeignKey("sources.id"), primary_key=True),
    Column("parent", BigInteger, primary_key=True),
    Column("name", LargeBinary, primary_key=True),
    Column("ino", BigInteger, nullable=False),
    Index("ix_dirents_ino", "source_id", "ino"),  # an inode's names, when it is loaded by number
)

snapshots = Table(
    "snapshots",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("source_id", Integer, ForeignKey("sources.id"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("root", LargeBinary(32), nullable=False),
    Column("created", Float, nullable=False),
    Column("files", BigInteger, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    UniqueConstraint("source_id", "name"),
)

leases = Table(
    "leases",
    metadata,
    Column("source_id", Integer, ForeignKey("sources.id"), primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("expires", Float, nullable=False),
)

settings = Table(
    "settings",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("value", Text, nullable=False),
)

# -- the appliance's tables: accounts, access to sources, jobs ------------------

groups = Table(
    "groups",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("created", Float, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("password", Text, nullable=False),  # scrypt$n$r$p$salt$hash, never the password
    Column("admin", Boolean, nullable=False),  # may do everything, in every group
    Column("created", Float, nullable=False),
    Column("must_change", Boolean, nullable=False, server_default=false()),  # a one-time password
    sqlite_autoincrement=True,  # a removed user's id is never handed out again
)

memberships = Table(
    "memberships",
    metadata,
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("group_id", Integer, ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Column("role", String(16), nullable=False),  # admin | operator | member
)

source_access = Table(
    "source_access",
    metadata,
    Column("source_id", Integer, ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True),
    Column("group_id", Integer, ForeignKey("groups.id", ondelete="SET NULL")),
    Column("owner_id", Integer, ForeignKey("users.id", ondelete="SET NULL")),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("digest", LargeBinary(32), nullable=False, unique=True),  # SHA-256 of the token
    Column("created", Float, nullable=False),
    Column("last_used", Float),
)

# A signed-in browser: its cookie holds a random token, the catalog only the token's SHA-256.
web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("digest", LargeBinary(32), nullable=False, unique=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("csrf", String(64), nullable=False),
    Column("created", Float, nullable=False),
    Column("last_seen", Float, nullable=False),  # written at most once a minute
    Column("address", String(64), nullable=False),  # the client's address when it signed in
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("source_id", Integer, ForeignKey("sources.id", ondelete="SET NULL")),
    Column("params", Text, nullable=False),  # JSON
    Column("state", String(16), nullable=False, index=True),  # queued | running | done | failed | cancelled
    Column("progress", Text),  # JSON, while running and after
    Column("created", Float, nullable=False),
    Column("started", Float),
    Column("finished", Float),
    Column("worker", String(255)),
    Column("error", Text),
    Column("requested_by", Integer, ForeignKey("users.id", ondelete="SET NULL")),
    Column("log", Text),  # JSON: [[time, text], ...]
    Column("stop_by", String(255)),  # who asked a running job to stop
)

# Backup sessions: one client connection that wrote into a source through a front door.
sessions = Table(
    "sessions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("source_id", Integer, ForeignKey("sources.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("door", String(16), nullable=False),  # ssh | rsyncd
    Column("client", String(64), nullable=False),  # the client's address
    Column("principal", String(255), nullable=False),  # the key's name, or the rsync daemon's user
    Column("started", Float, nullable=False),
    Column("ended", Float),
    Column("state", String(16), nullable=False, index=True),  # running | done | failed
    Column("reason", Text),  # why it failed, in words
    Column("bytes_received", BigInteger),
    Column("files_changed", BigInteger),
    Column("snapshot", String(255)),  # the snapshot its success took
    Column("owner", String(255), nullable=False),  # the appliance process that ran it (leases.new_owner)
)

# Public keys a source's clients log in with over SSH; a key belongs to one source.
source_keys = Table(
    "source_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("source_id", Integer, ForeignKey("sources.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", String(255), nullable=False),
    Column("key", Text, nullable=False),  # "<type> <base64>", as in authorized_keys
    Column("fingerprint", String(64), nullable=False, unique=True),  # SHA256:…, as ssh-keygen -l prints
    Column("created", Float, nullable=False),
)

# The image pool: a source's writable disk images; `root` is the block map's root node (HOLE: all zeros).
images = Table(
    "images",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("source_id", Integer, ForeignKey("sources.id"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("block_size", Integer, nullable=False),
    Column("root", LargeBinary(32), nullable=False),
    Column("changed", Float, nullable=False),
    UniqueConstraint("source_id", "name"),
)

# The images a snapshot froze: `<disk>@<snapshot>.img` in the mount.
image_versions = Table(
    "image_versions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("snapshot_id", Integer, ForeignKey("snapshots.id"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("block_size", Integer, nullable=False),
    Column("root", LargeBinary(32), nullable=False),
    UniqueConstraint("snapshot_id", "name"),
)

# -- the name index: every path of a source's snapshots, for searching by name (engine/nameindex.py) --

# A folder's path in a source's snapshots (b"" is the top), and each distinct name, with the name
# case-folded as text for searching.
index_dirs = Table(
    "index_dirs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("source_id", Integer, ForeignKey("sources.id", ondelete="CASCADE"), nullable=False),
    Column("path", LargeBinary, nullable=False),
    UniqueConstraint("source_id", "path"),
)

index_names = Table(
    "index_names",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("source_id", Integer, ForeignKey("sources.id", ondelete="CASCADE"), nullable=False),
    Column("name", LargeBinary, nullable=False),
    Column("folded", Text, nullable=False),
    UniqueConstraint("source_id", "name"),
)

# One version of one path: it is in every snapshot of the source whose id is from `first_id` to
# `last_id` (NULL: to the newest indexed one). Unchanged paths add no rows from one snapshot to the next.
index_versions = Table(
    "index_versions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("source_id", Integer, ForeignKey("sources.id", ondelete="CASCADE"), nullable=False),
    Column("dir_id", Integer, nullable=False),
    Column("name_id", Integer, nullable=False),
    Column("kind", SmallInteger, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("first_id", Integer, nullable=False),
    Column("last_id", Integer),
    Index("ix_index_versions_path", "source_id", "dir_id", "name_id"),
    Index("ix_index_versions_name", "name_id"),
    Index("ix_index_versions_last", "source_id", "last_id"),
)

# The newest snapshot of each source that the index holds, and its root tree (the next one is compared with it).
index_heads = Table(
    "index_heads",
    metadata,
    Column("source_id", Integer, ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True),
    Column("snapshot_id", Integer, nullable=False),
    Column("root", LargeBinary(32), nullable=False),
)
