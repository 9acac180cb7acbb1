"""The mypy plugin, checked by running the real mypy on small typed files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from typing import Any

import pytest

pytest.importorskip("mypy")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SAMPLE = '''
from __future__ import annotations

from dataclasses import dataclass

from pxexec.store.ownership import OwnedProxy, RefMutProxy, RefProxy
from pxexec.proxy import Proxy, ProxyOr, extract


@dataclass
class Point:
    x: int

    def norm(self) -> float:
        return float(self.x)


def attributes(p: Proxy[Point], o: OwnedProxy[Point]) -> None:
    reveal_type(p.x)  # L_ATTR
    reveal_type(p.norm())  # L_METHOD
    p.missing  # L_MISSING
    reveal_type(o.x)  # L_OWNED
    o.free()  # L_OWN_METHOD


def containers(r: RefProxy[list[int]], m: RefMutProxy[dict[str, int]]) -> None:
    r.append("a")  # L_BAD_ARG
    reveal_type(m.get("k"))  # L_GET


def takes(v: ProxyOr[Point]) -> int:
    return extract(v).x


def callers(a: Point, b: Proxy[Point]) -> None:
    takes(a)  # L_TAKES_T
    takes(b)  # L_TAKES_PROXY
    takes("no")  # L_TAKES_STR


def unions(u: Proxy[Point] | Point, w: Proxy[Point] | Proxy[str]) -> None:
    reveal_type(u.x)  # L_UNION
    reveal_type(w.upper)  # L_UNION_MISSING


def untyped(q: Proxy) -> None:  # type: ignore[type-arg]
    reveal_type(q.anything)  # L_UNTYPED
'''


def _lines() -> dict[str, int]:
    return {m.group(1): i for i, line in enumerate(SAMPLE.splitlines(), start=1)
            if (m := re.search(r"# (L_\w+)", line))}


def _mypy(tmp_path: Any, plugin: bool) -> dict[int, list[str]]:
    (tmp_path / "sample.py").write_text(SAMPLE)
    plugins = 'plugins = ["pxexec.mypy_plugin"]\n' if plugin else ""
    (tmp_path / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [tool.mypy]
        {plugins}
        [[tool.mypy.overrides]]
        module = ["pxexec.*"]
        follow_imports = "silent"
        """))
    env = {**os.environ, "MYPYPATH": ROOT}  # an editable install is invisible to mypy
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir", os.devnull,
         "--config-file", str(tmp_path / "pyproject.toml"), "--show-error-codes",
         str(tmp_path / "sample.py")],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=240,
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    out: dict[int, list[str]] = {}
    for line in proc.stdout.splitlines():
        m = re.match(r".*sample\.py:(\d+): (error|note): (.*)", line)
        if m:  # mypy 1.x says "int", 2.x "int"
            text = m.group(3).replace("builtins.", "")
            out.setdefault(int(m.group(1)), []).append(text)
    return out


def test_without_the_plugin_proxy_attributes_are_any(tmp_path: Any) -> None:
    found = _mypy(tmp_path, plugin=False)
    at = _lines()
    for name in ("L_ATTR", "L_METHOD", "L_OWNED", "L_GET", "L_UNTYPED"):
        assert found[at[name]] == ['Revealed type is "Any"'], name
    for name in ("L_MISSING", "L_BAD_ARG", "L_OWN_METHOD", "L_TAKES_T", "L_TAKES_PROXY"):
        assert at[name] not in found, name
    assert "incompatible type" in found[at["L_TAKES_STR"]][0]


def test_with_the_plugin_proxy_attributes_have_the_target_types(tmp_path: Any) -> None:
    found = _mypy(tmp_path, plugin=True)
    at = _lines()
    assert found[at["L_ATTR"]] == ['Revealed type is "int"']
    assert found[at["L_METHOD"]] == ['Revealed type is "float"']
    assert found[at["L_MISSING"]] == ['"Point" has no attribute "missing"  [attr-defined]']
    assert found[at["L_OWNED"]] == ['Revealed type is "int"']
    assert at["L_OWN_METHOD"] not in found  # OwnedProxy.free keeps its own type
    assert found[at["L_BAD_ARG"]] == [
        'Argument 1 to "append" of "list" has incompatible type "str"; expected "int"  '
        "[arg-type]"
    ]
    assert found[at["L_GET"]] == ['Revealed type is "int | None"']
    assert at["L_TAKES_T"] not in found and at["L_TAKES_PROXY"] not in found
    assert 'expected "Point | Proxy[Point]"' in found[at["L_TAKES_STR"]][0]
    assert found[at["L_UNION"]] == ['Revealed type is "int"']
    union_missing = found[at["L_UNION_MISSING"]]
    assert union_missing == ['"Point" has no attribute "upper"  [attr-defined]',
                             'Revealed type is "Any | (def () -> str)"']  # as on Point | str
    assert found[at["L_UNTYPED"]] == ['Revealed type is "Any"']  # no T: the default
    assert len(found) == 10, found  # nothing else reported


def test_plugin_entry_point() -> None:
    from pxexec.mypy_plugin import ProxyPlugin, plugin

    assert plugin("1.8.0") is ProxyPlugin
