"""Every code block of README.md and docs/ runs as written.

Python blocks run as scripts (``python block.py``, so a block that starts a process-based
cluster needs its ``if __name__ == "__main__":`` guard, as a user's script does). A block
marked ``<!-- fragment: NAME -->`` on the line before it is a piece of a larger program:
the test prepends the named set-up from ``FRAGMENTS`` below. TOML blocks must parse, and a
block with a ``[store]`` section must load as a pxexec config. Shell blocks: every
``pxexec ...`` line must parse with the real command-line parser (and ``pxexec gc``
lines run), every ``bash FILE`` must name a file of the repository, every
``pip install 'pxexec[extra]'`` must name extras pyproject.toml defines, and the
``export PXEXEC_...`` lines of a block must form a config that loads.

Python blocks run with ``PXEXEC_SHM_DIR`` set to a fresh directory, and must leave no
stored object in it (the documentation does not teach leaks). The only rewrites: the
address ``redis://localhost:6379/0`` becomes the test's private redis-server, and
``pxexec gc shm`` runs on a namespace of its own.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"^<!--\s*fragment:\s*([\w-]+)\s*-->\s*$")
REDIS_IN_DOCS = "redis://localhost:6379/0"

#: set-ups that complete the blocks marked as fragments
FRAGMENTS = {
    # a block of a test module written against the user's own engine adapter
    "my-engine": """
        from concurrent.futures import ThreadPoolExecutor

        from pxexec.engines.base import Engine

        class MyEngine(Engine):
            name = "my-engine"
    """,
    # blocks that need real cluster nodes (addresses such as 10.1.0.1, a SLURM queue)
    # cannot run here: they are only compiled; tests/test_multihost.py runs the same
    # calls on simulated hosts
    "cluster": """
        import sys
        compile(open(__file__).read(), __file__, "exec")
        sys.exit(0)
    """,
    # the TaskVine block, on the stand-in of ndcctools.taskvine the tests use
    "taskvine": """
        import sys, types
        sys.path.insert(0, {root!r})
        from tests import taskvine_standin
        sys.modules["ndcctools"] = types.ModuleType("ndcctools")
        sys.modules["ndcctools.taskvine"] = taskvine_standin

        def load(path):
            return list(range(10))

        def analyze(data):
            return sum(data)
    """,
}


@dataclasses.dataclass
class Block:
    path: Path
    line: int
    language: str
    text: str
    fragment: str | None

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks() -> list[Block]:
    found: list[Block] = []
    for path in DOCUMENTS:
        lines = path.read_text().splitlines()
        i = 0
        while i < len(lines):
            opening = FENCE.match(lines[i])
            if opening is None:
                i += 1
                continue
            marker = MARKER.match(lines[i - 1]) if i else None
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            found.append(Block(path, i + 1, opening.group(1), "\n".join(lines[i + 1:end]) + "\n",
                               marker.group(1) if marker else None))
            i = end + 1
    return found


BLOCKS = blocks()


def _of(*languages: str) -> list[pytest.param]:
    return [pytest.param(b, id=b.name) for b in BLOCKS if b.language in languages]


def test_every_block_names_its_language() -> None:
    unnamed = [b.name for b in BLOCKS if b.language not in ("python", "toml", "bash")]
    assert not unnamed, f"code blocks without python/toml/bash: {unnamed}"


def test_every_fragment_marker_names_a_known_set_up() -> None:
    unknown = [b.name for b in BLOCKS if b.fragment and b.fragment not in FRAGMENTS]
    assert not unknown, f"fragment markers naming no set-up of FRAGMENTS: {unknown}"


@pytest.mark.slow
@pytest.mark.parametrize("block", _of("python"))
def test_python_block_runs(block: Block, redis_url: str, tmp_path: Path) -> None:
    source = block.text.replace(REDIS_IN_DOCS, redis_url)
    if block.fragment:
        prelude = textwrap.dedent(FRAGMENTS[block.fragment]).format(root=str(ROOT))
        source = prelude + "\n" + source
    script = tmp_path / "block.py"
    script.write_text(source)
    shm = tempfile.mkdtemp(prefix="pxexec-test-docs-", dir="/dev/shm")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PXEXEC_SHM_DIR"] = shm  # the block's shm stores live here, not in the user's
    try:
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                              text=True, timeout=240, env=env)
        left = [os.path.relpath(os.path.join(d, f), shm) for d, _, files in os.walk(shm)
                for f in files if f != "heartbeat"]
    finally:
        shutil.rmtree(shm, ignore_errors=True)
    assert done.returncode == 0, f"{block.name} failed:\n{done.stderr[-4000:]}"
    assert not left, f"{block.name} left stored objects behind: {left}"


@pytest.mark.parametrize("block", _of("toml"))
def test_toml_block_parses_and_loads(block: Block, redis_url: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PXEXEC_SECRET", "a secret the docs' signed configs name")
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    text = block.text.replace(REDIS_IN_DOCS, redis_url)
    parsed = tomllib.loads(text)
    if "store" in parsed:
        from pxexec.config import load

        path = tmp_path / "pxexec.toml"
        path.write_text(text)
        loaded = load(str(path))
        assert loaded.store is not None


def _pyproject_extras() -> set[str]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return set(project["optional-dependencies"])


@pytest.mark.parametrize("block", _of("bash"))
def test_shell_block_names_real_commands(
    block: Block, tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pxexec.cli import build_parser, main
    from pxexec.connectors import connector_from_url

    extras = _pyproject_extras()
    exported: dict[str, str] = {}
    for raw in block.text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = shlex.split(line)
        if words[0] == "flock" and len(words) > 2:  # flock LOCKFILE COMMAND...: the command
            words = words[2:]
        if words[0] == "dask" and len(words) > 1:  # a cluster's launch line (dask's CLI)
            assert words[1] in ("scheduler", "worker"), line
            assert shutil.which("dask") or (ROOT / ".venv/bin/dask").exists(), line
            continue
        if words[0] == "bash" and len(words) > 1 and words[1] == "scripts/testbed.sh":
            assert words[2] in ("up", "exec", "down"), line
            continue
        if os.path.basename(words[0]) == "python" and len(words) > 1 and words[1].endswith(".py"):
            assert (ROOT / words[1]).is_file(), f"{block.path}: {words[1]} does not exist"
            continue
        if words[0] == "pxexec":
            args = build_parser().parse_args(words[1:])  # exits (fails) on a bad option
            if args.command == "gc" and args.connector == "shm":
                # run it, on a namespace of its own (never reaping another run's objects)
                namespace = f"doc-test-{os.getpid()}"
                store = connector_from_url("shm", namespace=namespace)  # gc makes none
                try:
                    assert main([*words[1:], "--namespace", namespace]) == 0, line
                finally:
                    store.close()
                    shutil.rmtree(store.path, ignore_errors=True)
        elif words[0] == "bash":
            assert (ROOT / words[1]).is_file(), f"{block.name}: no file {words[1]}"
        elif words[:2] == ["pip", "install"]:
            for spec in words[2:]:
                named = re.fullmatch(r"pxexec(?:\[([\w,]+)\])?", spec)
                assert named, f"{block.name}: unexpected package {spec}"
                unknown = set(filter(None, (named.group(1) or "").split(","))) - extras
                assert not unknown, f"{block.name}: no extra {unknown} in pyproject.toml"
        elif words[0] == "export":
            name, _, value = words[1].partition("=")
            assert name == "PXEXEC_CONFIG" or re.fullmatch(r"PXEXEC_[A-Z]+__[A-Z_]+", name), line
            exported[name] = value.replace(REDIS_IN_DOCS, redis_url)
        else:
            raise AssertionError(f"{block.name}: the test does not know how to check {line!r}")
    if exported:  # the variables form a config that loads
        from pxexec.config import load

        monkeypatch.chdir(ROOT)
        assert load(environ=exported).store is not None
