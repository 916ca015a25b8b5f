"""What differs by task — binary, multiclass, regression — owned by one small object per task.

A task turns the raw label column into the training label and its weight, gives the model its
output head, loss and Keras metrics, names the serving outputs (and the Classify or Regress
signature TF Serving's APIs call), and lists the TFMA metrics with the direction in which each is
better. The pipeline's eval config, the run summary and the registry read all of it from here.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar

import tensorflow as tf
import tf_keras as keras

# TF Serving's method names (tensorflow_serving/apis/...; signature_constants in TensorFlow).
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
# The signature keys TF Serving's Classify / Regress requests name in `signature_name`.
CLASSIFICATION_SIGNATURE = "classification"
REGRESSION_SIGNATURE = "regression"
# Inputs and outputs of those signatures, as TF Serving's classifier.cc / regressor.cc want them.
API_INPUTS = "inputs"
API_CLASSES = "classes"
API_SCORES = "scores"
API_OUTPUTS = "outputs"
# The model's output layer; a user's build_fn may name it anything.
HEAD_NAME = "head"


@dataclasses.dataclass(frozen=True)
class Metric:
    """A TFMA metric: the class a threshold names, the key TFMA records, and its direction."""

    class_name: str
    key: str
    higher_is_better: bool | None  # None: no direction; such a metric takes no threshold

    @property
    def direction(self) -> str:
        return {True: "higher", False: "lower", None: "none"}[self.higher_is_better]


def _dense_and_present(x: tf.Tensor | tf.SparseTensor, default: Any) -> tuple[tf.Tensor, tf.Tensor]:
    """A [batch] tensor with `default` where a value is missing, and where values are present."""
    if isinstance(x, tf.SparseTensor):
        x = tf.SparseTensor(x.indices, x.values, [x.dense_shape[0], 1])
        present = tf.sparse.to_dense(
            tf.SparseTensor(x.indices, tf.ones_like(x.values, tf.bool), x.dense_shape),
            default_value=False,
        )[:, 0]
        return tf.sparse.to_dense(x, default_value=default)[:, 0], present
    if x.shape.rank == 2:
        x = tf.squeeze(x, axis=1)
    return x, tf.ones_like(x, tf.bool)


def _weight(present: tf.Tensor) -> tf.Tensor:
    return tf.cast(present, tf.float32)


class Task(abc.ABC):
    """One kind of problem. Subclasses are small frozen dataclasses with a `kind` name."""

    kind: ClassVar[str]
    metrics: ClassVar[tuple[Metric, ...]]
    # The serving output TFMA evaluates and the Keras metric the training curves show.
    prediction_key: ClassVar[str]
    history_metric: ClassVar[str]
    # Whether a higher `history_metric` is better: the direction a hyperparameter search takes.
    history_metric_higher_is_better: ClassVar[bool]
    loss: ClassVar[str]
    api_signature: ClassVar[str]

    # -- the label --
    @abc.abstractmethod
    def label(self, column: tf.Tensor | tf.SparseTensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The training label and its weight (0.0 where the label is missing) for a raw column."""

    # -- the model --
    @property
    @abc.abstractmethod
    def units(self) -> int:
        """Width of the model's output."""

    @abc.abstractmethod
    def head(self, x: tf.Tensor) -> tf.Tensor:
        """The output layer over the last hidden layer (or logits of a user's model)."""

    @abc.abstractmethod
    def keras_metrics(self) -> list[keras.metrics.Metric]:
        """Metrics Keras reports while training (`history.json`)."""

    def compile(self, model: keras.Model, learning_rate: float) -> keras.Model:
        """Compiles a model for this task: Adam, the task's loss, weighted metrics."""
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss=self.loss,
            weighted_metrics=self.keras_metrics(),
        )
        return model

    def check_model(self, model: keras.Model) -> None:
        """Raises ValueError when a model's output is not this task's head."""
        shape = tuple(model.output_shape) if not isinstance(model.output_shape, list) else None
        if shape is None or len(shape) != 2 or shape[1] != self.units:
            raise ValueError(
                f"the model's output has shape {model.output_shape}; task {self.kind} expects "
                f"(None, {self.units}) (use task.head(x) as the last layer)"
            )

    @property
    def tuning_objective(self) -> tuple[str, str]:
        """What a hyperparameter search optimises: the history metric on the eval data, and
        KerasTuner's direction for it ("max" or "min")."""
        direction = "max" if self.history_metric_higher_is_better else "min"
        return "val_" + self.history_metric, direction

    # -- serving --
    @abc.abstractmethod
    def serving_outputs(self, output: tf.Tensor) -> dict[str, tf.Tensor]:
        """The named outputs of `serving_default` / `serving_tf_example` for the model's output."""

    @abc.abstractmethod
    def api_outputs(self, output: tf.Tensor) -> dict[str, tf.Tensor]:
        """The outputs of the Classify or Regress signature (TF Serving's aliases and shapes)."""

    @property
    def api_method(self) -> str:
        return CLASSIFY_METHOD if self.api_signature == CLASSIFICATION_SIGNATURE else REGRESS_METHOD

    # -- evaluation --
    @classmethod
    def metric(cls, class_name: str) -> Metric:
        """The task's metric of that class; ValueError naming the task's metrics otherwise."""
        for metric in cls.metrics:
            if metric.class_name == class_name:
                return metric
        names = ", ".join(m.class_name for m in cls.metrics)
        raise ValueError(f"{class_name} is not a {cls.kind} metric; use one of {names}")

    def tfma_binarize_class_ids(self) -> tuple[int, ...]:
        """Class ids for per-class TFMA metrics (none unless multiclass)."""
        return ()

    # -- travelling as custom_config --
    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}  # type: ignore[call-overload]


@dataclasses.dataclass(frozen=True)
class BinaryTask(Task):
    """Two classes: a 0/1 column, a column whose `positive` value is class 1, or a derived label.

    Outputs `probabilities` (of class 1) and `classes` (0 or 1); Classify gives both classes'
    names and scores.
    """

    positive: str | None = None  # the positive value of a two-valued column
    negative: str | None = None  # the other value, for the class names Classify returns

    kind: ClassVar[str] = "binary"
    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("AUC", "auc", True),
        Metric("BinaryAccuracy", "binary_accuracy", True),
        Metric("Precision", "precision", True),
        Metric("Recall", "recall", True),
        Metric("AUCPrecisionRecall", "auc_precision_recall", True),
    )
    prediction_key: ClassVar[str] = "probabilities"
    history_metric: ClassVar[str] = "auc"
    history_metric_higher_is_better: ClassVar[bool] = True
    loss: ClassVar[str] = "binary_crossentropy"
    api_signature: ClassVar[str] = CLASSIFICATION_SIGNATURE

    @property
    def class_names(self) -> tuple[str, str]:
        if self.positive is None:
            return ("0", "1")
        return (self.negative or "not " + self.positive, self.positive)

    def label(self, column):
        if self.positive is None:
            values, present = _dense_and_present(column, tf.constant(0, column.dtype))
            return tf.cast(values, tf.int64), _weight(present)
        if column.dtype == tf.string:
            values, present = _dense_and_present(column, "")
            positive = tf.equal(values, self.positive)
        else:
            values, present = _dense_and_present(column, tf.constant(0, column.dtype))
            positive = tf.equal(tf.cast(values, tf.float64), float(self.positive))
        return tf.cast(positive, tf.int64), _weight(present)

    @property
    def units(self) -> int:
        return 1

    def head(self, x):
        return keras.layers.Dense(1, activation="sigmoid", name=HEAD_NAME)(x)

    def keras_metrics(self):
        return [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]

    def serving_outputs(self, output):
        probability = tf.reshape(output, [-1])
        return {"probabilities": probability, "classes": tf.cast(probability > 0.5, tf.int64)}

    def api_outputs(self, output):
        probability = tf.reshape(output, [-1, 1])
        scores = tf.concat([1.0 - probability, probability], axis=1)
        names = tf.constant(self.class_names)
        return {API_CLASSES: tf.tile(names[tf.newaxis, :], [tf.shape(scores)[0], 1]),
                API_SCORES: scores}


@dataclasses.dataclass(frozen=True)
class MulticlassTask(Task):
    """K classes named by `classes` (sorted from the data, or listed in the config).

    Outputs per-class `scores`, the predicted class's name in `classes` and its index in
    `class_ids`; Classify gives every class's name and score.
    """

    classes: tuple[str, ...] = ()

    kind: ClassVar[str] = "multiclass"
    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("SparseCategoricalAccuracy", "sparse_categorical_accuracy", True),
        Metric("SparseCategoricalCrossentropy", "sparse_categorical_crossentropy", False),
    )
    prediction_key: ClassVar[str] = "scores"
    history_metric: ClassVar[str] = "accuracy"
    history_metric_higher_is_better: ClassVar[bool] = True
    loss: ClassVar[str] = "sparse_categorical_crossentropy"
    api_signature: ClassVar[str] = CLASSIFICATION_SIGNATURE

    def __post_init__(self):
        if len(self.classes) < 2:
            raise ValueError(f"a multiclass task needs two or more classes, got {self.classes}")

    def label(self, column):
        if column.dtype == tf.string:
            values, present = _dense_and_present(column, "")
        else:  # integer class labels (floats holding integers, as CSV may give them)
            values, present = _dense_and_present(column, tf.constant(0, column.dtype))
            values = tf.strings.as_string(tf.cast(values, tf.int64))
        matches = tf.equal(values[:, tf.newaxis], tf.constant(self.classes)[tf.newaxis, :])
        known = tf.logical_and(present, tf.reduce_any(matches, axis=1))
        return tf.argmax(tf.cast(matches, tf.int64), axis=1), _weight(known)

    @property
    def units(self) -> int:
        return len(self.classes)

    def head(self, x):
        return keras.layers.Dense(self.units, activation="softmax", name=HEAD_NAME)(x)

    def keras_metrics(self):
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

    def serving_outputs(self, output):
        ids = tf.argmax(output, axis=1)
        return {"scores": output, "classes": tf.gather(tf.constant(self.classes), ids),
                "class_ids": ids}

    def api_outputs(self, output):
        names = tf.constant(self.classes)
        return {API_CLASSES: tf.tile(names[tf.newaxis, :], [tf.shape(output)[0], 1]),
                API_SCORES: output}

    def tfma_binarize_class_ids(self) -> tuple[int, ...]:
        return tuple(range(len(self.classes)))


@dataclasses.dataclass(frozen=True)
class RegressionTask(Task):
    """A numeric label. Outputs `predictions`; Regress gives the same value.

    The head predicts in units of the label's spread around its mean (`label_mean`,
    `label_std`, measured on the training data before training) and rescales, so that the
    network starts near the data whatever the label's scale.
    """

    label_mean: float = 0.0
    label_std: float = 1.0

    kind: ClassVar[str] = "regression"
    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("MeanSquaredError", "mean_squared_error", False),
        Metric("RootMeanSquaredError", "root_mean_squared_error", False),
        Metric("MeanAbsoluteError", "mean_absolute_error", False),
        Metric("MeanAbsolutePercentageError", "mean_absolute_percentage_error", False),
        Metric("Calibration", "calibration", None),
    )
    prediction_key: ClassVar[str] = "predictions"
    history_metric: ClassVar[str] = "mae"
    history_metric_higher_is_better: ClassVar[bool] = False
    loss: ClassVar[str] = "mse"
    api_signature: ClassVar[str] = REGRESSION_SIGNATURE

    def label(self, column):
        values, present = _dense_and_present(column, tf.constant(0, column.dtype))
        return tf.cast(values, tf.float32), _weight(present)

    @property
    def units(self) -> int:
        return 1

    def head(self, x):
        scaled = keras.layers.Dense(1, name="scaled_prediction")(x)
        return keras.layers.Rescaling(self.label_std, offset=self.label_mean, name=HEAD_NAME)(
            scaled
        )

    def keras_metrics(self):
        return [keras.metrics.MeanAbsoluteError(name="mae")]

    def serving_outputs(self, output):
        return {"predictions": tf.reshape(output, [-1])}

    def api_outputs(self, output):
        return {API_OUTPUTS: tf.reshape(output, [-1])}


TASKS: dict[str, type[Task]] = {t.kind: t for t in (BinaryTask, MulticlassTask, RegressionTask)}


def task_from_dict(raw: dict[str, Any]) -> Task:
    """Rebuilds a task from `Task.to_dict()` (JSON turns tuples into lists)."""
    fields = dict(raw)
    kind = fields.pop("kind")
    if kind not in TASKS:
        raise ValueError(f"unknown task {kind!r}; expected one of {', '.join(TASKS)}")
    if "classes" in fields:
        fields["classes"] = tuple(fields["classes"])
    return TASKS[kind](**fields)


def metrics_of(kind: str) -> tuple[Metric, ...]:
    """The TFMA metrics of a task kind."""
    return TASKS[kind].metrics
