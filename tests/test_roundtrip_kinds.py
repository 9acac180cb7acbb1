"""Payload kinds that once came back wrong: polars Object/Enum/names, array flags."""

from __future__ import annotations

import datetime as dt
import decimal
import tempfile
from typing import Any

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal, assert_series_equal

from pxexec import Store
from pxexec.codec.frames import join
from pxexec.codec.serialize import deserialize, serialize
from pxexec.connectors import connector_from_url

POLARS_COLUMNS: dict[str, Any] = {
    "i8": pl.Series([1, None], dtype=pl.Int8),
    "u64": pl.Series([1, 2], dtype=pl.UInt64),
    "i128": pl.Series([1, -2], dtype=pl.Int128),
    "f32": pl.Series([1.5, None], dtype=pl.Float32),
    "bool": pl.Series([True, None]),
    "str": pl.Series(["a", None]),
    "bin": pl.Series([b"x", None]),
    "cat": pl.Series(["a", "b"], dtype=pl.Categorical),
    "enum": pl.Series(["a", "b"], dtype=pl.Enum(["b", "a", "c"])),
    "date": pl.Series([dt.date(2020, 1, 1), None]),
    "dt_tz": pl.Series([dt.datetime(2020, 1, 1), None], dtype=pl.Datetime("us", "Europe/Paris")),
    "dt_ms": pl.Series([dt.datetime(2020, 1, 1), None], dtype=pl.Datetime("ms")),
    "dur": pl.Series([dt.timedelta(1), None], dtype=pl.Duration("ns")),
    "time": pl.Series([dt.time(1), None]),
    "dec": pl.Series([decimal.Decimal("1.50"), None], dtype=pl.Decimal(10, 2)),
    "list": pl.Series([[1, 2], None]),
    "array": pl.Series([[1, 2], [3, 4]], dtype=pl.Array(pl.Int32, 2)),
    "struct": pl.Series([{"a": 1, "b": "x"}, None]),
    "null": pl.Series([None, None], dtype=pl.Null),
    "list_enum": pl.Series([["a"], ["b"]], dtype=pl.List(pl.Enum(["b", "a"]))),
    "object": pl.Series([object(), 1, "x"][:2], dtype=pl.Object),
}


def _through(obj: Any, store: Store | None = None) -> Any:
    if store is not None:
        return store.get(store.put(obj))
    return deserialize(memoryview(bytearray(join(serialize(obj)))))


@pytest.mark.parametrize("name", sorted(POLARS_COLUMNS))
def test_every_polars_dtype_round_trips_exactly(name: str) -> None:
    series = POLARS_COLUMNS[name].alias(f"col_{name}")
    frame = pl.DataFrame([series, pl.Series("n", [1, 2])])
    out = _through(frame)
    assert out.schema == frame.schema
    if name != "object":
        assert_frame_equal(out, frame)
        assert_series_equal(_through(series), series)
    else:  # Object columns hold the very values (by pickle), never their addresses
        assert out["col_object"].to_list()[1] == 1
        assert type(out["col_object"].to_list()[0]) is object
    got = _through(series)
    assert got.name == series.name and got.dtype == series.dtype


def test_polars_object_column_through_shm_store(shm_dir: str) -> None:
    store = Store("kinds-shm", connector_from_url(f"shm://{shm_dir}"))
    frame = pl.DataFrame({"o": pl.Series([{"k": 1}, 1, "x"], dtype=pl.Object), "i": [1, 2, 3]})
    out = _through(frame, store)
    assert out.schema == frame.schema and out["o"].to_list() == [{"k": 1}, 1, "x"]
    series = pl.Series("t", [1])
    assert _through(series, store).name == "t"
    enum = pl.Series("e", ["x", "y"], dtype=pl.Enum(["y", "x"]))
    assert_series_equal(_through(enum, store), enum)


def _readonly(arr: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
    arr.flags.writeable = False
    return arr


ARRAYS = {
    "readonly": lambda: _readonly(np.arange(10.0)),
    "readonly_struct": lambda: _readonly(np.zeros(3, dtype=[("a", "i4")])),
    "readonly_empty": lambda: _readonly(np.zeros((0, 3))),
    "strided": lambda: np.arange(20.0)[::2],
    "fortran": lambda: np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    "masked": lambda: np.ma.masked_array([1, 2, 3], mask=[0, 1, 0], fill_value=7),
    "matrix": lambda: np.matrix([[1, 2], [3, 4]]),
    "big_endian": lambda: np.arange(4, dtype=">i4"),
    "dtype_metadata": lambda: np.zeros(3, dtype=np.dtype(float, metadata={"unit": "m"})),
    "datetime": lambda: np.array(["2020-01-01"], dtype="M8[D]"),
}


@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_array_kinds_keep_type_dtype_and_flags(name: str) -> None:
    arr = ARRAYS[name]()
    out = _through(arr)
    assert type(out) is type(arr) and out.dtype == arr.dtype and out.shape == arr.shape
    assert out.dtype.metadata == arr.dtype.metadata
    assert out.flags.writeable == arr.flags.writeable
    np.testing.assert_array_equal(np.asarray(out), np.asarray(arr))
    if isinstance(arr, np.ma.MaskedArray):
        assert out.mask.tolist() == arr.mask.tolist() and out.fill_value == arr.fill_value


def test_memmap_comes_back_with_its_values() -> None:
    with tempfile.NamedTemporaryFile() as fh:
        mm = np.memmap(fh.name, dtype="f8", mode="w+", shape=(4,))
        mm[:] = [1, 2, 3, 4]
        out = _through(mm)
        assert out.dtype == mm.dtype and out.tolist() == [1, 2, 3, 4]
