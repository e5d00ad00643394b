"""Named hyperparameter presets for train_rl: ``<home>/models/presets/<name>.json``.

``tune`` saves its best configuration as one; ``train_rl --preset NAME`` (or a path to such a file)
starts from it, and flags given on the command line still win. A preset holds ``params`` (fields
of :class:`~ml.rl.ppo.Args`) and where they came from (``source``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ml.rl.ppo import Args
from prioritymax.files import atomic_write_bytes
from prioritymax.settings import get_settings

ARG_FIELDS = {f.name for f in dataclasses.fields(Args)}


class PresetError(ValueError):
    """A preset that does not exist or does not describe Args."""


def presets_dir() -> Path:
    return get_settings().models_dir / "presets"


def preset_path(name: str) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise PresetError(f"preset name {name!r}: use letters, digits, '-' or '_'")
    return presets_dir() / f"{name}.json"


def save_preset(name: str, params: dict[str, Any], source: dict[str, Any]) -> Path:
    unknown = set(params) - ARG_FIELDS
    if unknown:
        raise PresetError(f"preset {name!r}: not train_rl parameters: {sorted(unknown)}")
    path = preset_path(name)
    atomic_write_bytes(path, json.dumps({"name": name, "params": params, "source": source},
                                        indent=2, default=str).encode())
    return path


def load_preset(name_or_path: str) -> dict[str, Any]:
    """The ``params`` of a preset given by name (in the presets folder) or by file path."""
    path = Path(name_or_path) if name_or_path.endswith(".json") else preset_path(name_or_path)
    if not path.is_file():
        known = sorted(p.stem for p in presets_dir().glob("*.json"))
        raise PresetError(f"no preset {name_or_path!r} (known: {', '.join(known) or 'none'}; "
                          "`tune` saves one)")
    try:
        params = json.loads(path.read_text())["params"]
    except (ValueError, KeyError, TypeError) as error:
        raise PresetError(f"{path}: not a preset ({error})") from None
    unknown = set(params) - ARG_FIELDS
    if unknown:
        raise PresetError(f"{path}: not train_rl parameters: {sorted(unknown)}")
    return params


def resolve_args(preset: str | None = None, **given: Any) -> Args:
    """:class:`~ml.rl.ppo.Args` from, in rising precedence: its defaults, PRIORITYMAX_RL_ENVS (for
    ``num_envs``), the ``preset`` (a name or a path), the values ``given`` (None: not given). The
    trainer commands' flags and the Dagster ``TrainingBudget`` both go through here."""
    return Args(**{"num_envs": get_settings().rl_envs, **(load_preset(preset) if preset else {}),
                   **{k: v for k, v in given.items() if v is not None}})
