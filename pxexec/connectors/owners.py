"""Owner records of file and shm stores: which process holds which object.

Each owner process has a record ``<store>/.leases/<owner>``, a file listing the keys
of the objects it holds (appended as it takes them; its modification time is the
heartbeat it renews when it runs with a lease).
The owner's name says where it runs (``host-pid-starttime-random``), so any later
process on the same host tells at once whether the owner is gone: its pid no
longer runs the process that started then. An owner on another host is gone when
its heartbeat is older than the lease. The reaper removes only what a gone owner
held, with calls relative to directory descriptors that never follow a symlink,
and only names that are pxexec keys or pxexec's own temporary files.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import stat
import time
from dataclasses import dataclass, field

from pxexec.connectors.private_dir import open_private_directory
from pxexec.errors import StoreIOError

__all__ = ["ReapReport", "owner_alive", "process_owner", "read_record", "reap_store"]

KEY = re.compile(r"[0-9a-f]{32}")
OWNER = re.compile(r"([A-Za-z0-9._]+)-([0-9]+)-([0-9]+)-([0-9a-f]{8})")
#: a writer's temporary file: ".<key>.<owner>.tmp" (a receiver's: ".<key>.<owner>.<thread>.tmp")
TEMP = re.compile(
    r"\.([0-9a-f]{32})\.([A-Za-z0-9._]+-[0-9]+-[0-9]+-[0-9a-f]{8})(?:\.[0-9]+)?\.tmp")
LEASES = ".leases"
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def this_host() -> str:
    """This host's name as owner names carry it (letters, digits, '.', '_')."""
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "localhost"


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), None if it does not run.

    >>> process_start(os.getpid()) is not None
    True
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc: whether the pid runs is all one can tell
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0
    if fields[0] == b"Z":  # a zombie has finished
        return None
    return int(fields[19])


_OWNER: tuple[int, str] | None = None


def process_owner() -> str:
    """This process's owner name (a new one in a forked child).

    >>> OWNER.fullmatch(process_owner()) is not None
    True
    """
    global _OWNER
    pid = os.getpid()
    current = _OWNER
    if current is None or current[0] != pid:
        name = f"{this_host()}-{pid}-{process_start(pid) or 0}-{secrets.token_hex(4)}"
        current = _OWNER = (pid, name)
    return current[1]


def owner_alive(owner: str) -> bool | None:
    """Whether ``owner`` still runs: True/False on its own host, None elsewhere.

    >>> owner_alive(process_owner())
    True
    """
    match = OWNER.fullmatch(owner)
    if match is None or match.group(1) != this_host():
        return None
    start = process_start(int(match.group(2)))
    return start is not None and (start == int(match.group(3)) or start == 0)


@dataclass
class ReapReport:
    """What one reaping pass removed from a store directory.

    >>> report = ReapReport("/dev/shm/pxexec-1000/default")
    >>> report.objects, report.temporaries, report.owners
    ([], [], [])
    """

    directory: str
    #: keys of the objects removed (held by owners that are gone)
    objects: list[str] = field(default_factory=list)
    #: names of the temporary files removed (of writers that are gone)
    temporaries: list[str] = field(default_factory=list)
    #: owners whose records were removed
    owners: list[str] = field(default_factory=list)


def _gone(owner: str, heartbeat: float | None, lease: float | None, now: float) -> bool:
    alive = owner_alive(owner)
    if alive is False:
        return True
    if lease is None:
        return False  # elsewhere, and no lease to expire: cannot tell, keep
    return heartbeat is None or now - heartbeat > lease


def _unlink(name: str, dir_fd: int) -> bool:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


def _regular(name: str, dir_fd: int) -> os.stat_result | None:
    """``name``'s lstat when it is a regular file (never a symlink), else None."""
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return info if stat.S_ISREG(info.st_mode) else None


def read_record(name: str, dir_fd: int) -> set[str]:
    """The keys an owner record lists (lines of 32 hex digits; anything else ignored).

    >>> import tempfile
    >>> directory = tempfile.mkdtemp()
    >>> with open(os.path.join(directory, "rec"), "w") as f:
    ...     _ = f.write("0" * 32 + chr(10) + "not a key" + chr(10))
    >>> fd = os.open(directory, os.O_RDONLY)
    >>> read_record("rec", fd) == {"0" * 32}
    True
    >>> os.close(fd)
    """
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return set()
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return set()
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return {k for k in b"".join(chunks).decode("ascii", "replace").split() if KEY.fullmatch(k)}


def reap_store(path: str, lease: float | None) -> ReapReport:
    """Remove what owners that are gone held in the store directory ``path``.

    An owner record is a file ``.leases/<owner>`` listing the keys the owner held
    (its modification time is the owner's heartbeat). A key is removed when a gone
    owner listed it and no live owner does. Objects that no record lists (of stores
    or processes that track no owners) are never touched, whatever their age.

    >>> import tempfile
    >>> reap_store(tempfile.mkdtemp(), None).objects
    []
    >>> reap_store(os.path.join(tempfile.mkdtemp(), "removed"), None).objects
    []
    """
    report = ReapReport(path)
    now = time.time()
    try:
        store_fd = open_private_directory(path, create=False)
    except StoreIOError:
        if not os.path.lexists(path):  # removed meanwhile (a store torn down): nothing left
            return report
        raise
    try:
        try:
            leases_fd = os.open(LEASES, _DIR, dir_fd=store_fd)
        except OSError:  # none yet, or a symlink or a file in its place: never follow it
            leases_fd = -1
        if leases_fd >= 0:
            try:
                _reap_records(leases_fd, store_fd, lease, now, report)
            finally:
                os.close(leases_fd)
        for name in os.listdir(store_fd):
            match = TEMP.fullmatch(name)
            if match is None:
                continue
            info = _regular(name, store_fd)
            beat = info.st_mtime if info is not None else None
            if _gone(match.group(2), beat, lease, now) and _unlink(name, store_fd):
                report.temporaries.append(name)
    finally:
        os.close(store_fd)
    return report


def _reap_records(leases_fd: int, store_fd: int, lease: float | None, now: float,
                  report: ReapReport) -> None:
    info = os.fstat(leases_fd)
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        return  # not a private directory of ours: touch nothing
    gone: dict[str, set[str]] = {}
    live: set[str] = set()
    for owner in os.listdir(leases_fd):
        if OWNER.fullmatch(owner) is None:
            continue
        record = _regular(owner, leases_fd)
        if record is None or record.st_uid != os.getuid():
            continue
        keys = read_record(owner, leases_fd)
        if _gone(owner, record.st_mtime, lease, now):
            gone[owner] = keys
        else:
            live |= keys
    for owner, keys in gone.items():
        for key in sorted(keys - live):
            if _regular(key, store_fd) is not None and _unlink(key, store_fd):
                report.objects.append(key)
        if _unlink(owner, leases_fd):
            report.owners.append(owner)
