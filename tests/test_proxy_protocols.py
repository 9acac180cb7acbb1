"""A proxy answers numpy, pandas, polars and pyarrow exactly as its target does."""

from __future__ import annotations

import json
import os
import pickle
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from pxexec import Store, extract
from pxexec.connectors.local import LocalConnector
from pxexec.proxy import Proxy
from pxexec.store.ownership import borrow, mut_borrow, release


@pytest.fixture
def store() -> Any:
    with Store("protocols", LocalConnector()) as s:
        yield s


ARRAYS = [
    np.array(["2020-01-01T01:02:03.000000004"], dtype="M8[ns]"),
    np.array([1, 2], dtype="m8[us]"),
    np.array(["abc", "de"], dtype="U5"),
    np.array([b"ab", b"c"], dtype="S3"),
    np.zeros(3, dtype=[("a", "<i4"), ("b", ">f8"), ("c", "U2")]),
    np.zeros(2, dtype=("i4", (2, 3))),
    np.array([1, "x", None], dtype=object),
    np.arange(12).reshape(3, 4)[:, ::2],
    np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    np.ma.masked_array([1, 2, 3], mask=[0, 1, 0]),
]
TARGETS = [*ARRAYS, "abc", b"xyz", 3, 2.5, True, [1, 2], [[1, 2], [3, 4]], {"a": 1}, (1, "a"),
           None, pd.Series([1.5, 2.0], index=["a", "b"], name="n")]


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: type(t).__name__ + str(
    getattr(t, "dtype", "")))
def test_asarray_is_exactly_the_targets(store: Store, target: Any) -> None:
    expected = np.asarray(target)
    got = np.asarray(store.proxy(target))
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert got.tobytes() == expected.tobytes() if expected.dtype != object else (
        got.tolist() == expected.tolist())
    assert np.array(store.proxy(target), dtype=object).dtype == object


def test_array_struct_and_interface_are_not_forwarded(store: Store) -> None:
    p = store.proxy(np.array(["abc"], dtype="U5"))
    assert not hasattr(p, "__array_struct__") and not hasattr(p, "__array_interface__")
    assert p.dtype == np.dtype("U5")  # ordinary attributes still are


def test_callable_only_if_the_target_is(store: Store) -> None:
    assert not callable(store.proxy([1, 2]))
    assert not callable(store.proxy({"a": 1}))
    assert callable(store.proxy(len))
    assert store.proxy(len)([1, 2, 3]) == 3
    assert callable(Proxy(lambda: [1]))  # an unknown target: everything is forwarded


def test_special_methods_follow_the_target_class(store: Store) -> None:
    p = store.proxy(5)
    with pytest.raises(TypeError):
        iter(p)
    with pytest.raises(TypeError):
        len(p)
    assert p + 1 == 6 and 1 + p == 6 and -p == -5 and int(p) == 5
    lst = store.proxy([1, 2])
    assert [0] + lst == [0, 1, 2] and lst + [3] == [1, 2, 3] and 2 in lst  # noqa: RUF005
    assert list(reversed(lst)) == [2, 1]


def test_pandas_treats_proxies_as_their_targets(store: Store) -> None:
    df = pd.DataFrame({"x": [1.0, 4.0]}, index=["a", "b"])
    pd.testing.assert_frame_equal(df.assign(w=store.proxy([1, 2])), df.assign(w=[1, 2]))
    s = pd.Series(["a", "b"])
    pd.testing.assert_series_equal(s.map(store.proxy({"a": 5, "b": 6})), s.map({"a": 5, "b": 6}))
    pd.testing.assert_frame_equal(df.loc[store.proxy(["b"])], df.loc[["b"]])


def test_ufuncs_and_array_functions_keep_the_targets_kind(store: Store) -> None:
    series = pd.Series([1.0, 2.0], index=["a", "b"], name="n")
    pd.testing.assert_series_equal(np.log(store.proxy(series)), np.log(series))
    df = pd.DataFrame({"x": [1.0, 4.0]}, index=["p", "q"])
    pd.testing.assert_frame_equal(np.sqrt(store.proxy(df)), np.sqrt(df))
    arr = np.arange(4.0)
    out = np.add(store.proxy(arr), store.proxy(arr))
    assert type(out) is np.ndarray and out.tolist() == [0.0, 2.0, 4.0, 6.0]
    masked = np.ma.masked_array([1.0, 2.0], mask=[0, 1])
    got = np.sqrt(store.proxy(masked))
    assert isinstance(got, np.ma.MaskedArray) and got.mask.tolist() == [False, True]
    assert np.concatenate([store.proxy(arr), arr]).tolist() == [*arr.tolist(), *arr.tolist()]
    assert np.mean(store.proxy(series)) == 1.5


def test_arrow_capsules_and_interchange(store: Store) -> None:
    table = pa.table({"a": [1, 2], "b": ["x", None]})
    p = store.proxy(table)
    out = pl.from_arrow(p)
    assert isinstance(out, pl.DataFrame) and out.to_dict(as_series=False) == {
        "a": [1, 2], "b": ["x", None]}
    assert pa.table(p).equals(table)
    assert pa.RecordBatchReader.from_stream(p).read_all().equals(table)
    assert pa.array(store.proxy(pa.array([1, 2]))).equals(pa.array([1, 2]))
    frame = pl.DataFrame({"a": [1, 2]})
    assert pa.table(store.proxy(frame)).equals(frame.to_arrow())
    pd.testing.assert_frame_equal(
        pd.api.interchange.from_dataframe(store.proxy(frame)),
        pd.api.interchange.from_dataframe(frame))
    import pyarrow.compute as pc

    assert pc.sum(p["a"]).as_py() == 3


def test_str_proxy_as_a_path(store: Store, tmp_path: Any) -> None:
    path = str(tmp_path / "f.txt")
    p = store.proxy(path)
    assert os.fspath(p) == path
    with open(p, "w") as fh:
        fh.write("ok")
    with open(store.proxy(path.encode())) as fh:
        assert fh.read() == "ok"


def test_known_limits_need_extract(store: Store) -> None:
    # C functions that need the exact object say so, naming pxexec.extract
    import re

    with pytest.raises(TypeError, match=r"pxexec\.extract"):
        re.match("a", store.proxy("abc"))
    with pytest.raises(TypeError, match=r"pxexec\.extract"):
        memoryview(store.proxy(b"abc"))
    with pytest.raises(TypeError, match=r"pxexec\.extract"):
        pa.concat_tables([store.proxy(pa.table({"a": [1]}))])
    import pyarrow.compute as pc

    with pytest.raises(TypeError, match=r"pxexec\.extract"):
        pc.add(store.proxy(pa.array([1])), 1)
    assert re.match("a", extract(store.proxy("abc")))
    p = store.proxy({"a": 1})
    assert json.dumps(extract(p)) == '{"a": 1}'
    assert pa.concat_tables([extract(store.proxy(pa.table({"a": [1]})))]).num_rows == 1


def test_specialized_proxies_pickle_and_keep_their_kind(store: Store) -> None:
    p = store.proxy(np.arange(3))
    q = pickle.loads(pickle.dumps(p))
    assert type(q) is type(p) and np.asarray(q).tolist() == [0, 1, 2]
    owner = store.owned_proxy([1, 2])
    ref = borrow(owner)
    assert not callable(owner) and not callable(ref) and len(ref) == 2
    assert type(pickle.loads(pickle.dumps(owner))).__name__.startswith("Proxy[")
    release(ref)
    release(mut_borrow(owner))
    with owner:  # OwnedProxy's own context manager, even for a list target
        assert owner == [1, 2]
    assert not store.exists(owner.__px_factory__.key)
