"""Named student variants from a TOML file, all trained from the same shards.

::

    [defaults]            # optional, applies to every variant
    epochs = 4

    [variants.small]
    hidden = 128

    [variants.deep]
    hidden = 256
    layers = 2
    loss = "mse+cosine"
    loss-weights = [1.0, 1.0]

Precedence: built-in defaults < [defaults] < [variants.NAME] < options given on the command line.
Each variant trains into ``<out>/NAME`` (``students/NAME`` by default).
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from core.errors import UserError
from student.config import TrainConfig

_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)} - {"variant"}
DEFAULT_ROOT = "students"


def _normalise(table: dict[str, Any], where: str) -> dict[str, Any]:
    values = {key.replace("-", "_"): value for key, value in table.items()}
    unknown = sorted(set(values) - _FIELDS)
    if unknown:
        raise UserError(f"{where}: unknown option(s) {', '.join(unknown)}")
    return values


def read_variants(path: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """([defaults] values, {variant name: values}) from a variants TOML file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such variants file") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: invalid TOML ({exc})") from None
    extra = sorted(set(raw) - {"defaults", "variants"})
    if extra:
        raise UserError(f"{path}: unexpected table(s) {', '.join(extra)}; use [defaults] and "
                        "[variants.NAME]")
    variants = raw.get("variants", {})
    if not variants:
        raise UserError(f"{path}: no [variants.NAME] tables")
    defaults = _normalise(raw.get("defaults", {}), f"{path} [defaults]")
    return defaults, {name: _normalise(table, f"{path} [variants.{name}]")
                      for name, table in variants.items()}


def build_train_configs(
    options: dict[str, Any],
    explicit: set[str],
    config_file: str | None = None,
    variants: tuple[str, ...] = (),
) -> list[TrainConfig]:
    """One TrainConfig, or one per selected variant (``all`` selects every variant).

    ``options`` are all command-line values (defaults included); ``explicit`` names those the user
    typed, which override the TOML.
    """
    if not config_file:
        if variants:
            raise UserError("--variant needs --config FILE.toml")
        return [TrainConfig(**options)]
    defaults, table = read_variants(config_file)
    names = list(table) if "all" in variants or not variants else list(dict.fromkeys(variants))
    missing = [name for name in names if name not in table]
    if missing:
        raise UserError(f"{config_file}: no variant(s) {', '.join(missing)}; "
                        f"it defines {', '.join(table)}")
    root = options["out"] if "out" in explicit else DEFAULT_ROOT
    configs = []
    for name in names:
        merged = {**options, **defaults, **table[name]}
        merged.update({key: options[key] for key in explicit})
        merged["out"] = table[name].get("out") or str(Path(root) / name)
        configs.append(TrainConfig(**merged, variant=name))
    return configs
