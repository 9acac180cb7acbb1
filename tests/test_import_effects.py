"""Module hygiene: importing pxexec changes nothing in the process, every error lives in
pxexec.errors, and the benchmark harness loads only for ``pxexec bench`` (fresh interpreters)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pxexec


def _run(code: str) -> object:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


WATCH = """
import atexit, json, os, sys
hooks = []
_register, _at_fork = atexit.register, os.register_at_fork
def register(fn, *args, **kwargs):
    hooks.append(("atexit", getattr(fn, "__module__", "?"), getattr(fn, "__qualname__", "?")))
    return _register(fn, *args, **kwargs)
def at_fork(**kwargs):
    for fn in kwargs.values():
        hooks.append(("at-fork", getattr(fn, "__module__", "?"), getattr(fn, "__qualname__", "?")))
    return _at_fork(**kwargs)
atexit.register, os.register_at_fork = register, at_fork
env = dict(os.environ)
"""


def test_importing_pxexec_registers_no_hooks_and_leaves_the_environment_alone() -> None:
    code = WATCH + """
import pxexec
ours = [h for h in hooks if str(h[1]).startswith("pxexec")]
print(json.dumps({"hooks": ours, "env_changed": dict(os.environ) != env}))
"""
    assert _run(code) == {"hooks": [], "env_changed": False}


def test_the_exit_flush_is_registered_when_a_store_executor_is_first_made() -> None:
    code = WATCH + """
import concurrent.futures as cf
from pxexec import Store, StoreExecutor
from pxexec.connectors.local import LocalConnector
before = [h for h in hooks if h[1] == "pxexec.executor.freer"]
with StoreExecutor(cf.ThreadPoolExecutor(1), Store("effects", LocalConnector())) as ex:
    ex.submit(len, b"x").result()
with StoreExecutor(cf.ThreadPoolExecutor(1), Store("effects-2", LocalConnector())) as ex:
    ex.submit(len, b"x").result()
after = [h[2] for h in hooks if h[1] == "pxexec.executor.freer"]
print(json.dumps({"before": before, "after": after}))
"""
    assert _run(code) == {"before": [], "after": ["_flush_all"]}


def _bench_loaded_after(argv: list[str]) -> object:
    code = f"""
import json, sys
from pxexec.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if m.startswith("pxexec.bench"))))
"""
    return _run(code)


def test_help_and_gc_do_not_load_the_benchmark_harness(tmp_path: Path) -> None:
    assert _bench_loaded_after(["--help"]) == []
    assert _bench_loaded_after(["gc", f"file://{tmp_path}/objects", "--lease", "1"]) == []
    assert _bench_loaded_after(["ls", f"file://{tmp_path}/objects"]) == []


def test_plot_loads_the_harness(tmp_path: Path) -> None:  # the check above can see it
    records = tmp_path / "records.csv"
    records.write_text("not,records\n")
    assert "pxexec.bench.command" in _bench_loaded_after(["plot", str(records)])  # type: ignore[operator]


def test_no_module_outside_the_harness_imports_it() -> None:
    names = [m.name for m in pkgutil.walk_packages(pxexec.__path__, "pxexec.")
             if not m.name.startswith(("pxexec.bench", "pxexec.cli"))]
    code = f"""
import importlib, json, sys
for name in {names!r}:
    try:
        importlib.import_module(name)
    except ImportError:
        pass  # an optional dependency that is not installed
print(json.dumps(sorted(m for m in sys.modules if m.startswith("pxexec.bench"))))
"""
    assert _run(code) == []


def test_every_pxexec_error_is_defined_in_pxexec_errors() -> None:
    import importlib
    import inspect

    from pxexec.errors import PxexecError

    elsewhere = []
    for found in pkgutil.walk_packages(pxexec.__path__, "pxexec."):
        try:
            module = importlib.import_module(found.name)
        except ImportError:
            continue  # an optional dependency that is not installed
        elsewhere += [f"{found.name}.{name}" for name, value in vars(module).items()
                      if inspect.isclass(value) and issubclass(value, PxexecError)
                      and value.__module__ == found.name != "pxexec.errors"]
    assert elsewhere == []
