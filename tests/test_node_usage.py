"""`pxexec ls`/`du` of the node store, and what importing the node connector does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from pxexec.cli import main
from pxexec.connectors.node import NodeConnector
from pxexec.store.usage import stored_objects, usage

MB = 1 << 20


@pytest.fixture
def node_dirs() -> Iterator[tuple[str, str]]:
    shm = tempfile.mkdtemp(prefix="pxexec-node-usage-", dir="/dev/shm")
    spill = tempfile.mkdtemp(prefix="pxexec-spill-usage-")
    yield shm, spill
    shutil.rmtree(shm, ignore_errors=True)
    shutil.rmtree(spill, ignore_errors=True)


def make(dirs: tuple[str, str], namespace: str, **options: Any) -> NodeConnector:
    return NodeConnector(dirs[0], spill_directory=dirs[1], namespace=namespace,
                         chunk=4 * MB, capacity=16 * MB, **options)


def test_node_objects_have_sizes_ages_owners_and_leases(node_dirs: tuple[str, str]) -> None:
    connector = make(node_dirs, "sizes", lease=60)
    held = connector.put([bytes(2_000), bytes(500)])
    loose = connector.put([bytes(3_000)])
    spilled = connector.put([bytes(20 * MB)])  # larger than the arena: in the spill folder
    connector.adopt("me-1", [held])
    found = {o.key: o for o in stored_objects(connector)}
    assert {k: o.nbytes for k, o in found.items()} == {held: 2_500, loose: 3_000,
                                                        spilled: 20 * MB}
    assert found[held].owners == ("me-1",) and found[loose].owners == ()
    assert all(o.namespace == "sizes" and o.age is not None and 0 <= o.age < 60
               for o in found.values())
    assert all(o.expires_in is not None and 0 < o.expires_in <= 60 for o in found.values())
    assert usage(found.values()).nbytes == 2_500 + 3_000 + 20 * MB
    connector.evict_batch([held, loose, spilled])
    assert stored_objects(connector) == []


def test_ls_and_du_of_a_node_directory(node_dirs: tuple[str, str], capsys: Any) -> None:
    one, two = make(node_dirs, "one"), make(node_dirs, "two")
    keys = [one.put([bytes(2_000)]), one.put([bytes(3_000)]), two.put([bytes(500)])]
    url = f"node://{node_dirs[0]}"
    assert main(["ls", url, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted((o["key"], o["nbytes"], o["namespace"]) for o in listed) == sorted(
        zip(keys, [2_000, 3_000, 500], ["one", "one", "two"]))
    assert main(["du", url, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["objects"] == 3 and summary["bytes"] == 5_500
    assert summary["namespaces"] == {"one": {"objects": 2, "bytes": 5_000},
                                     "two": {"objects": 1, "bytes": 500}}
    assert main(["ls", url, "--namespace", "one"]) == 0
    assert "2 kB" in capsys.readouterr().out
    one.evict_batch(one.keys())
    two.evict_batch(two.keys())


def test_importing_the_node_connector_registers_no_exit_hook() -> None:
    probe = """
import atexit, sys
import pxexec  # what it registers at import is not the node connector's
registered = []
atexit.register = lambda fn, *a, **k: registered.append(fn) or fn
import pxexec.connectors.node, pxexec.connectors.node.connector
assert registered == [], registered
from pxexec.connectors.node import NodeConnector
NodeConnector(sys.argv[1], spill_directory=sys.argv[2], namespace="hook", chunk=1 << 20)
NodeConnector(sys.argv[1], spill_directory=sys.argv[2], namespace="hook2", chunk=1 << 20)
mine = [f for f in registered if f.__module__.startswith("pxexec.connectors.node")]
assert len(mine) == 1, registered  # on first use, once
print("ok")
"""
    with tempfile.TemporaryDirectory(dir="/dev/shm") as shm, tempfile.TemporaryDirectory() as sp:
        done = subprocess.run([sys.executable, "-c", probe, shm, sp], capture_output=True,
                              text=True, timeout=120, env={**os.environ})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_the_run_checks_its_own_node_directory(node_dirs: tuple[str, str]) -> None:
    from pxexec.connectors import connector_from_url
    from tests.node_leftovers import leftovers

    run_dir = os.environ["PXEXEC_NODE_DIR"]  # set by conftest for the whole run
    assert run_dir != f"/dev/shm/pxexec-node-{os.getuid()}" and os.path.isdir(run_dir)
    assert connector_from_url("node").directory == run_dir  # stores without a directory
    left = make(node_dirs, "leaky")
    key = left.put([bytes(1000)])
    clean = make(node_dirs, "clean")
    clean.evict(clean.put([bytes(10)]))
    found = leftovers(node_dirs[0])
    assert list(found) == ["leaky"] and found["leaky"]["objects"] == 1
    left.evict(key)
    assert leftovers(node_dirs[0]) == {}
