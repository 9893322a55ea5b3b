"""Backup recipes: how one kind of volume is archived, test-extracted and restored. A recipe is one
module here with one class (recipe.py's Recipe protocol) and one line in RECIPES; detect() picks the
recipe of a container (its opskit.backup.recipe label first). Recipes never choose a store."""

from __future__ import annotations

from ops.backup.model import ContainerFact, VolumeFact
from ops.backup.recipes.files import Files
from ops.backup.recipes.mongodb import Mongodb
from ops.backup.recipes.mysql import Mysql
from ops.backup.recipes.postgres import Postgres
from ops.backup.recipes.prometheus import Prometheus
from ops.backup.recipes.recipe import ArchiveJob, Archiving, Recipe, RecipeUnusable, Restoring
from ops.backup.recipes.redis import Redis
from ops.backup.recipes.sqlite import Sqlite
from ops.errors import BackupError
from ops.host.labels import BACKUP_RECIPE_LABEL

__all__ = [
    "DEFAULT",
    "RECIPES",
    "ArchiveJob",
    "Archiving",
    "Recipe",
    "RecipeUnusable",
    "Restoring",
    "detect",
    "detect_recipe",
    "recipe_named",
]


DEFAULT = Files()
# Detection asks them in this order (by name and command first, then by the volume's contents);
# files is the fallback.
RECIPES: dict[str, Recipe] = {
    recipe.name: recipe for recipe in (DEFAULT, Postgres(), Mysql(), Mongodb(), Redis(), Prometheus(), Sqlite())
}


def recipe_named(name: str, where: str = "") -> Recipe:
    recipe = RECIPES.get(name)
    if recipe is None:
        raise BackupError(
            f"{BACKUP_RECIPE_LABEL}={name!r} is not a recipe",
            where=where or None,
            hint=f"use one of: {', '.join(RECIPES)}",
        )
    return recipe


def detect(container: ContainerFact, volume: VolumeFact | None = None) -> Recipe:
    """A label wins; else the first recipe that recognises the container by its image, service,
    entrypoint or command; else the first that recognises the volume's contents; else files."""
    labelled = container.labels.get(BACKUP_RECIPE_LABEL, "").strip().lower()
    if labelled:
        return recipe_named(labelled, container.service or container.name)
    for seen in (None, volume) if volume is not None else (None,):
        found = next((r for r in RECIPES.values() if r is not DEFAULT and r.detect(container, seen)), None)
        if found is not None:
            return found
    return DEFAULT


def detect_recipe(container: ContainerFact) -> str:
    """The name of the container's recipe (see detect)."""
    return detect(container).name
