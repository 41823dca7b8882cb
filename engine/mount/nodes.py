"""Node numbers: one 64-bit number per node of the mount, stable across mounts.

The top two bits say where a node lives; stable numbers let the kernel keep
what it cached of a snapshot when the mount restarts.

    0  virtual: 1 is the root; (source id << 8) | part for a source's own nodes
    1  working tree: (source id << 40) | inode number in the working tree
    2  snapshot: (snapshot id << 40) | inode number recorded in the snapshot
    3  image: (source id << 40) | image row id, or | IMAGE_VERSION | image version row id
"""

from __future__ import annotations

from typing import NamedTuple

from ..snapshots import RESERVED

ROOT = 1
VIRTUAL, WORKING, SNAPSHOT, IMAGE = 0, 1, 2, 3
# A source's virtual nodes.
SOURCE_DIR, SNAPSHOTS_DIR, LATEST, IMAGES_DIR = 1, 2, 3, 4
CURRENT = b"current"
SNAPSHOTS = b"snapshots"
IMAGES = b"images"
IMAGE_VERSION = 1 << 39
LATEST_NAME = RESERVED[0].encode()  # the symlink to the newest snapshot: no snapshot may take its name
_LOW = (1 << 40) - 1
_OWNER = (1 << 22) - 1


class Node(NamedTuple):  # a tuple: every request makes one or more (a frozen dataclass is twice as slow)
    space: int
    owner: int  # source id (virtual, working tree) or snapshot id
    ino: int  # the part within the owner: a virtual part or an inode number

    @property
    def number(self) -> int:
        if self.space == VIRTUAL:
            return ROOT if self.owner == 0 else (self.owner << 8) | self.ino
        return (self.space << 62) | (self.owner << 40) | self.ino


def node_of(number: int) -> Node:
    space = number >> 62
    if space == VIRTUAL:
        return ROOT_NODE if number == ROOT else Node(VIRTUAL, number >> 8, number & 0xFF)
    return Node(space, (number >> 40) & _OWNER, number & _LOW)


ROOT_NODE = Node(VIRTUAL, 0, ROOT)
