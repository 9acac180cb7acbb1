"""Owner records of file and shm stores: what is reaped, what is kept."""

from __future__ import annotations

import os
from typing import Any

from pxexec.codec.serialize import serialize
from pxexec.connectors.owners import process_owner, read_record, this_host
from pxexec.connectors.shm import SharedMemoryConnector

DEAD = f"{this_host()}-999999999-1-0123abcd"


def test_an_object_a_live_owner_also_holds_is_kept(shm_dir: str) -> None:
    connector = SharedMemoryConnector(shm_dir, namespace="rec")
    shared, alone = connector.put(serialize(1)), connector.put(serialize(2))
    connector.adopt(DEAD, [shared, alone])
    connector.adopt(process_owner(), [shared])  # handed on to a live owner
    report = connector.reap_report()
    assert report.objects == [alone] and report.owners == [DEAD]
    assert connector.exists(shared) and not connector.exists(alone)


def test_records_stay_small_while_objects_come_and_go(shm_dir: str) -> None:
    connector = SharedMemoryConnector(shm_dir, namespace="rec")
    for _ in range(3_000):
        key = connector.put(serialize(b"x"))
        connector.adopt(process_owner(), [key])
        connector.evict(key)
    kept = connector.put(serialize(b"kept"))
    connector.adopt(process_owner(), [kept])
    record = os.path.join(connector.leases, process_owner())
    assert os.path.getsize(record) < 33 * 5_000  # compacted, not one line per object ever
    leases = os.open(connector.leases, os.O_RDONLY)
    try:
        assert kept.partition("@")[0] in read_record(process_owner(), leases)  # its token
    finally:
        os.close(leases)


def test_a_live_owners_objects_are_never_reaped_however_old(shm_dir: str) -> None:
    connector = SharedMemoryConnector(shm_dir, namespace="rec")
    key = connector.put(serialize(1))
    connector.adopt(process_owner(), [key])
    past = 0.0
    os.utime(connector.path_of(key), (past, past))
    assert SharedMemoryConnector(shm_dir, namespace="rec").reaped_on_start == 0
    assert connector.exists(key)


def test_untracked_stores_write_no_records(shm_dir: str, tmp_path: Any) -> None:
    connector = SharedMemoryConnector(shm_dir, namespace="off", track_owners=False)
    connector.adopt(process_owner(), [connector.put(serialize(1))])
    assert not os.path.exists(connector.leases)
