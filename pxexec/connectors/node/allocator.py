"""First-fit allocation with coalescing, over a free list kept in the index.

Free space is a table of (segment, offset, size) extents. ``take`` returns the
lowest-addressed extent that fits (so freed space is reused first: its pages are
populated and mapped already); ``give`` merges an extent with its neighbours.
Both run inside the caller's index transaction.
"""

from __future__ import annotations

import mmap
import sqlite3

__all__ = ["PAGE", "alignment", "give", "rounded", "take"]

PAGE = mmap.PAGESIZE
#: objects from this size on start on a page boundary
PAGE_ALIGNED_FROM = 64 * 1024
GRAIN = 64


def rounded(nbytes: int) -> int:
    """Bytes reserved for a payload of ``nbytes`` (at least one grain).

    >>> rounded(0), rounded(65), rounded(1 << 20)
    (64, 128, 1048576)
    """
    return max(GRAIN, -(-nbytes // GRAIN) * GRAIN)


def alignment(nbytes: int) -> int:
    """Large objects are page-aligned (numpy views and private maps need it).

    >>> alignment(100), alignment(1 << 20) == PAGE
    (64, True)
    """
    return PAGE if nbytes >= PAGE_ALIGNED_FROM else GRAIN


def take(db: sqlite3.Connection, size: int, align: int) -> tuple[int, int] | None:
    """Reserve ``size`` bytes at a multiple of ``align``; (segment, offset) or None."""
    row = db.execute(
        "SELECT seg, off, size FROM free WHERE size >= ? + ((? - off % ?) % ?) "
        "ORDER BY seg, off LIMIT 1",
        (size, align, align, align),
    ).fetchone()
    if row is None:
        return None
    seg, off, extent = row
    start = off + (-off % align)
    end = start + size
    db.execute("DELETE FROM free WHERE seg = ? AND off = ?", (seg, off))
    if start > off:
        db.execute("INSERT INTO free VALUES (?, ?, ?)", (seg, off, start - off))
    if off + extent > end:
        db.execute("INSERT INTO free VALUES (?, ?, ?)", (seg, end, off + extent - end))
    return seg, start


def give(db: sqlite3.Connection, seg: int, off: int, size: int) -> None:
    """Return an extent to the free list, merged with free neighbours."""
    before = db.execute(
        "SELECT off, size FROM free WHERE seg = ? AND off < ? ORDER BY off DESC LIMIT 1",
        (seg, off),
    ).fetchone()
    if before is not None and before[0] + before[1] == off:
        db.execute("DELETE FROM free WHERE seg = ? AND off = ?", (seg, before[0]))
        off, size = before[0], size + before[1]
    after = db.execute(
        "SELECT size FROM free WHERE seg = ? AND off = ?", (seg, off + size)
    ).fetchone()
    if after is not None:
        db.execute("DELETE FROM free WHERE seg = ? AND off = ?", (seg, off + size))
        size += after[0]
    db.execute("INSERT INTO free VALUES (?, ?, ?)", (seg, off, size))
