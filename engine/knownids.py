"""The ids a pool holds, compactly: what a put asks before it stores a blob again.

A dict of 32-byte ids costs ~150 bytes an entry (1,000,000 blobs: ~150 MB).
Here the ids loaded from the catalog sit in sorted arrays: the first 16
bytes of each id as two u64 and the blob's length as a u32, 20 bytes an
entry, searched by bisection. Two ids that share 128 bits are as unlikely as
a BLAKE3 collision, so the prefix stands for the id. What is added or
dropped later goes to a dict and a set, merged into the arrays once they
grow. Not thread-safe: the blob store's lock guards it.
"""

from __future__ import annotations

import bisect
import struct
from array import array
from collections.abc import Iterable
from operator import itemgetter

_PREFIX = struct.Struct(">QQ")
# Changes kept apart before they are merged into the arrays: at least this many, or an eighth
# of the arrays, so that merging (a pass over them all) costs a constant time per change.
MERGE_AT = 1 << 16


def _key(blob_id: bytes) -> tuple[int, int]:
    hi, lo = _PREFIX.unpack_from(blob_id)
    return hi, lo


class KnownIds:
    """id → raw length, for the blobs of one pool."""

    def __init__(self, rows: Iterable[tuple[bytes, int]] = ()):
        """From (id, length) rows, best in id order (the catalog's index order): then no sort, and no list of
        them all in memory."""
        self._hi, self._lo, self._len = array("Q"), array("Q"), array("I")
        self._added: dict[bytes, int] = {}
        self._dropped: set[tuple[int, int]] = set()
        ordered, last = True, (-1, -1)
        for blob_id, length in rows:
            key = _key(blob_id)
            ordered, last = ordered and key > last, key
            self._hi.append(key[0])
            self._lo.append(key[1])
            self._len.append(length)
        if not ordered:  # a catalog that sorts ids otherwise than bytewise: sorted once, at load
            entries = sorted(zip(self._hi, self._lo, self._len, strict=True))
            self._hi = array("Q", map(itemgetter(0), entries))
            self._lo = array("Q", map(itemgetter(1), entries))
            self._len = array("I", map(itemgetter(2), entries))

    def _find(self, key: tuple[int, int]) -> int:
        """The index of `key` in the arrays, or -1."""
        i = self._position(key)
        return i if i < len(self._hi) and self._hi[i] == key[0] and self._lo[i] == key[1] else -1

    def get(self, blob_id: bytes) -> int | None:
        length = self._added.get(blob_id[:16])
        if length is not None:
            return length
        key = _key(blob_id)
        if key in self._dropped:
            return None
        i = self._find(key)
        return None if i < 0 else self._len[i]

    def __contains__(self, blob_id: bytes) -> bool:
        return self.get(blob_id) is not None

    def __len__(self) -> int:
        return len(self._hi) - len(self._dropped) + len(self._added)

    def add(self, blob_id: bytes, length: int) -> None:
        key = _key(blob_id)
        if key in self._dropped:
            self._dropped.discard(key)  # back in the arrays as it was
            i = self._find(key)
            self._len[i] = length
            return
        if self._find(key) < 0:
            self._added[blob_id[:16]] = length
            self._merge_if_due()

    def discard(self, blob_id: bytes) -> None:
        if self._added.pop(blob_id[:16], None) is not None:
            return
        key = _key(blob_id)
        if self._find(key) >= 0:
            self._dropped.add(key)
            self._merge_if_due()

    def _merge_if_due(self) -> None:
        if len(self._added) + len(self._dropped) >= max(MERGE_AT, len(self._hi) // 8):  # linear in all
            self._merge()

    def _merge(self) -> None:
        """The arrays with the additions put in and the drops left out.

        The old arrays are copied in slices between the changes: Python work
        per change, not per entry, and no list of all entries in memory.
        """
        changes = [(self._position(key), 0, key, n) for key, n in ((_key(p), n) for p, n in self._added.items())]
        changes += [(i, 1, (0, 0), 0) for i in map(self._find, self._dropped) if i >= 0]
        changes.sort()
        hi, lo, lengths = array("Q"), array("Q"), array("I")
        start = 0
        for pos, dropped, key, n in changes:
            hi += self._hi[start:pos]
            lo += self._lo[start:pos]
            lengths += self._len[start:pos]
            if dropped:
                start = pos + 1
            else:
                hi.append(key[0])
                lo.append(key[1])
                lengths.append(n)
                start = pos
        hi += self._hi[start:]
        lo += self._lo[start:]
        lengths += self._len[start:]
        self._hi, self._lo, self._len = hi, lo, lengths
        self._added.clear()
        self._dropped.clear()

    def _position(self, key: tuple[int, int]) -> int:
        """Where `key` goes in the arrays: before the first entry that is greater."""
        i = bisect.bisect_left(self._hi, key[0])
        while i < len(self._hi) and self._hi[i] == key[0] and self._lo[i] < key[1]:
            i += 1
        return i

    def bytes_used(self) -> int:
        """Memory of the arrays (the recent changes apart)."""
        return sum(a.itemsize * len(a) for a in (self._hi, self._lo, self._len))
