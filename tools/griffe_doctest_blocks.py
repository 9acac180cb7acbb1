"""A Griffe extension for the API pages: docstring examples become code blocks.

pxexec's docstrings hold doctest examples (``>>>`` lines and their output) in free text,
as the standard library's do. Markdown reads ``>>>`` as three nested block quotes, so
the API pages would show every example as quoted prose run into one paragraph. This
extension wraps each run of example lines (a ``>>>`` line up to the next blank line) in
a ``pycon`` fence before mkdocstrings renders the docstring. The docstrings themselves
stay plain doctests (``tests/test_docs.py`` runs them).
"""

from __future__ import annotations

from typing import Any

import griffe


def fence_examples(text: str) -> str:
    r"""``text`` with every doctest example wrapped in a fenced ``pycon`` block.

    >>> fence_examples("Use it:\n\n>>> 1 + 1\n2\n\nDone.").splitlines()
    ['Use it:', '', '```pycon', '>>> 1 + 1', '2', '```', '', 'Done.']
    """
    lines = text.splitlines()
    out: list[str] = []
    in_fence = False
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith("```"):
            in_fence = not in_fence
        if in_fence or not (stripped == ">>>" or stripped.startswith(">>> ")):
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(stripped)]
        out.append(f"{indent}```pycon")
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        out.append(f"{indent}```")
    return "\n".join(out)


def readable_default(default: Any) -> Any:
    """A private sentinel default (``_MISSING``) reads as ``<unset>`` in signatures.

    >>> readable_default("_MISSING"), readable_default("None"), readable_default("_x")
    ('<unset>', 'None', '_x')
    """
    text = str(default) if default is not None else ""
    if text.startswith("_") and text[1:].isupper():
        return "<unset>"
    return default


class DoctestBlocks(griffe.Extension):
    """Fence the doctest examples of every docstring of the loaded package, and show
    private sentinel defaults readably."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        seen: set[int] = set()
        stack: list[Any] = [pkg]
        while stack:
            obj = stack.pop()
            if id(obj) in seen or obj.is_alias:
                continue
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = fence_examples(obj.docstring.value)
            if obj.is_function:
                for parameter in obj.parameters:
                    parameter.default = readable_default(parameter.default)
            stack.extend(obj.members.values())
