"""One loaded model version: a TensorFlow session over a SavedModel, as TF Serving holds it.

The SavedModel's ``serve`` MetaGraph is loaded into its own graph and session (TF Serving's
SavedModelBundle), so signatures, method names and ``defaults`` come straight from the
SignatureDefs, and each (signature, inputs, outputs) triple is run through a session callable made
from ``CallableOptions`` (as TF Serving's ``Session::MakeCallable``): feeds and fetches are
resolved once, and a call converts the arrays in C++ and releases the GIL while TensorFlow
computes. ``Session.make_callable(fetches, feed_list)`` would go through ``Session.run``'s Python
feed handling on every call, which costs as much CPU, under the GIL, as this model's graph.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2
from tensorflow_serving.apis import get_model_metadata_pb2

from skewless.serving import tensors
from skewless.serving.errors import ServingError

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
DEFAULT_SIGNATURE = "serving_default"
SERVE_TAG = "serve"


@dataclass(frozen=True)
class TensorSpec:
    """A signature input or output.

    Attributes:
        alias: The key in the SignatureDef (what clients send).
        tensor_name: The graph tensor it maps to.
        dtype_enum: The TensorFlow DataType.
        dtype: The numpy dtype (object for strings).
        shape: Dimensions (-1 unknown), or None for an unknown rank.
    """

    alias: str
    tensor_name: str
    dtype_enum: int
    dtype: np.dtype
    shape: tuple[int, ...] | None

    @property
    def dtype_name(self) -> str:
        """TensorFlow's name of the dtype, e.g. ``float``."""
        return tensors.dtype_name(self.dtype_enum)


@dataclass(frozen=True)
class Signature:
    """A SignatureDef in the form the server uses.

    Attributes:
        name: The signature key.
        method_name: e.g. ``tensorflow/serving/predict``.
        inputs: Inputs by alias, sorted by alias.
        outputs: Outputs by alias, sorted by alias.
        defaults: Values used for inputs a request omits.
    """

    name: str
    method_name: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    defaults: Mapping[str, np.ndarray]


def _tensor_spec(alias: str, info: meta_graph_pb2.TensorInfo) -> TensorSpec:
    shape = None if info.tensor_shape.unknown_rank else tuple(
        d.size for d in info.tensor_shape.dim
    )
    try:
        dtype = tensors.numpy_dtype(info.dtype)
    except ServingError:
        dtype = np.dtype(object)
    return TensorSpec(alias, info.name, info.dtype, dtype, shape)


def signature_from_def(name: str, signature_def: meta_graph_pb2.SignatureDef) -> Signature:
    """Converts a SignatureDef proto into a :class:`Signature`."""
    inputs = {a: _tensor_spec(a, signature_def.inputs[a]) for a in sorted(signature_def.inputs)}
    outputs = {
        a: _tensor_spec(a, signature_def.outputs[a]) for a in sorted(signature_def.outputs)
    }
    defaults = {a: tensors.to_ndarray(p, a) for a, p in signature_def.defaults.items()}
    return Signature(name, signature_def.method_name, inputs, outputs, defaults)


def saved_model_signature(model_dir: str, name: str = DEFAULT_SIGNATURE) -> Signature:
    """A signature of the ``serve`` MetaGraph, read from ``saved_model.pb`` without loading.

    Raises:
        KeyError: The SavedModel has no ``serve`` MetaGraph or no such signature.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    with tf.io.gfile.GFile(f"{model_dir}/saved_model.pb", "rb") as handle:
        saved_model = saved_model_pb2.SavedModel.FromString(handle.read())
    for meta_graph in saved_model.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            if name not in meta_graph.signature_def:
                raise KeyError(f"{model_dir} has no signature {name!r}")
            return signature_from_def(name, meta_graph.signature_def[name])
    raise KeyError(f"{model_dir} has no {SERVE_TAG!r} MetaGraph")


_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def _status_from_tf_error(error: tf.errors.OpError) -> ServingError:
    code = _CODE_BY_NUMBER.get(error.error_code, grpc.StatusCode.UNKNOWN)
    return ServingError(code, error.message)


class LoadedModel:
    """A model version loaded into a TensorFlow session.

    Args:
        name: The model name.
        version: The version number.
        path: The version folder.
        session: The session holding the loaded graph.
        meta_graph: The loaded MetaGraphDef.
    """

    def __init__(
        self,
        name: str,
        version: int,
        path: str,
        session: tf.compat.v1.Session,
        meta_graph: meta_graph_pb2.MetaGraphDef,
    ) -> None:
        self.name = name
        self.version = version
        self.path = path
        self._session = session
        self.signature_def_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature_def in meta_graph.signature_def.items():
            self.signature_def_map.signature_def[key].CopyFrom(signature_def)
        self.signatures: dict[str, Signature] = {
            key: signature_from_def(key, sd) for key, sd in meta_graph.signature_def.items()
        }
        self._callables: dict[tuple[str, tuple[str, ...]], object] = {}
        self._callables_lock = threading.Lock()
        self._refs_lock = threading.Lock()
        self._refs = 0
        self._closing = False
        self._idle = threading.Event()
        self._idle.set()

    @classmethod
    def load(
        cls,
        name: str,
        version: int,
        path: str,
        session_config: tf.compat.v1.ConfigProto | None = None,
    ) -> LoadedModel:
        """Loads the ``serve`` MetaGraph of the SavedModel at ``path``.

        Raises:
            Exception: Whatever TensorFlow raises for an unreadable or invalid SavedModel.
        """
        graph = tf.Graph()
        session = tf.compat.v1.Session(graph=graph, config=session_config)
        try:
            with graph.as_default():
                meta_graph = tf.compat.v1.saved_model.loader.load(session, [SERVE_TAG], path)
        except Exception:
            session.close()
            raise
        graph.finalize()
        return cls(name, version, path, session, meta_graph)

    def acquire(self) -> bool:
        """Takes a reference for one request; False once the version is being unloaded."""
        with self._refs_lock:
            if self._closing:
                return False
            self._refs += 1
            self._idle.clear()
            return True

    def release(self) -> None:
        """Returns a reference taken by :meth:`acquire`."""
        with self._refs_lock:
            self._refs -= 1
            if self._refs == 0:
                self._idle.set()

    @property
    def closing(self) -> bool:
        """Whether the version is being unloaded (takes no new requests)."""
        return self._closing

    def close(self, drain_timeout: float = 60.0) -> None:
        """Stops taking requests, waits for those in flight, then frees the session."""
        with self._refs_lock:
            self._closing = True
        self._idle.wait(drain_timeout)
        self._callables.clear()
        self._session.close()

    def run(
        self,
        signature: Signature,
        input_aliases: Sequence[str],
        input_values: Sequence[np.ndarray],
        output_aliases: Sequence[str],
    ) -> list[np.ndarray]:
        """Runs a signature on already validated inputs (any thread).

        Args:
            signature: The signature to run.
            input_aliases: The input aliases fed, in the order of ``input_values``.
            input_values: Arrays of the signature's dtypes.
            output_aliases: The outputs to fetch.

        Returns:
            The output arrays, in the order of ``output_aliases``.

        Raises:
            ServingError: The TensorFlow error, with its status code.
        """
        key = (signature.name, tuple(input_aliases), tuple(output_aliases))
        runner = self._callables.get(key)
        if runner is None:
            runner = self._make_callable(signature, key)
        try:
            return runner(*input_values)
        except tf.errors.OpError as error:
            raise _status_from_tf_error(error) from None

    def _make_callable(self, signature: Signature, key):
        with self._callables_lock:
            runner = self._callables.get(key)
            if runner is None:
                _, inputs, outputs = key
                options = config_pb2.CallableOptions(
                    feed=[signature.inputs[a].tensor_name for a in inputs],
                    fetch=[signature.outputs[a].tensor_name for a in outputs],
                )
                runner = self._session._make_callable_from_options(options)
                self._callables[key] = runner
            return runner

    def __repr__(self) -> str:
        return f"LoadedModel({self.name!r}, version={self.version})"
