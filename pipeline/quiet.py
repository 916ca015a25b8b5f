"""Quiet notebooks: the known noise of the stack off, real warnings and errors still shown.

The noise, measured on a notebook's first cells: FutureWarnings from Google's client libraries
(Python versions they will drop), TensorFlow's C++ start-up lines (CUDA plugin registration on a
machine without a GPU, CPU instruction notes), and absl / TensorFlow / Beam INFO logs of every
component. `silence()` must run before TensorFlow is first imported to catch the start-up lines;
`verbose()` turns the Python-side logs and warnings back on for debugging.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator

NOISY_LOGGERS = ("absl", "tensorflow", "apache_beam", "tfx", "ml_metadata", "root")
# Warnings that say nothing about the user's code: Google client libraries announcing the end
# of Python versions, and deprecations inside TFX's own dependencies.
QUIET_WARNINGS = (
    (FutureWarning, r"(google|tensorflow|tfx|apache_beam|tensorflow_\w+)(\.|$)"),
    (DeprecationWarning, r"(google|tensorflow|tfx|apache_beam|tensorflow_\w+|jupyter_client)"),
    # TFMA divides by zero at thresholds where nothing is predicted positive; its results are
    # right (NaN handled), the numpy warning is not for the user.
    (RuntimeWarning, r"tensorflow_model_analysis\."),
)
# Log lines of the stack's internals that a user can do nothing about, by the logger that logs
# them (a logger's filters do not see its children's records).
QUIET_LOG_LINES = {
    "absl": ("Examples artifact does not have payload_format custom property",  # TFX legacy
             "Fail to find plots for model name",  # TFMA's widget, with a baseline model
             "Tables initialized inside a tf.function"),  # TFMA reloads the vocabularies
    "tensorflow": ("SavedModel saved prior to TF 2.5 detected",  # TFMA loads a non-Keras model
                   "is deprecated and will be removed"),  # deprecations inside TFMA and TFX
    "apache_beam.runners.interactive.interactive_environment": (
        "Dependencies required for Interactive Beam",),  # Beam notices IPython
    "apache_beam.io.tfrecordio": ("Couldn't find python-snappy",),  # pure-Python checksums
    # Beam's own top-k combiner (TFDV's top values) warns about itself.
    "apache_beam.transforms.core": ("No iterator is returned by the process method",),
}


class _KnownNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(line in message for line in QUIET_LOG_LINES.get(record.name, ()))


_known_noise = _KnownNoise()


@contextlib.contextmanager
def _stderr_discarded() -> Iterator[None]:
    """Sends the process's file descriptor 2 to /dev/null (C++ logs do not go through Python)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def silence() -> None:
    """Turns the known noise off; later warnings and errors (Python and C++) still show."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # C++ INFO and WARNING lines
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFX's Keras code needs Keras 2
    for category, module in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", category=category, module=module)
    if "tensorflow" not in sys.modules:
        # The CUDA-plugin lines are logged as errors at import time on every CPU-only machine.
        with _stderr_discarded():
            import tensorflow  # noqa: F401
    import absl.logging

    absl.logging.set_verbosity(absl.logging.WARNING)
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name if name != "root" else None)
        logger.setLevel(logging.WARNING)
    for name in QUIET_LOG_LINES:
        logging.getLogger(name).addFilter(_known_noise)


def verbose() -> None:
    """The logs back on for debugging: INFO of absl, TensorFlow, TFX and Beam, and every warning.

    TensorFlow's C++ log level is read once at start-up: set TF_CPP_MIN_LOG_LEVEL=0 before
    starting the kernel to see those lines too.
    """
    import absl.logging

    absl.logging.set_verbosity(absl.logging.INFO)
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name if name != "root" else None)
        logger.setLevel(logging.INFO)
    for name in QUIET_LOG_LINES:
        logging.getLogger(name).removeFilter(_known_noise)
    warnings.resetwarnings()
