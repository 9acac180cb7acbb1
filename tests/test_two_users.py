"""Another local user can neither plant objects nor make pxexec delete files.

Two real accounts are created (as root) and each one's steps run with its own
uid; without root these tests are skipped with a reason.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest

import pxexec.connectors.shm  # noqa: F401  (imported before the users' forked children run)
from pxexec.cli import main
from pxexec.connectors.owners import this_host
from pxexec.errors import UnsafeDirectoryError

if TYPE_CHECKING:
    from tests.local_user import OtherUser

pytest_plugins = ("tests.local_user",)

VICTIM_STORE = """
import os, sys
from pxexec import Store
from pxexec.connectors.shm import SharedMemoryConnector
from pxexec.errors import UnsafeDirectoryError
try:
    store = Store("victim", SharedMemoryConnector(namespace="default"))
    key = store.put({"payload": 1})
    print("stored", key, oct(os.lstat(os.path.dirname(store.connector.path)).st_mode & 0o777))
except UnsafeDirectoryError as exc:
    print("refused:", exc)
"""


def _shm_dir(user: OtherUser) -> str:
    return f"/dev/shm/pxexec-{user.uid}"


def _remove(*paths: str) -> None:
    for path in paths:
        if os.path.islink(path) or os.path.isfile(path):
            os.unlink(path)
        elif os.path.isdir(path):
            shutil.rmtree(path)


@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_victims_shm_directory_is_0700_whatever_the_umask(victim_user: OtherUser,
                                                          umask: int) -> None:
    _remove(_shm_dir(victim_user))
    _, out = victim_user.run(f"import os; os.umask({umask})\n" + VICTIM_STORE)
    assert "stored" in out and out.strip().endswith("0o700"), out
    info = os.lstat(_shm_dir(victim_user))
    assert info.st_uid == victim_user.uid and stat.S_IMODE(info.st_mode) == 0o700


@pytest.mark.parametrize("plant", ["directory 0777", "symlink"])
def test_attacker_precreated_shm_directory_is_refused(victim_user: OtherUser,
                                                      other_user: OtherUser,
                                                      plant: str) -> None:
    target = _shm_dir(victim_user)
    _remove(target, "/dev/shm/pxatk-lure")
    if plant == "symlink":
        setup = (f"import os; os.mkdir('/dev/shm/pxatk-lure', 0o777); "
                 f"os.chmod('/dev/shm/pxatk-lure', 0o777); os.symlink('/dev/shm/pxatk-lure', "
                 f"{target!r})")
    else:
        setup = f"import os; os.mkdir({target!r}); os.chmod({target!r}, 0o777)"
    try:
        other_user.run(setup)
        _, out = victim_user.run(VICTIM_STORE)
        assert out.startswith("refused:"), out
        assert ("symlink" if plant == "symlink" else f"owned by uid {other_user.uid}") in out
        assert "Remove it" in out or "have it removed" in out  # says how to fix it
        lure = "/dev/shm/pxatk-lure"
        assert not os.path.exists(lure) or os.listdir(lure) == []  # nothing written there
    finally:
        _remove(target, "/dev/shm/pxatk-lure")


def test_attacker_namespace_inside_a_shared_directory_is_refused(
        shared_tmp: str, victim_user: OtherUser, other_user: OtherUser) -> None:
    # the victim points a file store at a sticky, world-writable directory: the
    # attacker pre-creates the namespace directory the victim will use
    ns = os.path.join(shared_tmp, "ns")
    other_user.run(f"import os; os.mkdir({ns!r}); os.chmod({ns!r}, 0o777)")
    code = ("from pxexec.connectors.file import FileConnector\n"
            "from pxexec.errors import UnsafeDirectoryError\n"
            f"try:\n    FileConnector({shared_tmp!r}, namespace='ns')\n    print('accepted')\n"
            "except UnsafeDirectoryError as exc:\n    print('refused:', exc)\n")
    _, out = victim_user.run(code)
    assert out.startswith("refused:") and f"owned by uid {other_user.uid}" in out, out


def _precious(directory: Any) -> list[str]:
    """Files named like pxexec keys in a root-only directory, as a lure for the reaper."""
    os.makedirs(directory, mode=0o700)
    names = [f"{i:032x}" for i in range(3)] + ["heartbeat"]
    for name in names:
        with open(os.path.join(directory, name), "w") as f:
            f.write("root's data")
    return names


def test_roots_gc_in_an_attackers_store_deletes_nothing(shared_tmp: str, tmp_path: Any,
                                                        other_user: OtherUser,
                                                        capsys: Any) -> None:
    precious = tmp_path / "precious"
    names = _precious(precious)
    os.chmod(tmp_path, 0o755)
    store = os.path.join(shared_tmp, "evil")
    dead = f"{this_host()}-999999999-1-0123abcd"
    other_user.run(
        "import os\n"
        f"os.makedirs({store!r} + '/ns/.leases', mode=0o700)\n"
        f"os.symlink({str(precious)!r}, {store!r} + '/ns/.leases/{dead}')\n"
        f"os.symlink({str(precious)!r} + '/{names[0]}', {store!r} + '/ns/.{names[0]}.{dead}.tmp')\n"
    )
    assert main(["gc", f"file://{store}", "--namespace", "ns", "--lease", "1"]) == 1
    assert f"owned by uid {other_user.uid}" in capsys.readouterr().err
    assert sorted(os.listdir(precious)) == sorted(names)


def test_reaper_never_follows_symlinks_planted_in_a_store(tmp_path: Any, capsys: Any) -> None:
    from pxexec.connectors.file import FileConnector

    precious = tmp_path / "precious"
    names = _precious(precious)
    connector = FileConnector(str(tmp_path / "store"), namespace="ns")
    dead = f"{this_host()}-999999999-1-0123abcd"
    leases = os.path.join(connector.path, ".leases")
    os.makedirs(leases, mode=0o700, exist_ok=True)
    os.symlink(precious, os.path.join(leases, dead))             # an owner that is a link
    os.mkdir(os.path.join(leases, f"{this_host()}-999999998-1-0123abcd"), 0o700)
    for name in names:                                            # links inside an owner
        os.symlink(precious / name,
                   os.path.join(leases, f"{this_host()}-999999998-1-0123abcd", name))
    os.symlink(precious / names[1], os.path.join(connector.path, names[1]))  # as an object
    os.symlink(precious / names[2], os.path.join(connector.path, f".{names[2]}.{dead}.tmp"))
    assert main(["gc", f"file://{tmp_path / 'store'}", "--namespace", "ns", "--lease", "1"]) == 0
    assert "removed 0 object(s)" in capsys.readouterr().out
    assert sorted(os.listdir(precious)) == sorted(names)
    assert connector.get(names[1]) is None  # a symlinked object is never read either


def test_store_path_that_is_a_symlink_is_refused(tmp_path: Any) -> None:
    from pxexec.connectors.file import FileConnector

    (tmp_path / "real").mkdir()
    os.makedirs(tmp_path / "store")
    os.symlink(tmp_path / "real", tmp_path / "store" / "ns")
    with pytest.raises(UnsafeDirectoryError, match="symlink"):
        FileConnector(str(tmp_path / "store"), namespace="ns")
    proc = subprocess.run([sys.executable, "-m", "pxexec.cli", "gc", f"file://{tmp_path}/store",
                           "--namespace", "ns", "--lease", "1"], capture_output=True, text=True)
    assert proc.returncode == 1 and "symlink" in proc.stderr and "Traceback" not in proc.stderr
