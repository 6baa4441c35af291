"""dsd.runfolder.arrow: row dicts become the tables pyarrow would make, without importing pandas."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from dsd.runfolder import IMPORT_SCHEMA, MODEL_SCHEMA, RESULT_SCHEMA, TIMING_SCHEMA
from dsd.runfolder.arrow import rows_to_table, to_array


def random_value(rng, type_: pa.DataType):
    """A value of the type, or None, or (sometimes) the odd values a row may hold."""
    if rng.random() < 0.15:
        return None
    if pa.types.is_list(type_):
        return [random_value(rng, type_.value_type) for _ in range(int(rng.integers(0, 5)))]
    if type_ == pa.int64():
        return int(rng.integers(-2 ** 62, 2 ** 62)) if rng.random() < 0.5 else int(rng.integers(0, 9))
    if type_ == pa.float64():
        return [float("nan"), float("inf"), 0.0, 3, float(rng.normal()), -2 ** 52][int(rng.integers(0, 6))]
    if type_ == pa.bool_():
        return bool(rng.random() < 0.5)
    return ["", "cuda:0 (H100)", "é ü ß", "x" * int(rng.integers(1, 50))][int(rng.integers(0, 4))]


@pytest.mark.parametrize("schema", [MODEL_SCHEMA, RESULT_SCHEMA, TIMING_SCHEMA, IMPORT_SCHEMA])
def test_tables_equal_pyarrows_own(schema):
    rng = np.random.default_rng(len(schema))
    for n in (0, 1, 7, 300):
        rows = [{f.name: random_value(rng, f.type) for f in schema if rng.random() < 0.9} for _ in range(n)]
        got, want = rows_to_table(rows, schema), pa.Table.from_pylist(rows, schema=schema)
        got.validate(full=True)
        assert got.schema == want.schema
        assert repr(got.to_pylist()) == repr(want.to_pylist())  # repr: NaN equals NaN, None differs from NaN
        assert [c.null_count for c in got.columns] == [c.null_count for c in want.columns]


@pytest.mark.parametrize("values,type_", [
    (["a"], pa.int64()), ([2 ** 64], pa.int64()), ([True], pa.int64()), (["1.5"], pa.float64()),
    ([2 ** 60 + 1], pa.float64()), ([1], pa.string()), ([[1, "a"]], pa.list_(pa.int64())), ([3], pa.list_(pa.int64())),
])
def test_a_value_pyarrow_refuses_is_refused_alike(values, type_):
    with pytest.raises((pa.ArrowException, OverflowError)) as want:
        pa.array(values, type=type_)
    with pytest.raises(type(want.value)):
        to_array(values, type_)


def test_numpy_scalars_and_tuples_convert_as_pyarrow_converts_them():
    values = [np.int64(3), None, np.float32(0.5)]
    assert to_array(values, pa.float64()).to_pylist() == pa.array(values, pa.float64()).to_pylist()
    assert to_array([(1, 2), None], pa.list_(pa.int64())).to_pylist() == [[1, 2], None]


def test_sampling_a_run_does_not_import_pandas(tmp_path):
    """pandas costs about 0.3 s of a short command's start; `dsd sample` writes its run without it."""
    code = ("import sys\nfrom dsd import api\n"
            f"api.sample_run('AnyNetXA', 20, out={str(tmp_path / 'xa')!r})\n"
            "print('pandas' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False", done.stderr
