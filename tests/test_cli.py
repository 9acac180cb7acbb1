from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import pytest

from pxexec.cli import main
from pxexec.connectors.file import FileConnector
from pxexec.connectors.owners import this_host
from pxexec.connectors.shm import SharedMemoryConnector
from pxexec.serialize import serialize


def _dead_owner(connector: SharedMemoryConnector, count: int) -> list[str]:
    """Objects adopted by a child process that was then SIGKILLed (a real dead owner)."""
    code = (
        "import sys\n"
        "from pxexec.connectors.shm import SharedMemoryConnector\n"
        "from pxexec.connectors.owners import process_owner\n"
        "from pxexec.serialize import serialize\n"
        f"c = SharedMemoryConnector({connector.directory!r}, namespace={connector.namespace!r})\n"
        f"keys = [c.put(serialize(b'orphan')) for _ in range({count})]\n"
        "c.adopt(process_owner(), keys)\n"
        "print(' '.join(keys), flush=True)\n"
        "import time; time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    keys = proc.stdout.readline().split()
    proc.kill()
    proc.wait()
    proc.stdout.close()
    return keys


def test_gc_reaps_objects_of_dead_owners_and_lists_them(shm_dir: str, capsys: Any) -> None:
    connector = SharedMemoryConnector(shm_dir, namespace="gc")
    orphans = _dead_owner(connector, 2)
    unheld = connector.put(serialize(b"nobody holds me"))  # another workflow's, no lease
    past = time.time() - 3600
    os.utime(os.path.join(connector.path, unheld), (past, past))
    assert main(["gc", f"shm://{shm_dir}", "--namespace", "gc"]) == 0
    out = capsys.readouterr().out
    assert "removed 2 object(s)" in out and all(f"object {key}" in out for key in orphans)
    assert connector.keys() == [unheld]


def test_gc_removes_only_its_own_temporary_files(tmp_path: Any, capsys: Any) -> None:
    FileConnector(str(tmp_path), namespace="ns")  # makes the store
    theirs = ["report.tmp", "draft.docx.tmp", f".{'a' * 32}.tmp"]
    for name in theirs:
        (tmp_path / "ns" / name).write_text("a user's file")
    past = time.time() - 3600
    for name in theirs:
        os.utime(tmp_path / "ns" / name, (past, past))
    dead = f".{'b' * 32}.{this_host()}-999999999-1-0123abcd.tmp"  # a writer that is gone
    (tmp_path / "ns" / dead).write_text("partial")
    assert main(["gc", f"file://{tmp_path}", "--namespace", "ns", "--lease", "60"]) == 0
    out = capsys.readouterr().out
    assert f"temporary file {dead}" in out and "1 temporary file(s)" in out
    assert sorted(os.listdir(tmp_path / "ns")) == sorted(theirs)


def test_gc_never_creates_a_store(tmp_path: Any, capsys: Any) -> None:
    assert main(["gc", f"file://{tmp_path}", "--namespace", "notastore", "--lease", "60"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_bench_help_runs() -> None:
    with pytest.raises(SystemExit) as info:
        main(["bench", "--help"])
    assert info.value.code == 0


@pytest.mark.slow
def test_bench_roundtrip_small_run(tmp_path: Any, capsys: Any) -> None:
    code = main(["bench", "roundtrip", "--engine", "thread", "--sizes", "10kB,2MB", "--reps", "2",
                 "--kinds", "numpy,bytes", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "pxexec-shm" in out and "speed-up" in out
    assert any(name.endswith("-summary.csv") for name in os.listdir(tmp_path))


@pytest.mark.slow
def test_bench_throughput_small_run(tmp_path: Any, capsys: Any) -> None:
    code = main(["bench", "throughput", "--engine", "process", "--workers", "1", "--tasks", "30",
                 "--size", "1kB,1MB", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "tasks/s" in out and "vs plain at 1000 B" in out and "of work-only" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("1 ")]
    assert [(r[1], r[2]) for r in rows] == [
        (size, arm) for size in ("1000", "1000000")
        for arm in ("plain", "pxexec-shm", "work-only")]
