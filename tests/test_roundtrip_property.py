"""Property-based round trips: value, dtype, names, index, metadata and flags, exactly.

Through ``store.put``/``get`` (shm and local), through a proxy's array protocol, and
through StoreExecutor on a process pool. Example counts stay moderate (fast suite).
"""

from __future__ import annotations

import datetime as dt
import uuid
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from hypothesis.extra import pandas as hpd

from pxexec import Store, StoreExecutor
from pxexec.connectors.local import LocalConnector
from pxexec.connectors.shm import SharedMemoryConnector
from pxexec.policies import Always
from tests import freeing_workers as fw

SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@pytest.fixture(params=["local", "shm"])
def store(request: Any, shm_dir: str) -> Any:
    connector = LocalConnector() if request.param == "local" else SharedMemoryConnector(shm_dir)
    with Store(f"prop-{uuid.uuid4().hex[:6]}", connector) as s:
        yield s


# -- numpy -----------------------------------------------------------------------------

UNITS = ["Y", "M", "D", "h", "m", "s", "ms", "us", "ns"]
DTYPES = st.one_of(
    hnp.scalar_dtypes(),
    hnp.byte_string_dtypes(max_len=6),
    hnp.unicode_string_dtypes(max_len=6),
    st.sampled_from(UNITS).map(lambda u: np.dtype(f"M8[{u}]")),
    st.sampled_from(UNITS).map(lambda u: np.dtype(f"m8[{u}]")),
    hnp.integer_dtypes(endianness=">"),
    hnp.floating_dtypes(endianness=">"),
    hnp.array_dtypes(subtype_strategy=hnp.scalar_dtypes(), max_size=3),
)


@st.composite
def arrays(draw: Any) -> Any:
    dtype = draw(DTYPES)
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
    arr = draw(hnp.arrays(dtype, shape))
    layout = draw(st.sampled_from(["C", "F", "strided", "transposed"]))
    if layout == "F":
        arr = np.asfortranarray(arr)
    elif layout == "strided" and arr.ndim:
        arr = arr[::2]
    elif layout == "transposed":
        arr = arr.T
    if draw(st.booleans()):
        arr.flags.writeable = False
    return arr


def _same_array(got: Any, want: Any) -> None:
    assert type(got) is type(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.flags.writeable == want.flags.writeable
    if want.dtype.hasobject:
        assert got.tolist() == want.tolist()
    else:  # bit for bit: NaN payloads, -0.0, NaT
        assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes()


@SETTINGS
@given(arr=arrays())
def test_arrays_through_the_store(store: Store, arr: Any) -> None:
    _same_array(store.get(store.put(arr)), arr)


@SETTINGS
@given(arr=arrays())
def test_arrays_through_a_proxys_array_protocol(store: Store, arr: Any) -> None:
    proxy = store.proxy(arr)
    got = np.asarray(proxy)
    want = np.asarray(arr)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes()


# -- pandas ----------------------------------------------------------------------------

COLUMN_DTYPES = [np.int8, np.uint32, np.int64, np.float32, np.float64, bool, "M8[ns]", "m8[ns]"]


@st.composite
def frames(draw: Any) -> Any:
    columns = [hpd.column(f"c{i}", dtype=np.dtype(draw(st.sampled_from(COLUMN_DTYPES))))
               for i in range(draw(st.integers(1, 4)))]
    index = draw(st.sampled_from([
        hpd.range_indexes(max_size=6),
        hpd.indexes(dtype=np.int64, max_size=6, unique=True),
        hpd.indexes(elements=st.text(max_size=3), max_size=6, unique=True),
    ]))
    df = draw(hpd.data_frames(columns, index=index))
    n = len(df)
    extra = draw(st.sampled_from(["none", "category", "tz", "string", "nullable", "object"]))
    if extra == "category":
        df["cat"] = pd.Categorical(draw(st.lists(st.sampled_from("abc"), min_size=n,
                                                 max_size=n)), categories=["c", "b", "a"],
                                   ordered=draw(st.booleans()))
    elif extra == "tz":
        df["tz"] = pd.date_range("2020-01-01", periods=n, freq="h", tz="Europe/Paris")
    elif extra == "string":
        df["s"] = pd.array(draw(st.lists(st.one_of(st.none(), st.text(max_size=4)),
                                         min_size=n, max_size=n)), dtype="string")
    elif extra == "nullable":
        df["n"] = pd.array(draw(st.lists(st.one_of(st.none(), st.integers(-5, 5)),
                                         min_size=n, max_size=n)), dtype="Int64")
    elif extra == "object":
        df["o"] = pd.Series(draw(st.lists(st.one_of(st.integers(), st.text(max_size=3),
                                                    st.none()), min_size=n, max_size=n)),
                            dtype=object, index=df.index)
    df.index.name = draw(st.one_of(st.none(), st.text(max_size=3)))
    df.attrs["source"] = draw(st.text(max_size=5))
    return df


@SETTINGS
@given(df=frames())
def test_pandas_frames_and_series_through_the_store(store: Store, df: Any) -> None:
    got = store.get(store.put(df))
    pd.testing.assert_frame_equal(got, df, check_exact=True)
    assert got.attrs == df.attrs and got.index.name == df.index.name
    series = df.iloc[:, 0].rename("named")
    pd.testing.assert_series_equal(store.get(store.put(series)), series, check_exact=True)


@SETTINGS
@given(df=frames())
def test_pandas_through_a_proxys_array_protocol(store: Store, df: Any) -> None:
    col = df.iloc[:, 0]
    got = np.asarray(store.proxy(col))
    want = np.asarray(col)
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


# -- polars and pyarrow, generated by hand ---------------------------------------------

POLARS_TYPES: list[tuple[Any, Any]] = [
    (pl.Int16, st.integers(-(2**15), 2**15 - 1)),
    (pl.UInt8, st.integers(0, 255)),
    (pl.Float64, st.floats(allow_nan=False)),
    (pl.Boolean, st.booleans()),
    (pl.String, st.text(max_size=4)),
    (pl.Binary, st.binary(max_size=4)),
    (pl.Date, st.dates()),
    (pl.Datetime("ms", "Asia/Tokyo"), st.datetimes(min_value=dt.datetime(1970, 1, 2),
                                                   max_value=dt.datetime(2200, 1, 1))),
    (pl.Duration("us"), st.timedeltas(min_value=dt.timedelta(days=-999),
                                      max_value=dt.timedelta(days=999))),
    (pl.Categorical, st.sampled_from(["x", "y", "z"])),
    (pl.Enum(["z", "y", "x"]), st.sampled_from(["x", "y", "z"])),
    (pl.List(pl.Int32), st.lists(st.integers(-100, 100), max_size=3)),
    (pl.Struct({"a": pl.Int64, "b": pl.String}),
     st.fixed_dictionaries({"a": st.integers(-9, 9), "b": st.text(max_size=2)})),
    (pl.Object, st.one_of(st.integers(), st.text(max_size=3), st.tuples(st.integers()))),
]


@st.composite
def polars_frames(draw: Any) -> Any:
    n = draw(st.integers(0, 5))
    chosen = draw(st.lists(st.sampled_from(range(len(POLARS_TYPES))), min_size=1, max_size=4))
    series = []
    for i, which in enumerate(chosen):
        dtype, values = POLARS_TYPES[which]
        nulls = dtype != pl.Object and draw(st.booleans())
        items = draw(st.lists(st.one_of(st.none(), values) if nulls else values,
                              min_size=n, max_size=n))
        series.append(pl.Series(f"c{i}_{which}", items, dtype=dtype))
    return pl.DataFrame(series)


def _same_polars(got: Any, want: Any) -> None:
    assert got.schema == want.schema
    if pl.Object in want.dtypes:
        assert got.rows() == want.rows()
    else:
        from polars.testing import assert_frame_equal

        assert_frame_equal(got, want)


@SETTINGS
@given(frame=polars_frames())
def test_polars_frames_and_series_through_the_store(store: Store, frame: Any) -> None:
    _same_polars(store.get(store.put(frame)), frame)
    series = frame.to_series(0)
    got = store.get(store.put(series))
    assert got.name == series.name and got.dtype == series.dtype
    assert got.to_list() == series.to_list()


ARROW_TYPES: list[tuple[Any, Any]] = [
    (pa.int32(), st.integers(-(2**31), 2**31 - 1)),
    (pa.float16(), st.sampled_from([1.5, -2.0, 0.0])),
    (pa.string(), st.text(max_size=4)),
    (pa.large_binary(), st.binary(max_size=4)),
    (pa.timestamp("ns", "America/New_York"),
     st.integers(0, 2**60)),
    (pa.decimal128(9, 3), st.decimals(min_value=-999, max_value=999, places=3)),
    (pa.list_(pa.int8()), st.lists(st.integers(-128, 127), max_size=3)),
    (pa.struct([("k", pa.string())]), st.fixed_dictionaries({"k": st.text(max_size=2)})),
    (pa.dictionary(pa.int8(), pa.string()), st.sampled_from(["p", "q"])),
    (pa.map_(pa.string(), pa.int16()),
     st.lists(st.tuples(st.text(max_size=2), st.integers(0, 9)), max_size=2)),
]


@st.composite
def arrow_tables(draw: Any) -> Any:
    n = draw(st.integers(0, 5))
    chosen = draw(st.lists(st.sampled_from(range(len(ARROW_TYPES))), min_size=1, max_size=4))
    arrays_, names = [], []
    for i, which in enumerate(chosen):
        typ, values = ARROW_TYPES[which]
        items = draw(st.lists(st.one_of(st.none(), values), min_size=n, max_size=n))
        arrays_.append(pa.array(items, type=typ))
        names.append(f"c{i}")
    table = pa.Table.from_arrays(arrays_, names=names)
    return table.replace_schema_metadata({"origin": draw(st.text(max_size=4))})


@SETTINGS
@given(table=arrow_tables())
def test_arrow_tables_through_the_store_and_capsules(store: Store, table: Any) -> None:
    got = store.get(store.put(table))
    assert got.equals(table, check_metadata=True) and got.schema == table.schema
    assert pa.table(store.proxy(table)).equals(table)


# -- containers ------------------------------------------------------------------------

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    st.text(max_size=4), st.binary(max_size=4))
CONTAINERS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner, inner),
                            st.dictionaries(st.text(max_size=3), inner, max_size=3),
                            st.frozensets(st.integers(), max_size=3)),
    max_leaves=10,
)


@SETTINGS
@given(value=CONTAINERS)
def test_containers_through_the_store(store: Store, value: Any) -> None:
    _deep_same(store.get(store.put(value)), value)


def _deep_same(got: Any, want: Any) -> None:
    assert type(got) is type(want)
    if isinstance(want, (list, tuple)):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            _deep_same(g, w)
    elif isinstance(want, dict):
        assert list(got) == list(want)  # same keys, same order
        for key in want:
            _deep_same(got[key], want[key])
    elif isinstance(want, float):
        assert repr(got) == repr(want)  # -0.0 stays -0.0
    else:
        assert got == want


# -- through StoreExecutor on a process pool ---------------------------------------------


def _kinds() -> list[Any]:
    ro = np.arange(12.0).reshape(3, 4)[:, ::2]
    ro.flags.writeable = False
    cat = pd.DataFrame({"c": pd.Categorical(["a", "b"], categories=["b", "a"], ordered=True),
                        "t": pd.date_range("2021-01-01", periods=2, tz="UTC")},
                       index=pd.Index(["x", "y"], name="i"))
    cat.attrs["unit"] = "m"
    return [
        np.array(["2020-01-01T00:00:00.000000001"], dtype="M8[ns]"),
        np.array(["abc"], dtype="U5"),
        np.zeros(2, dtype=[("a", ">i4"), ("b", "U2")]),
        np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)),
        ro,
        np.ma.masked_array([1.0, 2.0], mask=[1, 0]),
        cat,
        pd.Series([1.5, None], index=[3, 4], name="s", dtype="Float64"),
        pl.DataFrame({"e": pl.Series(["x"], dtype=pl.Enum(["y", "x"])),
                      "o": pl.Series([{"k": 1}], dtype=pl.Object)}),
        pl.Series("named", [1, None], dtype=pl.Int8),
        pa.table({"a": [1, None]}).replace_schema_metadata({"m": "1"}),
        {"nested": [np.arange(3), ("t", b"b")]},
        memoryview(b"abcd").cast("B", (2, 2)),
    ]


def _equal(got: Any, want: Any) -> None:
    if isinstance(want, np.ndarray):
        _same_array(got, want)
        if isinstance(want, np.ma.MaskedArray):
            assert got.mask.tolist() == want.mask.tolist()
    elif isinstance(want, pd.DataFrame):
        pd.testing.assert_frame_equal(got, want, check_exact=True)
        assert got.attrs == want.attrs
    elif isinstance(want, pd.Series):
        pd.testing.assert_series_equal(got, want, check_exact=True)
    elif isinstance(want, pl.DataFrame):
        _same_polars(got, want)
    elif isinstance(want, pl.Series):
        assert got.name == want.name and got.dtype == want.dtype
        assert got.to_list() == want.to_list()
    elif isinstance(want, pa.Table):
        assert got.equals(want, check_metadata=True)
    elif isinstance(want, memoryview):
        assert got.tolist() == want.tolist() and got.format == want.format
    elif isinstance(want, dict):
        assert list(got) == list(want)
        for key in want:
            _equal(got[key], want[key])
    elif isinstance(want, (list, tuple)):
        assert type(got) is type(want) and len(got) == len(want)
        for g, w in zip(got, want):
            _equal(g, w)
    else:
        assert type(got) is type(want) and got == want


def test_kinds_through_store_executor_on_a_process_pool(shm_dir: str) -> None:
    from pxexec import extract

    store = Store(f"prop-pool-{uuid.uuid4().hex[:6]}", SharedMemoryConnector(shm_dir))
    kinds = _kinds()
    with StoreExecutor(ProcessPoolExecutor(2), store, should_proxy=Always()) as ex:
        futures = [ex.submit(fw.materialize, k) for k in kinds]
        for want, future in zip(kinds, futures):
            _equal(extract(future.result()), want)
        del futures
    store.close()
