from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

import pxexec
from pxexec.cli import build_parser, main
from pxexec.codec.serialize import serialize
from pxexec.connectors.file import FileConnector
from pxexec.connectors.owners import this_host
from pxexec.connectors.shm import SharedMemoryConnector


def _dead_owner(connector: SharedMemoryConnector, count: int) -> list[str]:
    """Objects adopted by a child process that was then SIGKILLed (a real dead owner)."""
    code = (
        "import sys\n"
        "from pxexec.connectors.shm import SharedMemoryConnector\n"
        "from pxexec.connectors.owners import process_owner\n"
        "from pxexec.codec.serialize import serialize\n"
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
    os.utime(connector.path_of(unheld), (past, past))
    assert main(["gc", f"shm-files://{shm_dir}", "--namespace", "gc"]) == 0
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


USAGE_ERRORS = [
    ["bench", "--engine", "foo"],
    ["bench", "--workers", "0"],
    ["bench", "--workers", "two"],
    ["bench", "--tasks", "0"],
    ["bench", "--sizes", "1XB"],
    ["bench", "--threshold", "lots"],
    ["bench", "--kinds", "numpy,strings"],
    ["bench", "--modes", "sideways"],
    ["bench", "--config", "missing.toml"],
    ["bench", "--connector", "bogus://"],
    ["bench", "--connector", "file://"],
    ["gc", "--lease", "0"],
    ["frobnicate"],
]


@pytest.mark.parametrize("argv", USAGE_ERRORS, ids=" ".join)
def test_usage_errors_are_one_line_with_exit_status_2(
    argv: list[str], tmp_path: Any, capsys: Any, monkeypatch: Any,
) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("pxexec")
    assert "Traceback" not in captured.err and "_size" not in captured.err
    assert "invalid _" not in captured.err  # no internal function names
    assert not os.listdir(tmp_path)  # nothing written, no empty bench-out/


def test_sizes_take_the_units_dask_users_type() -> None:
    args = build_parser().parse_args(
        ["bench", "--sizes", "1MiB,10kB,2 GB", "--threshold", "1.5MB", "--size", "4KiB"])
    assert args.sizes == [2**20, 10_000, 2 * 10**9]
    assert args.threshold == 1_500_000 and args.size == [4096]


def test_version(capsys: Any) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip().startswith(f"pxexec {pxexec.__version__}")


@pytest.mark.parametrize(("argv", "hidden", "extra"), [
    (["bench", "--engine", "thread"], "numpy", "pxexec[bench]"),
    (["bench", "moldesign", "--engine", "thread"], "pandas", "pxexec[bench]"),
    (["bench", "--engine", "parsl"], "parsl", "pxexec[parsl]"),
    (["bench", "--engine", "dask"], "distributed", "pxexec[dask]"),
    (["bench", "--engine", "thread", "--connector", "redis"], "redis", "pxexec[redis]"),
])
def test_a_missing_extra_is_one_line_naming_it(
    argv: list[str], hidden: str, extra: str, tmp_path: Any, capsys: Any, monkeypatch: Any,
) -> None:
    monkeypatch.setitem(sys.modules, hidden, None)
    out = tmp_path / "bench-out"
    assert main([*argv, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert extra in err and "Traceback" not in err
    assert not out.exists()


def test_all_extra_includes_bench() -> None:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml"), "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    assert any("bench" in spec for spec in extras["all"]), extras["all"]


@pytest.mark.slow
@pytest.mark.parametrize(("engine", "group"), [("process", True), ("dask", True),
                                               ("dask", False)])
def test_ctrl_c_stops_cleanly_and_frees_what_was_stored(
    engine: str, group: bool, shm_dir: str, tmp_path: Any,
) -> None:
    """Ctrl-C in a terminal reaches the whole process group (workers too)."""
    run = subprocess.Popen(
        [sys.executable, "-m", "pxexec.cli", "bench", "roundtrip", "--engine", engine,
         "--connector", f"shm://{shm_dir}", "--sizes", "1MB,10MB", "--reps", "1000",
         "--out", str(tmp_path / "out")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # interrupt once the run is under way
        time.sleep(0.5)
        if any(files for _, _, files in os.walk(shm_dir)):
            break
    time.sleep(1.0)
    if group:
        os.killpg(run.pid, signal.SIGINT)
    else:
        run.send_signal(signal.SIGINT)
    try:
        _, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 130, err
    assert "Traceback" not in err, err
    assert "interrupted" in err
    left = [os.path.join(d, f) for d, _, files in os.walk(shm_dir) for f in files]
    assert not left
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_dask_large_graph_warnings_are_explained(tmp_path: Any, capsys: Any) -> None:
    assert main(["bench", "roundtrip", "--engine", "dask", "--sizes", "20MB", "--reps", "1",
                 "--no-plot", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "note: Dask warned" in captured.out and "plain arm" in captured.out
    assert "Sending large graph" not in captured.err
