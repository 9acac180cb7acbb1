from __future__ import annotations

import os
import time
from typing import Any

import pytest

from pxexec.cli import main
from pxexec.connectors.shm import SharedMemoryConnector
from pxexec.serialize import serialize


def test_gc_reaps_expired_objects(shm_dir: str, capsys: Any) -> None:
    connector = SharedMemoryConnector(shm_dir, namespace="gc", lease=60)
    old = connector.put(serialize(b"orphan"))
    past = time.time() - 120
    os.utime(connector.path_of(old), (past, past))
    fresh = connector.put(serialize(b"new"))
    assert main(["gc", f"shm://{shm_dir}", "--namespace", "gc", "--lease", "60"]) == 0
    assert "removed 1" in capsys.readouterr().out
    assert connector.keys() == [fresh]


def test_gc_needs_a_lease(shm_dir: str, capsys: Any) -> None:
    assert main(["gc", f"shm://{shm_dir}"]) == 2
    assert "--lease" in capsys.readouterr().err


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
