"""ML Metadata as a model registry: runs, trained and pushed models, and a model's lineage.

Reads what both runners record: `skewless run` (node and pipeline_run contexts) and TFX's
InteractiveContext (component_id properties and one run context per component run).
"""

from __future__ import annotations

import dataclasses
import html
import math

import pandas as pd
import tensorflow as tf
import tensorflow_model_analysis as tfma
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from skewless.components.baseline_model.executor import BASELINE_KEY
from skewless.components.baseline_model.executor import VERSION as BASELINE_VERSION
from skewless.components.row_count_check.executor import count_statistics_at
from skewless.pipeline.build import EXAMPLE_GEN, STATISTICS_GEN
from skewless.pipeline.results import HYPERPARAMETERS, best_values, overall_metrics, split_names
from skewless.pipeline.store import (
    RUN_CONTEXT_TYPE,
    is_blessed,
    is_pushed,
    pushed_destination,
    pushed_version,
    state_name,
)
from skewless.transforms.task import TASKS, Task

Artifact = metadata_store_pb2.Artifact
Execution = metadata_store_pb2.Execution
Event = metadata_store_pb2.Event

# BASELINE_KEY: BaselineModel's output and the Evaluator's input holding the served model;
# lineage does not follow it.
# Outputs shown in a lineage beside the output that was used: the evaluation behind a blessing.
SIBLING_OUTPUTS = ("ModelEvaluation",)


def _time(millis: int) -> pd.Timestamp | None:
    return pd.Timestamp(millis, unit="ms").floor("s") if millis else None


def _key(event: metadata_store_pb2.Event) -> str:
    return next((step.key for step in event.path.steps if step.key), "")


class Registry:
    """One pipeline's records in an MLMD store, read as a model registry.

    Args:
        store: the MLMD store, e.g. `skewless.pipeline.store.connect(config)`.
        pipeline_name: the pipeline whose runs and models to read.
    """

    def __init__(self, store: metadata_store.MetadataStore, pipeline_name: str) -> None:
        self.store = store
        self.pipeline_name = pipeline_name
        context = store.get_context_by_type_and_name("pipeline", pipeline_name)
        self._executions = (
            {e.id: e for e in store.get_executions_by_context(context.id)} if context else {}
        )
        self._artifacts = (
            {a.id: a for a in store.get_artifacts_by_context(context.id)} if context else {}
        )
        self._events = store.get_events_by_execution_ids(list(self._executions))
        self._node_ids = self._read_node_ids()

    def _read_node_ids(self) -> dict[int, str]:
        prefix = f"{self.pipeline_name}."
        ids = {}
        for context in self.store.get_contexts_by_type("node"):
            if context.name.startswith(prefix):
                for execution in self.store.get_executions_by_context(context.id):
                    ids[execution.id] = context.name[len(prefix):]
        for execution in self._executions.values():
            if "component_id" in execution.properties:  # InteractiveContext
                ids[execution.id] = execution.properties["component_id"].string_value
        return ids

    # Executions and artifacts -------------------------------------------------------------

    def node_id(self, execution_id: int) -> str:
        """The component id (e.g. "Trainer") of an execution."""
        return self._node_ids.get(execution_id, "?")

    def state(self, execution_id: int) -> str:
        return state_name(self._executions[execution_id])

    def _artifact(self, artifact_id: int) -> Artifact:
        if artifact_id not in self._artifacts:
            [self._artifacts[artifact_id]] = self.store.get_artifacts_by_id([artifact_id])
        return self._artifacts[artifact_id]

    def _events_of(self, *, execution_id=None, artifact_id=None, kind=None) -> list[Event]:
        return [
            e for e in self._events
            if (execution_id is None or e.execution_id == execution_id)
            and (artifact_id is None or e.artifact_id == artifact_id)
            and (kind is None or e.type == kind)
        ]

    def outputs(self, execution_id: int, *type_names: str) -> list[Artifact]:
        """An execution's output artifacts of the given types."""
        ids = [e.artifact_id for e in self._events_of(execution_id=execution_id, kind=Event.OUTPUT)]
        return [a for a in map(self._artifact, ids) if a.type in type_names]

    def exec_property(self, execution_id: int, name: str) -> str:
        """An execution property as text ("" when absent), as either runner records it."""
        execution = self._executions[execution_id]
        for properties in (execution.custom_properties, execution.properties):
            if name in properties:
                value = properties[name]
                return str(getattr(value, value.WhichOneof("value")))
        return ""

    def detail(self, artifact: Artifact) -> str:
        """What a registry reader wants to know of an artifact besides its type."""
        producer = self.producer(artifact.id)
        props = artifact.custom_properties
        if artifact.type == "Examples" and producer is not None:
            source = self.exec_property(producer, "input_base")
            if source:
                return f"from {source}"
        if artifact.type == "ModelBlessing" and is_blessed(artifact) is not None:
            return "blessed" if is_blessed(artifact) else "not blessed"
        if artifact.type == "PushedModel" and is_pushed(artifact):
            return f"version {pushed_version(artifact)}"
        if artifact.type == "ModelEvaluation":
            metrics = _candidate_metrics(artifact.uri)
            shown = ", ".join(f"{k}={metrics[k]:.3f}" for k in KEY_METRICS if k in metrics)
            # What the model was compared with (BaselineModel), when there was a served model.
            baseline = props[BASELINE_VERSION].string_value if BASELINE_VERSION in props else ""
            return f"{shown}; against version {baseline}" if baseline else shown
        if artifact.type == HYPERPARAMETERS:
            return _shown(best_values(artifact))
        if "split_names" in artifact.properties:
            return "splits " + artifact.properties["split_names"].string_value
        return ""

    def _output_key(self, artifact_id: int) -> str | None:
        """The output name under which the artifact was produced (e.g. "model")."""
        events = self._events_of(artifact_id=artifact_id, kind=Event.OUTPUT)
        return _key(min(events, key=lambda e: e.execution_id)) if events else None

    def producer(self, artifact_id: int) -> int | None:
        """The execution that made an artifact (not the cached runs that reused it)."""
        ids = [e.execution_id for e in self._events_of(artifact_id=artifact_id, kind=Event.OUTPUT)]
        return min(ids, default=None)

    def inputs(self, execution_id: int, *type_names: str) -> list[Artifact]:
        """An execution's input artifacts of the given types."""
        ids = [e.artifact_id for e in self._events_of(execution_id=execution_id, kind=Event.INPUT)]
        return [a for a in map(self._artifact, ids) if a.type in type_names]

    def consumers(self, artifact_id: int, key: str) -> list[int]:
        """Executions that took the artifact as input `key`, oldest first."""
        return sorted(
            e.execution_id for e in self._events_of(artifact_id=artifact_id, kind=Event.INPUT)
            if _key(e) == key
        )

    def artifacts_of_type(self, type_name: str) -> list[Artifact]:
        return sorted((a for a in self._artifacts.values() if a.type == type_name),
                      key=lambda a: a.id)

    # Tables -------------------------------------------------------------------------------

    def runs(self) -> pd.DataFrame:
        """One row per run: when, how many components executed, were cached or failed.

        InteractiveContext records every `context.run(component)` as a run of its own.
        """
        rows = []
        for type_name, runner in ((RUN_CONTEXT_TYPE, "skewless run"), ("run", "interactive")):
            for context in self.store.get_contexts_by_type(type_name):
                ids = [e.id for e in self.store.get_executions_by_context(context.id)
                       if e.id in self._executions]
                if not ids:
                    continue
                executions = [self._executions[i] for i in ids]
                states = [self.state(i) for i in ids]
                name = context.name.removeprefix(f"{self.pipeline_name}.")
                rows.append({
                    "run": name,
                    "runner": runner,
                    "started": _time(min(e.create_time_since_epoch for e in executions)),
                    "seconds": round((max(e.last_update_time_since_epoch for e in executions)
                                      - min(e.create_time_since_epoch for e in executions))
                                     / 1000, 1),
                    "components": ", ".join(self.node_id(i) for i in sorted(ids)),
                    **{state: states.count(state) for state in ("executed", "cached", "failed")},
                })
        frame = pd.DataFrame(rows, columns=["run", "runner", "started", "seconds", "components",
                                            "executed", "cached", "failed"])
        return frame.sort_values("started", ignore_index=True)

    def models(self) -> pd.DataFrame:
        """Every trained model: its evaluation's overall metrics, blessing and pushed version."""
        rows = []
        for model in self.artifacts_of_type("Model"):
            if self._output_key(model.id) == BASELINE_KEY:
                continue  # BaselineModel's reference to an already served model, not a new one
            row = {"model": model.id, "trained": _time(model.create_time_since_epoch),
                   "trainer_execution": self.producer(model.id), "blessed": None,
                   "pushed_version": None, "pushed_path": None, "hyperparameters": None}
            trainer = row["trainer_execution"]
            tuned = self.inputs(trainer, HYPERPARAMETERS) if trainer is not None else []
            if tuned:
                row["hyperparameters"] = _shown(best_values(tuned[0]))
            evaluations = self.consumers(model.id, "model")
            evaluators = [i for i in evaluations if self.outputs(i, "ModelEvaluation")]
            if evaluators:
                newest = evaluators[-1]
                [blessing] = self.outputs(newest, "ModelBlessing") or [None]
                if blessing is not None:
                    row["blessed"] = is_blessed(blessing)
                [evaluation] = self.outputs(newest, "ModelEvaluation")
                row.update(_candidate_metrics(evaluation.uri))
                if "example_count" in row:
                    row["example_count"] = int(row["example_count"])
            for pusher in self.consumers(model.id, "model"):
                for pushed in self.outputs(pusher, "PushedModel"):
                    if is_pushed(pushed):
                        row["pushed_version"] = pushed_version(pushed)
                        row["pushed_path"] = pushed_destination(pushed)
            rows.append(row)
        frame = pd.DataFrame(rows, columns=list(rows[0]) if rows else ["model"])
        if rows:
            frame["pushed_version"] = frame["pushed_version"].astype("Int64")
        return frame.sort_values("model", ascending=False, ignore_index=True)

    def pushed_models(self) -> pd.DataFrame:
        """The models that were pushed, newest version first."""
        models = self.models()
        if models.empty:
            return models
        pushed = models[models["pushed_version"].notna()]
        return pushed.sort_values("pushed_version", ascending=False, ignore_index=True)

    def newest_pushed_model(self) -> Artifact | None:
        """The PushedModel artifact of the highest pushed version."""
        pushed = [a for a in self.artifacts_of_type("PushedModel") if is_pushed(a)]
        return max(pushed, key=lambda a: (pushed_version(a), -a.id), default=None)

    def lineage(self, artifact_id: int) -> Lineage:
        """Everything upstream of an artifact, through the executions that made each input."""
        nodes: dict[int, Artifact] = {}
        steps: dict[int, str] = {}
        edges: set[tuple[str, str]] = set()
        pending = [artifact_id]
        while pending:
            current = pending.pop()
            if current in nodes:
                continue
            nodes[current] = self._artifact(current)
            execution_id = self.producer(current)
            if execution_id is None:
                continue
            steps[execution_id] = self.node_id(execution_id)
            edges.add((f"e{execution_id}", f"a{current}"))
            for sibling in self.outputs(execution_id, *SIBLING_OUTPUTS):
                nodes[sibling.id] = sibling
                edges.add((f"e{execution_id}", f"a{sibling.id}"))
            for event in self._events_of(execution_id=execution_id, kind=Event.INPUT):
                if _key(event) == BASELINE_KEY:
                    continue
                edges.add((f"a{event.artifact_id}", f"e{execution_id}"))
                pending.append(event.artifact_id)
        return Lineage(self, artifact_id, nodes, steps, frozenset(edges))


    # The registry's view of one model ------------------------------------------------------

    def model_record(self, model: Artifact, task: Task) -> ModelRecord:
        """What `skewless models list` shows of one trained model."""
        record = ModelRecord(model_id=model.id, created=_time(model.create_time_since_epoch))
        data = self._source_data(model.id)
        if data is not None:
            record = dataclasses.replace(record, source=data[0], rows=data[1])
        evaluators = [i for i in self.consumers(model.id, "model")
                      if self.outputs(i, "ModelEvaluation")]
        if evaluators:
            [evaluation] = self.outputs(evaluators[-1], "ModelEvaluation")
            [blessing] = self.outputs(evaluators[-1], "ModelBlessing") or [None]
            values = _candidate_metrics(evaluation.uri)
            record = dataclasses.replace(
                record, evaluation_id=evaluation.id,
                metrics={m.class_name: values[m.key] for m in task.metrics if m.key in values},
                blessed=None if blessing is None else is_blessed(blessing),
                why=_blessing_reason(evaluation.uri))
        for pusher in self.consumers(model.id, "model"):
            for pushed in self.outputs(pusher, "PushedModel"):
                if is_pushed(pushed):
                    record = dataclasses.replace(record, version=pushed_version(pushed),
                                                 pushed_id=pushed.id,
                                                 path=pushed_destination(pushed))
        return record

    def model_records(self, task: Task) -> list[ModelRecord]:
        """Every model the pipeline trained (not BaselineModel's references), newest first."""
        models = [m for m in self.artifacts_of_type("Model")
                  if self._output_key(m.id) != BASELINE_KEY]
        return [self.model_record(m, task) for m in reversed(models)]

    def _source_data(self, model_id: int) -> tuple[str, int | None] | None:
        """The data a model was trained on: ExampleGen's source and its row count."""
        lineage = self.lineage(model_id)
        for artifact_id, artifact in sorted(lineage.artifacts.items()):
            producer = self.producer(artifact_id)
            if artifact.type != "Examples" or producer is None or \
                    self.node_id(producer) != EXAMPLE_GEN:
                continue
            rows = None
            for consumer in self.consumers(artifact_id, "examples"):
                if self.node_id(consumer) != STATISTICS_GEN:
                    continue  # Transform's pre- and post-transform statistics have no splits
                for statistics in self.outputs(consumer, "ExampleStatistics"):
                    rows = sum(count_statistics_at(statistics.uri, split_names(statistics)
                                                   ).values())
            return self.exec_property(producer, "input_base"), rows
        return None


@dataclasses.dataclass(frozen=True)
class ModelRecord:
    """One trained model as the registry lists it."""

    model_id: int
    created: pd.Timestamp | None
    version: int | None = None  # the pushed version, when it was pushed
    pushed_id: int | None = None  # the PushedModel artifact
    path: str | None = None
    source: str | None = None
    rows: int | None = None
    evaluation_id: int | None = None
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    blessed: bool | None = None
    why: str = ""

    def to_dict(self) -> dict:
        row = dataclasses.asdict(self)
        row["created"] = None if self.created is None else self.created.isoformat()
        # JSON has no NaN (TFMA's precision with no positive prediction): null instead.
        row["metrics"] = {k: None if math.isnan(v) else v for k, v in self.metrics.items()}
        return row


def _blessing_reason(evaluation_uri: str) -> str:
    """Why TFMA blessed a model or not, from the validation result it wrote."""
    try:
        result = tfma.load_validation_result(evaluation_uri)
    except (OSError, tf.errors.OpError, ValueError):
        return "no validation result"
    if result.validation_ok:
        return "every threshold held"
    failures = [
        f"{failure.metric_key.name} {failure.metric_value.double_value.value:.4f} "
        f"{_broken_threshold(failure.metric_threshold)}"
        for per_slice in result.metric_validations_per_slice for failure in per_slice.failures
    ]
    return "; ".join(failures) or "validation failed"


def _broken_threshold(threshold) -> str:
    """A TFMA MetricThreshold a value failed, in words."""
    value = threshold.value_threshold
    if value.HasField("lower_bound"):
        return f"below the lower bound {value.lower_bound.value:.4f}"
    if value.HasField("upper_bound"):
        return f"above the upper bound {value.upper_bound.value:.4f}"
    change = threshold.change_threshold
    return f"changed by more than {abs(change.absolute.value):.4f} against the baseline"


# The first two metrics of each task: what an evaluation's one-line detail shows.
KEY_METRICS = tuple(m.key for task in TASKS.values() for m in task.metrics[:2])


def _shown(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items()))


def _candidate_metrics(evaluation_uri: str) -> dict[str, float]:
    return {name: value for (name, baseline, diff), value in sorted(
        overall_metrics(evaluation_uri).items()) if not baseline and not diff}


@dataclasses.dataclass(frozen=True)
class Lineage:
    """The artifacts and executions upstream of one artifact, as a table and a picture."""

    registry: Registry
    root: int
    artifacts: dict[int, Artifact]
    executions: dict[int, str]
    edges: frozenset[tuple[str, str]]

    def table(self) -> pd.DataFrame:
        """One row per artifact, from the data to the root: type, producer, consumers, uri."""
        used_by: dict[int, list[str]] = {}
        for source, target in self.edges:
            if source.startswith("a"):
                used_by.setdefault(int(source[1:]), []).append(
                    self.executions[int(target[1:])])
        rows = []
        for artifact_id, artifact in self.artifacts.items():
            producer = self.registry.producer(artifact_id)
            rows.append({
                "depth": self._depths()[f"a{artifact_id}"],
                "artifact": artifact.type,
                "id": artifact_id,
                "produced_by": self.executions.get(producer, "") if producer else "",
                "used_by": ", ".join(sorted(used_by.get(artifact_id, []))),
                "detail": self.registry.detail(artifact),
                "created": _time(artifact.create_time_since_epoch),
                "uri": artifact.uri,
            })
        frame = pd.DataFrame(rows).sort_values(["depth", "id"], ignore_index=True)
        return frame.drop(columns="depth")

    def _depths(self) -> dict[str, int]:
        """Longest distance from a source (a node with no inputs), so inputs sit left."""
        inputs: dict[str, list[str]] = {}
        for source, target in self.edges:
            inputs.setdefault(target, []).append(source)
        depths: dict[str, int] = {}

        def depth(node: str) -> int:
            if node not in depths:
                depths[node] = 1 + max((depth(s) for s in inputs.get(node, [])), default=-1)
            return depths[node]

        for node in [f"a{i}" for i in self.artifacts] + [f"e{i}" for i in self.executions]:
            depth(node)
        return depths

    def svg(self) -> str:
        """The lineage drawn top to bottom: artifacts as light boxes, components as dark pills.

        Edges that skip levels bend out to the left, so that they do not cross the boxes.
        """
        depths = self._depths()
        levels: dict[int, list[str]] = {}
        for node in sorted(depths, key=lambda n: (depths[n], n[0], int(n[1:]))):
            levels.setdefault(depths[node], []).append(node)
        width, gap_x, row_h, margin = 170, 30, 48, 140
        widest = max(len(nodes) for nodes in levels.values())
        total_w = 2 * margin + widest * (width + gap_x) - gap_x
        boxes = {}  # node -> (x, y, w, h)
        for level, nodes in levels.items():
            start = margin + (widest - len(nodes)) * (width + gap_x) / 2
            for index, node in enumerate(nodes):
                h = 24 if node.startswith("e") else 36
                w = width - 40 if node.startswith("e") else width
                x = start + index * (width + gap_x) + (width - w) / 2
                boxes[node] = (x, 16 + level * row_h + (36 - h) / 2, w, h)
        total_h = 32 + len(levels) * row_h
        parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w:.0f}" '
            f'height="{total_h}" font-family="sans-serif" font-size="12">',
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
            'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#78909c"/>'
            "</marker></defs>",
        ]
        for source, target in sorted(self.edges):
            sx, sy, sw, sh = boxes[source]
            tx, ty, tw, th = boxes[target]
            span = depths[target] - depths[source]
            if span == 1:
                x1, y1, x2, y2 = sx + sw / 2, sy + sh, tx + tw / 2, ty
                path = f"M{x1:.0f},{y1:.0f} C{x1:.0f},{y2:.0f} {x2:.0f},{y1:.0f} {x2:.0f},{y2:.0f}"
            else:
                x1, y1, x2, y2 = sx, sy + sh / 2, tx, ty + th / 2
                between = [boxes[n][0] for level in range(depths[source], depths[target] + 1)
                           for n in levels[level]]
                # A cubic Bézier reaches 3/4 of the way to its control points.
                apex = min(between) - 14 - 6 * span
                bend = (4 * apex - (x1 + x2) / 2) / 3
                path = f"M{x1:.0f},{y1:.0f} C{bend:.0f},{y1:.0f} {bend:.0f},{y2:.0f} " \
                       f"{x2:.0f},{y2:.0f}"
            parts.append(f'<path d="{path}" fill="none" stroke="#78909c" '
                         'marker-end="url(#arrow)"/>')
        for node, (x, y, w, h) in boxes.items():
            if node.startswith("e"):
                label, fill, color = self.executions[int(node[1:])], "#37474f", "white"
            else:
                artifact = self.artifacts[int(node[1:])]
                label, color = f"{artifact.type} #{artifact.id}", "black"
                fill = "#c8e6c9" if artifact.id == self.root else "#e3f2fd"
            parts.append(f'<rect x="{x:.0f}" y="{y:.0f}" width="{w:.0f}" height="{h}" '
                         f'rx="{h / 2 if node.startswith("e") else 6}" fill="{fill}" '
                         'stroke="#455a64"/>')
            parts.append(f'<text x="{x + w / 2:.0f}" y="{y + h / 2 + 4:.0f}" '
                         f'text-anchor="middle" fill="{color}">{html.escape(label)}</text>')
        parts.append("</svg>")
        return "\n".join(parts)

    def __repr__(self) -> str:
        root = self.artifacts[self.root]
        return (f"Lineage of {root.type} #{root.id}: {len(self.artifacts)} artifacts, "
                f"{len(self.executions)} component runs")

    def _repr_svg_(self) -> str:
        return self.svg()

