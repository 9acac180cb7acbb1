"""Every example runs (with small sizes), so an example that breaks fails the build."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = {
    "quickstart.py": ["--mb", "5"],
    "dask_store_executor.py": ["--mb", "2", "--tasks", "3"],
    "dask_client_dropin.py": ["--mb", "2"],
    "parsl_store_executor.py": ["--mb", "2"],
    "ownership_and_leases.py": [],
    "routing.py": [],
}


def test_every_example_is_listed() -> None:
    scripts = {n for n in os.listdir(os.path.join(ROOT, "examples")) if n.endswith(".py")}
    assert scripts - {"policies.py"} == set(EXAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(EXAMPLES))
def test_example_runs(script: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["PATH"] = "/usr/bin:/bin"  # as a user runs it: scripts/ of the venv not on PATH
    # shm stores in a directory of their own, apart from other runs' (their leases)
    env["PXEXEC_SHM_DIR"] = tempfile.mkdtemp(prefix="pxexec-test-examples-", dir="/dev/shm")
    env["TMPDIR"] = tempfile.mkdtemp(prefix="pxexec-test-examples-tmp-")  # what it leaves
    try:
        done = subprocess.run(
            [sys.executable, os.path.join("examples", script), *EXAMPLES[script]],
            cwd=ROOT, capture_output=True, text=True, timeout=240, env=env,
        )
        left = {name for name in os.listdir(env["TMPDIR"]) if name != "dask-scratch-space"
                and not (script.startswith("parsl") and name.startswith("pymp-"))}
        # (Dask's scratch space is reused; Parsl's HTEX leaves multiprocessing's pymp-*)
    finally:
        shutil.rmtree(env["PXEXEC_SHM_DIR"], ignore_errors=True)
        shutil.rmtree(env["TMPDIR"], ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip()
    assert not left, f"{script} left {sorted(left)} in its temporary directory"
