"""AvroExampleGen: FileBasedExampleGen with an Avro executor that keeps zeros."""

from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec

from skewless.components.avro_example_gen import executor


class AvroExampleGen(FileBasedExampleGen):
    """Reads Avro files into tf.Examples; only nulls become missing values."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
