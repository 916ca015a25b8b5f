"""The `skewless` console script: thin verbs over library functions."""

from __future__ import annotations

import os

# TFX's Keras code is written for Keras 2 (tf_keras); set before TensorFlow is first imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # import-time CUDA noise

import warnings  # noqa: E402

import click  # noqa: E402

# Google client libraries warn about future Python and grpcio support on import; not actionable.
warnings.filterwarnings("ignore", category=FutureWarning)

from skewless import __version__  # noqa: E402


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="skewless")
def main() -> None:
    """From a table to a blessed, skew-free model on TensorFlow Serving."""


def _register() -> None:
    from skewless.pipeline import (
        batch_commands,
        deploy_commands,
        loadtest_commands,
        models_commands,
        monitor_commands,
    )
    from skewless.pipeline import commands as pipeline_commands
    from skewless.serving import cli as serving_commands

    for module in (pipeline_commands, deploy_commands, batch_commands, loadtest_commands,
                   serving_commands, models_commands, monitor_commands):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
