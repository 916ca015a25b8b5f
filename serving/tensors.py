"""Tensors between numpy and TensorFlow's ``TensorProto``, without going through TensorFlow ops.

Decoding accepts both ``tensor_content`` and the typed ``*_val`` fields; encoding writes the typed
fields, as TF Serving's Predict does by default (``AsProtoField``).
"""

from __future__ import annotations

import math

import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2

from skewless.serving.errors import invalid_argument

# DataType enum -> (numpy dtype, TensorProto value field, DataTypeString name).
_BY_ENUM: dict[int, tuple[np.dtype, str, str]] = {
    types_pb2.DT_FLOAT: (np.dtype(np.float32), "float_val", "float"),
    types_pb2.DT_DOUBLE: (np.dtype(np.float64), "double_val", "double"),
    types_pb2.DT_INT32: (np.dtype(np.int32), "int_val", "int32"),
    types_pb2.DT_INT16: (np.dtype(np.int16), "int_val", "int16"),
    types_pb2.DT_INT8: (np.dtype(np.int8), "int_val", "int8"),
    types_pb2.DT_UINT8: (np.dtype(np.uint8), "int_val", "uint8"),
    types_pb2.DT_UINT16: (np.dtype(np.uint16), "int_val", "uint16"),
    types_pb2.DT_INT64: (np.dtype(np.int64), "int64_val", "int64"),
    types_pb2.DT_UINT32: (np.dtype(np.uint32), "uint32_val", "uint32"),
    types_pb2.DT_UINT64: (np.dtype(np.uint64), "uint64_val", "uint64"),
    types_pb2.DT_BOOL: (np.dtype(np.bool_), "bool_val", "bool"),
    types_pb2.DT_STRING: (np.dtype(object), "string_val", "string"),
    types_pb2.DT_HALF: (np.dtype(np.float16), "half_val", "half"),
}
_ENUM_BY_NUMPY: dict[np.dtype, int] = {
    numpy_dtype: enum for enum, (numpy_dtype, _, _) in _BY_ENUM.items() if enum != types_pb2.DT_HALF
}
_ENUM_BY_NUMPY[np.dtype(np.float16)] = types_pb2.DT_HALF

# numpy's NPY_MAXDIMS (TensorFlow allows 254, but an array cannot hold more).
MAX_RANK = 32
# A string element costs ~40 bytes decoded (a list slot, an array slot, a TensorFlow tstring)
# against 2 bytes in a TensorProto; this caps a tensor of empty strings at ~40 MB.
MAX_STRING_ELEMENTS = 1 << 20
# TensorFlow fills a tensor given fewer values than its shape by repeating the last one; the
# fill allocates memory that no request byte pays for, so it is bounded.
MAX_FILLED_ELEMENTS = 1 << 20
_INT64_MAX = (1 << 63) - 1
# Checked (dtype, serialized shape) -> layout; see _layout.
_LAYOUTS: dict[tuple[int, bytes], tuple[np.dtype, str, tuple[int, ...], int]] = {}
_MAX_LAYOUTS = 1024
_MAX_LAYOUT_KEY_BYTES = MAX_RANK * 13  # an unnamed dim serializes to at most 13 bytes


def numpy_dtype(dtype_enum: int) -> np.dtype:
    """The numpy dtype of a TensorFlow DataType enum value (object for strings).

    Raises:
        ServingError: INVALID_ARGUMENT for a DataType the server does not support.
    """
    return _supported(dtype_enum)[0]


def _supported(dtype_enum: int) -> tuple[np.dtype, str, str]:
    """(numpy dtype, value field, name) of a DataType the server supports."""
    try:
        return _BY_ENUM[dtype_enum]
    except KeyError:
        raise invalid_argument(f"Unsupported tensor dtype: {dtype_name(dtype_enum)}") from None


def dtype_name(dtype_enum: int) -> str:
    """TensorFlow's DataTypeString of a DataType enum value, e.g. ``float`` or ``int64``."""
    if dtype_enum in _BY_ENUM:
        return _BY_ENUM[dtype_enum][2]
    try:
        return types_pb2.DataType.Name(dtype_enum).removeprefix("DT_").lower()
    except ValueError:
        return f"dtype<{dtype_enum}>"


def dtype_enum_of(array: np.ndarray) -> int:
    """The TensorFlow DataType of a numpy array (bytes/str/object arrays are strings).

    Raises:
        ServingError: INVALID_ARGUMENT for a numpy dtype TensorFlow has no equivalent of.
    """
    kind = array.dtype.kind
    if kind in "OSU":
        return types_pb2.DT_STRING
    try:
        return _ENUM_BY_NUMPY[array.dtype]
    except KeyError:
        raise invalid_argument(f"Unsupported numpy dtype: {array.dtype}") from None


def shape_of(proto: tensor_pb2.TensorProto) -> tuple[int, ...]:
    """The shape in a TensorProto."""
    return tuple([dim.size for dim in proto.tensor_shape.dim])


def to_ndarray(proto: tensor_pb2.TensorProto, name: str = "") -> np.ndarray:
    """Decodes a TensorProto into a numpy array (strings become an object array of bytes).

    Args:
        proto: The tensor.
        name: The input alias, for error messages.

    Returns:
        The array, with the proto's dtype and shape.

    Raises:
        ServingError: INVALID_ARGUMENT ("tensor parsing error: <name>: <what is wrong>") when
            the shape is invalid, the values do not fit it, the tensor would take memory its
            bytes do not pay for, or the dtype is unsupported.
    """
    dtype, field, shape, size = _layout(proto, name)
    content = proto.tensor_content
    if content:
        if dtype.kind == "O":
            raise _parsing_error(name, "tensor_content is not supported for strings")
        expected = size * dtype.itemsize
        if len(content) != expected:
            raise _parsing_error(
                name,
                f"tensor_content has {len(content)} bytes, shape "
                f"{_shape_text(shape)} of {dtype_name(proto.dtype)} needs {expected}",
            )
        return np.frombuffer(content, dtype=dtype).reshape(shape)
    values = getattr(proto, field)
    count = len(values)
    if count == size:  # the common case: exactly the values the shape needs
        return _values_array(values, dtype, field, name).reshape(shape)
    if count > size and count != 1:
        raise _parsing_error(
            name, f"{count} values do not fit shape {_shape_text(shape)} of {size} elements"
        )
    if count < size and size > MAX_FILLED_ELEMENTS:
        raise _parsing_error(
            name,
            f"shape {_shape_text(shape)} promises {size} elements but the request carries "
            f"{count} (filling more than {MAX_FILLED_ELEMENTS} is refused)",
        )
    if count == 0:
        # TensorFlow fills a tensor given no values with zeros / empty strings.
        return np.full(shape, b"" if dtype.kind == "O" else 0, dtype=dtype)
    if count > size:  # one value for an empty shape
        return np.empty(shape, dtype=dtype)
    # TensorFlow repeats the last value to fill the tensor.
    data = _values_array(values, dtype, field, name)
    filled = np.empty(size, dtype=dtype)
    filled[:count] = data
    filled[count:] = data[-1]
    return filled.reshape(shape)


def _layout(proto: tensor_pb2.TensorProto, name: str) -> tuple[np.dtype, str, tuple, int]:
    """(numpy dtype, value field, shape, element count) of a TensorProto, checked.

    Requests repeat a few dtype and shape pairs, and reading a shape's dims costs more than the
    rest of decoding a small tensor: checked layouts are kept by the shape's serialized bytes.
    """
    key = (proto.dtype, proto.tensor_shape.SerializeToString())
    layout = _LAYOUTS.get(key)
    if layout is None:
        dtype, field, _ = _supported(proto.dtype)
        shape = shape_of(proto)
        layout = (dtype, field, shape, _checked_size(shape, dtype, name))
        # Bounded in count and in bytes: a client can send any number of shapes, and dim names.
        if len(_LAYOUTS) < _MAX_LAYOUTS and len(key[1]) <= _MAX_LAYOUT_KEY_BYTES:
            _LAYOUTS[key] = layout
    return layout


def _checked_size(shape: tuple[int, ...], dtype: np.dtype, name: str) -> int:
    """The element count of a shape, refusing shapes no array can have."""
    if len(shape) > MAX_RANK:
        raise _parsing_error(name, f"rank {len(shape)} exceeds the limit of {MAX_RANK}")
    size = math.prod(shape)  # Python ints: np.prod costs more than the rest of a small tensor
    if 0 < size <= MAX_FILLED_ELEMENTS and min(shape, default=1) > 0:
        return size  # small, no zero or negative dims: nothing more to check
    if any(d < 0 for d in shape):
        raise _parsing_error(name, f"negative dimension in shape {_shape_text(shape)}")
    if size > _INT64_MAX:
        raise _parsing_error(name, f"shape {_shape_text(shape)} has more than 2^63-1 elements")
    if math.prod(d for d in shape if d) * dtype.itemsize > _INT64_MAX:
        # numpy sizes even an empty array by its non-zero dims: [0, 2^62] cannot be allocated
        raise _parsing_error(name, f"shape {_shape_text(shape)} spans more than 2^63-1 bytes")
    return size


def _values_array(values, dtype: np.dtype, field: str, name: str) -> np.ndarray:
    """The typed ``*_val`` values of a TensorProto as a flat array."""
    if dtype.kind == "O":
        if len(values) > MAX_STRING_ELEMENTS:
            raise _parsing_error(
                name, f"{len(values)} string elements exceed the limit of {MAX_STRING_ELEMENTS}"
            )
        data = np.empty(len(values), dtype=object)
        data[:] = list(values)
        return data
    if field == "half_val":
        return np.array(values, dtype=np.uint16).view(np.float16)
    return np.array(list(values), dtype=dtype)  # a list converts faster than the container


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _parsing_error(name: str, problem: str):
    return invalid_argument(f"tensor parsing error: {name}: {problem}")


def to_tensor_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """Encodes a numpy array as a TensorProto with typed value fields.

    Raises:
        ServingError: INVALID_ARGUMENT for an unsupported dtype.
    """
    proto = tensor_pb2.TensorProto()
    fill_tensor_proto(proto, array)
    return proto


def fill_tensor_proto(proto: tensor_pb2.TensorProto, array: np.ndarray) -> None:
    """Writes a numpy array into an empty TensorProto (e.g. a response's output map entry).

    Raises:
        ServingError: INVALID_ARGUMENT for an unsupported dtype.
    """
    array = np.asarray(array)
    dtype_enum = dtype_enum_of(array)
    proto.dtype = dtype_enum
    dims = proto.tensor_shape.dim
    for d in array.shape:
        dims.add().size = d
    flat = array.reshape(-1)
    if dtype_enum == types_pb2.DT_STRING:
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in flat)
    elif dtype_enum == types_pb2.DT_HALF:
        proto.half_val.extend(flat.view(np.uint16).tolist())
    else:
        getattr(proto, _BY_ENUM[dtype_enum][1]).extend(flat.tolist())
