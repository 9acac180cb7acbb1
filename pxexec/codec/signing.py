"""Signed payloads: a 64-byte leading frame that authenticates everything after it.

What is authenticated is the payload *and* a canonical header naming the store, the
key the object is stored under and the object's version (as TUF and SigV4 bind
names and versions), so an object copied under another key, taken from another
store with the same secret, or an older version restored after ``update()``, is
refused. Two standard constructions, keyed by HKDF-SHA256 (RFC 5869) from the
store's secret; a reader accepts either:

- ``chacha20-poly1305`` (written when the ``cryptography`` package is installed):
  the tag of the ChaCha20-Poly1305 AEAD (RFC 8439) over an empty plaintext with
  header and payload as associated data, under a random 96-bit nonce. It is
  computed incrementally over the payload's frames (no copy) and runs several times
  faster than SHA-256, which matters for large objects.
- ``hmac-sha256``: HMAC-SHA256 over header and payload (no extra dependency).

Verification happens before any byte of the payload is decoded, and compares in
constant time. An unsigned store, by contrast, unpickles whatever is stored: use a
secret wherever another user or workflow can write to the backend.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from collections.abc import Sequence
from typing import Any

from pxexec.errors import MissingDependencyError

__all__ = ["FRAME_SIZE", "Signer", "signed_header"]

#: size of the signature frame written in front of a signed payload
FRAME_SIZE = 64
MAGIC = b"PXS3"
OLD_MAGICS = (b"PXS1", b"PXS2")  # formats before key binding: refused
CHACHA, HMAC_SHA256 = 1, 2
#: flag: the key is not part of what was signed (connectors that cannot write under
#: a key chosen before writing); readers of connectors that can refuse such objects
UNBOUND = 1
_LABEL = b"pxexec signed object v3\0"
_FRAME = struct.Struct("<4sBBxxQ12s32sxxxx")  # magic alg flags version nonce tag
_PAD = bytes(16)


def _cryptography() -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
        from cryptography.hazmat.primitives.poly1305 import Poly1305
    except ImportError:
        return None
    return Cipher, algorithms, Poly1305


def _hkdf(secret: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869) with pxexec's salt: one 32-byte output key."""
    prk = hmac.new(b"pxexec-signing-salt", secret, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def signed_header(alg: int, flags: int, version: int, nbytes: int, store: str,
                  key: str) -> bytes:
    """The canonical header that is authenticated with the payload.

    >>> signed_header(2, 0, 1, 5, "s", "k")[-6:]  # the store and key, length-prefixed
    b'\\x01\\x00s\\x01\\x00k'
    """
    name, where = store.encode(), key.encode()
    return (_LABEL + struct.pack("<BBQQ", alg, flags, version, nbytes)
            + struct.pack("<H", len(name)) + name + struct.pack("<H", len(where)) + where)


class Signer:
    """Signs and verifies payloads with one secret, bound to store, key and version.

    ``fast=None`` uses ChaCha20-Poly1305 when ``cryptography`` is installed, else
    HMAC-SHA256; ``fast=False`` always writes HMAC-SHA256.

    >>> signer = Signer(b"secret")
    >>> frames = [b"header", b"data"]
    >>> signed = signer.sign(frames, store="s", key="k1", version=1) + b"".join(frames)
    >>> payload, version = signer.verify(signed, store="s", key="k1")
    >>> bytes(payload), version
    (b'headerdata', 1)
    >>> signer.verify(signed, store="s", key="k2") is None   # copied under another key
    True
    >>> Signer(b"other").verify(signed, store="s", key="k1") is None   # wrong secret
    True
    """

    def __init__(self, secret: bytes, *, fast: bool | None = None) -> None:
        self._crypto = _cryptography() if fast is not False else None
        self._aead_key = _hkdf(secret, b"pxexec chacha20-poly1305 key")
        self._hmac_key = _hkdf(secret, b"pxexec hmac-sha256 key")
        self.format = "chacha20-poly1305" if self._crypto is not None else "hmac-sha256"

    def sign(self, frames: Sequence[Any], *, store: str, key: str, version: int,
             bound: bool = True) -> bytes:
        """The signature frame for a payload made of ``frames`` (in order)."""
        nbytes = sum(memoryview(f).nbytes for f in frames)
        flags = 0 if bound else UNBOUND
        if self._crypto is not None:
            nonce = secrets.token_bytes(12)
            header = signed_header(CHACHA, flags, version, nbytes, store, key)
            tag = self._aead_tag(self._crypto, nonce, header, frames, nbytes)
            return _FRAME.pack(MAGIC, CHACHA, flags, version, nonce, tag)
        header = signed_header(HMAC_SHA256, flags, version, nbytes, store, key)
        digest = hmac.new(self._hmac_key, header, hashlib.sha256)
        for frame in frames:
            digest.update(frame)
        return _FRAME.pack(MAGIC, HMAC_SHA256, flags, version, bytes(12), digest.digest())

    def _aead_tag(self, crypto: Any, nonce: bytes, header: bytes, frames: Sequence[Any],
                  nbytes: int) -> bytes:
        # RFC 8439 section 2.8 with an empty plaintext: the one-time Poly1305 key is
        # the first ChaCha20 block (counter 0), the MAC input the associated data
        # padded to 16 bytes, then its length and the (zero) ciphertext length
        cipher_cls, algorithms, poly1305 = crypto
        otk = cipher_cls(algorithms.ChaCha20(self._aead_key, bytes(4) + nonce),
                         mode=None).encryptor().update(bytes(32))
        mac = poly1305(otk)
        mac.update(header)
        for frame in frames:
            mac.update(frame)
        ad_len = len(header) + nbytes
        mac.update(_PAD[: -ad_len % 16] + struct.pack("<QQ", ad_len, 0))
        return mac.finalize() + bytes(16)  # type: ignore[no-any-return]

    def is_signed(self, buffer: Any) -> bool:
        """Whether ``buffer`` starts with a signature frame of the current format."""
        view = memoryview(buffer).cast("B")
        return view.nbytes >= FRAME_SIZE and bytes(view[:4]) == MAGIC

    @staticmethod
    def old_format(buffer: Any) -> bool:
        """Whether ``buffer`` was signed by an older pxexec (no key/store binding)."""
        view = memoryview(buffer).cast("B")
        return view.nbytes >= FRAME_SIZE and bytes(view[:4]) in OLD_MAGICS

    def verify(self, buffer: Any, *, store: str, key: str,
               unbound_ok: bool = False) -> tuple[memoryview, int] | None:
        """(payload, version) behind a valid signature frame, or None when it fails.

        ``unbound_ok`` accepts an object signed without its key (written through a
        connector that cannot choose keys first).
        """
        view = memoryview(buffer).cast("B")
        if view.nbytes < FRAME_SIZE or bytes(view[:4]) != MAGIC:
            return None
        _, alg, flags, version, nonce, tag = _FRAME.unpack(view[:FRAME_SIZE])
        if flags & UNBOUND:
            if not unbound_ok:
                return None
            key = ""
        payload = view[FRAME_SIZE:]
        header = signed_header(alg, flags, version, payload.nbytes, store, key)
        if alg == CHACHA:
            crypto = self._crypto or _cryptography()
            if crypto is None:
                raise MissingDependencyError(
                    "cryptography", "sign", "Verifying an object signed with ChaCha20-Poly1305"
                )
            expected = self._aead_tag(crypto, nonce, header, [payload], payload.nbytes)
        elif alg == HMAC_SHA256:
            digest = hmac.new(self._hmac_key, header, hashlib.sha256)
            digest.update(payload)
            expected = digest.digest()
        else:
            return None
        return (payload, version) if hmac.compare_digest(expected, tag) else None
