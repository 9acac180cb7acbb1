"""Signed payloads: a 64-byte leading frame that authenticates everything after it.

Two formats, both keyed by the store's secret; a reader accepts either:

- ``PXS2`` (written when the ``cryptography`` package is installed): a random 16-byte
  nonce and a Poly1305 tag of the payload under a one-time key derived from the secret
  and the nonce (HMAC-SHA256). Poly1305 runs several times faster than SHA-256, which
  matters for large objects.
- ``PXS1``: an HMAC-SHA256 of the payload (no extra dependency).

Verification happens before any byte of the payload is decoded, and compares in
constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from typing import Any

from pxexec.errors import MissingDependencyError

__all__ = ["FRAME_SIZE", "Signer"]

#: size of the signature frame written in front of a signed payload
FRAME_SIZE = 64
HMAC_MAGIC = b"PXS1"
POLY_MAGIC = b"PXS2"
_KDF_LABEL = b"pxexec-poly1305-key"


def _poly1305() -> Any:
    try:
        from cryptography.hazmat.primitives.poly1305 import Poly1305
    except ImportError:
        return None
    return Poly1305


class Signer:
    """Signs and verifies payloads with one secret.

    ``fast=None`` uses Poly1305 when ``cryptography`` is installed, else HMAC-SHA256;
    ``fast=False`` always writes HMAC-SHA256.

    >>> signer = Signer(b"secret")
    >>> frames = [b"header", b"data"]
    >>> signed = signer.sign(frames) + b"".join(frames)
    >>> bytes(signer.verify(signed))
    b'headerdata'
    >>> Signer(b"other").verify(signed) is None         # wrong secret: refused
    True
    """

    def __init__(self, secret: bytes, *, fast: bool | None = None) -> None:
        self._secret = secret
        poly = _poly1305() if fast is not False else None
        self._poly = poly
        self.format = "poly1305" if poly is not None else "hmac-sha256"

    def sign(self, frames: Sequence[Any]) -> bytes:
        """The signature frame for a payload made of ``frames`` (in order)."""
        if self._poly is not None:
            nonce = secrets.token_bytes(16)
            mac = self._poly(self._one_time_key(nonce))
            for frame in frames:
                mac.update(frame)
            tag: bytes = mac.finalize()
            body = POLY_MAGIC + nonce + tag
        else:
            digest = hmac.new(self._secret, digestmod=hashlib.sha256)
            for frame in frames:
                digest.update(frame)
            body = HMAC_MAGIC + digest.digest()
        return body + bytes(FRAME_SIZE - len(body))

    def is_signed(self, buffer: Any) -> bool:
        """Whether ``buffer`` starts with a signature frame of a known format."""
        view = memoryview(buffer).cast("B")
        return view.nbytes >= FRAME_SIZE and bytes(view[:4]) in (HMAC_MAGIC, POLY_MAGIC)

    def verify(self, buffer: Any) -> memoryview | None:
        """The payload after a valid signature frame, or None when it does not verify."""
        view = memoryview(buffer).cast("B")
        if view.nbytes < FRAME_SIZE:
            return None
        magic, payload = bytes(view[:4]), view[FRAME_SIZE:]
        if magic == POLY_MAGIC:
            poly = self._poly or _poly1305()
            if poly is None:
                raise MissingDependencyError(
                    "cryptography", "sign", "Verifying an object signed with Poly1305"
                )
            nonce, tag = bytes(view[4:20]), bytes(view[20:36])
            mac = poly(self._one_time_key(nonce))
            mac.update(payload)
            return payload if hmac.compare_digest(mac.finalize(), tag) else None
        if magic == HMAC_MAGIC:
            expected = hmac.new(self._secret, payload, hashlib.sha256).digest()
            return payload if hmac.compare_digest(bytes(view[4:36]), expected) else None
        return None

    def _one_time_key(self, nonce: bytes) -> bytes:
        return hmac.new(self._secret, _KDF_LABEL + nonce, hashlib.sha256).digest()
