"""One module owns leases: each key is held once and forgotten once, by the Store as it
evicts; ``clone`` goes through the Store (metrics, routing, signing)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from pxexec import Store
from pxexec.connectors.local import LocalConnector
from pxexec.connectors.multi import MultiConnector, Route
from pxexec.connectors.shm import SharedMemoryConnector
from pxexec.store.leases import LeaseKeeper, keeper, reset_keeper
from pxexec.store.ownership import clone, update


@pytest.fixture
def store(shm_dir: str) -> Iterator[Store]:
    reset_keeper()
    with Store(f"lease-{uuid.uuid4().hex[:6]}", SharedMemoryConnector(shm_dir)) as s:
        yield s
    reset_keeper()


@pytest.fixture
def forgets(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many times each key's lease was forgotten."""
    counts: Counter[str] = Counter()
    original = LeaseKeeper.forget

    def counting(self: LeaseKeeper, store: Any, keys: list[str]) -> None:
        counts.update(keys)
        original(self, store, keys)

    monkeypatch.setattr(LeaseKeeper, "forget", counting)
    return counts


def test_dropping_an_owner_forgets_its_lease_once(store: Store, forgets: Counter[str]) -> None:
    owner = store.owned_proxy([1, 2, 3])
    key = owner.__px_factory__.key
    assert key in keeper().held(store)
    owner.free()
    assert not store.exists(key)
    assert key not in keeper().held(store)
    assert forgets[key] == 1


def test_update_forgets_the_old_version_once(store: Store, forgets: Counter[str]) -> None:
    owner = store.owned_proxy([1])
    old = owner.__px_factory__.key
    owner.append(2)
    update(owner)
    new = owner.__px_factory__.key
    assert forgets[old] == 1 and forgets[new] == 0
    assert keeper().held(store) == {new}
    owner.free()
    assert forgets[new] == 1 and keeper().held(store) == set()


def test_clone_is_counted_in_the_store_metrics(store: Store) -> None:
    owner = store.owned_proxy(list(range(100)))
    before = store.metrics
    copy = clone(owner)
    after = store.metrics
    assert after.puts == before.puts + 1 and after.gets == before.gets + 1
    assert after.bytes_put > before.bytes_put
    assert copy.__px_factory__.key in keeper().held(store)  # the clone's lease is held
    assert list(copy) == list(range(100))


def test_clone_is_routed_by_the_object_type() -> None:
    connector = MultiConnector(
        [Route("lists", LocalConnector(), types=("builtins:list",)),
         Route("other", LocalConnector())],
        default="other",
    )
    store = Store(f"lease-route-{uuid.uuid4().hex[:6]}", connector)
    owner = store.owned_proxy([1, 2])
    assert owner.__px_factory__.key.startswith("lists:")
    copy = clone(owner)
    assert copy.__px_factory__.key.startswith("lists:")
    assert list(copy) == [1, 2]


def test_clone_of_a_signed_object_verifies(shm_dir: str, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    monkeypatch.setenv("PXEXEC_TEST_SECRET", "correct horse battery staple")
    store = Store("lease-signed", SharedMemoryConnector(shm_dir), secret_env="PXEXEC_TEST_SECRET")
    owner = store.owned_proxy({"a": 1})
    copy = clone(owner)
    assert store.get(copy.__px_factory__.key) == {"a": 1}
    owner.free()
    copy.free()
