"""Documentation: every public name has a docstring with an example, and the examples run."""

from __future__ import annotations

import doctest
import importlib
import inspect
import os
import re
import shutil
import subprocess
import sys

import pytest

#: the modules of the public API (the pages of the API reference)
PUBLIC = [
    "pxexec",
    "pxexec.executor.facade",
    "pxexec.store.store",
    "pxexec.store.registry",
    "pxexec.proxy",
    "pxexec.proxy_protocols",
    "pxexec.store.reachable",
    "pxexec.store.factory",
    "pxexec.store.ownership",
    "pxexec.store.leases",
    "pxexec.policies",
    "pxexec.connectors",
    "pxexec.connectors.base",
    "pxexec.connectors.registry",
    "pxexec.connectors.local",
    "pxexec.connectors.file",
    "pxexec.connectors.shm",
    "pxexec.connectors.private_dir",
    "pxexec.connectors.owners",
    "pxexec.forking",
    "pxexec.exit_hooks",
    "pxexec.connectors.node",
    "pxexec.connectors.nodeid",
    "pxexec.connectors.node_local",
    "pxexec.connectors.node_transfer",
    "pxexec.store.evictions",
    "pxexec.connectors.redis",
    "pxexec.connectors.multi",
    "pxexec.connectors.daos",
    "pxexec.config",
    "pxexec.errors",
    "pxexec.testing",
    "pxexec.testing.connectors",
    "pxexec.testing.engines",
    "pxexec.testing.engine_tasks",
    "pxexec.engines.base",
    "pxexec.engines.dask",
    "pxexec.engines.parsl",
    "pxexec.engines.taskvine",
    "pxexec.engines.taskvine_setup",
    "pxexec.engines.future_interop",
    "pxexec.engines.dask_usage",
    "pxexec.units",
    "pxexec.store.usage",
    "pxexec.codec.integrity",
    "pxexec.config_io",
    "pxexec.mypy_plugin",
    "pxexec.executor.ledger",
    "pxexec.executor.arguments",
    "pxexec.executor.results",
    "pxexec.executor.future",
    "pxexec.executor.freer",
    "pxexec.executor.dependencies",
    "pxexec.executor.mapping",
    "pxexec.policies.apply",
    "pxexec.engines.dask_client",
]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _public_names(module: object) -> list[str]:
    names = getattr(module, "__all__", None)
    assert names is not None, f"{module.__name__} has no __all__"  # type: ignore[attr-defined]
    return list(names)


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_has_a_docstring_with_an_example(name: str) -> None:
    module = importlib.import_module(name)
    lacking = []
    for attr in _public_names(module):
        obj = getattr(module, attr)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        doc = inspect.getdoc(obj) or ""
        if ">>>" not in doc:
            lacking.append(attr)
    assert not lacking, f"{name}: no docstring example for {lacking}"


@pytest.mark.parametrize("name", PUBLIC)
def test_docstring_examples_run(name: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PXEXEC_DOCTEST_REDIS", redis_url)
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"


def _every_module() -> list[str]:
    import pkgutil

    import pxexec

    return sorted(m.name for m in pkgutil.walk_packages(pxexec.__path__, "pxexec.")
                  if not m.name.startswith("pxexec.bench") and m.name != "pxexec.mypy_plugin")


@pytest.mark.parametrize("name", sorted(set(_every_module()) - set(PUBLIC)))
def test_internal_modules_docstring_examples_run(name: str, redis_url: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Modules outside the API reference: their examples run too (an example that no
    test runs goes stale)."""
    monkeypatch.setenv("PXEXEC_DOCTEST_REDIS", redis_url)
    try:
        module = importlib.import_module(name)
    except ImportError as exc:  # an optional dependency's module without the extra
        pytest.skip(f"{name} needs an optional dependency: {exc}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"


def test_docs_site_builds_in_strict_mode(tmp_path: object) -> None:
    mkdocs = shutil.which("mkdocs") or os.path.join(os.path.dirname(sys.executable), "mkdocs")
    if not os.path.exists(mkdocs):
        pytest.skip("mkdocs is not installed (pip install 'pxexec[docs]')")
    proc = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert os.path.exists(os.path.join(str(tmp_path), "api", "executor", "index.html"))
    site = str(tmp_path)
    for page in sorted(os.listdir(os.path.join(site, "api"))):
        path = os.path.join(site, "api", page, "index.html")
        if page == "index" or not os.path.exists(path):
            continue
        _assert_examples_are_code_blocks(path)
    with open(os.path.join(site, "performance", "index.html")) as f:
        performance = f.read()
    figures = re.findall(r'<img[^>]+src="([^"]+\.png)"', performance)
    assert len(figures) >= 5, f"the Performance page shows {len(figures)} figure(s)"
    for src in figures:
        assert os.path.exists(os.path.normpath(os.path.join(site, "performance", src))), src


def _assert_examples_are_code_blocks(path: str) -> None:
    """Docstring examples render as highlighted code blocks, not as nested quotes."""
    with open(path) as f:
        html = f.read()
    outside_code = re.sub(r"<pre.*?</pre>", "", html, flags=re.S)
    assert "<blockquote>" not in outside_code, f"{path}: an example rendered as a block quote"
    assert "&gt;&gt;&gt;" not in outside_code, f"{path}: an example outside a code block"
    prompts = len(re.findall(r'<span class="gp">&gt;&gt;&gt;', html))
    assert prompts > 0, f"{path}: no example rendered as a code block"
    text = re.sub(r"<[^>]+>", "", html)
    assert not re.search(r"= _[A-Z]", text), f"{path}: a private sentinel shown as a default"
    if path.endswith(os.path.join("store", "index.html")):
        assert "connector: Connector" in text, f"{path}: Store's connector is untyped"
