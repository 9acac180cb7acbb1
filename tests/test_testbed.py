"""The multi-host test bed itself: isolated hosts, a shared directory, links, clean-up."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from typing import Any

import pytest

from pxexec.testbed import TestBed, can_build


def test_hosts_have_their_own_hostname_shm_and_address(bed: Any) -> None:
    marker = f"marker-{os.getpid()}"
    bed.check_output("n1", ["sh", "-c", f"touch /dev/shm/{marker}"])
    assert bed.check_output("n1", ["hostname"]) == "n1"
    assert bed.check_output("n2", ["hostname"]) == "n2"
    assert marker in bed.check_output("n1", ["ls", "/dev/shm"]).split()
    assert marker not in bed.check_output("n2", ["ls", "/dev/shm"]).split()
    assert not os.path.exists(f"/dev/shm/{marker}")
    code = (f"import socket; s = socket.create_connection(('{bed.address('n2')}', 7000), 5); "
            "print(s.recv(10).decode())")
    server = bed.spawn("n2", [bed._python, "-c",
                              "import socket; s = socket.create_server(('0.0.0.0', 7000)); "
                              "c, _ = s.accept(); c.sendall(b'hello')"], label="echo")
    deadline = time.monotonic() + 10
    while True:
        try:
            assert bed.python("n1", code) == "hello"
            break
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    server.wait(10)
    bed.check_output("n1", ["rm", f"/dev/shm/{marker}"])


def test_shared_directory_is_seen_by_every_host(bed: Any) -> None:
    path = os.path.join(bed.shared, "from-n1")
    bed.check_output("n1", ["sh", "-c", f"echo written-on-n1 > {path}"])
    assert bed.check_output("n2", ["cat", path]) == "written-on-n1"
    os.unlink(path)


def test_link_down_cuts_the_host_off_and_up_restores_it(bed: Any) -> None:
    url = bed.start_redis("store")
    host, port = url.split("//")[1].split("/")[0].split(":")
    socket.create_connection((host, int(port)), 2).close()
    bed.link("store", False)
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), 1).close()
    bed.link("store", True)
    socket.create_connection((host, int(port)), 5).close()
    received_before, _ = bed.link_bytes("store")
    with socket.create_connection((host, int(port)), 5) as s:
        s.sendall(b"SET k " + b"x" * 100_000 + b"\r\n")
        s.recv(100)
    received_after, _ = bed.link_bytes("store")
    assert received_after - received_before >= 100_000


def test_down_kills_every_process_and_removes_the_bridge() -> None:
    reason = can_build()
    if reason:
        pytest.skip(f"multi-host tests skipped: {reason}")
    bed = TestBed(["a1"]).up()
    holder = bed.hosts["a1"].holder
    # a process the bed did not start itself (a daemon a host's program left behind)
    bed.check_output("a1", ["sh", "-c", "setsid sleep 1000 > /dev/null 2>&1 &"])
    stray = bed.pids("a1")
    assert stray
    bed.down()
    for pid in [holder, *stray]:
        assert not os.path.exists(f"/proc/{pid}") or _zombie(pid)
    links = subprocess.run(["ip", "link"], capture_output=True, text=True).stdout
    assert bed.bridge not in links and bed.hosts["a1"].veth not in links


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return True
