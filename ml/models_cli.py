"""``pmx models``: the model registry from the command line (list, register, promote, rollback,
archive)."""

from __future__ import annotations

from pathlib import Path

import click

from ml.registry import MODEL_NAMES, default_actor
from prioritymax.roles import ROLES

ACTOR = click.option("--actor", default=None, help="who acts [default: the login name]")
ROLE = click.option("--role", type=click.Choice(ROLES), default="operator", show_default=True,
                    help="the role acted in (promotion needs operator; --force needs admin)")


PUBLISH = click.option("--publish/--no-publish", default=True, show_default=True,
                       help="write the new champion's version to the control plane (PRIORITYMAX_API_URL), "
                            "where autoscaler workers pick it up")


def _publish(name: str, version: str, comment: str, publish: bool) -> dict:
    """The champion's version written to the control plane: ``{"published": {...}}``. No control
    plane listening is reported, not an error; one that refuses the write exits 1."""
    if not publish:
        return {"published": {"published": False, "status": "not published (--no-publish)"}}
    from client import publish as control_plane
    from ml.registry import CONFIG_KEYS
    from prioritymax.settings import get_settings

    settings = get_settings()
    try:
        done = control_plane.publish(settings.api_url, settings.api_client_token(), CONFIG_KEYS[name],
                                     int(version), comment=comment)
    except control_plane.ControlPlaneError as error:
        raise click.ClickException(f"{name} version {version} is the champion in MLflow, "
                                   f"but {error}") from None
    return {"published": {"published": done.published, "status": done.status, "key": done.key}}


@click.group("models", context_settings={"help_option_names": ["-h", "--help"]})
def models() -> None:
    """Registered model versions, aliases, gate results; promote and roll back champions."""


def home_relative(path: str | None, home: Path) -> str:
    """A checkpoint path as short as it can honestly be: relative to the data home when inside it."""
    if not path:
        return "-"
    return str(Path(path).relative_to(home)) if Path(path).is_relative_to(home) else path


def key_metric(row: dict) -> str:
    """The version's headline figure with its name (holdout RMSE, eval reward): what its run logged
    to judge it by."""
    from ml.registry import KEY_METRICS

    metric, label = KEY_METRICS[row["name"]]
    value = row["metrics"].get(metric)
    digits = 4 if metric.endswith("rmse") else 2
    return f"{label} {value:.{digits}f}" if value is not None else f"{label} -"


def version_table(rows: list[dict], *, home: Path, width: int) -> list[str]:
    """``pmx models list``'s lines, fitted to ``width``. The checkpoint is the last column when
    the whole table fits; otherwise it goes on a line of its own under each version (shortened
    if it must be), and the creation time, then the promoter, make room for the rest.
    The key metric is never cut. The (deprecated) MLflow stage is a column only when a version
    has one."""
    from ml.console import fit_table, shorten_path, table_width

    with_stage = any(row.get("stage", "None") != "None" for row in rows)
    headers = ["model", "ver", "aliases", *(["stage"] if with_stage else []), "key metric", "gate",
               "promoted by", "created", "checkpoint"]
    cells = [_version_cells(row, home, with_stage) for row in rows]
    right = [headers.index("ver")]
    if table_width([max(len(c) for c in column) for column in zip(headers, *cells, strict=True)]) <= width:
        return fit_table(headers, cells, width=width, right=right)
    lines = fit_table(headers[:-1], [row[:-1] for row in cells], width=width, right=right,
                      optional=[headers.index("created"), headers.index("promoted by")])
    indent = "    "
    return [lines[0], *(line for row, text in zip(cells, lines[1:], strict=True)
                        for line in (text, indent + shorten_path(row[-1], width - len(indent))))]


def _version_cells(row: dict, home: Path, with_stage: bool) -> list[str]:
    gate = row["gate"].get("passed")
    return [
        row["name"], str(row["version"]), row["aliases"] or "-",
        *([row.get("stage", "None")] if with_stage else []),
        key_metric(row), {"True": "passed", "False": "failed"}.get(gate, "not run"),
        row["promotion"].get("promotion.actor", "-"), row["created"][:16].replace("T", " "),
        home_relative(row.get("checkpoint"), home),
    ]


@models.command("list")
@click.option("--name", type=click.Choice(MODEL_NAMES), default=None, help="only this model")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table")
def list_command(name, as_json):
    """List versions: aliases, key metric (holdout RMSE, eval reward), gate, checkpoint file."""
    from ml import registry
    from ml.console import terminal_width
    from prioritymax.settings import get_settings

    rows = registry.list_versions((name,) if name else MODEL_NAMES)
    if as_json:
        from ml.cli import emit

        emit(rows)
        return
    if not rows:
        click.echo("no registered versions yet: run `make up`, or train with `pmx train_rl --mlflow` "
                   "or `pmx train_predictor --mlflow`")
        return
    for line in version_table(rows, home=get_settings().home, width=terminal_width()):
        click.echo(line)


@models.command("register")
@click.argument("name", type=click.Choice(MODEL_NAMES))
@click.argument("files", nargs=-1, required=True,
                type=click.Path(dir_okay=False, exists=True, path_type=Path))
def register_command(name, files):
    """Register checkpoint FILES trained elsewhere as a new version of NAME (the challenger)."""
    from ml import registry
    from ml.cli import emit

    emit({"model": name, "version": registry.register_files(name, list(files))})


@models.command("promote")
@click.argument("name", type=click.Choice(MODEL_NAMES))
@click.argument("version")
@click.option("--force", is_flag=True, help="promote even without a passed gate (admin only)")
@click.option("--reason", default="", help="why, for the audit log")
@ACTOR
@ROLE
@PUBLISH
def promote_command(name, version, force, reason, actor, role, publish):
    """Make VERSION the champion of NAME (its gate must have passed)."""
    from ml import registry
    from ml.cli import emit

    record = registry.promote(name, version, actor=actor or default_actor(), role=role, force=force,
                              reason=reason)
    emit({**record, **_publish(name, record["version"], f"{name} version {record['version']} promoted "
                               f"by {record['actor']} (pmx models promote)", publish)})


@models.command("rollback")
@click.argument("name", type=click.Choice(MODEL_NAMES))
@ACTOR
@ROLE
@PUBLISH
def rollback_command(name, actor, role, publish):
    """Give the champion alias back to the previous champion of NAME."""
    from ml import registry
    from ml.cli import emit

    record = registry.rollback(name, actor=actor or default_actor(), role=role)
    emit({**record, **_publish(name, record["version"], f"{name} rolled back to version "
                               f"{record['version']} by {record['actor']} (pmx models rollback)", publish)})


@models.command("archive")
@click.argument("name", type=click.Choice(MODEL_NAMES))
@click.argument("version", required=False)
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="archive this local checkpoint instead of a registered VERSION")
@ACTOR
def archive_command(name, version, checkpoint, actor):
    """Write a tarball of a checkpoint and its metadata into <home>/models/archive/."""
    from ml import registry
    from ml.cli import emit

    emit(registry.archive(name, version=version, checkpoint=checkpoint, actor=actor))
