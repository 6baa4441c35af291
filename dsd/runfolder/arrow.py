"""Row dicts to Arrow tables, without importing pandas.

pyarrow's own converters (pa.array, pa.Table.from_pylist) import pandas the first time they run, to
check whether their input is a pandas object: about 0.3 s, most of the wall time of a command as short
as `dsd sample`. The columns dsd writes (numbers, strings, flags and lists of numbers) are built here
from their buffers instead; any other value goes through pa.array, with pyarrow's checks and errors.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

# per Arrow type: the Python types a column may hold to be built from buffers, and the numpy dtype
_FAST = {pa.int64(): ({int}, np.int64), pa.float64(): ({float, int}, np.float64), pa.bool_(): ({bool}, np.bool_)}


def rows_to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """The rows as a table of the schema (a missing key or None is a null), like
    pa.Table.from_pylist(rows, schema=schema)."""
    return pa.Table.from_arrays([to_array([row.get(f.name) for row in rows], f.type) for f in schema],
                                schema=schema)


def to_array(values: list, type_: pa.DataType) -> pa.Array:
    """values as an Array of type_: from buffers where every value is of a plain type, else pa.array."""
    kinds = set(map(type, values))
    valid = np.array([v is not None for v in values]) if type(None) in kinds else None
    kinds.discard(type(None))
    try:
        if type_ in _FAST and kinds <= _FAST[type_][0] and _exact(values, kinds, type_):
            return _numbers(values, valid, type_)
        if type_ == pa.string() and kinds <= {str}:
            return _strings(values, valid)
        if pa.types.is_list(type_) and kinds <= {list, tuple}:
            return _lists(values, valid, type_)
    except OverflowError:  # a whole number past 64 bits: pyarrow names it
        pass
    return pa.array(values, type=type_)


def _exact(values: list, kinds: set, type_: pa.DataType) -> bool:
    """Whether whole numbers in a float column are exactly doubles (below 2^53), as pyarrow requires."""
    return type_ != pa.float64() or int not in kinds or all(abs(v) < 2 ** 53 for v in values if type(v) is int)


def _validity(valid: np.ndarray | None) -> tuple:
    """(the validity bitmap, the null count) of a column; no bitmap when nothing is null."""
    if valid is None:
        return None, 0
    return pa.py_buffer(np.packbits(valid, bitorder="little")), int(len(valid) - valid.sum())


def _numbers(values: list, valid, type_: pa.DataType) -> pa.Array:
    bitmap, nulls = _validity(valid)
    data = np.array(values if not nulls else [0 if v is None else v for v in values], dtype=_FAST[type_][1])
    if type_ == pa.bool_():
        data = np.packbits(data, bitorder="little")
    return pa.Array.from_buffers(type_, len(values), [bitmap, pa.py_buffer(data)], nulls)


def _offsets(lengths) -> pa.Buffer:
    """Arrow's int32 offsets of items of these lengths (OverflowError past 2^31 - 1 in all)."""
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] >= 2 ** 31:
        raise OverflowError("more than 2^31 - 1 items in one column")
    return pa.py_buffer(offsets.astype(np.int32))


def _strings(values: list, valid) -> pa.Array:
    encoded = [b"" if v is None else v.encode() for v in values]
    bitmap, nulls = _validity(valid)
    return pa.Array.from_buffers(pa.string(), len(values),
                                 [bitmap, _offsets(list(map(len, encoded))), pa.py_buffer(b"".join(encoded))], nulls)


def _lists(values: list, valid, type_: pa.DataType) -> pa.Array:
    items = [() if v is None else v for v in values]
    child = to_array([x for item in items for x in item], type_.value_type)
    bitmap, nulls = _validity(valid)
    return pa.Array.from_buffers(type_, len(values), [bitmap, _offsets(list(map(len, items)))], nulls,
                                 children=[child])
