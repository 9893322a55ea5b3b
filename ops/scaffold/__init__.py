"""`opskit init`: the files a repository needs to start with opskit, from the templates shipped in
the package (env files documenting every key, .gitignore, tasks.py, a runbook, a sample stack).

It never overwrites a file: an existing one is kept (a .gitignore only gains the lines it lacks).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from ops.config.envfile import set_keys
from ops.config.hosts import NAME_RE
from ops.console import CHANGED, OK, Reporter
from ops.errors import ConfigError

TEMPLATES = files("ops.scaffold") / "templates"
DEFAULT_STACK = "app"
# The environments init writes: the local lab (lab.up fills in its hosts) and production.
ENVIRONMENTS = ("lab", "prod")
CREATED, KEPT, EXTENDED = "created", "kept", "extended"


@dataclass(frozen=True)
class InitFile:
    """One file init wanted to write: where (relative to the repository) and what became of it."""

    path: str
    outcome: str  # created | kept (it existed) | extended (a .gitignore that gained lines)
    detail: str = ""


@dataclass(frozen=True)
class InitResult:
    root: Path
    stack: str
    files: tuple[InitFile, ...]

    def paths(self, outcome: str) -> list[str]:
        return [file.path for file in self.files if file.outcome == outcome]

    @property
    def changed(self) -> bool:
        return any(file.outcome != KEPT for file in self.files)


def render_env(name: str, values: Mapping[str, str]) -> str:
    """The documented env file for environment `name`, with `values` set (every other key as shipped)."""
    template = (TEMPLATES / "env.example").read_text(encoding="utf-8")
    return set_keys(template.replace("@ENV@", name), values).text


def _env_files(stack: str) -> dict[str, str]:
    common = {"STACK_DIR": f"stacks/{stack}", "PROJECT": stack, "SECRETS": "", "HOSTS": ""}
    lab_note = (
        "# The local lab: `opskit lab.up` fills in HOSTS, DEPLOY_USER, BOOTSTRAP_USER, SSH_IDENTITY_FILE and\n"
        "# SSH_KNOWN_HOSTS, and keeps every other line.\n"
    )
    return {
        "env/lab.env": lab_note + render_env("lab", common),
        "env/prod.env": render_env("prod", common),
    }


def _walk(folder: Traversable, prefix: str = "") -> Iterator[tuple[str, Traversable]]:
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if entry.is_dir():
            yield from _walk(entry, f"{prefix}{entry.name}/")
        elif not entry.name.endswith(".pyc"):
            yield f"{prefix}{entry.name}", entry


def planned_files(stack: str) -> dict[str, str]:
    """Every file init writes (path relative to the repository -> text), .gitignore excepted."""
    wanted = _env_files(stack)
    wanted["tasks.py"] = (TEMPLATES / "tasks.py.tmpl").read_text(encoding="utf-8")
    for relative, entry in _walk(TEMPLATES / "runbooks"):
        wanted[f"runbooks/{relative}"] = entry.read_text(encoding="utf-8")
    for relative, entry in _walk(TEMPLATES / "stack"):
        wanted[f"stacks/{stack}/{relative}"] = entry.read_text(encoding="utf-8").replace("@STACK@", stack)
    return wanted


def _extend_gitignore(path: Path) -> InitFile:
    """Create .gitignore, or append the entries it lacks (never removing or reordering a line)."""
    template = (TEMPLATES / "gitignore").read_text(encoding="utf-8")
    if not path.exists():
        path.write_text(template, encoding="utf-8")
        return InitFile(".gitignore", CREATED)
    current = path.read_text(encoding="utf-8")
    have = {line.strip() for line in current.splitlines()}
    entries = [line for line in template.splitlines() if line and not line.startswith("#")]
    missing = [line for line in entries if line not in have]
    if not missing:
        return InitFile(".gitignore", KEPT, "has every entry")
    separator = "" if not current or current.endswith("\n") else "\n"
    with path.open("a", encoding="utf-8") as handle:
        handle.write(separator + "# opskit (secrets, lab keys and state, backups)\n" + "\n".join(missing) + "\n")
    return InitFile(".gitignore", EXTENDED, f"added {', '.join(missing)}")


def init_repository(root: Path, reporter: Reporter, stack: str = DEFAULT_STACK) -> InitResult:
    """Write the starting files into root (any directory, a git repository or not); keep existing ones."""
    if not NAME_RE.match(stack):
        raise ConfigError(
            f"stack name {stack!r} is not valid", where="--stack", hint="use lowercase letters, digits, - or _"
        )
    if not root.is_dir():
        raise ConfigError(f"{root} is not a directory", hint="create it, or run opskit init in an existing directory")
    results: list[InitFile] = []
    for relative, text in planned_files(stack).items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with target.open("x", encoding="utf-8") as handle:  # "x": never replaces a file
                handle.write(text)
        except FileExistsError:
            results.append(InitFile(relative, KEPT, "exists"))
        else:
            results.append(InitFile(relative, CREATED))
    results.append(_extend_gitignore(root / ".gitignore"))
    for file in results:
        status = OK if file.outcome == KEPT else CHANGED
        reporter.step("local", file.path, status, f"{file.outcome}{': ' + file.detail if file.detail else ''}")
    return InitResult(root, stack, tuple(results))


__all__ = ["DEFAULT_STACK", "ENVIRONMENTS", "InitFile", "InitResult", "init_repository", "render_env"]
