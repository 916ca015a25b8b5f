"""Assembles the TFX pipeline from a PipelineConfig: the one definition every runner uses."""

from __future__ import annotations

import dataclasses

import tensorflow_model_analysis as tfma
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.orchestration import data_types

from skewless.components.anomaly_gate.component import AnomalyGate
from skewless.components.avro_example_gen.component import AvroExampleGen
from skewless.components.baseline_model.component import BaselineModel
from skewless.components.data_formats import input_location
from skewless.components.evaluator.component import Evaluator
from skewless.components.infra_validator.component import InfraValidator
from skewless.components.parquet_example_gen.component import ParquetExampleGen
from skewless.components.pusher.component import Pusher
from skewless.components.row_count_check.component import RowCountCheck
from skewless.components.tuner.component import Tuner
from skewless.components.tuner.executor import FINGERPRINT_PROPERTY
from skewless.pipeline.run_config import PipelineConfig
from skewless.pipeline.store import connection_config
from skewless.transforms.features import WEIGHT_KEY
from skewless.transforms.signatures import (
    SERVING_DEFAULT,
    SERVING_TF_EXAMPLE,
    TRANSFORM_FEATURES,
)
from skewless.transforms.task import BinaryTask, MulticlassTask, Task
from skewless.transforms.tuning import TuningPlan, declared_search_space

DEFAULT_PREPROCESSING_FN = "skewless.transforms.preprocessing.preprocessing_fn"
RUN_FN = "skewless.transforms.training.run_fn"
TUNER_FN = "skewless.transforms.tuning.tuner_fn"

# Node ids, used to read results back from MLMD.
EXAMPLE_GEN = "ExampleGen"
SCHEMA_GEN = "SchemaGen"
EVALUATOR = "Evaluator"
PUSHER = "Pusher"
TRAINER = "Trainer"
TRANSFORM = "Transform"
STATISTICS_GEN = "StatisticsGen"
EXAMPLE_VALIDATOR = "ExampleValidator"
ANOMALY_GATE = "AnomalyGate"
ROW_COUNT_CHECK = "RowCountCheck"
TUNER = "Tuner"
HYPERPARAMETERS_IMPORTER = "HyperparametersImporter"
BASELINE_MODEL = "BaselineModel"
INFRA_VALIDATOR = "InfraValidator"


Steps = tfx.proto.TrainArgs | tfx.proto.EvalArgs | data_types.RuntimeParameter


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where the pipeline runs: the locations and settings that differ between this machine and
    a cluster. `Placement.local(config)` is the local run; `kubeflow.py` builds the cluster's.

    `input_base` and the train/eval args may be Kubeflow runtime parameters (the args then hold
    TrainArgs/EvalArgs as JSON, such as '{"num_steps": 1000}', since a proto field cannot hold a
    parameter). Locations are strings so that gs:// URIs survive.
    """

    pipeline_root: str
    model_push_dir: str
    input_base: str | data_types.RuntimeParameter
    input_pattern: str
    train_args: Steps
    eval_args: Steps
    beam_args: tuple[str, ...]
    metadata_connection_config: metadata_store_pb2.ConnectionConfig | None

    @classmethod
    def local(cls, config: PipelineConfig) -> Placement:
        """This machine: the config's paths, Beam args and MLMD store."""
        base, pattern = input_location(config.data.path, config.data.format)
        return cls(
            pipeline_root=str(config.pipeline_root),
            model_push_dir=str(config.model_push_dir),
            input_base=base,
            input_pattern=pattern,
            train_args=tfx.proto.TrainArgs(num_steps=config.model.train_steps),
            eval_args=tfx.proto.EvalArgs(num_steps=config.model.eval_steps),
            beam_args=config.beam.args,
            metadata_connection_config=local_metadata(config),
        )


def local_metadata(config: PipelineConfig) -> metadata_store_pb2.ConnectionConfig:
    """The MLMD connection the config names (SQLite or MySQL), for writing."""
    return connection_config(config, readonly=False)


def example_gen(
    config: PipelineConfig, input_base: str | data_types.RuntimeParameter, pattern: str
):
    """The ExampleGen for the configured format, reading `pattern` in `input_base`."""
    input_config = tfx.proto.Input(
        splits=[tfx.proto.Input.Split(name="single_split", pattern=pattern)]
    )
    output_config = tfx.proto.Output(
        split_config=tfx.proto.SplitConfig(
            splits=[
                tfx.proto.SplitConfig.Split(name="train", hash_buckets=config.data.split.train),
                tfx.proto.SplitConfig.Split(name="eval", hash_buckets=config.data.split.eval),
            ]
        )
    )
    kwargs = dict(input_base=input_base, input_config=input_config, output_config=output_config)
    return example_gen_class(config.data.format)(**kwargs).with_id(EXAMPLE_GEN)


def example_gen_class(fmt: str) -> type:
    """The ExampleGen component that reads a data format."""
    return {
        "csv": tfx.components.CsvExampleGen,
        "tfrecord": tfx.components.ImportExampleGen,
        "parquet": ParquetExampleGen,
        "avro": AvroExampleGen,
    }[fmt]


def _threshold(threshold, higher_is_better: bool) -> tfma.MetricThreshold:
    """A TFMA threshold: absolute bounds, and a change against the baseline in the metric's
    direction (a decrease for higher-is-better metrics, an increase for lower-is-better ones)."""
    bound = tfma.MetricThreshold()
    if threshold.lower_bound is not None:
        bound.value_threshold.lower_bound.value = threshold.lower_bound
    if threshold.upper_bound is not None:
        bound.value_threshold.upper_bound.value = threshold.upper_bound
    if higher_is_better and threshold.max_decrease is not None:
        bound.change_threshold.direction = tfma.MetricDirection.HIGHER_IS_BETTER
        bound.change_threshold.absolute.value = -threshold.max_decrease
    if not higher_is_better and threshold.max_increase is not None:
        bound.change_threshold.direction = tfma.MetricDirection.LOWER_IS_BETTER
        bound.change_threshold.absolute.value = threshold.max_increase
    return bound


def plot_metrics(task: Task) -> list[tfma.MetricConfig]:
    """The TFMA plots the notebooks and the run report draw (`pipeline/figures.py`): threshold
    and calibration curves (binary), the confusion matrix (multiclass). Regression needs none:
    its figures plot the model's own predictions on the eval split."""
    if isinstance(task, BinaryTask):
        return [tfma.MetricConfig(class_name="ConfusionMatrixPlot"),
                tfma.MetricConfig(class_name="CalibrationPlot", config='"num_buckets": 20')]
    if isinstance(task, MulticlassTask):
        return [tfma.MetricConfig(class_name="MultiClassConfusionMatrixPlot")]
    return []


def eval_config(config: PipelineConfig) -> tfma.EvalConfig:
    """TFMA metrics of the task, slices and blessing thresholds (absolute and against the
    baseline), with rows that have no label weighing nothing."""
    task = config.task
    metrics = {name: tfma.MetricConfig(class_name=name)
               for name in ("ExampleCount", *(m.class_name for m in task.metrics))}
    for threshold in config.evaluation.thresholds:
        metric = task.metric(threshold.metric)
        # Blessing is decided on the whole eval set; slices are reported, not gated.
        metrics[threshold.metric] = tfma.MetricConfig(
            class_name=threshold.metric,
            per_slice_thresholds=[tfma.PerSliceMetricThreshold(
                slicing_specs=[tfma.SlicingSpec()],
                threshold=_threshold(threshold, metric.higher_is_better),
            )],
        )
    specs = [tfma.MetricsSpec(metrics=list(metrics.values()))]
    if plot_metrics(task):
        specs.append(tfma.MetricsSpec(metrics=plot_metrics(task)))
    if isinstance(task, MulticlassTask):
        specs.append(tfma.MetricsSpec(
            metrics=[tfma.MetricConfig(class_name=n) for n in ("Precision", "Recall")],
            binarize=tfma.BinarizationOptions(class_ids={"values": task.tfma_binarize_class_ids()}),
        ))
    # The generated preprocessing_fn weighs rows without a label 0; a user's own may not.
    weight = WEIGHT_KEY if config.transform.preprocessing_fn is None else None
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name=SERVING_TF_EXAMPLE,
                preprocessing_function_names=[TRANSFORM_FEATURES],
                label_key=config.label.name,
                prediction_key=task.prediction_key,
                example_weight_key=weight,
            )
        ],
        slicing_specs=[tfma.SlicingSpec()]
        + [tfma.SlicingSpec(feature_keys=list(s)) for s in config.evaluation.slices],
        metrics_specs=specs,
    )


def create_pipeline(
    config: PipelineConfig,
    placement: Placement | None = None,
    *,
    stop_after_schema: bool = False,
    reuse_hyperparameters: str | None = None,
) -> tfx.dsl.Pipeline:
    """The pipeline: ExampleGen → validation → Transform → (Tuner) → Trainer → Evaluator →
    Pusher.

    Args:
        config: the loaded config.
        placement: where it runs; default `Placement.local(config)`.
        stop_after_schema: build only ExampleGen, StatisticsGen and SchemaGen (schema freeze).
        reuse_hyperparameters: with tuning on, the URI of best hyperparameters of an earlier
            search of the same space, imported instead of searching again.

    Returns:
        A TFX pipeline whose node ids are the constants of this module.
    """
    placement = placement or Placement.local(config)
    examples = example_gen(config, placement.input_base, placement.input_pattern)
    statistics = tfx.components.StatisticsGen(examples=examples.outputs["examples"]).with_id(
        STATISTICS_GEN
    )
    if config.schema_.curated is not None:
        schema = tfx.components.ImportSchemaGen(schema_file=str(config.schema_.curated))
    else:
        schema = tfx.components.SchemaGen(
            statistics=statistics.outputs["statistics"], infer_feature_shape=True
        )
    schema = schema.with_id(SCHEMA_GEN)
    components = [examples, statistics, schema]
    if not stop_after_schema:
        components += _training_components(config, placement, examples, statistics, schema,
                                           reuse_hyperparameters)
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline.name,
        pipeline_root=placement.pipeline_root,
        components=components,
        enable_cache=True,
        metadata_connection_config=placement.metadata_connection_config,
        beam_pipeline_args=list(placement.beam_args),
    )


def tuning_plan(config: PipelineConfig) -> TuningPlan | None:
    """The config's search (a build_fn's declared space under the config's entries), or None."""
    tuning = config.tuning
    if tuning is None:
        return None
    space = {**declared_search_space(config.feature_plan()), **tuning.entries()}
    return TuningPlan(
        search_space=space,
        algorithm=tuning.algorithm,
        max_trials=tuning.max_trials,
        seed=config.model.seed,
        hyperband_max_epochs=tuning.hyperband.max_epochs,
        hyperband_factor=tuning.hyperband.factor,
    )


def _hyperparameters(config: PipelineConfig, transform, schema, reuse: str | None) -> list:
    """The Tuner over the transformed examples, or an Importer of an earlier search's best."""
    plan = tuning_plan(config)
    if plan is None:
        return []
    if reuse is not None:
        return [tfx.dsl.Importer(
            source_uri=reuse,
            artifact_type=tfx.types.standard_artifacts.HyperParameters,
            custom_properties={FINGERPRINT_PROPERTY: plan.fingerprint()},
        ).with_id(HYPERPARAMETERS_IMPORTER)]
    return [Tuner(
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema.outputs["schema"],
        tuner_fn=TUNER_FN,
        train_args=tfx.proto.TrainArgs(num_steps=config.tuning.train_steps),
        eval_args=tfx.proto.EvalArgs(num_steps=config.tuning.eval_steps),
        custom_config={**config.feature_plan().to_custom_config(), **plan.to_custom_config()},
    ).with_id(TUNER)]


def _training_components(
    config: PipelineConfig, placement: Placement, examples, statistics, schema,
    reuse_hyperparameters: str | None = None,
) -> list:
    custom_config = config.feature_plan().to_custom_config()
    validator = tfx.components.ExampleValidator(
        statistics=statistics.outputs["statistics"], schema=schema.outputs["schema"]
    ).with_id(EXAMPLE_VALIDATOR)
    gate = AnomalyGate(
        anomalies=validator.outputs["anomalies"],
        stop_on_anomalies=config.schema_.stop_on_anomalies,
    ).with_id(ANOMALY_GATE)
    row_check = RowCountCheck(
        examples=examples.outputs["examples"],
        statistics=statistics.outputs["statistics"],
        input_base=placement.input_base,
        input_pattern=placement.input_pattern,
        input_format=config.data.format,
    ).with_id(ROW_COUNT_CHECK)
    transform = tfx.components.Transform(
        examples=examples.outputs["examples"],
        schema=schema.outputs["schema"],
        preprocessing_fn=config.transform.preprocessing_fn or DEFAULT_PREPROCESSING_FN,
        custom_config=custom_config,
    ).with_id(TRANSFORM)
    transform.add_upstream_node(gate)
    transform.add_upstream_node(row_check)
    tuning = _hyperparameters(config, transform, schema, reuse_hyperparameters)
    best = {}
    if tuning:
        [node] = tuning
        best = {"hyperparameters": node.outputs[
            "result" if node.id == HYPERPARAMETERS_IMPORTER else "best_hyperparameters"]}
    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        **best,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema.outputs["schema"],
        train_args=placement.train_args,
        eval_args=placement.eval_args,
        custom_config=custom_config,
    ).with_id(TRAINER)
    # The baseline is the model TF Serving serves now, found on the push directory: the same
    # mechanism locally and on any Kubeflow backend (open-source KFP runs no resolver).
    baseline = BaselineModel(
        model=trainer.outputs["model"], model_push_dir=placement.model_push_dir
    ).with_id(BASELINE_MODEL)
    evaluator = Evaluator(
        examples=examples.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=baseline.outputs["baseline_model"],
        eval_config=eval_config(config),
    ).with_id(EVALUATOR)
    infra_validator = infra_validation(config, trainer, examples)
    pusher = Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        infra_blessing=infra_validator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(
                base_directory=placement.model_push_dir
            )
        ),
    ).with_id(PUSHER)
    return [validator, gate, row_check, transform, *tuning, trainer, baseline, evaluator,
            infra_validator, pusher]


def infra_validation(config: PipelineConfig, trainer, examples) -> InfraValidator:
    """The InfraValidator: the candidate served on skewless's server, queried with eval rows."""
    limits = config.infra_validation
    return InfraValidator(
        model=trainer.outputs["model"],
        examples=examples.outputs["examples"],
        validation_spec=tfx.proto.ValidationSpec(
            max_loading_time_seconds=limits.max_loading_time_seconds),
        request_spec=tfx.proto.RequestSpec(
            tensorflow_serving=tfx.proto.TensorFlowServingRequestSpec(
                signature_names=[SERVING_DEFAULT]),
            split_name="eval",
            num_examples=limits.num_examples,
            make_warmup=True,
        ),
        max_latency_ms=float(limits.max_latency_ms),
    ).with_id(INFRA_VALIDATOR)
