"""Sizes with units, as people type them: ``10MB``, ``1 MiB``, ``2.5GB``, ``4096``."""

from __future__ import annotations

import re

from pxexec.errors import ConfigError

__all__ = ["UNITS", "format_bytes", "parse_bytes"]

#: bytes per unit (lower case); decimal units are powers of 1000, ``*iB`` of 1024
UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
    "t": 10**12, "tb": 10**12, "p": 10**15, "pb": 10**15,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50,
}
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*", re.IGNORECASE)


def parse_bytes(text: str | int) -> int:
    """The number of bytes ``text`` names (units as ``dask.utils.parse_bytes`` takes them).

    >>> parse_bytes("1MiB"), parse_bytes("1 MB"), parse_bytes("2.5kB"), parse_bytes(512)
    (1048576, 1000000, 2500, 512)
    >>> parse_bytes("10 furlongs")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pxexec.errors.ConfigError: '10 furlongs' is not a size: write a number ... e.g. 10MB or 1MiB.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ConfigError(f"A size cannot be negative (got {text}).")
        return text
    match = _SIZE.fullmatch(str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in UNITS:
        raise ConfigError(
            f"{text!r} is not a size: write a number with an optional unit "
            "(B, kB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. 10MB or 1MiB."
        )
    return int(float(match.group(1)) * UNITS[unit])


def format_bytes(nbytes: float) -> str:
    """``nbytes`` with a decimal unit and three significant digits.

    >>> format_bytes(999), format_bytes(1_500), format_bytes(100_000_000), format_bytes(2**31)
    ('999 B', '1.5 kB', '100 MB', '2.15 GB')
    """
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if abs(nbytes) >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes:.0f} B"
