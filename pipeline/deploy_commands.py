"""CLI verbs that produce what goes to a cluster: `skewless compile` and `skewless manifests`."""

from __future__ import annotations

from pathlib import Path

import click

from skewless.pipeline.commands import CONFIG_OPTION, load_config_or_exit
from skewless.pipeline.config import ConfigError


@click.command("compile")
@CONFIG_OPTION
@click.option("--target", type=click.Choice(["kubeflow", "vertex", "batch"]), default="kubeflow",
              show_default=True,
              help="kubeflow: the PipelineSpec YAML that Kubeflow Pipelines takes; "
                   "vertex: a Vertex AI PipelineJob JSON; "
                   "batch: the batch inference pipeline's PipelineSpec YAML.")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("kubeflow"), show_default=True, help="Folder to write into.")
def compile_command(config_path: Path, target: str, output_dir: Path) -> None:
    """Compile the pipeline for Kubeflow Pipelines (KFP v2) or Vertex AI."""
    from skewless.pipeline.kubeflow import compile_pipeline, pipeline_name_of

    # The data is read on the cluster, not here: only the config itself is checked.
    config = load_config_or_exit(config_path, check_data=False)
    try:
        path = compile_pipeline(config, output_dir, target)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    image = config.kubeflow.image
    name = pipeline_name_of(config, target)
    click.echo(f"Pipeline {name!r} compiled to {path}; every task runs {image}:\n"
               f"  docker build -f kubeflow/Dockerfile -t {image} . && docker push {image}")


@click.command("manifests")
@CONFIG_OPTION
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("kubeflow/serving"), show_default=True, help="Folder to write into.")
@click.option("--local/--no-local", default=True, show_default=True,
              help="Also write the serving files next to the pushed versions (serving.push_dir).")
def manifests(config_path: Path, output_dir: Path, local: bool) -> None:
    """Write the TF Serving kustomize base and gpu/cpu overlays, and its config files."""
    from skewless.pipeline.manifests import write_local_serving_files, write_manifests
    from skewless.pipeline.promotion import served

    # The data is read on the cluster, not here: only the config itself is checked.
    config = load_config_or_exit(config_path, check_data=False)
    try:
        labels = served(config)  # the model registry's labels: the cluster follows them
        written = write_manifests(config, output_dir, labels)
        local_files = write_local_serving_files(config, registry=labels) if local else {}
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"{len(written)} files written to {output_dir}; "
               f"apply with: kubectl apply -k {output_dir / 'overlays' / 'gpu'}")
    click.echo(f"Monitoring CronJob (skewless monitor --retrain): kubectl apply -k "
               f"{output_dir / 'monitor'}")
    if local_files:
        click.echo(
            "Serve the pushed versions locally with the same files:\n"
            f"  skewless serve --model_config_file={local_files['models.config']} "
            f"--batching_parameters_file={local_files['batching_parameters.txt']} "
            f"--monitoring_config_file={local_files['monitoring.config']}"
        )


COMMANDS = [compile_command, manifests]
