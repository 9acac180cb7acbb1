"""Is a process still the one that registered? (pid + start time, zombies count as dead).

A pid alone is not an identity: the kernel reuses pids. A pid together with the
process's start time (field 22 of ``/proc/PID/stat``, in clock ticks since boot)
names one process for the life of the machine.
"""

from __future__ import annotations

import os

__all__ = ["Identity", "alive", "this_process"]

Identity = tuple[int, int]  # (pid, start time in clock ticks; 0 where /proc is absent)

_SELF: tuple[int, Identity] | None = None


def start_time(pid: int) -> int | None:
    """The start time of process ``pid``, or None if it is gone or a zombie.

    >>> start_time(os.getpid()) is not None
    True
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc here: fall back to a signal probe
        return _probe(pid)
    fields = stat[stat.rfind(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):  # killed but not yet waited for: its memory is gone
        return None
    return int(fields[19])


def _probe(pid: int) -> int | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return 0
    return 0


def this_process() -> Identity:
    """This process's identity (recomputed after fork).

    >>> this_process()[0] == os.getpid()
    True
    """
    global _SELF
    pid = os.getpid()
    if _SELF is None or _SELF[0] != pid:
        if not os.path.isdir("/proc/self"):
            _SELF = (pid, (pid, 0))
        else:
            _SELF = (pid, (pid, start_time(pid) or 0))
    return _SELF[1]


def alive(identity: Identity) -> bool:
    """Whether the process ``identity`` names still runs.

    >>> alive(this_process()), alive((this_process()[0], -1))
    (True, False)
    """
    pid, start = identity
    current = start_time(pid)
    return current is not None and (start == 0 or current == 0 or current == start)
