"""The benchmark suite: every workload runs, checks its answers, writes records and plots."""

from __future__ import annotations

import csv
import glob
import os
import sys
from typing import Any

import numpy as np
import pytest

from pxexec.bench import cholesky, fedlearn, moldesign
from pxexec.bench.arms import Arm, arms
from pxexec.bench.engines import session, stores
from pxexec.bench.tasks import mlp_init, mlp_shapes
from pxexec.cli import main
from pxexec.policies import SizeAtLeast


def _rows(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _only(pattern: str) -> str:
    found = glob.glob(pattern)
    assert len(found) == 1, found
    return found[0]


def test_cholesky_graph_has_the_expected_tasks() -> None:
    assert cholesky.task_counts(4) == {"potrf": 4, "trsm": 6, "syrk": 6, "gemm": 4}
    assert sum(cholesky.task_counts(1).values()) == 1


def test_cholesky_check_rejects_a_wrong_factor() -> None:
    a = cholesky.spd_matrix(40)
    low = np.linalg.cholesky(a)
    assert cholesky.check(a, low) < 1e-12
    low[5, 3] += 1e-3
    with pytest.raises(AssertionError, match="Cholesky factor is wrong"):
        cholesky.check(a, low)


def test_cholesky_block_must_divide_n() -> None:
    with pytest.raises(ValueError, match="must divide"):
        cholesky.tiles_of(cholesky.spd_matrix(10), 3)


def test_fedlearn_model_has_five_million_parameters() -> None:
    flat = mlp_init()
    assert 4_900_000 < flat.size < 5_200_000 and flat.dtype == np.float32
    assert flat.nbytes > 19_000_000
    assert mlp_shapes()[0] == (784, 3136)


def test_a_wrong_task_fails_the_run(monkeypatch: Any) -> None:
    from pxexec.bench import tasks

    def bad_gemm(a_ij: Any, l_ik: Any, l_jk: Any) -> Any:
        out, start, end = tasks.gemm(a_ij, l_ik, l_jk)
        return out * 1.01, start, end

    monkeypatch.setattr(cholesky, "gemm", bad_gemm)
    with session("thread", 2) as sess:
        with pytest.raises(AssertionError, match="Cholesky factor is wrong"):
            cholesky.run([Arm(sess)], n=120, block=30)


@pytest.mark.parametrize("url", ["shm", "node", "shm-files"])
def test_bench_stores_have_a_namespace_of_their_own(url: str) -> None:
    # another run's objects in the same directory must not count as this run's
    with stores([url]) as named:
        (store,) = named.values()
        connector = store.connector
        assert connector.namespace == f"bench-{os.getpid()}"
        assert os.path.isdir(connector.path)
        connector.put([bytes(100)])  # left behind, as by an interrupted run
    assert not os.path.exists(connector.path)


def test_apps_on_threads_with_every_arm(tmp_path: Any) -> None:
    import gc
    import glob

    pytest.importorskip("proxystore")
    peer_dirs = set(glob.glob("/dev/shm/pxexec-peer-*"))
    with stores(["shm"]) as named, session("thread", 2) as sess, \
            arms(sess, named, SizeAtLeast(10_000), peer=True, threshold=10_000) as made:
        assert [a.name for a in made] == ["plain", "pxexec-shm", "proxystore"]
        records = cholesky.run(made, n=400, block=100)
        records += fedlearn.run(made, clients=2, rounds=2, samples=16)
        records += moldesign.run(made, pool=512, initial=4, search=12, batch=4, batches=2)
        stored = named["pxexec-shm"]
        made[1].close()  # flush the background frees
        assert stored.connector.keys() == []  # pxexec freed every object it stored
    del made
    gc.collect()  # ProxyStore's last proxies free their objects: its directory stays gone
    assert set(glob.glob("/dev/shm/pxexec-peer-*")) == peer_dirs
    kinds = {(r.workload, r.arm, r.kind) for r in records}
    for arm in ("plain", "pxexec-shm", "proxystore"):
        for workload, kind in [("cholesky", "gemm"), ("fedlearn", "train"),
                               ("moldesign", "simulate"), ("moldesign", "infer")]:
            assert (workload, arm, kind) in kinds
    chol = [r for r in records if r.workload == "cholesky" and r.arm == "plain"]
    assert sum(r.kind == "potrf" for r in chol) == 4 and sum(r.kind == "gemm" for r in chol) == 4
    for r in records:
        if r.kind != "makespan":
            assert r.submit <= r.received and r.start <= r.end


@pytest.mark.slow
def test_cli_cholesky_on_dask_writes_records_summary_and_plot(tmp_path: Any, capsys: Any) -> None:
    code = main(["bench", "cholesky", "--engine", "dask", "--n", "600", "--block", "150",
                 "--connector", "shm", "--connector", "redis", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "pxexec-shm" in out and "pxexec-redis" in out and "speed-up" in out
    rows = _rows(_only(os.path.join(tmp_path, "cholesky-dask-*[0-9].csv")))
    assert {"submit", "start", "end", "received", "nbytes", "arm"} <= set(rows[0])
    assert {r["arm"] for r in rows} == {"plain", "pxexec-shm", "pxexec-redis"}
    assert sum(r["kind"] == "trsm" for r in rows) == 3 * 6
    summary = _rows(_only(os.path.join(tmp_path, "cholesky-dask-*-summary.csv")))
    assert [r["arm"] for r in summary] == ["plain", "pxexec-shm", "pxexec-redis"]
    png = _only(os.path.join(tmp_path, "cholesky-dask-*.png"))
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_cli_fedlearn_and_moldesign_on_processes(tmp_path: Any, capsys: Any) -> None:
    assert main(["bench", "fedlearn", "--engine", "process", "--clients", "2", "--rounds", "1",
                 "--samples", "16", "--out", str(tmp_path), "--no-plot"]) == 0
    assert main(["bench", "moldesign", "--engine", "process", "--pool", "256", "--search", "16",
                 "--reps", "2", "--out", str(tmp_path), "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "fedlearn (process" in out and "moldesign (process" in out
    assert not glob.glob(os.path.join(tmp_path, "*.png"))
    rows = _rows(_only(os.path.join(tmp_path, "moldesign-process-*[0-9].csv")))
    assert {r["rep"] for r in rows} == {"0", "1"}


def test_cli_roundtrip_plot(tmp_path: Any, capsys: Any) -> None:
    assert main(["bench", "roundtrip", "--engine", "thread", "--sizes", "10kB,2MB", "--reps", "2",
                 "--out", str(tmp_path)]) == 0
    assert "plot:" in capsys.readouterr().out
    assert glob.glob(os.path.join(tmp_path, "roundtrip-thread-*.png"))


def test_missing_matplotlib_skips_the_plot_with_a_hint(
    tmp_path: Any, capsys: Any, monkeypatch: Any,
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["bench", "roundtrip", "--engine", "thread", "--sizes", "10kB", "--reps", "1",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "no plot" in out and "pxexec[bench]" in out
    assert not glob.glob(os.path.join(tmp_path, "*.png"))
    assert glob.glob(os.path.join(tmp_path, "*-summary.csv"))


def test_missing_proxystore_names_the_package(
    tmp_path: Any, monkeypatch: Any, capsys: Any,
) -> None:
    import glob

    monkeypatch.setitem(sys.modules, "proxystore", None)
    peer_dirs = set(glob.glob("/dev/shm/pxexec-peer-*"))
    assert main(["bench", "roundtrip", "--engine", "thread", "--arm", "proxystore",
                 "--out", str(tmp_path)]) == 1
    assert "pip install proxystore" in capsys.readouterr().err
    assert set(glob.glob("/dev/shm/pxexec-peer-*")) == peer_dirs  # its directory went too


class _Broken(Arm):
    name = "broken"

    def submit(self, fn: Any, *args: Any) -> Any:
        raise RuntimeError("boom")


class _BrokenPeer(_Broken):
    name = "peer"
    peer = True


def test_a_failing_peer_arm_is_reported_and_ours_would_raise(capsys: Any) -> None:
    from pxexec.bench import apps, roundtrip, throughput

    with session("thread", 1) as sess:
        records = roundtrip.run([Arm(sess), _BrokenPeer(sess)], sizes=[1000], reps=2)
        _, rows = roundtrip.summarize(records)
        assert rows[0][-3:] == ["failed", "-", "-"]
        assert isinstance(rows[0][3], float)  # the plain arm still measured
        records = moldesign.run([Arm(sess), _BrokenPeer(sess)], pool=256, initial=2, search=4,
                                batch=2, batches=1, reps=2)
        _, rows = apps.report(records, "m")
        assert rows[1][:2] == ["peer", "failed"]
        records = throughput.run([Arm(sess), _BrokenPeer(sess)], sizes=[1000], tasks=5, warmup=1)
        _, rows = throughput.report(records, "t")
        assert rows[1][3] == "failed" and rows[2][2] == "work-only"
        assert "peer failed on roundtrip" in capsys.readouterr().out
        with pytest.raises(RuntimeError, match="boom"):
            roundtrip.run([Arm(sess), _Broken(sess)], sizes=[1000], reps=1)
        with pytest.raises(RuntimeError, match="boom"):
            moldesign.run([_Broken(sess)], pool=256, initial=2, search=4, batch=2, batches=1)


def test_arms_take_turns_going_first() -> None:
    from pxexec.bench.common import rotated

    assert [rotated(["a", "b", "c"], rep) for rep in range(-2, 2)] == [
        ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"], ["b", "c", "a"]]
    assert rotated([], 3) == []


def test_plot_redraws_a_run_with_a_failed_peer_point(tmp_path: Any, capsys: Any) -> None:
    from pxexec.bench.common import Record, read_csv, write_csv

    records = [Record("roundtrip", arm, "thread", "numpy", "input", n, rep, 0.0, 0.001, 0.002,
                      0.001 * (1 + rep) * n / 1e6, 2)
               for arm in ("plain", "pxexec-shm", "proxystore") for n in (10_000, 10**6)
               for rep in range(3) if not (arm == "proxystore" and n == 10**6)]
    records.append(Record("roundtrip", "proxystore", "thread", "numpy", "input", 10**6, 0,
                          *(float("nan"),) * 4, 2, {"error": "KeyError: evicted"}))
    path = str(tmp_path / "run.csv")
    write_csv(path, records)
    again = read_csv(path)
    assert [(r.arm, r.nbytes, r.failed) for r in again] == \
        [(r.arm, r.nbytes, r.failed) for r in records]
    assert main(["plot", path, "--title", "a title long enough to need wrapping " * 4]) == 0
    assert os.path.getsize(str(tmp_path / "run.png")) > 10_000


def test_table_ranges_use_one_number_format() -> None:
    from pxexec.bench.common import fmt_number, fmt_range

    assert fmt_range(255.0, 1040.0) == "255-1040"
    assert [fmt_number(v) for v in (0.0123, 9.99, 12.34, 255.2)] == ["0.0123", "9.99", "12.3",
                                                                    "255"]
