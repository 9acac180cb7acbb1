"""Objects in large shared-memory segments: reserve, write, seal, view, retire.

Segments are files in the node store's directory, created in big chunks (their
memory reserved with ``posix_fallocate``) up to a capacity, and mapped once per
process (``MAP_SHARED``), for good. An object's life, all recorded in the index:

``writing`` (space reserved, invisible to readers) -> ``sealed`` (visible,
immutable) -> ``retired`` (evicted while some process still views it; its space is
reused once the last view is gone) -> deleted, space back on the free list.

A process killed while writing leaves a ``writing`` row whose writer is dead, and
views of a killed reader leave pins whose process is dead: ``sweep`` frees both.
Objects that do not fit (the arena is full, or the object is larger than it) go
to files in a spill directory; readers do not notice.
"""

from __future__ import annotations

import importlib.util
import mmap
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pxexec.connectors.node.allocator as allocator
from pxexec.codec.bulk_copy import copy_into
from pxexec.connectors.node.files import (
    create_segment,
    ensure_private_directory,
    map_segment,
    open_private,
    remove_quietly,
)
from pxexec.connectors.node.index import Index
from pxexec.connectors.node.liveness import Identity, alive, this_process
from pxexec.errors import StoreIOError
from pxexec.forking import renew_locks_after_fork

__all__ = ["Arena", "Slot"]

#: objects up to this size are copied out on read (cheaper than pinning a view)
SMALL = 64 * 1024
_COLUMNS = "o.id, o.path, o.seg, o.off, o.alloc, o.length, s.size"


@dataclass
class Slot:
    """Space reserved for one object: in a segment (``seg``) or a spill file."""

    obj: int
    seg: int | None
    off: int
    length: int
    seg_size: int = 0
    #: the spill file (``seg`` is None)
    path: str = ""


class Arena:
    """The segments, free list and objects of one node store directory."""

    def __init__(self, path: str, *, capacity: int, chunk: int, spill: str,
                 reads: str = "view") -> None:
        ensure_private_directory(path)
        self.path = path
        self.capacity = capacity
        self.chunk = chunk
        self.spill = spill
        self.reads = reads
        self.index = Index(os.path.join(path, "index.sqlite"))
        self._maps: dict[int, mmap.mmap] = {}
        self._maps_lock = threading.Lock()
        renew_locks_after_fork(self, "_maps_lock")  # another thread may hold it at fork

    # -- files ------------------------------------------------------------------------

    def segment_path(self, seg: int) -> str:
        return os.path.join(self.path, f"seg-{seg}")

    def spill_path(self, obj: int) -> str:
        """Where this process spills object ``obj`` (recorded in the index with it)."""
        return os.path.join(self.spill, f"o{obj}")

    def _map(self, seg: int, size: int, db: sqlite3.Connection | None = None) -> mmap.mmap:
        """This process's mapping of segment ``seg`` (made on first use, then kept).

        With the index at hand (``db``), a new mapping also drops those of segments
        that were deleted meanwhile (``trim``), so their memory can go back.
        """
        mapped = self._maps.get(seg)
        if mapped is None:
            live = {s for (s,) in db.execute("SELECT id FROM segments")} if db else None
            with self._maps_lock:
                if live is not None:
                    for gone in set(self._maps) - live:
                        del self._maps[gone]  # unmapped once no view of it is left
                mapped = self._maps.get(seg)
                if mapped is None:
                    mapped = self._maps[seg] = map_segment(self.segment_path(seg), size)
        return mapped

    # -- writing ----------------------------------------------------------------------

    def reserve(self, key: str | None, length: int, *, pinned: bool = False) -> Slot:
        """Reserve space for ``length`` bytes under ``key`` (invisible until sealed)."""
        size, align = allocator.rounded(length), allocator.alignment(length)
        who = this_process()
        with self.index.transaction() as db:
            place = allocator.take(db, size, align)
            if place is None and self.sweep(db):
                place = allocator.take(db, size, align)
            if place is None:
                place = self._grow(db, size, align)
            seg, off = place if place is not None else (None, 0)
            obj = db.execute(
                "INSERT INTO objects(key, state, seg, off, alloc, length, pid, start, created) "
                "VALUES (?, 'writing', ?, ?, ?, ?, ?, ?, ?)",
                (key, seg, off, size if seg is not None else length, length, *who, time.time()),
            ).lastrowid
            assert obj is not None
            if pinned:
                db.execute("INSERT INTO pins VALUES (?, ?, ?, 1)", (obj, *who))
            seg_size, path = 0, ""
            if seg is None:  # spilled: the index records the file, for every process
                path = self.spill_path(obj)
                db.execute("UPDATE objects SET path = ? WHERE id = ?", (path, obj))
            if seg is not None:
                seg_size = db.execute("SELECT size FROM segments WHERE id = ?",
                                      (seg,)).fetchone()[0]
                self._map(seg, seg_size, db)
        return Slot(obj, seg, off, length, seg_size, path)

    def _grow(self, db: sqlite3.Connection, size: int, align: int) -> tuple[int, int] | None:
        total = db.execute("SELECT COALESCE(SUM(size), 0) FROM segments").fetchone()[0]
        need = -(-(size + align) // allocator.PAGE) * allocator.PAGE
        room = (self.capacity - total) // allocator.PAGE * allocator.PAGE
        grow = min(max(self.chunk, need), room)
        if grow < need:
            return None  # full: the caller spills
        seg = db.execute("INSERT INTO segments(size) VALUES (?)", (grow,)).lastrowid
        assert seg is not None
        try:
            create_segment(self.segment_path(seg), grow)
        except OSError:  # /dev/shm itself is full: spill
            db.execute("DELETE FROM segments WHERE id = ?", (seg,))
            return None
        allocator.give(db, seg, 0, grow)
        return allocator.take(db, size, align)

    def write(self, slot: Slot, frames: Sequence[Any]) -> None:
        """Copy ``frames`` into the slot (one copy each, by two threads for large ones;
        no joined copy)."""
        if slot.seg is None:
            self._write_spill(slot, frames)
            return
        target = memoryview(self._map(slot.seg, slot.seg_size))
        pos = slot.off
        for frame in frames:
            view = memoryview(frame).cast("B")
            copy_into(target[pos : pos + view.nbytes], view)
            pos += view.nbytes

    def _write_spill(self, slot: Slot, frames: Sequence[Any]) -> None:
        from pxexec.connectors.file import write_frames

        ensure_private_directory(self.spill)
        path = slot.path
        try:
            fd = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                write_frames(fd, frames)
            finally:
                os.close(fd)
        except OSError as exc:
            remove_quietly(path)
            raise self._spill_failed(slot, exc) from exc

    def _spill_failed(self, slot: Slot, exc: OSError) -> StoreIOError:
        return StoreIOError(
            f"Could not spill an object of {slot.length} bytes to {self.spill!r}: "
            f"{exc.strerror or exc}. The shared-memory arena is full; free space in the "
            "spill directory or choose a larger one (spill_directory=...)."
        )

    def writable(self, slot: Slot) -> memoryview:
        """A writable view of a reserved slot (for producers that build in place)."""
        if slot.seg is not None:
            mapped = self._map(slot.seg, slot.seg_size)
            return memoryview(mapped)[slot.off : slot.off + slot.length]
        ensure_private_directory(self.spill)
        fd = open_private(slot.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        try:
            if slot.length == 0:
                return memoryview(bytearray())
            try:  # every block now: a full disk is this error, not a SIGBUS at a write
                os.posix_fallocate(fd, 0, slot.length)
            except OSError as exc:
                remove_quietly(slot.path)
                raise self._spill_failed(slot, exc) from exc
            return memoryview(mmap.mmap(fd, slot.length, flags=mmap.MAP_SHARED))
        finally:
            os.close(fd)

    def seal(self, obj: int, key: str | None = None) -> bool:
        """Make a written object visible (under ``key`` if given); False if it is gone."""
        with self.index.transaction() as db:
            if key is None:
                done = db.execute(
                    "UPDATE objects SET state = 'sealed' WHERE id = ? AND state = 'writing'", (obj,)
                ).rowcount
            else:
                done = db.execute(
                    "UPDATE objects SET state = 'sealed', key = ? "
                    "WHERE id = ? AND state = 'writing'",
                    (key, obj),
                ).rowcount
            row = db.execute("SELECT seg, length FROM objects WHERE id = ?", (obj,)).fetchone()
            if done and row[0] is None:
                _count(db, "spilled_objects", 1)
                _count(db, "spilled_bytes", row[1])
        return bool(done)

    def abort(self, obj: int, *, pinned: bool = False) -> None:
        """Give up a reserved, unsealed object (``pinned``: reserved with
        ``pinned=True``, whose pin goes with it)."""
        with self.index.transaction() as db:
            if pinned:
                unpin(db, obj, this_process(), self)
            else:
                self._free_if(db, obj, "writing")

    # -- reading ----------------------------------------------------------------------

    def open(self, key: str) -> Any:
        """A buffer of the sealed object ``key``, or None. See the module doc."""
        opened = self.open_identified(key)
        return None if opened is None else opened[0]

    def open_identified(self, key: str) -> tuple[Any, int] | None:
        """``open(key)`` and the object's id (a new id for every object written)."""
        who = this_process()
        with self.index.transaction() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM objects o LEFT JOIN segments s ON s.id = o.seg "
                "WHERE o.key = ? AND o.state = 'sealed'", (key,)
            ).fetchone()
            if row is None:
                return None
            obj, path, seg, off, _, length, seg_size = row
            if seg is not None:
                mapped = self._map(seg, seg_size, db)
            if seg is not None and (length <= SMALL or not _HAVE_NUMPY):
                # small: copy out while no one can free the space
                return bytearray(mapped[off : off + length]), obj
            if seg is not None:
                db.execute(
                    "INSERT INTO pins VALUES (?, ?, ?, 1) ON CONFLICT DO UPDATE SET n = n + 1",
                    (obj, *who),
                )
        if seg is None:
            spilled = self._open_spill(path, length)
            return None if spilled is None else (spilled, obj)
        try:
            return self._pinned_view(obj, seg, seg_size, off, length, who), obj
        except BaseException:
            self._unpin(obj, who)
            raise

    def _pinned_view(self, obj: int, seg: int, seg_size: int, off: int, length: int,
                     who: Identity) -> memoryview:
        import numpy as np

        if self.reads == "private":  # copy-on-write: writes stay with this reader
            fd = open_private(self.segment_path(seg), os.O_RDONLY)
            try:
                private = mmap.mmap(fd, length, flags=mmap.MAP_PRIVATE,
                                    prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=off)
            finally:
                os.close(fd)
            holder = np.frombuffer(private, dtype=np.uint8)
        else:
            holder = np.frombuffer(self._map(seg, seg_size), dtype=np.uint8, count=length,
                                   offset=off)
            holder.flags.writeable = False
        release = weakref.finalize(holder, _release, self, obj, who)
        release.atexit = False  # a process that exits leaves dead pins: swept
        return holder.data

    def _open_spill(self, path: str, length: int) -> Any:
        from pxexec.connectors.file import map_private

        try:
            fd = open_private(path, os.O_RDONLY)
        except FileNotFoundError:
            return None  # evicted meanwhile
        try:
            return map_private(fd, length)
        finally:
            os.close(fd)

    def _unpin(self, obj: int, who: Identity) -> None:
        self.index.defer(lambda db: unpin(db, obj, who, self))

    def pin_writer_view(self, slot: Slot, view: memoryview) -> Any:
        """Wrap a writable slot view so that dropping it unpins (or aborts) the object."""
        import numpy as np

        holder = np.frombuffer(view, dtype=np.uint8)
        release = weakref.finalize(holder, _release, self, slot.obj, this_process())
        release.atexit = False
        return holder

    # -- freeing ----------------------------------------------------------------------

    def retire(self, db: sqlite3.Connection, key: str) -> bool:
        """Evict ``key`` inside a transaction; its space is freed once nobody views it."""
        row = db.execute("SELECT id FROM objects WHERE key = ? AND state = 'sealed'",
                         (key,)).fetchone()
        if row is None:
            return False
        db.execute("DELETE FROM holds WHERE key = ?", (key,))
        self.retire_object(db, row[0])
        return True

    def retire_object(self, db: sqlite3.Connection, obj: int) -> None:
        for pid, start in db.execute("SELECT pid, start FROM pins WHERE obj = ?",
                                     (obj,)).fetchall():
            if not alive((pid, start)):
                db.execute("DELETE FROM pins WHERE obj = ? AND pid = ? AND start = ?",
                           (obj, pid, start))
        db.execute("UPDATE objects SET key = NULL, state = 'retired' WHERE id = ?", (obj,))
        self._free_if(db, obj, "retired")

    def _free_if(self, db: sqlite3.Connection, obj: int, state: str) -> None:
        """Free ``obj`` if it is in ``state`` and no process views it."""
        if db.execute("SELECT 1 FROM pins WHERE obj = ?", (obj,)).fetchone() is not None:
            return
        row = db.execute("SELECT seg, off, alloc, path FROM objects WHERE id = ? AND state = ?",
                         (obj, state)).fetchone()
        if row is None:
            return
        db.execute("DELETE FROM objects WHERE id = ?", (obj,))
        seg, off, alloc, path = row
        if seg is None:
            if path:
                remove_quietly(path)
        else:
            allocator.give(db, seg, off, alloc)

    def sweep(self, db: sqlite3.Connection) -> int:
        """Free what dead processes left: unsealed writes, pins. Returns objects freed."""
        processes = db.execute(
            "SELECT DISTINCT pid, start FROM pins UNION "
            "SELECT DISTINCT pid, start FROM objects WHERE state = 'writing'"
        ).fetchall()
        freed = 0
        for pid, start in processes:
            if alive((pid, start)):
                continue
            db.execute("DELETE FROM pins WHERE pid = ? AND start = ?", (pid, start))
            for (obj,) in db.execute(
                "SELECT id FROM objects WHERE state = 'writing' AND pid = ? AND start = ?",
                (pid, start),
            ).fetchall():
                self._free_if(db, obj, "writing")
                freed += 1
        for (obj,) in db.execute(
            "SELECT id FROM objects WHERE state = 'retired' AND id NOT IN (SELECT obj FROM pins)"
        ).fetchall():
            self._free_if(db, obj, "retired")
            freed += 1
        return freed

    def trim(self) -> bool:
        """Delete the segments if the arena holds nothing (their memory goes back)."""
        with self.index.transaction() as db:
            self.sweep(db)
            if db.execute("SELECT 1 FROM objects LIMIT 1").fetchone() is not None:
                return False
            for (seg,) in db.execute("SELECT id FROM segments").fetchall():
                remove_quietly(self.segment_path(seg))
            db.execute("DELETE FROM segments")
            db.execute("DELETE FROM free")
        with self._maps_lock:
            self._maps.clear()  # views still alive keep their mapping until they go
        return True

    def stats(self) -> dict[str, int]:
        """Objects and bytes in the arena and in the spill directory, for this node."""
        with self.index.transaction() as db:
            self.sweep(db)

            def one(sql: str) -> int:
                row = db.execute(sql).fetchone()
                return int(row[0] or 0) if row else 0

            return {
                "objects": one("SELECT COUNT(*) FROM objects WHERE state = 'sealed'"),
                "writing": one("SELECT COUNT(*) FROM objects WHERE state = 'writing'"),
                "retired": one("SELECT COUNT(*) FROM objects WHERE state = 'retired'"),
                "pins": one("SELECT SUM(n) FROM pins"),
                "bytes_in_use": one("SELECT SUM(alloc) FROM objects WHERE seg IS NOT NULL"),
                "arena_bytes": one("SELECT SUM(size) FROM segments"),
                "segments": one("SELECT COUNT(*) FROM segments"),
                "spilled_objects_now": one(
                    "SELECT COUNT(*) FROM objects WHERE seg IS NULL AND state = 'sealed'"),
                "spilled_bytes_now": one("SELECT SUM(length) FROM objects WHERE seg IS NULL"),
                "spilled_objects": one(
                    "SELECT value FROM counters WHERE name = 'spilled_objects'"),
                "spilled_bytes": one("SELECT value FROM counters WHERE name = 'spilled_bytes'"),
            }


def unpin(db: sqlite3.Connection, obj: int, who: Identity, arena: Arena) -> None:
    db.execute("UPDATE pins SET n = n - 1 WHERE obj = ? AND pid = ? AND start = ?", (obj, *who))
    db.execute("DELETE FROM pins WHERE obj = ? AND n <= 0", (obj,))
    arena._free_if(db, obj, "retired")
    arena._free_if(db, obj, "writing")  # a producer's buffer dropped before sealing


def _release(arena: Arena, obj: int, who: Identity) -> None:
    # finalizer of a view: only the process that pinned unpins (not a forked child)
    if os.getpid() == who[0]:
        arena._unpin(obj, who)


def _count(db: sqlite3.Connection, name: str, delta: int) -> None:
    db.execute("INSERT INTO counters VALUES (?, ?) ON CONFLICT DO UPDATE SET value = value + ?",
               (name, delta, delta))


#: views need numpy (an array is what can carry the finalizer); without it, reads copy
_HAVE_NUMPY = importlib.util.find_spec("numpy") is not None
