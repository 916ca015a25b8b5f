"""Runs the pipeline locally, one component at a time, reporting each start and end."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import yaml
from tfx.dsl.compiler import constants
from tfx.orchestration import metadata
from tfx.orchestration.local import local_dag_runner, runner_utils
from tfx.orchestration.portable import launcher, runtime_parameter_utils
from tfx.proto.orchestration import pipeline_pb2

from skewless.pipeline.build import create_pipeline, tuning_plan
from skewless.pipeline.run_config import PipelineConfig
from skewless.pipeline.store import Execution, connect, record_run_config, state_name


@dataclasses.dataclass(frozen=True)
class NodeEvent:
    """A component starting (state None) or ending: executed, cached or failed, with seconds."""

    index: int
    total: int
    node_id: str
    state: str | None = None
    seconds: float = 0.0


class ComponentFailed(RuntimeError):
    """A component raised; `node_id` names it and `__cause__` holds the original error."""

    def __init__(self, node_id: str, error: BaseException):
        super().__init__(f"{node_id} failed: {error}")
        self.node_id = node_id


class ProgressDagRunner(local_dag_runner.LocalDagRunner):
    """LocalDagRunner that reports each component's start and end to a callback."""

    def __init__(self, on_event: Callable[[NodeEvent], None]):
        super().__init__()
        self._on_event = on_event
        self.run_id: str | None = None

    def run_with_ir(self, pipeline: pipeline_pb2.Pipeline, run_options=None) -> None:
        self.run_id = datetime.datetime.now().isoformat()
        runtime_parameter_utils.substitute_runtime_parameter(
            pipeline, {constants.PIPELINE_RUN_ID_PARAMETER_NAME: self.run_id},
        )
        deployment = runner_utils.extract_local_deployment_config(pipeline)
        which = deployment.metadata_connection_config.WhichOneof("connection_config")
        connection = getattr(deployment.metadata_connection_config, which)
        nodes = [n.pipeline_node for n in pipeline.nodes]
        for index, node in enumerate(nodes, start=1):
            node_id = node.node_info.id
            self._on_event(NodeEvent(index, len(nodes), node_id))
            started = time.monotonic()
            node_launcher = launcher.Launcher(
                pipeline_node=node,
                mlmd_connection=metadata.Metadata(connection),
                pipeline_info=pipeline.pipeline_info,
                pipeline_runtime_spec=pipeline.runtime_spec,
                executor_spec=runner_utils.extract_executor_spec(deployment, node_id),
                custom_driver_spec=runner_utils.extract_custom_driver_spec(deployment, node_id),
            )
            try:
                info = node_launcher.launch()
            except Exception as error:  # noqa: BLE001 - reported, then re-raised with the node id
                self._on_event(NodeEvent(index, len(nodes), node_id, "failed",
                                         time.monotonic() - started))
                raise ComponentFailed(node_id, error) from error
            state = "resolved"
            if "resolver" not in node.node_info.type.name.lower() and info is not None:
                with metadata.Metadata(connection) as m:
                    [execution] = m.store.get_executions_by_id([info.execution_id])
                state = state_name(execution) if execution.last_known_state in (
                    Execution.COMPLETE, Execution.CACHED) else "resolved"
            self._on_event(NodeEvent(index, len(nodes), node_id, state,
                                     time.monotonic() - started))


@contextlib.contextmanager
def logs_to_file(log_file: Path) -> Iterator[TextIO]:
    """Sends Python logging and the process's stdout/stderr to `log_file`.

    Yields:
        A stream to the original terminal, for progress lines.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved_out), "w", buffering=1)
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    with log_file.open("a") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        handler = logging.StreamHandler(sink)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.handlers = [handler]
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
        try:
            yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            root.handlers, root.level = saved_handlers, saved_level
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
            terminal.close()


def run_pipeline(
    config: PipelineConfig,
    on_event: Callable[[NodeEvent], None],
    **pipeline_kwargs,
) -> None:
    """Runs the whole pipeline (or the part `pipeline_kwargs` selects) with MLMD from the config.

    Raises:
        ComponentFailed: a component raised; nothing after it ran.
    """
    config.pipeline.output_dir.mkdir(parents=True, exist_ok=True)
    if config.metadata.sqlite is not None:
        config.metadata.sqlite.parent.mkdir(parents=True, exist_ok=True)
    if config.tuning is not None and config.tuning.reuse == "latest" and not pipeline_kwargs.get(
            "stop_after_schema"):
        from skewless.pipeline.results import reusable_hyperparameters

        pipeline_kwargs["reuse_hyperparameters"] = reusable_hyperparameters(
            config, tuning_plan(config).fingerprint())
    runner = ProgressDagRunner(on_event)
    try:
        runner.run(create_pipeline(config, **pipeline_kwargs))
    finally:
        if runner.run_id is not None:
            record_run_config(connect(config, readonly=False), runner.run_id, config_text(config))


def config_text(config: PipelineConfig) -> str:
    """The text of the config a run was given: its YAML file, or the validated values as YAML
    when it was built in code."""
    if config.source is not None and Path(config.source).is_file():
        return Path(config.source).read_text()
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
