"""A second, real local user account for attack tests (created when running as root).

``other_user`` yields an ``OtherUser`` whose ``run`` executes Python code as that
user in a subprocess; the account is removed afterwards. Without root the tests
that need it are skipped with a reason.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class OtherUser:
    name: str
    uid: int
    gid: int

    def run(self, code: str, check: bool = True, timeout: float = 60) -> tuple[int, str]:
        """Run ``code`` as this user (its uid/gid, no supplementary groups).

        The code runs in a forked child of this interpreter (the user may not be
        allowed to execute this environment's python); returns (exit status, output).
        """
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: drop to the other user, run, never return
            status = 1
            try:
                os.close(read)
                os.dup2(write, 1)
                os.dup2(write, 2)
                sys.stdout = sys.stderr = open(write, "w", buffering=1, closefd=False)  # noqa: SIM115
                # the run's private shm-files directory is ours, not this user's: it
                # gets its own default, as on a real machine
                os.environ.pop("PXEXEC_SHM_DIR", None)
                os.setgroups([])
                os.setgid(self.gid)
                os.setuid(self.uid)
                os.chdir("/")
                exec(compile(code, "<attacker>", "exec"), {"__name__": "__attacker__"})
                status = 0
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                os.write(write, traceback.format_exc().encode())
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)
        os.close(write)
        chunks: list[bytes] = []
        deadline = time.monotonic() + timeout
        with os.fdopen(read, "rb") as pipe:
            while True:
                if not select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))[0]:
                    os.kill(pid, signal.SIGKILL)
                    break
                chunk = os.read(pipe.fileno(), 65536)
                if not chunk:
                    break
                chunks.append(chunk)
        _, raw = os.waitpid(pid, 0)
        status = os.waitstatus_to_exitcode(raw)
        output = b"".join(chunks).decode(errors="replace")
        if check and status != 0:
            raise AssertionError(f"code run as {self.name} exited {status}:\n{output}")
        return status, output


def _useradd(name: str) -> None:
    for attempt in range(20):  # /etc/passwd is locked while another useradd runs
        done = subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin",
                               "--user-group", name], capture_output=True, text=True)
        if done.returncode == 0:
            return
        if "lock" not in done.stderr.lower() and attempt > 2:
            raise RuntimeError(f"useradd {name} failed: {done.stderr.strip()}")
        time.sleep(0.2)
    raise RuntimeError(f"useradd {name} failed: /etc/passwd stayed locked")


def _userdel(name: str) -> None:
    for _ in range(20):
        done = subprocess.run(["userdel", name], capture_output=True, text=True)
        if done.returncode == 0 or "does not exist" in done.stderr:
            return
        time.sleep(0.2)


@contextlib.contextmanager
def _local_user(role: str) -> Iterator[OtherUser]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create second local user accounts (useradd)")
    if shutil.which("useradd") is None:
        pytest.skip("useradd is not installed, so no second local user can be created")
    name = f"px{role}{os.getpid() % 100000}"
    _useradd(name)
    uid = -1
    try:
        entry = pwd.getpwnam(name)
        uid = entry.pw_uid
        yield OtherUser(name, entry.pw_uid, entry.pw_gid)
    finally:
        _userdel(name)
        if uid >= 0:
            shutil.rmtree(f"/dev/shm/pxexec-{uid}", ignore_errors=True)


@pytest.fixture(scope="module")
def other_user() -> Iterator[OtherUser]:
    """An attacker: a second local account (not root, not you)."""
    with _local_user("atk") as user:
        yield user


@pytest.fixture(scope="module")
def victim_user() -> Iterator[OtherUser]:
    """A victim that is not root (so its /dev/shm/pxexec-UID is free to attack)."""
    with _local_user("vic") as user:
        yield user


@pytest.fixture
def shared_tmp() -> Iterator[str]:
    """A fresh directory both users can reach (mode 1777, like /tmp); removed afterwards."""
    path = tempfile.mkdtemp(prefix="pxexec-two-users-", dir="/tmp")
    os.chmod(path, 0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)
