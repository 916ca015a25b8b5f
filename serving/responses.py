"""The response protos both front ends answer with: model specs, status and metadata.

gRPC returns these messages as they are; REST writes them as TF Serving's JSON. Neither front end
imports the other: both build on :mod:`service` and this module.
"""

from __future__ import annotations

from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    status_pb2,
)

from skewless.serving.errors import ERROR_CODE_NUMBER, invalid_argument
from skewless.serving.manager import VersionStatus
from skewless.serving.service import InferenceService, ModelSpec

SIGNATURE_DEF_FIELD = "signature_def"


def model_spec_from_proto(spec: model_pb2.ModelSpec) -> ModelSpec:
    """Converts a request's ModelSpec proto."""
    choice = spec.WhichOneof("version_choice")
    return ModelSpec(
        name=spec.name,
        version=spec.version.value if choice == "version" else None,
        label=spec.version_label if choice == "version_label" else "",
        signature_name=spec.signature_name,
    )


def fill_model_spec(
    proto: model_pb2.ModelSpec, name: str, version: int, signature_name: str | None
) -> None:
    """Fills the ModelSpec of a response with the version that served it."""
    proto.name = name
    proto.version.value = version
    if signature_name is not None:
        proto.signature_name = signature_name


def status_response(statuses: list[VersionStatus]) -> get_model_status_pb2.GetModelStatusResponse:
    """Builds a GetModelStatusResponse from version statuses."""
    response = get_model_status_pb2.GetModelStatusResponse()
    for status in statuses:
        response.model_version_status.add(
            version=status.version,
            state=get_model_status_pb2.ModelVersionStatus.State.Value(status.state),
            status=status_pb2.StatusProto(
                error_code=ERROR_CODE_NUMBER[status.error_code],
                error_message=status.error_message,
            ),
        )
    return response


def metadata_response(
    service: InferenceService, request: get_model_metadata_pb2.GetModelMetadataRequest
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """GetModelMetadata: the SignatureDefMap of the addressed version.

    Raises:
        ServingError: INVALID_ARGUMENT for no or unsupported metadata fields; NOT_FOUND as TF
            Serving for an unknown model or version.
    """
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    if not request.metadata_field:
        raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
    for field_name in request.metadata_field:
        if field_name != SIGNATURE_DEF_FIELD:
            raise invalid_argument(f"Metadata field {field_name} is not supported")
    with service.acquired(model_spec_from_proto(request.model_spec)) as model:
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        fill_model_spec(response.model_spec, model.name, model.version, None)
        response.metadata[SIGNATURE_DEF_FIELD].Pack(model.signature_def_map)
        return response
