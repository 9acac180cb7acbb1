"""``pxexec ls`` and ``pxexec du``: what a store holds, per object or added up."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from pxexec.errors import ConfigError
from pxexec.store.usage import StoredObject, format_age, rows, stored_objects, usage
from pxexec.units import format_bytes


def add_commands(sub: Any, existing_file: Any, seconds: Any) -> None:
    """Add ``ls`` and ``du`` to the ``pxexec`` command line's subcommands."""
    for name, text in (
        ("ls", "list stored objects: key, size, age, owners, lease"),
        ("du", "add up stored objects: count and bytes per namespace and owner"),
    ):
        cmd = sub.add_parser(
            name, help=text,
            description=f"{text[0].upper()}{text[1:]}. Without --namespace, a file or shm "
                        "store shows every namespace of its directory.",
        )
        cmd.add_argument("connector", nargs="?", default=None,
                         help="connector URL (shm, file:///scratch/px, redis://host:6379/0)")
        cmd.add_argument("--namespace", default=None, help="one namespace (file/shm)")
        cmd.add_argument("--prefix", default=None, help="one store's key prefix (Redis)")
        cmd.add_argument("--lease", type=seconds, default=None,
                         help="the lease period (seconds) the store's processes use "
                              "(file/shm: to show when each object's lease runs out; "
                              "listing never deletes, pxexec gc does)")
        cmd.add_argument("--config", default=None, type=existing_file,
                         help="a TOML config naming the store")
        cmd.add_argument("--json", action="store_true", help="print JSON instead of a table")


def connectors(args: argparse.Namespace) -> list[Any]:
    """The connectors the arguments name (every namespace of a file/shm directory)."""
    from pxexec.config_io import ENV_CONFIG
    from pxexec.connectors import connector_from_url
    from pxexec.connectors.file import FileConnector
    from pxexec.connectors.node import NodeConnector

    if args.config or (not args.connector and os.environ.get(ENV_CONFIG)):
        from pxexec.config import load

        return [load(args.config).store.connector]
    if not args.connector:
        raise ConfigError(f"Name a connector URL (e.g. shm) or --config FILE (or set "
                          f"{ENV_CONFIG}).")
    url = args.connector
    if url.startswith(("redis", "unix")):
        return [connector_from_url(url, **({"prefix": args.prefix} if args.prefix else {}))]
    if args.namespace:
        return [connector_from_url(url, namespace=args.namespace)]
    probe = connector_from_url(url)
    if isinstance(probe, NodeConnector):  # its namespaces: folders holding an index
        names = _folders(probe.directory, "index.sqlite")
    elif isinstance(probe, FileConnector):
        names = _folders(probe.directory)
    else:
        return [probe]
    found = [probe if n == probe.namespace else connector_from_url(url, namespace=n)
             for n in names]
    return found or [probe]


def list_objects(args: argparse.Namespace) -> int:
    objects = _objects(args)
    if args.json:
        print(json.dumps([o.describe() for o in objects], indent=2))
        return 0
    if not objects:
        print("no stored objects")
        return 0
    _table(["namespace", "key", "size", "age", "owners", "lease"], rows(objects))
    return 0


def disk_usage(args: argparse.Namespace) -> int:
    conns = connectors(args)
    objects = [o for c in conns for o in stored_objects(c, args.lease)]
    total = usage(objects)
    where = _where(conns)
    if args.json:
        print(json.dumps({
            "connectors": [repr(c) for c in conns], "objects": total.objects,
            "bytes": total.nbytes, "oldest_seconds": total.oldest,
            "namespaces": {k: {"objects": n, "bytes": b}
                           for k, (n, b) in total.by_namespace.items()},
            "owners": {k: {"objects": n, "bytes": b} for k, (n, b) in total.by_owner.items()},
        }, indent=2))
        return 0
    print(f"{where}\n{total.objects} object(s), {format_bytes(total.nbytes)}, "
          f"oldest {format_age(total.oldest)}")
    for title, table in (("namespace", total.by_namespace), ("owner", total.by_owner)):
        if table:
            print()
            _table([title, "objects", "size"],
                   [[k, str(n), format_bytes(b)] for k, (n, b) in sorted(table.items())])
    return 0


def _folders(directory: str, holding: str | None = None) -> list[str]:
    """The folders in ``directory`` (those with a file named ``holding``), sorted."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if os.path.isdir(os.path.join(directory, n))
                  and (holding is None or os.path.exists(os.path.join(directory, n, holding))))


def _where(conns: list[Any]) -> str:
    from pxexec.connectors.file import FileConnector

    if len(conns) > 1 and all(isinstance(c, FileConnector) for c in conns):
        return f"{type(conns[0]).__name__} {conns[0].directory} ({len(conns)} namespaces)"
    return ", ".join(repr(c) for c in conns)


def _objects(args: argparse.Namespace) -> list[StoredObject]:
    return [o for c in connectors(args) for o in stored_objects(c, args.lease)]


def _table(header: list[str], body: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    for line in (header, *body):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
    sys.stdout.flush()
