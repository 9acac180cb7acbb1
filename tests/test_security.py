from __future__ import annotations

import os
import pickle
import subprocess
import sys
import uuid
from typing import Any

import numpy as np
import pytest

from pxexec import Store
from pxexec.codec.serialize import serialize
from pxexec.connectors.file import FileConnector
from pxexec.connectors.redis import RedisConnector
from pxexec.connectors.shm import SharedMemoryConnector
from pxexec.errors import ConfigError, SignatureError, StoreConnectionError
from tests.redis_server import RedisServer


class Exploit:
    """Unpickling this creates a file: proof that attacker code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (self.path, "w"))


@pytest.fixture
def secret(monkeypatch: Any) -> str:
    monkeypatch.setenv("PXEXEC_TEST_SECRET", "correct horse battery staple")
    return "PXEXEC_TEST_SECRET"


def test_signed_round_trip_stays_zero_copy(shm_dir: str, secret: str) -> None:
    store = Store("signed", SharedMemoryConnector(shm_dir), secret_env=secret)
    arr = np.arange(100_000, dtype=np.float64)
    key = store.put(arr)
    out = store.get(key)
    assert np.array_equal(out, arr) and out.flags.writeable
    assert store.proxy({"a": 1}) == {"a": 1}


@pytest.mark.parametrize("kind", ["shm", "redis"])
def test_foreign_pickle_under_a_valid_key_never_runs(kind: str, shm_dir: str, tmp_path: Any,
                                                    secret: str, redis_url: str) -> None:
    connector: Any = (SharedMemoryConnector(shm_dir) if kind == "shm"
                      else RedisConnector(redis_url, prefix=f"sec{uuid.uuid4().hex[:6]}"))
    store = Store(f"signed-{kind}", connector, secret_env=secret, cache_size=0)
    key = store.put("legit")
    marker = tmp_path / "pwned"
    # A foreign writer replaces the value with a well-formed pxexec payload of a
    # malicious pickle (unsigned), then with the legit signature frame glued on.
    connector.replace(key, serialize(Exploit(str(marker))))
    with pytest.raises(SignatureError, match="not signed"):
        store.get(key)
    assert store._signer is not None
    legit_signature = store._signer.sign(serialize("legit"), store=store.name, key=key, version=1)
    connector.replace(key, [legit_signature, *serialize(Exploit(str(marker)))])
    with pytest.raises(SignatureError, match="failed signature verification"):
        store.proxy_from_key(key) + ""
    assert not marker.exists()


def test_tampered_byte_is_refused(tmp_path: Any, secret: str) -> None:
    connector = FileConnector(str(tmp_path))
    store = Store("tamper", connector, secret_env=secret)
    key = store.put(np.zeros(1000))
    path = os.path.join(connector.path, key)
    with open(path, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        f.write(b"\x01")
    with pytest.raises(SignatureError):
        store.get(key)


def test_secret_is_never_carried(shm_dir: str, secret: str) -> None:
    store = Store("carry", SharedMemoryConnector(shm_dir), secret_env=secret)
    proxy = store.proxy([1, 2])
    value = os.environ[secret].encode()
    assert value not in pickle.dumps(proxy) and value not in repr(proxy).encode()
    assert value not in pickle.dumps(store.config())


def test_missing_secret_is_a_clear_error(shm_dir: str, secret: str) -> None:
    with pytest.raises(ConfigError, match="PXEXEC_NO_SUCH_SECRET"):
        Store("nosecret", SharedMemoryConnector(shm_dir), secret_env="PXEXEC_NO_SUCH_SECRET")
    store = Store("worker-check", SharedMemoryConnector(shm_dir), secret_env=secret)
    proxy = store.proxy("x")
    code = ("import pickle, sys\nproxy = pickle.loads(sys.stdin.buffer.read())\n"
            "try:\n    str(proxy)\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    env = {k: v for k, v in os.environ.items() if k != secret}
    out = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(proxy),
                         capture_output=True, env=env, check=True)
    assert b"ConfigError" in out.stdout and secret.encode() in out.stdout


@pytest.fixture(scope="module")
def acl_redis() -> Any:
    server = RedisServer("--requirepass", "sup3r-secret",
                         "--user", "alice", "on", ">al1ce-pw", "~*", "&*", "+@all")
    yield server
    server.stop()


def test_redis_password_and_acl_user(acl_redis: Any, monkeypatch: Any) -> None:
    port = acl_redis.port
    with_password = RedisConnector(f"redis://:sup3r-secret@127.0.0.1:{port}/0")
    key = with_password.put(serialize(1))
    assert with_password.get(key) is not None
    alice = RedisConnector(f"redis://alice:al1ce-pw@127.0.0.1:{port}/0", prefix="alice")
    assert alice.get(alice.put(serialize(2))) is not None
    monkeypatch.setenv("PXEXEC_TEST_REDIS_PW", "al1ce-pw")
    by_env = Store("env-pw", RedisConnector(f"redis://alice@127.0.0.1:{port}/0", prefix="env",
                                            password_env="PXEXEC_TEST_REDIS_PW"))
    proxy = by_env.proxy([3])
    assert b"al1ce-pw" not in pickle.dumps(proxy) and proxy == [3]
    wrong = RedisConnector(f"redis://alice:wrong-pw@127.0.0.1:{port}/0", connect_timeout=2)
    with pytest.raises(StoreConnectionError) as info:
        wrong.put(serialize(1))
    assert "wrong-pw" not in str(info.value) and str(port) in str(info.value)
    nopw = RedisConnector(f"redis://127.0.0.1:{port}/0", connect_timeout=2)
    with pytest.raises(Exception) as denied:
        nopw.put(serialize(1))
    assert "NOAUTH" in str(denied.value) or "Authentication" in str(denied.value)


def _make_certs(directory: Any) -> dict[str, str]:
    paths = {name: str(directory / f"{name}") for name in
             ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt", "ext.cnf")}
    (directory / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run = [
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=pxexec-test-ca", "-keyout", paths["ca.key"], "-out", paths["ca.crt"]],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
         "-keyout", paths["server.key"], "-out", paths["server.csr"]],
        ["openssl", "x509", "-req", "-in", paths["server.csr"], "-CA", paths["ca.crt"],
         "-CAkey", paths["ca.key"], "-CAcreateserial", "-days", "2",
         "-extfile", paths["ext.cnf"], "-out", paths["server.crt"]],
    ]
    for command in run:
        subprocess.run(command, check=True, capture_output=True)
    return paths


def test_redis_over_tls(tmp_path: Any, monkeypatch: Any) -> None:
    from tests.redis_server import free_port

    certs = _make_certs(tmp_path)
    tls_port = free_port()
    server = RedisServer(
        "--tls-port", str(tls_port), "--tls-cert-file", certs["server.crt"],
        "--tls-key-file", certs["server.key"], "--tls-ca-cert-file", certs["ca.crt"],
        "--tls-auth-clients", "no", "--requirepass", "tls-pw",
    )
    try:
        monkeypatch.setenv("PXEXEC_TEST_TLS_PW", "tls-pw")
        url = f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={certs['ca.crt']}"
        store = Store("tls", RedisConnector(url, prefix="tls", password_env="PXEXEC_TEST_TLS_PW"))
        proxy = store.proxy(np.arange(100_000))  # large enough for the raw socket path
        assert np.array_equal(pickle.loads(pickle.dumps(proxy)), np.arange(100_000))
        assert b"tls-pw" not in pickle.dumps(proxy)
        untrusted = RedisConnector(f"rediss://127.0.0.1:{tls_port}/0", connect_timeout=2,
                                   password_env="PXEXEC_TEST_TLS_PW")
        with pytest.raises(StoreConnectionError, match=r"certificate|SSL"):
            untrusted.put(serialize(1))
    finally:
        server.stop()


def test_both_signature_formats_verify_and_wrong_secrets_fail(shm_dir: str, secret: str,
                                                              monkeypatch: Any) -> None:
    from pxexec.codec import signing

    pytest.importorskip("cryptography")
    connector = SharedMemoryConnector(shm_dir)
    store = Store("formats", connector, secret_env=secret)
    assert store._signer is not None and store._signer.format == "chacha20-poly1305"
    fast_key = store.put(np.arange(10))
    frames = serialize(np.arange(10))
    classic = signing.Signer(os.environ[secret].encode(), fast=False)
    assert classic.format == "hmac-sha256"
    classic_key = connector.new_key(0)
    connector.put_at(classic_key, [classic.sign(frames, store="formats", key=classic_key,
                                                version=1), *frames])
    assert bytes(connector.get(fast_key))[:5] == b"PXS3\x01"
    assert bytes(connector.get(classic_key))[:5] == b"PXS3\x02"
    for key in (fast_key, classic_key):
        assert store.get(key).tolist() == list(range(10))
    monkeypatch.setenv("PXEXEC_OTHER_SECRET", "another secret")
    other = Store("formats", connector, secret_env="PXEXEC_OTHER_SECRET")
    for key in (fast_key, classic_key):
        with pytest.raises(SignatureError, match="failed signature verification"):
            other.get(key)


def test_chacha_tag_is_the_standard_aead_tag(secret: str) -> None:
    """The incremental tag equals ChaCha20Poly1305(key).encrypt(nonce, b"", header+payload)."""
    pytest.importorskip("cryptography")
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    from pxexec.codec import signing

    signer = signing.Signer(b"k")
    frames = [b"x" * 1000, b"yz", bytes(77)]
    frame = signer.sign(frames, store="s", key="key", version=3)
    _, alg, flags, version, nonce, tag = signing._FRAME.unpack(frame)
    header = signing.signed_header(alg, flags, version, 1079, "s", "key")
    aead = ChaCha20Poly1305(signing._hkdf(b"k", b"pxexec chacha20-poly1305 key"))
    assert aead.encrypt(nonce, b"", header + b"".join(frames)) == tag[:16]


def test_poly1305_object_without_cryptography_names_the_extra(shm_dir: str, secret: str,
                                                              monkeypatch: Any) -> None:
    from pxexec.codec import signing
    from pxexec.errors import MissingDependencyError

    pytest.importorskip("cryptography")
    writer = Store("poly", SharedMemoryConnector(shm_dir), secret_env=secret)
    key = writer.put({"a": 1})
    monkeypatch.setattr(signing, "_cryptography", lambda: None)
    reader = Store("poly", SharedMemoryConnector(shm_dir), secret_env=secret)
    assert reader._signer is not None and reader._signer.format == "hmac-sha256"
    with pytest.raises(MissingDependencyError, match=r"pxexec\[sign\]"):
        reader.get(key)
    assert reader.get(reader.put([1])) == [1]  # it still signs and reads HMAC objects


def _signed_connector(kind: str, shm_dir: str, tmp_path: Any, redis_url: str) -> Any:
    from pxexec.connectors.local import LocalConnector

    if kind == "shm":
        return SharedMemoryConnector(shm_dir)
    if kind == "file":
        return FileConnector(str(tmp_path))
    if kind == "local":
        return LocalConnector()
    return RedisConnector(redis_url, prefix=f"mix{uuid.uuid4().hex[:6]}")


@pytest.mark.parametrize("kind", ["shm", "file", "redis", "local"])
def test_signatures_bind_key_store_and_version(kind: str, shm_dir: str, tmp_path: Any,
                                               redis_url: str, secret: str) -> None:
    connector = _signed_connector(kind, shm_dir, tmp_path, redis_url)
    store = Store(f"bind-{kind}", connector, secret_env=secret, cache_size=0)
    first, second = store.put("first"), store.put("second")
    # mix and match: valid signed bytes copied under another key
    connector.replace(second, [bytes(connector.get(first))])
    with pytest.raises(SignatureError, match="copied from another key"):
        store.get(second)
    # another store with the same secret
    other = Store(f"bind-{kind}-other", connector, secret_env=secret, cache_size=0)
    with pytest.raises(SignatureError, match="failed signature verification"):
        other.get(first)
    # rollback: the old bytes restored after an update
    old = bytes(connector.get(first))
    store.replace(first, "first, updated")
    assert store.get(first) == "first, updated"
    store.replace(first, "first, updated twice")
    assert store.get(first) == "first, updated twice"
    connector.replace(first, [old])
    with pytest.raises(SignatureError, match="rollback"):
        store.get(first)
    assert store.get(store.put("new")) == "new"


def test_signed_multi_connector_binds_keys_per_backend(tmp_path: Any, secret: str) -> None:
    from pxexec.connectors.local import LocalConnector
    from pxexec.connectors.multi import MultiConnector, Route

    multi = MultiConnector([Route("small", LocalConnector(), max_size=1000),
                            Route("big", FileConnector(str(tmp_path)))])
    store = Store("multi-signed", multi, secret_env=secret, cache_size=0)
    small, big = store.put(b"x"), store.put(bytes(5000))
    assert small.startswith("small:") and big.startswith("big:")
    store.replace(small, b"y")
    assert store.get_batch([small, big])[0] == b"y" and len(store.get(big)) == 5000
    other = store.put(b"z")
    multi.replace(other, [bytes(multi.get(small))])  # copied under another key
    with pytest.raises(SignatureError):
        store.get(other)
