"""`skewless models list|show|promote|rollback`: the model registry in MLMD, from a terminal."""

from __future__ import annotations

import json
from pathlib import Path

import click

from skewless.pipeline.commands import CONFIG_OPTION, load_config_or_exit
from skewless.pipeline.compare_commands import compare
from skewless.pipeline.run_config import PipelineConfig

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
LABEL_OPTION = click.option("--label", required=True,
                            help="The TF Serving version label, e.g. stable or canary.")


def _registry(config: PipelineConfig):
    from skewless.pipeline.config import ConfigError
    from skewless.pipeline.registry import Registry
    from skewless.pipeline.store import connect

    if config.metadata.sqlite is not None and not config.metadata.sqlite.is_file():
        raise click.ClickException(f"no MLMD store at {config.metadata.sqlite}: "
                                   "run `skewless run --config ...` first")
    try:
        return Registry(connect(config), config.pipeline.name)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


def _labels_by_version(config: PipelineConfig, registry) -> dict[int, list[str]]:
    from skewless.pipeline.promotion import history, label_stacks

    by_version: dict[int, list[str]] = {}
    for label, stack in label_stacks(history(registry.store, config.pipeline.name)).items():
        by_version.setdefault(stack[-1], []).append(label)
    return by_version


@click.group()
def models() -> None:
    """The model registry: list, show, promote and roll back model versions."""
    from skewless.pipeline.quiet import silence

    silence()  # TensorFlow's deprecation notes while reading evaluations are not for the user


@models.command("list")
@CONFIG_OPTION
@JSON_OPTION
def list_models(config_path: Path, as_json: bool) -> None:
    """Every model the pipeline trained: version, data, metrics, blessing, push and labels."""
    config = load_config_or_exit(config_path, check_data=False)
    registry = _registry(config)
    records = registry.model_records(config.task)
    labels = _labels_by_version(config, registry)
    rows = [{**r.to_dict(), "pushed": r.version is not None,
             "labels": sorted(labels.get(r.version, []))} for r in records]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"No model of pipeline {config.pipeline.name!r} is recorded yet.")
        return
    header = (f"{'version':<11} {'model':>5}  {'created':<19}  {'rows':>7}  {'metrics':<36}  "
              f"{'blessed':<7}  {'pushed':<6}  labels")
    click.echo(header)
    for row in rows:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in list(row["metrics"].items())[:2])
        blessed = {True: "yes", False: "no", None: "-"}[row["blessed"]]
        click.echo(f"{row['version'] or '-'!s:<11} {row['model_id']:>5}  "
                   f"{(row['created'] or '-').replace('T', ' '):<19}  "
                   f"{row['rows'] if row['rows'] is not None else '-'!s:>7}  {metrics:<36}  "
                   f"{blessed:<7}  {'yes' if row['pushed'] else 'no':<6}  "
                   f"{', '.join(row['labels']) or '-'}")
        click.echo(f"{'':<11} data: {row['source'] or '-'}; {row['why']}")


@models.command("show")
@CONFIG_OPTION
@click.argument("version", type=int)
@JSON_OPTION
def show(config_path: Path, version: int, as_json: bool) -> None:
    """A pushed version's lineage back to the data, and the config it was trained with."""
    from skewless.pipeline.store import run_config_of

    config = load_config_or_exit(config_path, check_data=False)
    registry = _registry(config)
    found = [r for r in registry.model_records(config.task) if r.version == version]
    if not found:
        raise click.ClickException(f"version {version} of model {config.serving.model_name} "
                                   "was never pushed by this pipeline")
    record = found[0]
    lineage = registry.lineage(record.pushed_id).table()
    trained = run_config_of(registry.store, registry.producer(record.model_id))
    run_id, sha256, text = trained if trained is not None else (None, None, None)
    labels = _labels_by_version(config, registry).get(version, [])
    if as_json:
        click.echo(json.dumps({
            **record.to_dict(), "labels": sorted(labels),
            "lineage": [{"artifact": row.artifact, "id": int(row.id),
                         "produced_by": row.produced_by, "detail": row.detail, "uri": row.uri}
                        for row in lineage.itertuples()],
            "config": {"run": run_id, "sha256": sha256, "text": text},
        }, indent=2))
        return
    click.echo(f"Version {version} (model #{record.model_id}) at {record.path}; labels: "
               f"{', '.join(sorted(labels)) or '-'}")
    click.echo("Lineage, from the data to the pushed version:")
    for row in lineage.itertuples():
        producer = f" by {row.produced_by}" if row.produced_by else ""
        detail = f": {row.detail}" if row.detail else ""
        click.echo(f"  {row.artifact} #{row.id}{producer}{detail}")
        click.echo(f"      {row.uri}")
    if trained is None:
        click.echo("Config: not recorded (trained before skewless recorded configs)")
    else:
        click.echo(f"Config of run {run_id} (sha256 {sha256}):")
        for line in text.splitlines():
            click.echo(f"  {line}")


def _promotion_line(move) -> str:
    before = f"version {move.previous_version}" if move.previous_version else "nothing"
    return (f"{move.label}: version {move.version} (was {before}); "
            f"recorded in MLMD as {move.action} by {move.user}")


@models.command("promote")
@CONFIG_OPTION
@click.argument("version", type=int)
@LABEL_OPTION
@click.option("--force", is_flag=True, help="Promote a version that is not blessed.")
@click.option("--server", metavar="HOST:PORT",
              help="REST address of a server polling the model config file: when LABEL exists "
                   "and VERSION is not loaded, promote loads it first and waits for it there.")
@click.option("--timeout", type=click.FloatRange(min=0), default=300.0, show_default=True,
              help="Seconds to wait for VERSION to become AVAILABLE on --server.")
def promote_command(config_path: Path, version: int, label: str, force: bool,
                    server: str | None, timeout: float) -> None:
    """Point LABEL at a pushed VERSION in the model config file the servers poll."""
    from skewless.pipeline.promotion import PromotionError, model_config_path, promote

    config = load_config_or_exit(config_path, check_data=False)
    _registry(config)  # the store must exist
    try:
        move = promote(config, version, label, force=force, server=server, timeout=timeout)
    except PromotionError as error:
        raise click.ClickException(str(error)) from None
    click.echo(_promotion_line(move))
    click.echo(f"  {model_config_path(config)} rewritten; servers polling it follow")


@models.command("rollback")
@CONFIG_OPTION
@LABEL_OPTION
def rollback_command(config_path: Path, label: str) -> None:
    """Point LABEL back at the version it pointed at before its last promotion."""
    from skewless.pipeline.promotion import PromotionError, model_config_path, rollback

    config = load_config_or_exit(config_path, check_data=False)
    _registry(config)
    try:
        move = rollback(config, label)
    except PromotionError as error:
        raise click.ClickException(str(error)) from None
    click.echo(_promotion_line(move))
    click.echo(f"  {model_config_path(config)} rewritten; servers polling it follow")


models.add_command(compare)

COMMANDS = [models]
