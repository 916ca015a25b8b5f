"""TF Serving's REST API JSON: request decoding and response encoding.

Pure functions following ``tensorflow_serving/util/json_tensor.cc``: the row (``instances``) and
columnar (``inputs``) formats, ``{"b64": ...}`` for bytes, NaN/Infinity, ``predictions`` /
``outputs`` / ``results`` and TF Serving's error messages.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import sys
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import orjson
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import classification_pb2, input_pb2, regression_pb2

from skewless.serving.errors import ServingError, invalid_argument
from skewless.serving.servable import TensorSpec
from skewless.serving.tensors import MAX_RANK, MAX_STRING_ELEMENTS

RequestFormat = Literal["row", "columnar"]

_NUMPY_OPTION = orjson.OPT_SERIALIZE_NUMPY
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_FLOAT32_MAX_INT = (1 << 24) - 1
_FLOAT64_MAX_INT = (1 << 53) - 1
_UINT64_MAX = (1 << 64) - 1
_INT64_MIN = -(1 << 63)
# What a short list may hold to convert exactly: integers in these ranges (for floats, those a
# float represents exactly) and, for float dtypes, finite floats up to these magnitudes.
_SHORT_INT_RANGES = {
    np.dtype(np.float32): (-_FLOAT32_MAX_INT, _FLOAT32_MAX_INT),
    np.dtype(np.float64): (-_FLOAT64_MAX_INT, _FLOAT64_MAX_INT),
    **{np.dtype(t): (int(np.iinfo(t).min), int(np.iinfo(t).max)) for t in (
        np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)},
}
_SHORT_FLOAT_LIMITS = {np.dtype(np.float32): _FLOAT32_MAX, np.dtype(np.float64): sys.float_info.max}
# orjson's nesting limit; the stdlib fallback (for NaN/Infinity) stops at Python's recursion limit.
MAX_JSON_DEPTH = 1024
_NUMBER = re.compile(rb"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_INT_RANGES = {
    np.dtype(np.int64): (-(1 << 63), (1 << 63) - 1),
    np.dtype(np.int32): (-(1 << 31), (1 << 31) - 1),
    np.dtype(np.int16): (-(1 << 31), (1 << 31) - 1),
    np.dtype(np.int8): (-(1 << 31), (1 << 31) - 1),
    np.dtype(np.uint8): (-(1 << 31), (1 << 31) - 1),
    np.dtype(np.uint32): (0, (1 << 32) - 1),
    np.dtype(np.uint64): (0, (1 << 64) - 1),
}


# ---------------------------------------------------------------------------------------------
# Parsing


def parse_json(body: bytes) -> dict[str, Any]:
    """Parses a request body; NaN, Infinity and -Infinity are accepted as by TF Serving.

    Raises:
        ServingError: INVALID_ARGUMENT ``JSON Parse error: ...`` or ``... Is not object``.
    """
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        if error.msg == "depth limit exceeded":
            raise _too_deep(error.pos) from None
        # orjson rejects the NaN/Infinity tokens TF Serving (rapidjson) accepts, and numbers
        # beyond a double, which rapidjson rejects with its own message.
        doc = _parse_json_with_constants(body)
    if not isinstance(doc, dict):
        raise invalid_argument(f"JSON Value: {_json_text(doc)} Is not object")
    return doc


class _NumberTooBig(ValueError):
    pass


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NumberTooBig(text)
    return value


def _int_as_rapidjson(text: str) -> int | float:
    # rapidjson keeps integers that fit 64 bits and reads the others as doubles.
    if len(text) <= 20:
        value = int(text)
        if _INT64_MIN <= value <= _UINT64_MAX:
            return value
    return _finite_float(text)


def _too_deep(offset: int | None) -> ServingError:
    where = f" at offset: {offset}" if offset is not None else ""
    return invalid_argument(
        f"JSON Parse error: Nesting deeper than {MAX_JSON_DEPTH} levels{where}"
    )


def _parse_json_with_constants(body: bytes) -> Any:
    try:
        return json.loads(body, parse_float=_finite_float, parse_int=_int_as_rapidjson)
    except _NumberTooBig as error:
        literal = str(error).encode()
        offset = next((m.start() for m in _NUMBER.finditer(body) if m.group() == literal), 0)
        raise invalid_argument(
            f"JSON Parse error: Number too big to be stored in double. at offset: {offset}"
        ) from None
    except RecursionError:
        raise _too_deep(None) from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        offset = getattr(error, "pos", getattr(error, "start", 0))
        reason = getattr(error, "msg", getattr(error, "reason", str(error)))
        raise invalid_argument(f"JSON Parse error: {reason} at offset: {offset}") from None


def signature_name_of(doc: Mapping[str, Any]) -> str:
    """The optional ``signature_name`` of a request ("" when absent).

    Raises:
        ServingError: INVALID_ARGUMENT when it is not a string.
    """
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument(
            f"JSON Value: {_json_text(doc)} not formatted correctly. 'signature_name' key "
            "must be a string value."
        )
    return name


def _json_text(value: Any, limit: int = 200) -> str:
    try:
        text = json.dumps(value, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        text = "<a value nested too deeply to show>"
    return text if len(text) <= limit else text[:limit] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _type_error(value: Any, spec: TensorSpec) -> ServingError:
    return invalid_argument(
        f"JSON Value: {_json_text(value)} Type: {_json_type(value)} is not of expected type: "
        f"{spec.dtype_name}"
    )


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _decode_b64(value: Any) -> bytes:
    if not _is_b64(value):
        raise invalid_argument(
            f"JSON Value: {_json_text(value)} not formatted correctly for base64 data"
        )
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode") from None


def _shape_of(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _check_value(value: Any, spec: TensorSpec) -> Any:
    """Checks one leaf value against the dtype and returns what goes into the array."""
    kind = spec.dtype.kind
    if kind == "O":
        if isinstance(value, str):
            return value.encode()
        if isinstance(value, dict):
            return _decode_b64(value)
        raise _type_error(value, spec)
    if isinstance(value, dict):
        raise _type_error(value, spec)
    if kind == "f":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(value, spec)
        if math.isfinite(value):
            is_f32 = spec.dtype.itemsize == 4
            limit_int = _FLOAT32_MAX_INT if is_f32 else _FLOAT64_MAX_INT
            target = "float" if is_f32 else "double"
            if isinstance(value, int) and abs(value) > limit_int:
                raise invalid_argument(
                    f"Cannot convert JSON value: {value} to {target} without loss of precision."
                )
            if is_f32 and isinstance(value, float) and abs(value) > _FLOAT32_MAX:
                raise invalid_argument(
                    f"Cannot convert JSON value: {value} to {target} without loss of precision."
                )
        return value
    if kind == "b":
        if not isinstance(value, bool):
            raise _type_error(value, spec)
        return value
    # Integers: JSON numbers without a fraction, in range.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(value, spec)
    low, high = _INT_RANGES.get(spec.dtype, (-(1 << 63), (1 << 63) - 1))
    if not low <= value <= high:
        raise _type_error(value, spec)
    return value


def _leaves(value: Any, level: int, shape: list[int], spec: TensorSpec, out: list) -> None:
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise invalid_argument(
                f"JSON Value: {_json_text(value)} found at incorrect level: {level + 1} in the "
                f"JSON DOM. Expected at level: {rank}"
            )
        out.append(_check_value(value, spec))
        return
    if level >= rank:
        raise invalid_argument(
            f"Encountered list at unexpected level: {level} expected < {rank}"
        )
    if len(value) != shape[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} expected "
            f"size: {shape[level]}"
        )
    for item in value:
        _leaves(item, level + 1, shape, spec, out)


# Profiled under load, three numpy reductions per column (finite, |max|, min/max) cost more than
# the conversion itself for the few values of a single-row request; short lists are checked in
# Python instead.
_SHORT_LIST = 16


def _short_numbers(values: list, spec: TensorSpec) -> np.ndarray | None:
    """The checked array of a short flat list of plain numbers; None for anything else."""
    ints = _SHORT_INT_RANGES.get(spec.dtype)
    if ints is None:
        return None
    low, high = ints
    limit = _SHORT_FLOAT_LIMITS.get(spec.dtype)
    for value in values:
        kind = type(value)
        if kind is int:
            if not low <= value <= high:
                return None
        elif kind is not float or limit is None or not -limit <= value <= limit:  # NaN fails
            return None
    return np.array(values, dtype=spec.dtype)


def _fast_array(value: Any, spec: TensorSpec) -> np.ndarray | None:
    """A numpy conversion for the common well-formed cases; None to take the checked path."""
    kind = spec.dtype.kind
    if kind in "fiu":
        if type(value) is list and len(value) <= _SHORT_LIST:
            short = _short_numbers(value, spec)
            if short is not None:
                return short
        if type(value) is list:
            try:
                array = np.asarray(value)
            except ValueError:
                return None
        elif type(value) in (int, float):
            array = np.asarray(value)
        else:
            return None
        if kind == "f" and array.dtype.kind == "f" and np.isfinite(array).all():
            if spec.dtype.itemsize == 4 and np.abs(array).max(initial=0) > _FLOAT32_MAX:
                return None
            return array.astype(spec.dtype, copy=False)
        if array.dtype.kind == "i" and (kind in "iu" or np.abs(array).max(
                initial=0) <= _FLOAT32_MAX_INT):
            info = np.iinfo(spec.dtype) if kind in "iu" else None
            if info is None or (array.min(initial=0) >= info.min
                                and array.max(initial=0) <= info.max):
                return array.astype(spec.dtype, copy=False)
        return None
    if kind == "O":
        if type(value) is str:
            array = np.empty((), dtype=object)
            array[()] = value.encode()
            return array
        if type(value) is list and value and all(type(v) is str for v in value):
            if len(value) > MAX_STRING_ELEMENTS:
                raise _too_many_strings(len(value))
            array = np.empty(len(value), dtype=object)
            array[:] = [v.encode() for v in value]
            return array
    return None


def _too_many_strings(count: int) -> ServingError:
    return invalid_argument(
        f"A string tensor of {count} elements exceeds the limit of {MAX_STRING_ELEMENTS}"
    )


def json_to_array(value: Any, spec: TensorSpec, max_rank: int = MAX_RANK) -> np.ndarray:
    """Converts one JSON value (scalar or nested lists) to an array of the input's dtype.

    Raises:
        ServingError: INVALID_ARGUMENT with TF Serving's messages for wrong types, ragged lists,
            bad base64 or lossy numbers.
    """
    array = _fast_array(value, spec)
    if array is not None:
        return array
    shape = _shape_of(value)
    if len(shape) > max_rank:
        raise invalid_argument(
            f"JSON Value: {_json_text(value)} nests lists {len(shape)} deep: a tensor has at "
            f"most {max_rank} dimensions here"
        )
    if spec.dtype.kind == "O" and math.prod(shape) > MAX_STRING_ELEMENTS:
        raise _too_many_strings(math.prod(shape))
    leaves: list = []
    _leaves(value, 0, shape, spec, leaves)
    if spec.dtype.kind == "O":
        array = np.empty(len(leaves), dtype=object)
        array[:] = leaves
        return array.reshape(shape)
    return np.array(leaves, dtype=spec.dtype).reshape(shape)


def decode_predict_request(
    doc: Mapping[str, Any],
    input_specs: Mapping[str, TensorSpec],
    optional: frozenset[str] = frozenset(),
) -> tuple[dict[str, np.ndarray], RequestFormat]:
    """Decodes the tensors of a predict request in the row or columnar format.

    Args:
        doc: The parsed request body.
        input_specs: The signature's inputs by alias.
        optional: Inputs the signature has ``defaults`` for, which a request may leave out.

    Returns:
        Input alias to array, and which format the request used.

    Raises:
        ServingError: INVALID_ARGUMENT with TF Serving's messages (both or neither of
            ``instances``/``inputs``, missing or extra keys, wrong types, ragged rows, ...).
    """
    if not input_specs:
        raise invalid_argument("Failed to get input map for signature: DEFAULT")
    has_instances = "instances" in doc
    has_inputs = "inputs" in doc
    if has_instances and has_inputs:
        raise invalid_argument(
            f"JSON Value: {_json_text(doc)} Not formatted correctly expecting only one of "
            "'inputs' or 'instances' keys to exist "
        )
    if has_instances:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise invalid_argument(
                f"JSON Value: {_json_text(doc)} Excepting 'instances' to be an list/array"
            )
        if not instances:
            raise invalid_argument(f"JSON Value: {_json_text(doc)} No values in 'instances' array")
        return _decode_instances(instances, input_specs, optional), "row"
    if has_inputs:
        return _decode_inputs(doc["inputs"], input_specs, optional), "columnar"
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def _is_named_object(value: Any) -> bool:
    return isinstance(value, dict) and not _is_b64(value)


def _decode_instances(
    instances: list, specs: Mapping[str, TensorSpec], optional: frozenset[str]
) -> dict[str, np.ndarray]:
    if not _is_named_object(instances[0]):
        if len(specs) - len(optional & set(specs)) > 1:
            raise invalid_argument(
                "instances is a plain list, but expecting list of objects as multiple input "
                "tensors required as per tensorinfo_map"
            )
        alias, spec = _only_required(specs, optional)
        for index, item in enumerate(instances):
            if _is_named_object(item):
                raise invalid_argument(
                    f"Expecting value/list but got object at item {index} of input list"
                )
        return {alias: _column(instances, spec, alias, keyed=False)}
    names = set(specs)
    present = set(instances[0]) & optional
    required = names - optional | present
    for index, item in enumerate(instances):
        if not _is_named_object(item):
            raise invalid_argument(
                f"Expecting object but got list at item {index} of input list"
            )
        if item.keys() != required:
            for key in item:
                if key not in specs:
                    raise invalid_argument(
                        f"Failed to process element: {index} key: {key} of 'instances' list. "
                        f"Error: INVALID_ARGUMENT: JSON object: does not have named input: {key}"
                    )
            raise invalid_argument(
                f"Failed to process element: {index} of 'instances' list. JSON object: "
                f"{_json_text(item)} keys must be equal to: {','.join(sorted(required))}"
            )
    return {
        alias: _column([item[alias] for item in instances], spec, alias, keyed=True)
        for alias, spec in specs.items()
        if alias in required
    }


def _only_required(
    specs: Mapping[str, TensorSpec], optional: frozenset[str]
) -> tuple[str, TensorSpec]:
    required = [(a, s) for a, s in specs.items() if a not in optional]
    return required[0] if len(required) == 1 else next(iter(specs.items()))


def _column(values: list, spec: TensorSpec, alias: str, keyed: bool) -> np.ndarray:
    array = _fast_array(values, spec)
    if array is not None and array.ndim >= 1:
        return array
    arrays = []
    first_shape = None
    if spec.dtype.kind == "O" and len(values) > MAX_STRING_ELEMENTS:
        raise _too_many_strings(len(values))
    for index, value in enumerate(values):
        try:
            item = json_to_array(value, spec, MAX_RANK - 1)  # the rows add a dimension
            if first_shape is None:
                first_shape = item.shape
            elif item.size != int(np.prod(first_shape)):
                raise invalid_argument(
                    f"Expecting tensor size: {int(np.prod(first_shape))} but got: {item.size}"
                )
            elif item.shape != first_shape:
                raise invalid_argument(
                    f"Expecting shape {list(first_shape)} but got: {list(item.shape)}"
                )
        except ServingError as error:
            key = f" key: {alias}" if keyed else ""
            raise invalid_argument(
                f"Failed to process element: {index}{key} of 'instances' list. Error: "
                f"INVALID_ARGUMENT: {error.message}"
            ) from None
        arrays.append(item)
    return np.stack(arrays)


def _decode_inputs(
    value: Any, specs: Mapping[str, TensorSpec], optional: frozenset[str]
) -> dict[str, np.ndarray]:
    if not isinstance(value, dict) or _is_b64(value):
        if len(specs) - len(optional & set(specs)) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        alias, spec = _only_required(specs, optional)
        return {alias: json_to_array(value, spec)}
    decoded = {}
    for alias, spec in specs.items():
        if alias not in value and alias in optional:
            continue
        if alias not in value:
            raise invalid_argument(f"Missing named input: {alias} in 'inputs' object.")
        decoded[alias] = json_to_array(value[alias], spec)
    # Like TF Serving, names in 'inputs' that the signature does not have are ignored.
    return decoded


# ---------------------------------------------------------------------------------------------
# Encoding


def _jsonable(name: str, array: np.ndarray) -> Any:
    """An output array in a form orjson writes as TF Serving would (b64 for *_bytes)."""
    if array.dtype.kind == "O" or array.dtype.kind in "SU":
        if name.endswith("_bytes"):
            convert = lambda v: {"b64": base64.b64encode(v).decode()}  # noqa: E731
        else:
            convert = lambda v: v.decode("utf-8", "replace") if isinstance(  # noqa: E731
                v, bytes) else str(v)
        flat = [convert(v) for v in array.reshape(-1).tolist()]
        return np.array(flat, dtype=object).reshape(array.shape).tolist() if array.ndim else flat[0]
    if array.dtype == np.float16:
        return array.astype(np.float32)
    return np.ascontiguousarray(array)


def _finite(outputs: Mapping[str, np.ndarray]) -> bool:
    return all(a.dtype.kind != "f" or np.isfinite(a).all() for a in outputs.values())


def _dumps(payload: Any, finite: bool) -> bytes:
    if finite:
        return orjson.dumps(payload, option=_NUMPY_OPTION)
    # orjson writes NaN as null; TF Serving writes NaN / Infinity / -Infinity.
    return json.dumps(_to_python(payload), separators=(",", ":")).encode()


def _to_python(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f":
            return _to_python(np.array([float(str(v)) for v in value.reshape(-1)],
                                       dtype=object).reshape(value.shape).tolist()
                              if value.ndim else float(str(value)))
        return value.tolist()
    if isinstance(value, np.generic):
        return float(str(value)) if value.dtype.kind == "f" else value.item()
    if isinstance(value, dict):
        return {k: _to_python(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_python(v) for v in value]
    return value


def encode_predict_response(outputs: Mapping[str, np.ndarray], fmt: RequestFormat) -> bytes:
    """Encodes Predict outputs as TF Serving does for the request's format.

    Row format: ``{"predictions": [...]}``, one entry per row (an object of all outputs, or the
    bare value when there is one output). Columnar: ``{"outputs": ...}``.

    Raises:
        ServingError: INVALID_ARGUMENT for row format with outputs of different batch sizes.
    """
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    finite = _finite(outputs)
    if fmt == "columnar":
        if len(outputs) == 1:
            (name, array), = outputs.items()
            return _dumps({"outputs": _jsonable(name, array)}, finite)
        return _dumps({"outputs": {n: _jsonable(n, a) for n, a in outputs.items()}}, finite)
    batch = -1
    for name, array in outputs.items():
        if array.ndim == 0:
            raise invalid_argument(f"Tensor name: {name} has no shape information ")
        if batch >= 0 and array.shape[0] != batch:
            raise invalid_argument(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} "
                f"expecting: {batch}"
            )
        batch = array.shape[0]
    if len(outputs) == 1:
        (name, array), = outputs.items()
        return _dumps({"predictions": _jsonable(name, array)}, finite)
    columns = {n: _jsonable(n, a) for n, a in outputs.items()}
    names = list(columns)
    rows = [dict(zip(names, values, strict=True)) for values in zip(
        *(columns[n] for n in names), strict=True)]
    return _dumps({"predictions": rows}, finite)


def encode_error(message: str) -> bytes:
    """The body of an error response: ``{"error": message}``."""
    return orjson.dumps({"error": message})


def encode_classification_result(result: classification_pb2.ClassificationResult) -> bytes:
    """``{"results": [[[label, score], ...], ...]}`` as TF Serving writes a classification.

    Raises:
        ServingError: INVALID_ARGUMENT for an empty result.
    """
    if not result.classifications:
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    results = [
        [[c.label, np.float32(c.score)] for c in classifications.classes]
        for classifications in result.classifications
    ]
    finite = all(math.isfinite(c.score) for cs in result.classifications for c in cs.classes)
    return _dumps({"results": results}, finite)


def encode_regression_result(result: regression_pb2.RegressionResult) -> bytes:
    """``{"results": [value, ...]}`` as TF Serving writes a regression.

    Raises:
        ServingError: INVALID_ARGUMENT for an empty result.
    """
    if not result.regressions:
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    values = np.array([r.value for r in result.regressions], dtype=np.float32)
    return _dumps({"results": values}, bool(np.isfinite(values).all()))


# ---------------------------------------------------------------------------------------------
# Classify / Regress requests


def decode_examples_request(doc: Mapping[str, Any]) -> input_pb2.Input:
    """Decodes the ``examples`` (and optional ``context``) of a classify/regress request.

    Raises:
        ServingError: INVALID_ARGUMENT with TF Serving's messages.
    """
    request_input = input_pb2.Input()
    examples = doc.get("examples")
    if "examples" not in doc:
        raise invalid_argument(
            f"JSON Value: {_json_text(doc)} When method is classify, key 'examples' is expected "
            "and was not found"
        )
    if not isinstance(examples, list):
        raise invalid_argument(
            f"JSON Value: {_json_text(doc)} Expecting 'examples' value to be an list/array"
        )
    if not examples:
        raise invalid_argument(f"JSON Value: {_json_text(doc)} 'examples' value is an empty array")
    if "context" in doc:
        with_context = request_input.example_list_with_context
        _fill_example(doc["context"], with_context.context)
        for value in examples:
            _fill_example(value, with_context.examples.add())
    else:
        for value in examples:
            _fill_example(value, request_input.example_list.examples.add())
    return request_input


def _fill_example(value: Any, example: example_pb2.Example) -> None:
    if not isinstance(value, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {_json_type(value)}")
    for name, content in value.items():
        feature = feature_pb2.Feature()
        for item in content if isinstance(content, list) else [content]:
            _add_feature_value(item, name, feature)
        example.features.feature[name].CopyFrom(feature)


def _kind_error(name: str, feature: feature_pb2.Feature) -> ServingError:
    kinds = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}
    kind = kinds.get(feature.WhichOneof("kind"), "UNKNOWN")
    return invalid_argument(f"Unexpected element type in feature: {name} expecting type: {kind}")


def _add_feature_value(value: Any, name: str, feature: feature_pb2.Feature) -> None:
    kind = feature.WhichOneof("kind")
    if value is None or isinstance(value, list) or (
            isinstance(value, dict) and not _is_b64(value)):
        raise invalid_argument(
            f"Feature: {name} has element with unexpected JSON type: {_json_type(value)}"
        )
    if isinstance(value, bool) or (isinstance(value, int)):
        if kind not in (None, "int64_list"):
            raise _kind_error(name, feature)
        if not isinstance(value, bool) and value > (1 << 63) - 1:
            raise invalid_argument(f"Feature: {name} has uint64 element. Only int64 is supported.")
        feature.int64_list.value.append(int(value))
    elif isinstance(value, float):
        if kind not in (None, "float_list"):
            raise _kind_error(name, feature)
        if math.isfinite(value) and abs(value) > _FLOAT32_MAX:
            raise invalid_argument(
                f"Cannot convert JSON value: {value} to float without loss of precision."
            )
        feature.float_list.value.append(value)
    else:
        if kind not in (None, "bytes_list"):
            raise _kind_error(name, feature)
        feature.bytes_list.value.append(
            _decode_b64(value) if isinstance(value, dict) else value.encode()
        )
