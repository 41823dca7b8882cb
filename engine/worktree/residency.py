"""Which directories of a working tree have their entries in memory, and letting the least recently used go.

Entries go with their directory, and only clean ones: a row not yet
committed, a file open or lost, or a directory whose own entries are loaded
keeps its directory's entries in memory. A hard link goes with the last
loaded directory naming it; inodes loaded by number go once nothing loaded
names them or lies below them. What stays always has its parent directories
loaded, up to the root.
"""

from __future__ import annotations

from collections import OrderedDict

from .inode import ROOT, Inode


def trim_target(keep: int) -> int:
    """How many inodes a trim over the budget leaves: a quarter below it, so the next one is not due at once."""
    return keep * 3 // 4


class Residency:
    """The directories whose entries are loaded, the least recently used first. Guarded by the tree's lock."""

    def __init__(self) -> None:
        self._order: OrderedDict[int, None] = OrderedDict()

    def listed(self, *dirs: int) -> None:
        """Directories whose entries were just loaded (or made: a new directory's are all in memory)."""
        for ino in dirs:
            self._order[ino] = None

    def used(self, ino: int) -> None:
        self._order.move_to_end(ino)

    def forget(self, ino: int) -> None:
        self._order.pop(ino, None)

    def trim(self, inodes: dict[int, Inode], dirty: set[int], busy: set[int], keep: int) -> int:
        """Let go of entries until `keep` inodes are loaded or no more can go; returns how many went.

        `dirty`: inodes whose rows are not committed; `busy`: directories whose entries changed since.
        """
        before = len(inodes)
        for _ in range(8):  # a pass frees leaves; their parents can go on the next one
            if len(inodes) <= keep:
                break
            went = self._pass(inodes, dirty, busy, keep)
            if len(inodes) > keep:
                went = self._drop_loose(inodes, dirty) or went
            if not went:
                break
        return before - len(inodes)

    def _pass(self, inodes: dict[int, Inode], dirty: set[int], busy: set[int], keep: int) -> bool:
        # Directories naming a hard link that stays in memory stay too: what is loaded has its parents loaded.
        pinned = dirty.union(p for n in inodes.values() if len(n.parents) > 1 for p in n.parents)
        went = False
        for ino in list(self._order):
            if len(inodes) <= keep:
                break
            d = inodes[ino]
            assert d.children is not None
            if ino in busy or any(_pinned(inodes[c], pinned) for c in d.children.values()):
                continue
            for c in d.children.values():
                child = inodes.get(c)  # None: a second name of a hard link here, gone already
                if child is not None and not any(_listed(inodes.get(p)) for p in child.parents if p != ino):
                    del inodes[c]  # else another loaded directory names it: it goes with the last of them
            d.children = None
            del self._order[ino]
            went = True
        return went

    def _drop_loose(self, inodes: dict[int, Inode], dirty: set[int]) -> bool:
        """Let go of inodes loaded by number that no loaded directory lists and nothing loaded is below."""
        listed = {c for i in self._order for c in inodes[i].children.values()}  # type: ignore[union-attr]
        above = {p for n in inodes.values() for p in n.parents}
        loose = [i for i, n in inodes.items() if i != ROOT and i not in listed and i not in above
                 and not _pinned(n, dirty)]  # fmt: skip
        for i in loose:
            del inodes[i]
        return bool(loose)


def _listed(d: Inode | None) -> bool:
    return d is not None and d.children is not None


def _pinned(inode: Inode, dirty: set[int]) -> bool:
    """Whether an entry must stay in memory: its row is not committed, it is in use, or it is in `dirty`
    for another reason (a directory naming a hard link that stays)."""
    return (
        inode.ino in dirty
        or inode.children is not None
        or inode.opens > 0
        or inode.spool is not None
        or inode.lost is not None
    )
