"""Registry garbage: the choice of what to delete (a pure function of the pins read on every host
and the registry's listing), the Distribution API it talks, and a whole collection over fake
hosts, a fake registry and a fake engine: what is pinned stays, an unreadable host deletes
nothing, a dry run changes nothing."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest

from ops.config import Environment, HostSpec, load_environment
from ops.console import RecordingReporter
from ops.deploy.gc import collect_garbage, registry_environments
from ops.deploy.releases import Release
from ops.errors import ConfigError, HostError
from ops.images.gc import HostPins, Manifest, select_garbage
from ops.images.local_registry import LocalRegistry, RegistryError
from ops.images.registry_api import MANIFEST_TYPES, Answer, RegistryApi
from ops.transport import Runner
from tests.fakes import FakeRunner

V2 = "application/vnd.docker.distribution.manifest.v2+json"
INDEX = "application/vnd.oci.image.index.v1+json"


def digest(char: str) -> str:
    return "sha256:" + char * 64


A, B, C, D, E = (digest(c) for c in "abcde")
ADDRESS = "127.0.0.1:20030"


def ref(repository: str, pinned: str, address: str = ADDRESS) -> str:
    return f"{address}/{repository}@{pinned}"


# ---------------------------------------------------------------- the choice


def test_a_digest_any_kept_release_on_any_host_pins_is_never_selected() -> None:
    listing = [
        Manifest("demo/web", A, ("aaaa",), V2),
        Manifest("demo/web", B, ("bbbb",), V2),
        Manifest("demo/web", C, ("cccc",), V2),
        Manifest("demo/redis", D, ("dddd",), V2),
        Manifest("other/web", B, ("bbbb",), V2),  # the same content pushed under another name
    ]
    pins = [
        HostPins("h1", "demo", 2, frozenset({ref("demo/web", A), ref("demo/redis", D)})),
        HostPins("h2", "demo", 1, frozenset({ref("demo/web", B)})),  # only the second host keeps B
        HostPins("h3", "other", 1, frozenset({ref("x/y", C, "registry.example.com/team")})),  # another address
    ]
    plan = select_garbage(pins, listing)
    assert plan.delete == ()  # every digest is pinned by some host: A, B (h2 only), C (any address), D
    assert len(plan.keep) == 5

    plan = select_garbage(pins[:2], listing)
    assert [(m.repository, m.digest) for m in plan.delete] == [("demo/web", C)]
    assert {(m.repository, m.digest) for m in plan.keep} == {
        ("demo/redis", D),
        ("demo/web", A),
        ("demo/web", B),
        ("other/web", B),  # pinned in demo/web: kept wherever it is
    }
    for chosen in plan.delete:
        assert chosen.digest not in {p for host in pins[:2] for p in host.digests}


def test_an_unreadable_host_means_nothing_is_selected() -> None:
    listing = [Manifest("demo/web", A, ("a",), V2), Manifest("demo/web", B, ("b",), V2)]
    pins = [HostPins("h1", "demo", 1, frozenset({ref("demo/web", A)})), HostPins("h2", "demo", error="timed out")]
    plan = select_garbage(pins, listing)
    assert plan.delete == ()
    assert [host.host for host in plan.unknown] == ["h2"]
    assert not plan.delete_untagged


def test_no_kept_release_at_all_selects_everything() -> None:
    listing = [Manifest("demo/web", A, ("a",), V2)]
    assert [m.digest for m in select_garbage([HostPins("h1", "demo")], listing).delete] == [A]


def test_a_malformed_ref_pins_nothing_and_breaks_nothing() -> None:
    assert HostPins("h", "p", 1, frozenset({"demo/web:v1", ref("demo/web", A), "x@sha256:short"})).digests == {A}


def test_untagged_manifests_go_only_when_every_pin_was_seen_through_a_tag_and_there_is_no_index() -> None:
    listing = [Manifest("demo/web", A, ("a",), V2), Manifest("demo/web", B, ("b",), V2)]
    pinned_a = [HostPins("h1", "demo", 1, frozenset({ref("demo/web", A)}))]
    assert select_garbage(pinned_a, listing).delete_untagged
    # A pinned digest the tags do not show may be an untagged manifest: --delete-untagged would drop it.
    pinned_e = [HostPins("h1", "demo", 1, frozenset({ref("demo/web", A), ref("demo/web", E)}))]
    assert not select_garbage(pinned_e, listing).delete_untagged
    with_index = [*listing, Manifest("demo/multi", C, ("c",), INDEX)]
    assert not select_garbage(pinned_a, with_index).delete_untagged


# ---------------------------------------------------------------- a registry, an engine, hosts


@dataclass
class FakeRegistry:
    """The Distribution API over a dict: repository -> {digest: tags}; pages of `page` items."""

    repos: dict[str, dict[str, list[str]]]
    page: int = 2
    requests: list[tuple[str, str]] = field(default_factory=list)
    up: bool = True

    def send(self, method: str, url: str, headers: Mapping[str, str]) -> Answer:
        parts = urllib.parse.urlsplit(url)
        query = dict(urllib.parse.parse_qsl(parts.query))
        path = parts.path
        self.requests.append((method, path))
        if not self.up:
            raise RegistryError("connection refused")
        if path == "/v2/":
            return Answer(200, {"docker-distribution-api-version": "registry/2.0"}, b"{}")
        if path == "/v2/_catalog":
            names = sorted(name for name, manifests in self.repos.items() if manifests)
            return self._paged(path, "repositories", names, query)
        name, _, rest = path.removeprefix("/v2/").rpartition("/manifests/") if "/manifests/" in path else ("", "", "")
        if path.endswith("/tags/list"):
            repo = path.removeprefix("/v2/").removesuffix("/tags/list")
            tags = sorted(tag for tags in self.repos.get(repo, {}).values() for tag in tags)
            if repo not in self.repos:
                return Answer(404, {}, b'{"errors":[{"code":"NAME_UNKNOWN"}]}')
            return self._paged(path, "tags", tags, query)
        manifests = self.repos.get(name, {})
        if method == "HEAD":
            assert headers["Accept"].split(", ") == list(MANIFEST_TYPES)
            found = rest if rest in manifests else next((d for d, tags in manifests.items() if rest in tags), None)
            if found is None:
                return Answer(404, {})
            return Answer(200, {"docker-content-digest": found, "content-type": V2})
        if method == "DELETE":
            if rest not in manifests:
                return Answer(404, {})
            del manifests[rest]
            return Answer(202, {})
        raise AssertionError(f"unexpected {method} {url}")

    def _paged(self, path: str, field_name: str, items: list[str], query: dict[str, str]) -> Answer:
        start = items.index(query["last"]) + 1 if "last" in query else 0
        chunk = items[start : start + self.page]
        headers = {}
        if start + self.page < len(items):
            headers["link"] = f'<{path}?last={chunk[-1]}&n={self.page}>; rel="next"'
        return Answer(200, headers, json.dumps({field_name: chunk}).encode())

    def deleted(self) -> list[str]:
        return [path for method, path in self.requests if method == "DELETE"]


class FakeRegistryContainer:
    name = "opskit-registry-test"
    status = "running"

    def __init__(self, sizes: list[int]):
        self.sizes = sizes
        self.commands: list[list[str]] = []
        self.restarts = 0

    def exec_run(self, command: list[str]) -> tuple[int, bytes]:
        self.commands.append(command)
        if command[0] == "du":
            return 0, f"{self.sizes.pop(0)}\t/var/lib/docker-registry\n".encode()
        if command[:2] == ["docker-registry", "garbage-collect"]:
            return 0, b"demo/web\n\n4 blobs marked, 2 blobs and 0 manifests eligible for deletion\n"
        raise AssertionError(command)

    def restart(self, timeout: int = 10) -> None:
        self.restarts += 1

    def collections(self) -> list[list[str]]:
        return [command for command in self.commands if command[0] == "docker-registry"]


class FakeEngine:
    """containers.get for the registry's container, images.get/remove over a set of names."""

    def __init__(self, container: FakeRegistryContainer | None, names: set[str]):
        self.container = container
        self.names = names
        self.removed: list[str] = []
        self.containers = self
        self.images = _Images(self)

    def get(self, name: str) -> FakeRegistryContainer:
        if self.container is None:
            raise docker.errors.NotFound("no such container")
        return self.container

    def close(self) -> None:
        pass


class _Images:
    def __init__(self, engine: FakeEngine):
        self.engine = engine

    def get(self, name: str) -> str:
        if name not in self.engine.names:
            raise docker.errors.ImageNotFound(name)
        return name

    def remove(self, name: str) -> None:
        self.get(name)
        self.engine.names.discard(name)
        self.engine.removed.append(name)


def environment(root: Path, name: str = "t", extra: str = "") -> Environment:
    (root / "env").mkdir(exist_ok=True)
    (root / "env" / f"{name}.env").write_text(f"HOSTS=10.0.0.1,10.0.0.2\nPROJECT=demo\n{extra}")
    return load_environment(name, root, {})


def releases_answer(*pinned: dict[str, str]) -> tuple[int, str]:
    """What `ReleaseStore.list` reads on a host holding releases with these digests."""
    chunks = [
        Release(f"r{index}", f"v{index}", "", "", "", ("compose.yaml",), digests=dict(refs)).to_json()
        for index, refs in enumerate(pinned)
    ]
    return 0, "".join(f"{chunk}\n\x1e\n" for chunk in chunks)


LIST = "release.json; do"


@dataclass
class World:
    env: Environment
    registry: FakeRegistry
    container: FakeRegistryContainer
    engine: FakeEngine
    runners: dict[str, FakeRunner]

    def factory(self, spec: HostSpec) -> Runner:
        return self.runners[spec.address]

    def collect(self, **kwargs: Any) -> Any:
        return collect_garbage(
            [self.env],
            RecordingReporter(),
            runner_factory=self.factory,
            client=self.engine,  # type: ignore[arg-type]
            api=RegistryApi(LocalRegistry(self.env.root).url, self.registry.send),
            **kwargs,
        )


@pytest.fixture
def world(tmp_path: Path) -> World:
    env = environment(tmp_path)
    address = LocalRegistry(tmp_path).address
    repos = {
        "demo/web": {A: ["aaaa"], B: ["bbbb"], C: ["cccc"]},
        "demo/redis": {D: ["dddd"]},
        "demo/old": {E: ["eeee"]},
    }
    web_a, web_b = f"{address}/demo/web@{A}", f"{address}/demo/web@{B}"
    redis = f"{address}/demo/redis@{D}"
    runners = {
        # The first host kept v1 and v2, the second only v2: A stays for the first host's sake.
        "10.0.0.1": FakeRunner({LIST: releases_answer({"web": web_a, "redis": redis}, {"web": web_b, "redis": redis})}),
        "10.0.0.2": FakeRunner({LIST: releases_answer({"web": web_b, "redis": redis})}),
    }
    local = {
        f"{address}/demo/web:cccc",
        f"{address}/demo/web@{C}",
        f"{address}/demo/old:eeee",
        f"{address}/demo/web:aaaa",
    }
    container = FakeRegistryContainer([5_000_000, 3_000_000])
    return World(env, FakeRegistry(repos), container, FakeEngine(container, local), runners)


def lock_commands(runner: FakeRunner) -> list[str]:
    return [command for command in runner.commands if "/opt/demo/lock" in command]


def test_a_collection_deletes_only_what_no_host_pins_under_every_hosts_lock(world: World) -> None:
    result = world.collect()
    address = LocalRegistry(world.env.root).address
    assert sorted(world.registry.deleted()) == [f"/v2/demo/old/manifests/{E}", f"/v2/demo/web/manifests/{C}"]
    assert world.registry.repos["demo/web"] == {A: ["aaaa"], B: ["bbbb"]}
    assert result.deleted == [f"{address}/demo/old@{E}", f"{address}/demo/web@{C}"]
    assert len(result.kept) == 3
    # Every pin was seen through a tag and there is no index: untagged manifests may go too.
    assert world.container.collections() == [
        ["docker-registry", "garbage-collect", "/etc/docker/registry/config.yml", "--delete-untagged"]
    ]
    assert world.container.restarts == 1  # its in-memory blob cache would lie to the next push
    assert (result.blobs_deleted, result.bytes_before, result.bytes_after, result.bytes_freed) == (
        2,
        5_000_000,
        3_000_000,
        2_000_000,
    )
    # The local names of what was deleted go (tags and repository digests); a kept one's stay.
    assert result.local_names == [f"{address}/demo/old:eeee", f"{address}/demo/web:cccc", f"{address}/demo/web@{C}"]
    assert world.engine.names == {f"{address}/demo/web:aaaa"}
    assert [h.releases for h in result.hosts] == [2, 1]
    for runner in world.runners.values():
        taken, released = lock_commands(runner)
        assert "mkdir /opt/demo/lock" in taken and "rm -rf /opt/demo/lock" in released
        # The releases were read while the lock was held.
        listing = next(i for i, command in enumerate(runner.commands) if LIST in command)
        assert runner.commands.index(taken) < listing < runner.commands.index(released)
    assert result.as_dict()["bytes_freed"] == 2_000_000
    (record,) = audit_records(world)
    assert (record["action"], record["host"], record["result"]) == ("images.gc", "local", "ok")
    assert record["detail"] == f"registry {address}: 2 manifests deleted, 3 kept, 2000000 bytes freed"


def audit_records(world: World) -> list[dict[str, object]]:
    log = world.env.root / ".opskit" / "audit" / f"{world.env.name}.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_a_host_that_cannot_be_read_deletes_nothing(world: World) -> None:
    world.runners["10.0.0.2"] = FakeRunner(unreachable="connection timed out")
    with pytest.raises(HostError) as raised:
        world.collect()
    line = raised.value.one_line()
    assert "nothing was deleted" in line and "\n" not in line
    assert world.registry.deleted() == []
    assert world.container.collections() == [] and world.container.restarts == 0
    assert world.engine.removed == []
    taken, released = lock_commands(world.runners["10.0.0.1"])  # the other host's lock is not left behind
    assert "mkdir" in taken and "rm -rf" in released


def test_a_host_whose_releases_cannot_be_listed_deletes_nothing_even_in_a_dry_run(world: World) -> None:
    world.runners["10.0.0.2"].answers[LIST] = (255, "ssh: broken pipe")

    with pytest.raises(HostError, match="nothing was deleted"):
        world.collect(dry_run=True)
    assert world.registry.deleted() == [] and world.container.collections() == []


def test_a_dry_run_shows_the_plan_and_changes_nothing(world: World) -> None:
    address = LocalRegistry(world.env.root).address
    result = world.collect(dry_run=True)
    assert result.dry_run
    assert result.deleted == [f"{address}/demo/old@{E}", f"{address}/demo/web@{C}"]
    assert result.local_names == [f"{address}/demo/old:eeee", f"{address}/demo/web:cccc", f"{address}/demo/web@{C}"]
    assert world.registry.deleted() == []
    assert world.container.collections() == [] and world.container.restarts == 0
    assert world.engine.removed == [] and len(world.engine.names) == 4
    assert result.bytes_before == 5_000_000 and result.bytes_freed is None
    assert audit_records(world) == []  # nothing done, nothing to audit
    for runner in world.runners.values():
        assert lock_commands(runner) == []  # a dry run takes no lock


def test_no_registry_in_this_checkout_is_nothing_to_collect(world: World) -> None:
    world.engine.container = None
    result = world.collect()
    assert result.note.startswith("this checkout has no local registry")
    assert world.registry.requests == [] and all(r.commands == [] for r in world.runners.values())


def test_every_environment_of_the_checkout_that_uses_the_registry_is_read(tmp_path: Path) -> None:
    env = environment(tmp_path, "a")
    environment(tmp_path, "b", "IMAGE_SOURCE=send\n")
    environment(tmp_path, "c")
    assert [e.name for e in registry_environments(env, {})] == ["a", "c"]
    (tmp_path / "env" / "d.env").write_text("HOSTS=10.0.0.3\nNO_SUCH_KEY=1\n")
    with pytest.raises(ConfigError, match=r"environment d could not be loaded .* nothing was deleted"):
        registry_environments(env, {})


# ---------------------------------------------------------------- the API


def test_the_api_follows_pages_and_reads_digests_with_the_manifest_types() -> None:
    repos = {f"r{i}": {digest(str(i)): [f"t{j}" for j in range(3)]} for i in range(5)}
    registry = FakeRegistry(repos, page=2)
    api = RegistryApi("http://127.0.0.1:1", registry.send)
    assert api.repositories() == [f"r{i}" for i in range(5)]
    assert api.tags("r1") == ["t0", "t1", "t2"]
    assert api.tags("missing") == []
    head = api.manifest("r1", "t0")
    assert head is not None and head.digest == digest("1") and not head.is_index
    assert api.manifest("r1", "nope") is None
    assert api.answers()
    registry.up = False
    assert not api.answers()


def test_deleting_a_manifest_by_digest() -> None:
    statuses: list[int] = [202, 404, 405, 500]

    def send(method: str, url: str, headers: Mapping[str, str]) -> Answer:
        return Answer(statuses.pop(0), {}, b"boom")

    api = RegistryApi("http://127.0.0.1:1", send)
    assert api.delete_manifest("demo/web", A) is True
    assert api.delete_manifest("demo/web", A) is False  # already gone
    with pytest.raises(RegistryError, match="refuses deletes"):
        api.delete_manifest("demo/web", A)
    with pytest.raises(RegistryError, match="HTTP 500: boom"):
        api.delete_manifest("demo/web", A)
    with pytest.raises(RegistryError, match="not a digest"):
        api.delete_manifest("demo/web", "latest")
