"""A fake host that runs compose releases: /opt/<project> (releases, release.json, `current`), image
tags and `docker compose up` over a FakeDocker, driven by the commands opskit sends; and World, such
a host with the compose orchestrator deploying to it. No SSH, no Docker; precise enough to tell
what a deploy, a swap or a rollback left behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shlex
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ops.config import Environment, HostSpec, load_environment
from ops.console import CHANGED, RecordingReporter, Reporter
from ops.deploy.compose import ComposeOrchestrator
from ops.deploy.prepare import Prepared
from ops.host.labels import CONFIG_HASH_LABEL, PROJECT_LABEL, SERVICE_LABEL, SWAP_LABEL
from ops.images import Delivered, ReleaseImages
from ops.stack.compose import Service, Stack, archive, content_digest, file_sums
from ops.transport import CommandResult, Host
from tests.fakes import FakeClock, FakeContainer, FakeDocker, FakeRunner

COMPOSE = re.compile(r"^cd (\S+) && docker compose -p (\S+) (.*?) --env-file \.env (.*)$")


class ComposeHostRunner(FakeRunner):
    """The commands of ReleaseStore, the compose orchestrator and the swap, acted out in memory.

    `health` says how a container of an image ID turns out once started: (health, output);
    anything not named there is healthy."""

    def __init__(self, project: str = "demo", engine: FakeDocker | None = None):
        super().__init__()
        self.project = project
        self.base = f"/opt/{project}"
        self.engine = engine or FakeDocker()
        self.releases: dict[str, dict[str, str]] = {}  # release id -> file name -> text
        self.current: str | None = None
        self.tags: dict[str, str] = {}  # image reference -> image ID
        self.health: dict[str, tuple[str, str]] = {}
        self.inputs: list[str | bytes | None] = []  # stdin of each command, beside self.commands

    def host(self, name: str = "a") -> Host:
        return Host(HostSpec(name), self, docker_client=self.engine)  # type: ignore[arg-type]

    def release_json(self, release_id: str) -> str:
        return self.releases[release_id].get("release.json", "")

    def run(self, command: str, *, timeout: float | None = None, stdin: str | bytes | None = None) -> CommandResult:
        self.commands.append(command)
        self.inputs.append(stdin)
        code, out = self._act(command, stdin)
        return CommandResult(command, code, out if code == 0 else "", "" if code == 0 else out or "failed")

    def _act(self, command: str, stdin: str | bytes | None) -> tuple[int, str]:
        text = stdin.decode() if isinstance(stdin, bytes) and not command.startswith("mkdir -p") else stdin
        releases = f"{self.base}/releases/"
        if command.startswith(f"readlink {self.base}/current"):
            if self.current is None:
                return 1, "No such file or directory"
            link = f"releases/{self.current}\n"
            return 0, link + (self.release_json(self.current) if "&& cat" in command else "")
        if command.startswith(f"for f in {releases}*/release.json"):
            found = [files["release.json"] for _, files in sorted(self.releases.items()) if "release.json" in files]
            return 0, "".join(f"{json}\n\x1e\n" for json in found)
        if command.startswith("mkdir -p ") and "tar -xzf -" in command:
            release_id = shlex.split(command)[2].removeprefix(releases)
            assert isinstance(stdin, bytes)
            with tarfile.open(fileobj=io.BytesIO(stdin)) as tar:
                files = {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
            self.releases.setdefault(release_id, {}).update(files)
            return 0, ""
        if command.startswith(f"cat > {releases}"):
            path = command.split()[2]
            release_id, name = path.removeprefix(releases).split("/", 1)
            self.releases[release_id][name.removesuffix(".tmp")] = str(text)
            moved = re.search(r"ln -sfn releases/(\S+) current\.new", command)
            if moved:
                self.current = shlex.split(moved.group(1))[0]
            return 0, ""
        if command.startswith(f"rm -rf {releases}"):
            self.releases.pop(shlex.split(command)[2].removeprefix(releases), None)
            return 0, ""
        if command.startswith("docker tag "):
            for part in command.split(" && "):
                _, _, source, target = shlex.split(part)
                self.tags[target] = self.tags.get(source, source)
            return 0, ""
        if command.startswith("docker image inspect"):
            refs = shlex.split(command.split(" 2>/dev/null")[0])[5:]
            ids = [self.tags[ref] for ref in refs if ref in self.tags]
            return (0 if len(ids) == len(refs) or "; true" in command else 1), "".join(f"{i}\n" for i in ids)
        if command.startswith("docker rmi ") or command == "true":
            return 0, ""
        if " && find . -type f" in command:
            return self._current_state(command)
        match = COMPOSE.match(command)
        if match:
            return self._compose(match.group(1).removeprefix(releases), match.group(4))
        return 0, ""

    # --- compose ---------------------------------------------------------------------------------

    def pins(self, release_id: str) -> dict[str, str]:
        """service -> image reference, from the release's override file."""
        pins, service = {}, ""
        for line in self.releases[release_id].get("compose.opskit.yaml", "").splitlines():
            if line.startswith("  ") and not line.startswith("    "):
                service = line.strip().rstrip(":")
            elif line.strip().startswith("image:"):
                pins[service] = line.split(":", 1)[1].strip()
        return pins

    def config_hash(self, release_id: str, service: str) -> str:
        """What `compose config --hash` says: the service's config (its compose file, its pinned image)."""
        text = self.releases[release_id].get("compose.yaml", "") + service + self.pins(release_id)[service]
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def service_containers(self, service: str) -> list[FakeContainer]:
        return self.engine.matching({"label": [f"{PROJECT_LABEL}={self.project}", f"{SERVICE_LABEL}={service}"]})

    def start(self, release_id: str, service: str) -> FakeContainer:
        ref = self.pins(release_id)[service]
        image = self.tags.get(ref, ref)
        health, output = self.health.get(image, ("healthy", ""))
        labels = {
            PROJECT_LABEL: self.project,
            SERVICE_LABEL: service,
            CONFIG_HASH_LABEL: self.config_hash(release_id, service),
        }
        number = self.engine.serial + 1
        return self.engine.add(
            f"{self.project}-{service}-{number}",
            labels,
            image,
            image_ref=ref,
            health=health,
            health_output=output,
            log=f"{service} log\n{output}",
        )

    def _compose(self, release_id: str, args: str) -> tuple[int, str]:
        words = shlex.split(args)
        if words[:2] != ["up", "-d"]:
            return 0, ""
        pins = self.pins(release_id)
        if "--scale" in words:  # the swap: add containers beside the running ones, recreate none
            service, count = words[words.index("--scale") + 1].split("=")
            for _ in range(int(count) - len(self.service_containers(service))):
                self.start(release_id, service)
            return 0, ""
        for service in pins:
            wanted = self.config_hash(release_id, service)
            for container in self.service_containers(service):
                if container.labels[CONFIG_HASH_LABEL] != wanted:
                    container.remove(force=True)
                elif container.state != "running":
                    container.state = "running"
            if not self.service_containers(service):
                self.start(release_id, service)
        if "--remove-orphans" in words:
            for container in list(self.engine.matching({"label": [f"{PROJECT_LABEL}={self.project}"]})):
                if container.labels[SERVICE_LABEL] not in pins:
                    container.remove(force=True)
        return 0, ""

    def _current_state(self, command: str) -> tuple[int, str]:
        release_id = shlex.split(command)[1].removeprefix(f"{self.base}/releases/")
        files = self.releases.get(release_id, {})
        sums = "".join(
            f"{hashlib.sha256(text.encode()).hexdigest()}  ./{name}\n"
            for name, text in sorted(files.items())
            if not name.startswith("release.json")
        )
        hashes = "".join(f"{service} {self.config_hash(release_id, service)}\n" for service in self.pins(release_id))
        listing = ""
        for container in self.engine.matching({"label": [f"{PROJECT_LABEL}={self.project}"]}):
            summary: dict[str, Any] = container.summary()
            fields = (
                container.labels[SERVICE_LABEL],
                container.labels.get(CONFIG_HASH_LABEL, ""),
                container.image_ref,
                container.state,
                summary["Status"],
            )
            listing += "\t".join(fields) + "\n"
        return 0, f"{sums}--- opskit files ---\n{hashes}--- opskit containers ---\n{listing}"


def image_id(ref: str) -> str:
    return "sha256:" + hashlib.sha256(ref.encode()).hexdigest()


class FakeDelivery:
    """An image delivery that 'loads' each wanted image on the fake host (tags it there)."""

    name = "fake"

    def __init__(self, runner: ComposeHostRunner):
        self.runner = runner
        self.brought: list[dict[str, str]] = []

    def prepare_locally(self, *args: object) -> dict[str, str]:
        return {}

    def bring(self, host: Host, images: ReleaseImages, reporter: Reporter) -> Delivered:
        self.brought.append(dict(images.refs))
        for ref in images.refs.values():
            self.runner.tags[ref] = image_id(ref)
        reporter.step(host.name, "images", CHANGED, f"brought {len(images.refs)}")
        return Delivered({service: image_id(ref) for service, ref in images.refs.items()}, sent=1000)


class World:
    """One fake host, the orchestrator that deploys to it, and what it reported."""

    def __init__(self, tmp_path: Path, *, swap_web: bool = False):
        self.tmp_path = tmp_path
        self.swap_web = swap_web
        (tmp_path / "env").mkdir()
        settings = ["HOSTS=a", "PROJECT=demo", "HEALTH_TIMEOUT=30", "SWAP_DRAIN=2"]
        (tmp_path / "env" / "prod.env").write_text("\n".join(settings) + "\n")
        self.env: Environment = load_environment("prod", tmp_path, {})
        self.runner = ComposeHostRunner("demo")
        self.host = self.runner.host("a")
        self.reporter = RecordingReporter()
        self.delivery = FakeDelivery(self.runner)
        self.clock = FakeClock()
        self.wall = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
        self.orchestrator = ComposeOrchestrator(
            self.env,
            self.reporter,
            delivery=self.delivery,
            clock=self.clock,
            sleep=self.clock.sleep,
            now=self.tick,
        )

    def tick(self) -> datetime:
        self.wall += timedelta(minutes=1)
        return self.wall

    def prepared(self, version: str, compose: str = "services: {web: {}, redis: {}}\n") -> Prepared:
        directory = self.tmp_path / "stack"
        directory.mkdir(exist_ok=True)
        (directory / "compose.yaml").write_text(compose)
        env_text = f'APP_VERSION="{version}"\n'
        labels = {SWAP_LABEL: "true"} if self.swap_web else {}
        services = {
            "web": Service("web", f"demo/web:{version}", True, labels=labels, has_healthcheck=True),
            "redis": Service("redis", "redis:7", False),
        }
        stack = Stack(directory, ("compose.yaml",), services)
        refs = {name: service.image for name, service in services.items()}
        return Prepared(
            stack,
            env_text,
            archive(directory, env_text),
            refs,
            {},
            "abc1234",
            content_digest(directory, env_text),
            file_sums(directory, env_text),
            version,
        )

    def deploy(self, version: str) -> tuple[str, list[str]]:
        """deploy_host of version: the report's fields, and the commands that reached the host."""
        before = len(self.runner.commands)
        self.reporter.events.clear()
        self.report = self.orchestrator.deploy_host(self.host, self.prepared(version))
        return self.report.result, self.runner.commands[before:]

    def steps(self) -> list[tuple[str, str, str]]:
        return [(event.step, event.status, event.detail) for event in self.reporter.events]

    def running(self, service: str) -> list[str]:
        """The image references the service's running containers were made from."""
        return [c.image_ref for c in self.runner.service_containers(service) if c.state == "running"]

    def status(self, release_id: str) -> str:
        return str(json.loads(self.runner.release_json(release_id))["status"])
