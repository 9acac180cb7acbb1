"""A simulated cluster on one machine: hosts as Linux namespaces joined by a bridge.

Each host is a long-lived holder process (``sleep``) in its own network, mount and UTS
namespaces: its own hostname, its own ``/dev/shm`` (a private tmpfs) and one interface
``eth0`` on a private subnet ``10.213.S.0/24``, plugged into a bridge of this run. The
process that builds the bed (the test runner, or ``python -m pxexec.testbed up``) stays
in the root namespaces and reaches every host through the bridge's own address
``10.213.S.1``; it plays the part of the head node. Programs run on a host through
``nsenter`` into its holder's namespaces. Traffic goes only to addresses of this bed.

Names are unique per run (bridge ``pxb<run>``, veths ``pxv<run><i>``) and a free subnet
is chosen under a lock file, so parallel runs do not collide. Programs started with ``spawn``
log to ``log_dir`` (removed by ``down()`` unless ``PXEXEC_TESTBED_KEEP_LOGS`` is set).
``down()`` kills every process of every host by pid (those it started and any found
in a host's network namespace), then the holders (their namespaces and tmpfs go with
them), then the bridge.
Building a bed needs root (``CAP_SYS_ADMIN`` and ``CAP_NET_ADMIN``); ``can_build()`` says
why not otherwise.

Links can be shaped (``shape``: rate and delay, with ``tc netem`` on both ends) and taken
down and up; ``link_bytes`` reads a host link's byte counters.

>>> bed = TestBed(["n1", "n2"])                      # doctest: +SKIP
>>> bed.up(); bed.check_output("n1", ["hostname"])   # doctest: +SKIP
'n1'
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HEAD", "Host", "TestBed", "can_build"]

#: the name of the bed's head: this process's own (root) namespaces
HEAD = "head"

_LOCK = "/tmp/pxexec-testbed.lock"
_PREFIX = "10.213"


def can_build() -> str | None:
    """None when this process can build a test bed, else the reason it cannot.

    >>> can_build() is None or isinstance(can_build(), str)
    True
    """
    if sys.platform != "linux":
        return "the multi-host test bed needs Linux namespaces"
    if os.geteuid() != 0:
        return "the multi-host test bed needs root (network and mount namespaces, a bridge)"
    for tool in ("ip", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"the multi-host test bed needs the {tool!r} program (iproute2/util-linux)"
    probe = subprocess.run(["unshare", "--net", "--mount", "--uts", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"namespaces cannot be made here: {probe.stderr.strip()}"
    return None


@dataclass
class Host:
    """One simulated host: its name (also its hostname), address and holder process."""

    name: str
    index: int
    address: str
    holder: int = 0
    veth: str = ""  # the root-side end of the host's link (counters, shaping, down/up)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)


def _run(*argv: str) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return proc.stdout


class TestBed:
    """N simulated hosts on a private subnet; see the module doc.

    ``shared`` is a directory every host sees (standing for a parallel file system).
    """

    __test__ = False  # not a pytest test class

    def __init__(self, names: Sequence[str], *, shared: str | None = None,
                 log_dir: str | None = None) -> None:
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"host names must be unique and non-empty, got {list(names)}")
        self.run_id = secrets.token_hex(3)
        self.bridge = f"pxb{self.run_id}"
        self.names = list(names)
        self.hosts: dict[str, Host] = {}
        self.subnet = -1
        self.shared = shared or tempfile.mkdtemp(prefix=f"pxexec-pfs-{self.run_id}-")
        os.chmod(self.shared, 0o755)
        self.log_dir = log_dir or tempfile.mkdtemp(prefix=f"pxexec-bed-{self.run_id}-")
        self._started = False
        self._python = sys.executable
        self._head: list[subprocess.Popen[bytes]] = []  # processes started on the head

    # -- addresses ------------------------------------------------------------------

    @property
    def head_address(self) -> str:
        """This (root-namespace) process's address on the bed's subnet."""
        return f"{_PREFIX}.{self.subnet}.1"

    def address(self, name: str) -> str:
        return self.head_address if name == HEAD else self.hosts[name].address

    # -- up and down ----------------------------------------------------------------

    def up(self) -> TestBed:
        """Make the bridge and every host; on any failure, undo what was made."""
        atexit.register(self.down)
        self._started = True
        try:
            with open(_LOCK, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                self.subnet = self._free_subnet()
                _run("ip", "link", "add", self.bridge, "type", "bridge")
                _run("ip", "addr", "add", f"{self.head_address}/24", "dev", self.bridge)
                _run("ip", "link", "set", self.bridge, "up")
            for i, name in enumerate(self.names):
                self.hosts[name] = self._make_host(name, i)
        except BaseException:
            self.down()
            raise
        return self

    @staticmethod
    def _free_subnet() -> int:
        used = _run("ip", "-4", "-o", "addr")
        for s in range(256):
            if f" {_PREFIX}.{s}." not in used:
                return s
        raise RuntimeError(f"every {_PREFIX}.S.0/24 subnet is in use")

    def _make_host(self, name: str, i: int) -> Host:
        host = Host(name, i, f"{_PREFIX}.{self.subnet}.{i + 2}", veth=f"pxv{self.run_id}{i}")
        script = (
            f"hostname {name} && mount -t tmpfs -o mode=1777 tmpfs /dev/shm && "
            "exec sleep 2147483647"
        )
        holder = subprocess.Popen(
            ["unshare", "--net", "--mount", "--uts", "--propagation", "private",
             "sh", "-c", script],
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        host.holder = holder.pid
        deadline = time.monotonic() + 10
        while not self._holder_ready(host):
            if holder.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the holder of host {name!r} did not start")
            time.sleep(0.01)
        peer = f"pxp{self.run_id}{i}"
        _run("ip", "link", "add", host.veth, "type", "veth", "peer", "name", peer)
        _run("ip", "link", "set", peer, "netns", str(host.holder))
        _run("ip", "link", "set", host.veth, "master", self.bridge, "up")
        for argv in (["ip", "link", "set", "lo", "up"],
                     ["ip", "link", "set", peer, "name", "eth0"],
                     ["ip", "addr", "add", f"{host.address}/24", "dev", "eth0"],
                     ["ip", "link", "set", "eth0", "up"]):
            _run(*self.enter(name, argv, host=host))
        return host

    def _holder_ready(self, host: Host) -> bool:
        try:
            with open(f"/proc/{host.holder}/cmdline", "rb") as f:
                return f.read().startswith(b"sleep")
        except OSError:
            return False

    def down(self) -> None:
        """Kill every process of every host (by pid), the holders, and the bridge."""
        if not self._started:
            return
        self._started = False
        self.kill_host(HEAD)
        for host in self.hosts.values():
            self.kill_host(host.name)
        for host in self.hosts.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(host.holder, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(host.holder, 0)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        for host in self.hosts.values():  # a veth goes with its namespace; make sure
            subprocess.run(["ip", "link", "del", host.veth], capture_output=True)
        shutil.rmtree(self.shared, ignore_errors=True)
        if not os.environ.get("PXEXEC_TESTBED_KEEP_LOGS"):
            shutil.rmtree(self.log_dir, ignore_errors=True)
        atexit.unregister(self.down)

    def __enter__(self) -> TestBed:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- running programs -----------------------------------------------------------

    def enter(self, name: str, argv: Sequence[str], *, host: Host | None = None) -> list[str]:
        """The command line that runs ``argv`` on host ``name``."""
        if name == HEAD:
            return list(argv)
        pid = (host or self.hosts[name]).holder
        return ["nsenter", "-t", str(pid), "-n", "-m", "-u", "--", *argv]

    def check_output(self, name: str, argv: Sequence[str], timeout: float = 60) -> str:
        """Run ``argv`` on host ``name``; its stdout, stripped (raises if it fails)."""
        proc = subprocess.run(self.enter(name, argv), capture_output=True, text=True,
                              timeout=timeout, env=self.env())
        if proc.returncode != 0:
            raise RuntimeError(f"{list(argv)} on {name} failed ({proc.returncode}): "
                               f"{proc.stderr.strip()[-2000:]}")
        return proc.stdout.strip()

    def python(self, name: str, code: str, timeout: float = 120) -> str:
        """Run Python ``code`` on host ``name`` with this interpreter; its stdout."""
        return self.check_output(name, [self._python, "-c", code], timeout=timeout)

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(extra)
        return env

    def spawn(self, name: str, argv: Sequence[str], *, label: str = "",
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` on host ``name`` in the background; output goes to a log file."""
        label = label or os.path.basename(argv[0])
        log = open(os.path.join(self.log_dir, f"{name}-{label}.log"), "ab")  # noqa: SIM115
        proc = subprocess.Popen(self.enter(name, argv), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env or self.env(),
                                start_new_session=True)
        log.close()
        (self._head if name == HEAD else self.hosts[name].processes).append(proc)
        return proc

    def log(self, name: str, label: str) -> str:
        path = os.path.join(self.log_dir, f"{name}-{label}.log")
        try:
            with open(path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def pids(self, name: str) -> list[int]:
        """Every process in host ``name``'s network namespace except its holder (on the
        head: the processes started there)."""
        if name == HEAD:
            return [p.pid for p in self._head if p.poll() is None]
        host = self.hosts[name]
        try:
            target = os.readlink(f"/proc/{host.holder}/ns/net")
        except OSError:
            return []
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == host.holder:
                continue
            try:
                if os.readlink(f"/proc/{entry}/ns/net") == target:
                    found.append(int(entry))
            except OSError:
                continue
        return found

    def kill_host(self, name: str) -> None:
        """Kill every process running on host ``name`` (the host itself stays up); on the
        head, the processes started there."""
        processes = self._head if name == HEAD else self.hosts[name].processes
        for proc in processes:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        if name == HEAD:
            for proc in processes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
            processes.clear()
            return
        host = self.hosts[name]
        for proc in host.processes:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        for pid in self.pids(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in host.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        host.processes.clear()
        deadline = time.monotonic() + 5
        while self.pids(name) and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """Terminate one process started by ``spawn`` (kill it after 5 s)."""
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        for processes in [self._head, *(h.processes for h in self.hosts.values())]:
            if proc in processes:
                processes.remove(proc)

    # -- links ----------------------------------------------------------------------

    def shape(self, name: str, rate: str | None = None, delay: str | None = None) -> None:
        """Shape host ``name``'s link both ways (``rate="10gbit"``; ``delay="1ms"`` needs
        the kernel's netem); with neither, remove the shaping.

        The rate is a token bucket (``tc tbf``) with a burst of 10 ms at that rate.
        """
        veth = self.hosts[name].veth
        if rate is None and delay is None:
            subprocess.run(["tc", "qdisc", "del", "dev", veth, "root"], capture_output=True)
            subprocess.run(self.enter(name, ["tc", "qdisc", "del", "dev", "eth0", "root"]),
                           capture_output=True)
            return
        if delay:
            spec = ["netem", "limit", "100000", "delay", delay] + (["rate", rate] if rate else [])
        else:
            assert rate is not None
            burst = max(1 << 20, _bits_per_second(rate) // 8 // 100)
            spec = ["tbf", "rate", rate, "burst", str(burst), "latency", "100ms"]
        _run("tc", "qdisc", "replace", "dev", veth, "root", *spec)
        _run(*self.enter(name, ["tc", "qdisc", "replace", "dev", "eth0", "root", *spec]))

    def link(self, name: str, up: bool) -> None:
        """Take host ``name``'s link down (``up=False``) or bring it back up."""
        _run("ip", "link", "set", self.hosts[name].veth, "up" if up else "down")

    def link_bytes(self, name: str) -> tuple[int, int]:
        """(bytes the host received, bytes it sent) over its link so far."""
        base = f"/sys/class/net/{self.hosts[name].veth}/statistics"
        with open(f"{base}/tx_bytes") as f:
            received = int(f.read())  # the root-side end sends what the host receives
        with open(f"{base}/rx_bytes") as f:
            sent = int(f.read())
        return received, sent

    # -- services -------------------------------------------------------------------

    def start_redis(self, name: str, port: int = 6379) -> str:
        """Start a redis-server on host ``name`` (no persistence); its URL."""
        address = self.address(name)
        self.spawn(name, ["redis-server", "--bind", address, "--port", str(port), "--save", "",
                          "--appendonly", "no", "--protected-mode", "no"], label="redis")
        _wait_port(self, name, address, port, "redis-server")
        return f"redis://{address}:{port}/0"

    def start_dask_scheduler(self, name: str, port: int = 8786) -> str:
        """Start a Dask scheduler on host ``name``; its address."""
        address = self.address(name)
        self.spawn(name, [self._python, "-m", "distributed.cli.dask_scheduler", "--host",
                          address, "--port", str(port), "--no-dashboard"], label="scheduler")
        _wait_port(self, name, address, port, "the Dask scheduler")
        return f"tcp://{address}:{port}"

    def start_dask_worker(self, name: str, scheduler: str, *, nthreads: int = 1,
                          env: dict[str, str] | None = None, label: str = "worker",
                          resources: str | None = None) -> subprocess.Popen[bytes]:
        """Start one Dask worker process (no nanny) on host ``name``."""
        argv = [self._python, "-m", "distributed.cli.dask_worker", scheduler, "--host",
                self.address(name), "--nthreads", str(nthreads), "--no-nanny",
                "--no-dashboard", "--name", f"{name}-{label}"]
        if resources:
            argv += ["--resources", resources]
        return self.spawn(name, argv, label=label, env=env)

    def parsl_launcher(self, name: str) -> Any:
        """A Parsl launcher that starts HTEX worker pools on host ``name``.

        Give it to a ``LocalProvider``; the interchange runs in this process's host
        and listens on ``head_address``.
        """
        from parsl.launchers import WrappedLauncher

        return WrappedLauncher(prepend=" ".join(self.enter(name, [])[:-1]) + " --")


def _bits_per_second(rate: str) -> int:
    """``"10gbit"`` -> 10_000_000_000 (tc's units: bit, kbit, mbit, gbit)."""
    units = {"gbit": 10**9, "mbit": 10**6, "kbit": 10**3, "bit": 1}
    for unit, factor in units.items():
        if rate.endswith(unit):
            return int(float(rate[: -len(unit)]) * factor)
    raise ValueError(f"rate {rate!r} must end in bit, kbit, mbit or gbit (tc units)")


def _wait_port(bed: TestBed, name: str, address: str, port: int, what: str,
               timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((address, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} on {name} did not listen on {address}:{port}"
                                   ) from None
            time.sleep(0.05)


# -- by hand: python -m pxexec.testbed up|down|exec -----------------------------------

def _state_file(path: str | None) -> str:
    return path or os.path.join(tempfile.gettempdir(), "pxexec-testbed.json")


@contextlib.contextmanager
def _restored(state: str) -> Iterator[TestBed]:
    with open(state) as f:
        data = json.load(f)
    bed = TestBed.__new__(TestBed)
    bed.__dict__.update({k: v for k, v in data.items() if k != "hosts"})
    bed._python = sys.executable
    bed._started = True
    bed._head = []
    bed.hosts = {h["name"]: Host(**{k: v for k, v in h.items() if k != "processes"})
                 for h in data["hosts"]}
    yield bed


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pxexec.testbed",
                                     description="Bring a simulated multi-host bed up or down.")
    parser.add_argument("--state", help="where the bed's description is kept")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="make hosts n1..nN (or --names)")
    up.add_argument("--hosts", type=int, default=3)
    up.add_argument("--names", nargs="*")
    up.add_argument("--rate", help="shape every link, e.g. 10gbit")
    sub.add_parser("down", help="kill everything on the bed and remove it")
    ex = sub.add_parser("exec", help="run a command on a host")
    ex.add_argument("host")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    state = _state_file(args.state)
    if args.command == "up":
        reason = can_build()
        if reason:
            print(reason, file=sys.stderr)
            return 2
        bed = TestBed(args.names or [f"n{i + 1}" for i in range(args.hosts)]).up()
        atexit.unregister(bed.down)  # it outlives this command
        if args.rate:
            for name in bed.names:
                bed.shape(name, rate=args.rate)
        data = {k: v for k, v in bed.__dict__.items()
                if k in ("run_id", "bridge", "names", "subnet", "shared", "log_dir")}
        data["hosts"] = [{"name": h.name, "index": h.index, "address": h.address,
                          "holder": h.holder, "veth": h.veth} for h in bed.hosts.values()]
        with open(state, "w") as f:
            json.dump(data, f, indent=1)
        print(f"bed {bed.run_id}: head {bed.head_address}; " + ", ".join(
            f"{h.name} {h.address}" for h in bed.hosts.values()) + f"; shared {bed.shared}")
        return 0
    if args.command == "down":
        with _restored(state) as bed:
            bed.down()
        os.unlink(state)
        return 0
    with _restored(state) as bed:
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        return subprocess.call(bed.enter(args.host, cmd))


if __name__ == "__main__":
    sys.exit(main())
