"""The run part of the config (data, label and task, features, model, evaluation, serving, MLMD)
and `PipelineConfig`, the one typed, immutable object that holds every section."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from skewless.components.data_formats import FORMATS
from skewless.pipeline.cluster_config import DeploymentSection, KubeflowSection
from skewless.pipeline.sections import (
    AbsolutePath,
    LaxPath,
    ModelName,
    PipelineName,
    Section,
    text_matching,
)
from skewless.transforms.features import WEIGHT_KEY, FeaturePlan
from skewless.transforms.task import TASKS, BinaryTask, MulticlassTask, RegressionTask, Task

TaskKind = Literal["binary", "multiclass", "regression"]


class PipelineSection(Section):
    name: PipelineName
    output_dir: LaxPath


class Split(Section):
    train: int = Field(gt=0)
    eval: int = Field(gt=0)


class DataSection(Section):
    path: LaxPath
    format: Literal[FORMATS] = "csv"  # type: ignore[valid-type]
    split: Split = Split(train=4, eval=1)


class SchemaSection(Section):
    curated: LaxPath | None = None
    stop_on_anomalies: bool = True


class DerivedLabel(Section):
    numerator: str
    denominator: str
    greater_than: float


class LabelSection(Section):
    """The label column (or a derived binary label) and the task it poses."""

    name: str
    task: TaskKind = "binary"
    column: str | None = None
    derived: DerivedLabel | None = None
    positive: str | int | None = None  # binary: the value of a two-valued column that is 1
    classes: tuple[str | int, ...] | None = None  # multiclass: the classes (default: the data's)

    @model_validator(mode="after")
    def _fits_task(self) -> LabelSection:
        if (self.column is None) == (self.derived is None):
            raise ValueError("give exactly one of label.column or label.derived")
        if self.derived is not None and self.task != "binary":
            raise ValueError(f"label.derived: a derived label is binary, not {self.task}; "
                             "use label.column for this task")
        if self.positive is not None and (self.task != "binary" or self.column is None):
            raise ValueError("label.positive: only a binary label.column has a positive value")
        if self.classes is not None:
            if self.task == "regression":
                raise ValueError("label.classes: a regression label has no classes")
            names = [str(c) for c in self.classes]
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ValueError(f"label.classes: listed twice: {', '.join(repeated)}")
            if len(names) < 2:
                raise ValueError(f"label.classes: a classifier needs two or more classes, got "
                                 f"{names}")
            if self.task == "binary" and len(names) != 2:
                raise ValueError(f"label.classes: task binary has two classes, got {len(names)}")
            if self.task == "binary" and self.positive is not None and str(
                    self.positive) not in names:
                raise ValueError(f"label.positive: {self.positive!r} is not one of label.classes")
        return self

    @property
    def source_columns(self) -> tuple[str, ...]:
        if self.column is not None:
            return (self.column,)
        return (self.derived.numerator, self.derived.denominator)

    def task_object(self) -> Task:
        """The task, with the class names the config resolved (see `pipeline.labels`)."""
        names = tuple(str(c) for c in self.classes or ())
        if self.task == "multiclass":
            return MulticlassTask(classes=names)
        if self.task == "regression":
            return RegressionTask()
        if self.positive is None:
            return BinaryTask()
        positive = str(self.positive)
        others = [n for n in names if n != positive]
        return BinaryTask(positive=positive, negative=others[0] if others else None)


class NumericFeatures(Section):
    names: tuple[str, ...] = ()


class CategoricalFeatures(Section):
    names: tuple[str, ...] = ()
    top_k: int = Field(default=1000, gt=0)
    oov_buckets: int = Field(default=10, ge=1)


class BucketizedFeatures(Section):
    names: tuple[str, ...] = ()
    buckets: int = Field(default=10, ge=2)


class Cross(Section):
    features: tuple[str, ...] = Field(min_length=2)
    hash_buckets: int = Field(default=1000, gt=1)


class FeaturesSection(Section):
    numeric: NumericFeatures = NumericFeatures()
    categorical: CategoricalFeatures = CategoricalFeatures()
    bucketized: BucketizedFeatures = BucketizedFeatures()
    crosses: tuple[Cross, ...] = ()

    @property
    def raw_names(self) -> tuple[str, ...]:
        return self.numeric.names + self.categorical.names + self.bucketized.names

    @model_validator(mode="after")
    def _distinct_and_known(self) -> FeaturesSection:
        names = self.raw_names
        if not names:
            raise ValueError("name at least one feature")
        # serving_default takes one named input per feature; TF records which inputs may be left
        # out from Python parameter defaults, so a feature name must be an identifier.
        unnamable = [n for n in names if not n.isidentifier() or n == WEIGHT_KEY]
        if unnamable:
            raise ValueError(
                "feature names must be letters, digits and underscores (serving input names): "
                + ", ".join(map(repr, unnamable))
            )
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"features listed under two treatments: {', '.join(repeated)}")
        discrete = self.categorical.names + self.bucketized.names
        for cross in self.crosses:
            unknown = [n for n in cross.features if n not in discrete]
            if unknown:
                raise ValueError(
                    "crosses: uses features not listed as categorical or bucketized: "
                    + ", ".join(unknown)
                )
        return self


class ModelSection(Section):
    hidden_units: tuple[int, ...] = (64, 32)
    embedding_dim: int = Field(default=8, gt=0)
    learning_rate: float = Field(default=0.001, gt=0)
    batch_size: int = Field(default=128, gt=0)
    train_steps: int = Field(default=1000, gt=0)
    eval_steps: int = Field(default=100, gt=0)
    seed: int = 42  # weights and shuffling: the same data and config train the same model
    build_fn: str | None = None  # import path of your own model builder (transforms/network.py)


class Range(Section):
    """A range of numbers to search: integers when min, max and step are integers."""

    min: int | float
    max: int | float
    step: int | float | None = Field(default=None, gt=0)
    sampling: Literal["linear", "log"] = "linear"


SpaceEntry = tuple[int | float | str, ...] | Range

# What the built-in model's hyperparameters may take: (integers only, smallest allowed).
BUILT_IN_LIMITS = {"layers": (True, 1), "units": (True, 1), "embedding_dim": (True, 1),
                    "batch_size": (True, 1), "learning_rate": (False, 0.0)}


def check_space_entry(name: str, entry: SpaceEntry) -> None:
    """Raises ValueError naming `name` when an entry holds no possible value."""
    key = f"tuning.search_space.{name}"
    if isinstance(entry, Range):
        if entry.min > entry.max:
            raise ValueError(f"{key}: min {entry.min} is above max {entry.max}")
        if entry.sampling == "log" and entry.min <= 0:
            raise ValueError(f"{key}: log sampling needs min above 0, got {entry.min}")
        values = (entry.min, entry.max)
    else:
        if not entry:
            raise ValueError(f"{key}: list at least one value")
        if len(set(entry)) != len(entry):
            raise ValueError(f"{key}: a value is listed twice in {list(entry)}")
        values = entry
    if name not in BUILT_IN_LIMITS:
        return
    integers, floor = BUILT_IN_LIMITS[name]
    for value in values:
        if isinstance(value, str) or isinstance(value, bool) or (
                integers and not isinstance(value, int)):
            kind = "an integer" if integers else "a number"
            raise ValueError(f"{key}: {value!r} is not {kind}")
        if (value < floor) if integers else (value <= floor):
            bound = f"at least {floor}" if integers else f"above {floor}"
            raise ValueError(f"{key}: {value!r} is impossible; {name} must be {bound}")
    if isinstance(entry, Range) and integers and not isinstance(entry.step or 1, int):
        raise ValueError(f"{key}: step {entry.step} is not an integer")


class HyperbandSettings(Section):
    max_epochs: int = Field(default=4, ge=2)
    factor: int = Field(default=2, ge=2)


class TuningSection(Section):
    """A hyperparameter search (TFX's Tuner) before training; the Trainer takes the best."""

    search_space: dict[str, SpaceEntry]

    @field_validator("search_space", mode="before")
    @classmethod
    def _entries(cls, raw: object) -> object:
        """Each entry as a list (a choice) or a range, with errors naming the entry."""
        if not isinstance(raw, dict):
            return raw
        entries = {}
        for name, entry in raw.items():
            key = f"tuning.search_space.{name}"
            if isinstance(entry, list | tuple):
                entries[name] = tuple(entry)
            elif isinstance(entry, dict):
                try:
                    entries[name] = Range.model_validate(entry)
                except ValidationError as error:
                    first = error.errors()[0]
                    where = ".".join(str(p) for p in first["loc"])
                    what = {"missing": "required key is missing",
                            "extra_forbidden": "unknown key"}.get(first["type"], first["msg"])
                    raise ValueError(f"{key}.{where}: {what}") from None
            else:
                raise ValueError(f"{key}: expected a list of values or a range "
                                 f"{{min: ..., max: ...}}, got {entry!r}")
        return entries

    algorithm: Literal["random", "bayesian", "hyperband"] = "random"
    max_trials: int = Field(default=10, gt=0)
    train_steps: int = Field(default=100, gt=0)  # per trial
    eval_steps: int = Field(default=10, gt=0)  # per trial
    reuse: Literal["latest", "never"] = "never"
    hyperband: HyperbandSettings = HyperbandSettings()

    @model_validator(mode="after")
    def _possible(self) -> TuningSection:
        if not self.search_space:
            raise ValueError("tuning.search_space: name at least one hyperparameter to search")
        for name, entry in self.search_space.items():
            if not name.isidentifier():
                raise ValueError(f"tuning.search_space: {name!r} is not a hyperparameter name "
                                 "(letters, digits and underscores)")
            check_space_entry(name, entry)
        if "hyperband" in self.model_fields_set and self.algorithm != "hyperband":
            raise ValueError(f"tuning.hyperband: settings for Hyperband, but the algorithm is "
                             f"{self.algorithm}")
        return self

    def entries(self) -> dict[str, dict]:
        """The search space as plain entries (see `skewless.transforms.tuning`)."""
        return {name: (entry.model_dump(exclude_none=True) if isinstance(entry, Range)
                       else {"values": list(entry)})
                for name, entry in self.search_space.items()}


class Threshold(Section):
    """A blessing condition on one of the task's metrics, in the metric's direction."""

    metric: str
    lower_bound: float | None = None
    upper_bound: float | None = None
    max_decrease: float | None = Field(default=None, ge=0)
    max_increase: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _some_bound(self) -> Threshold:
        if all(v is None for v in (self.lower_bound, self.upper_bound, self.max_decrease,
                                   self.max_increase)):
            raise ValueError("give a bound: lower_bound/max_decrease for a higher-is-better "
                             "metric, upper_bound/max_increase for a lower-is-better one")
        return self

    def check_direction(self, task: Task) -> None:
        """Raises ValueError when the metric is not the task's or a bound runs against it."""
        metric = task.metric(self.metric)
        if metric.higher_is_better is None:
            raise ValueError(f"{self.metric} has no better direction; it takes no threshold")
        wrong = (("upper_bound", "max_increase") if metric.higher_is_better
                 else ("lower_bound", "max_decrease"))
        given = [key for key in wrong if getattr(self, key) is not None]
        if given:
            right = ("lower_bound/max_decrease" if metric.higher_is_better
                     else "upper_bound/max_increase")
            raise ValueError(f"{self.metric} is {metric.direction}-is-better: use {right}, "
                             f"not {given[0]}")


class EvaluationSection(Section):
    thresholds: tuple[Threshold, ...] = ()
    slices: tuple[tuple[str, ...], ...] = ()


class ServingSection(Section):
    model_name: ModelName
    push_dir: LaxPath


class InfraValidationSection(Section):
    """The check that a candidate loads and answers on skewless's server before it is pushed
    (`components/infra_validator`), named as TFX's ValidationSpec and RequestSpec."""

    num_examples: int = Field(default=8, gt=0, le=1000)  # eval rows: requests and warm-up records
    max_loading_time_seconds: int = Field(default=120, gt=0)  # load and warm-up
    max_latency_ms: float = Field(default=2000, gt=0)  # the slowest request


class CanarySection(Section):
    """The limits `skewless models compare` holds a candidate label to against a baseline."""

    rows: int = Field(default=200, gt=0)
    min_agreement: float = Field(default=0.99, ge=0, le=1)  # classifiers: rows of the same class
    max_mean_abs_difference: float = Field(default=0.01, ge=0)  # regressors
    max_abs_difference: float | None = Field(default=None, ge=0)  # regressors, any one row
    max_p99_latency_ms: float | None = Field(default=None, gt=0)  # either label


class MySQL(Section):
    host: str
    port: int = 3306
    database: str
    user: str
    # The name of the environment variable holding the password: never the password itself.
    password_env: str | None = None


class MetadataSection(Section):
    sqlite: LaxPath | None = None
    mysql: MySQL | None = None

    @model_validator(mode="after")
    def _one_store(self) -> MetadataSection:
        if (self.sqlite is None) == (self.mysql is None):
            raise ValueError("give exactly one of metadata.sqlite or metadata.mysql")
        return self


class BeamSection(Section):
    args: tuple[str, ...] = ("--direct_running_mode=in_memory", "--direct_num_workers=1")


class TransformSection(Section):
    preprocessing_fn: str | None = None  # import path of a user's own preprocessing_fn


Trigger = Literal["skew", "drift", "prediction_drift", "new_data"]
CronSchedule = text_matching(r"(\S+\s+){4}\S+", "a cron schedule of five fields, e.g. '0 * * * *'")
Duration = text_matching(r"[1-9][0-9]*[smhd]", "a duration such as 30m, 6h or 1d")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class MonitoringSection(Section):
    """`skewless monitor`: skew and drift thresholds, the drift window and the retrain triggers.

    A distance is TFDV's: L-infinity for categorical features, Jensen-Shannon divergence for
    numeric ones, both between 0 and 1; a feature fails when its distance is above its threshold.
    """

    threshold: float = Field(default=0.25, gt=0, le=1)  # every feature without its own
    thresholds: dict[str, float] = {}  # per feature name
    prediction_threshold: float = Field(default=0.25, gt=0, le=1)  # served against eval outputs
    window: Duration = "1d"  # the logs of the last window against the window before it
    triggers: tuple[Trigger, ...] = ("skew", "drift", "prediction_drift", "new_data")
    prometheus_file: LaxPath | None = None  # default <output_dir>/monitoring/skewless.prom
    # `skewless manifests`: a Kubernetes CronJob running `skewless monitor --retrain`.
    schedule: CronSchedule = "0 * * * *"
    cluster_logs_dir: AbsolutePath = "/mnt/models/logs"  # the request logs, on a volume

    @field_validator("thresholds")
    @classmethod
    def _between_0_and_1(cls, value: dict[str, float]) -> dict[str, float]:
        for name, threshold in value.items():
            if not 0 < threshold <= 1:
                raise ValueError(f"monitoring.thresholds.{name}: expected a distance above 0 "
                                 f"and at most 1, got {threshold!r}")
        return value

    @property
    def window_seconds(self) -> int:
        return int(self.window[:-1]) * _SECONDS[self.window[-1]]

    def threshold_of(self, feature: str) -> float:
        return self.thresholds.get(feature, self.threshold)


class PipelineConfig(Section):
    """Everything a run needs; paths are absolute once loaded."""

    pipeline: PipelineSection
    data: DataSection
    schema_: SchemaSection = Field(default=SchemaSection(), alias="schema")
    label: LabelSection
    features: FeaturesSection
    transform: TransformSection = TransformSection()
    model: ModelSection = ModelSection()
    evaluation: EvaluationSection = EvaluationSection()
    tuning: TuningSection | None = None
    serving: ServingSection
    infra_validation: InfraValidationSection = InfraValidationSection()
    canary: CanarySection = CanarySection()
    metadata: MetadataSection
    beam: BeamSection = BeamSection()
    kubeflow: KubeflowSection = KubeflowSection()
    deployment: DeploymentSection = DeploymentSection()
    monitoring: MonitoringSection = MonitoringSection()
    source: LaxPath | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _consistent(self) -> PipelineConfig:
        if self.label.name in self.features.raw_names:
            raise ValueError(f"label.name: {self.label.name!r} is also a feature name")
        leaked = [n for n in self.label.source_columns if n in self.features.raw_names]
        if self.label.derived is not None and self.label.derived.numerator in leaked:
            raise ValueError(
                f"label numerator {self.label.derived.numerator!r} is also a feature (label leak)"
            )
        if self.label.column is not None and leaked:
            raise ValueError(f"label column {self.label.column!r} is also a feature")
        unknown = [n for s in self.evaluation.slices for n in s if n not in self.features.raw_names]
        if unknown:
            raise ValueError(f"evaluation.slices: uses features not listed: {', '.join(unknown)}")
        if self.tuning is not None and self.model.build_fn is None:
            unknown = [n for n in self.tuning.search_space if n not in BUILT_IN_LIMITS]
            if unknown:
                raise ValueError(
                    f"tuning.search_space.{unknown[0]}: not a hyperparameter of the built-in "
                    f"model ({', '.join(BUILT_IN_LIMITS)}); a model.build_fn declares its own "
                    "in a `search_space` attribute")
        unknown = [n for n in self.monitoring.thresholds if n not in self.features.raw_names]
        if unknown:
            raise ValueError(f"monitoring.thresholds: not a feature: {', '.join(unknown)}")
        task = TASKS[self.label.task]
        for index, threshold in enumerate(self.evaluation.thresholds):
            try:
                threshold.check_direction(task)
            except ValueError as error:
                raise ValueError(f"evaluation.thresholds.{index}.metric: {error}") from None
        return self

    # Derived locations, so that no path is built anywhere else.
    @property
    def pipeline_root(self) -> Path:
        return self.pipeline.output_dir / "pipeline_root"

    @property
    def log_dir(self) -> Path:
        return self.pipeline.output_dir / "logs"

    @property
    def monitoring_dir(self) -> Path:
        return self.pipeline.output_dir / "monitoring"

    @property
    def model_push_dir(self) -> Path:
        return self.serving.push_dir / self.serving.model_name

    @property
    def required_columns(self) -> tuple[str, ...]:
        return self.features.raw_names + tuple(
            n for n in self.label.source_columns if n not in self.features.raw_names
        )

    @property
    def task(self) -> Task:
        return self.label.task_object()

    def feature_plan(self) -> FeaturePlan:
        """The part of the config that transforms/ needs, as its own plain type."""
        f = self.features
        derived = self.label.derived
        return FeaturePlan(
            label=self.label.name,
            task=self.task,
            label_column=self.label.column,
            label_numerator=derived.numerator if derived else None,
            label_denominator=derived.denominator if derived else None,
            label_greater_than=derived.greater_than if derived else None,
            numeric=f.numeric.names,
            categorical=f.categorical.names,
            top_k=f.categorical.top_k,
            oov_buckets=f.categorical.oov_buckets,
            bucketized=f.bucketized.names,
            buckets=f.bucketized.buckets,
            crosses=tuple((c.features, c.hash_buckets) for c in f.crosses),
            hidden_units=self.model.hidden_units,
            embedding_dim=self.model.embedding_dim,
            learning_rate=self.model.learning_rate,
            batch_size=self.model.batch_size,
            seed=self.model.seed,
            build_fn=self.model.build_fn,
        )
