"""Turns a Predict / Classify / Regress request into one run of a loaded model.

Each ``plan_*`` function is pure: it checks the request against the model's signatures (with TF
Serving's messages) and returns a :class:`PlannedRun`; the caller decides where it runs (inline
for warm-up, on a thread, or merged with others by the batch scheduler).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
import numpy as np
from tensorflow_serving.apis import input_pb2

from skewless.serving import classify_regress
from skewless.serving.errors import ServingError, failed_precondition, invalid_argument
from skewless.serving.servable import (
    CLASSIFY_METHOD,
    DEFAULT_SIGNATURE,
    PREDICT_METHOD,
    REGRESS_METHOD,
    LoadedModel,
    Signature,
)
from skewless.serving.validation import batch_size, prepare_inputs, select_outputs


@dataclass(frozen=True)
class PlannedRun:
    """A validated model call.

    Attributes:
        model: The loaded version to run.
        signature: The signature run.
        input_aliases: Fed inputs, in the order of ``input_values``.
        input_values: Arrays of the signature's dtypes.
        output_aliases: Fetched outputs.
        size: The batch size (0th dimension), or -1 when inputs cannot be batched.
    """

    model: LoadedModel
    signature: Signature
    input_aliases: tuple[str, ...]
    input_values: list[np.ndarray]
    output_aliases: tuple[str, ...]
    size: int

    def run(self, values: list[np.ndarray] | None = None) -> list[np.ndarray]:
        """Runs the model on this plan's inputs (or on merged ``values``) in this thread."""
        return self.model.run(
            self.signature,
            self.input_aliases,
            self.input_values if values is None else values,
            self.output_aliases,
        )

    def outputs(self, arrays: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Names the output arrays by alias."""
        return dict(zip(self.output_aliases, arrays, strict=True))


def predict_signature(model: LoadedModel, signature_name: str, *, rest: bool = False) -> Signature:
    """The signature a Predict request names (``serving_default`` when empty).

    Args:
        model: The acquired version.
        signature_name: The request's signature name.
        rest: Whether the request came over REST, which TF Serving answers differently for a
            missing signature (its REST handler looks the signature up to decode the JSON).

    Raises:
        ServingError: FAILED_PRECONDITION (gRPC) or INVALID_ARGUMENT (REST) when the model has
            no such signature; INTERNAL for a signature of another method.
    """
    key = signature_name or DEFAULT_SIGNATURE
    signature = model.signatures.get(key)
    if signature is None and rest:
        raise invalid_argument(f'Serving signature name: "{key}" not found in signature def')
    if signature is None:
        raise failed_precondition(f'Serving signature key "{key}" not found.')
    if signature.method_name not in (PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD):
        raise ServingError(
            grpc.StatusCode.INTERNAL,
            "Expected prediction signature method_name to be one of "
            f"{{{PREDICT_METHOD}, {CLASSIFY_METHOD}, {REGRESS_METHOD}}}. "
            f"Was: {signature.method_name}",
        )
    return signature


def _batchable_size(values: Sequence[np.ndarray]) -> int:
    try:
        return batch_size((), values)
    except ServingError:
        return -1


def plan_predict(
    model: LoadedModel,
    signature: Signature,
    inputs: Mapping[str, np.ndarray],
    output_filter: Sequence[str] = (),
) -> PlannedRun:
    """Checks a Predict request against its signature and plans its run.

    Raises:
        ServingError: As TF Serving for missing/extra inputs, wrong dtypes or shapes, or a bad
            output filter.
    """
    aliases, values = prepare_inputs(signature, inputs)
    outputs = select_outputs(signature, output_filter)
    return PlannedRun(model, signature, aliases, values, outputs, _batchable_size(values))


def plan_classify(
    model: LoadedModel, signature_name: str, request_input: input_pb2.Input
) -> PlannedRun:
    """Checks a Classify request and plans its run on the serialized examples.

    Raises:
        ServingError: As TF Serving for a missing or non-classification signature or no examples.
    """
    signature = classify_regress.classification_signature(model.signatures, signature_name)
    examples = classify_regress.serialize_input(request_input)
    outputs = classify_regress.classification_outputs(signature)
    return PlannedRun(
        model, signature, (classify_regress.CLASSIFY_INPUTS,), [examples], outputs, len(examples)
    )


def plan_regress(
    model: LoadedModel, signature_name: str, request_input: input_pb2.Input
) -> PlannedRun:
    """Checks a Regress request and plans its run on the serialized examples.

    Raises:
        ServingError: As TF Serving for a missing or non-regression signature or no examples.
    """
    signature = classify_regress.regression_signature(model.signatures, signature_name)
    examples = classify_regress.serialize_input(request_input)
    return PlannedRun(
        model,
        signature,
        (classify_regress.REGRESS_INPUTS,),
        [examples],
        (classify_regress.REGRESS_OUTPUTS,),
        len(examples),
    )
