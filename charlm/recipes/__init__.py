"""Recipes: job files that ship inside charlm and its plugins, run by name (``charlm run micro``).

The core's recipes are the ``*.toml`` files beside this module. A plugin ships its own as
``recipes/*.toml`` inside the top-level package of its ``charlm`` entry point (charlm-ssm
ships ``hybrid-ssm``); no hook is needed and nothing heavier than that package is imported.

A recipe's first comment line is its one-line description; a comment line ``# data: COMMAND``
says how to fetch the corpus it trains on. Relative paths inside a recipe (``data.*``,
``out_dir``) are relative to the current directory, like those of any job file.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import warnings
from pathlib import Path

import attrs

from charlm.errors import CharLMError, ConfigError
from charlm.registry import ENTRY_POINT_GROUP, PluginLoadWarning, disabled_from_env

CORE_DISTRIBUTION = "charlm-toolkit"


@attrs.frozen
class Recipe:
    name: str
    path: Path
    distribution: str
    description: str
    data_command: str | None

    def check_data(self, *paths: str | None) -> None:
        """Fail with the command that fetches the recipe's corpus when a data file is missing."""
        for path in filter(None, paths):
            if self.data_command and not Path(path).is_file():
                raise CharLMError(f"{path}: no such file (recipe {self.name!r} gets its data with `{self.data_command}`)")


def read_recipe(path: Path, distribution: str) -> Recipe:
    comments = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        comments.append(line.lstrip("#").strip())
    data = [c.split(":", 1)[1].strip() for c in comments if c.lower().startswith("data:")]
    return Recipe(
        name=path.stem,
        path=path,
        distribution=distribution,
        description=comments[0] if comments else "",
        data_command=data[0].strip("`") if data else None,
    )


def _recipe_files(folder) -> list[Path]:
    if not folder.is_dir():
        return []
    # installed packages are plain directories (a zipped one would need importlib.resources.as_file)
    return sorted(Path(str(f)) for f in folder.iterdir() if f.name.endswith(".toml"))


def _plugin_packages() -> list[tuple[str, str]]:
    """``(top-level package, distribution)`` of every enabled entry-point plugin, once each."""
    disabled = disabled_from_env()
    seen: dict[str, str] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist else "?"
        if ep.name in disabled or dist in disabled:
            continue
        seen.setdefault(ep.module.split(".")[0], dist)
    return list(seen.items())


def find_recipes() -> dict[str, Recipe]:
    """Every installed recipe by name: the core's first, then each plugin's."""
    core = importlib.resources.files(__name__)
    recipes = {p.stem: read_recipe(p, CORE_DISTRIBUTION) for p in _recipe_files(core)}
    for package, dist in _plugin_packages():
        try:
            files = _recipe_files(importlib.resources.files(package) / "recipes")
        except Exception as exc:  # a broken plugin must not hide the other recipes
            warnings.warn(f"recipes of {dist} ({package}) not read: {type(exc).__name__}: {exc}", PluginLoadWarning, stacklevel=2)
            continue
        for path in files:
            if path.stem in recipes:
                other = recipes[path.stem].distribution
                warnings.warn(f"recipe {path.stem!r} of {dist} ignored: {other} ships one of that name", PluginLoadWarning, stacklevel=2)
                continue
            recipes[path.stem] = read_recipe(path, dist)
    return recipes


def lookup(job: str) -> Recipe | None:
    """The recipe that ``job`` names, or None when ``job`` is a file (a path wins over a name)."""
    if Path(job).is_file():
        return None
    recipes = find_recipes()
    if job in recipes:
        return recipes[job]
    if Path(job).suffix or "/" in job:
        return None  # a path that does not exist: the config loader names it
    raise ConfigError(f"{job}: no such job file or recipe (recipes: {', '.join(recipes)}; see `charlm recipes`)")
