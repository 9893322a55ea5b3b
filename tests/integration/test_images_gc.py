"""`inv images.gc` on the deployed lab: once v1's release is pruned on every host its manifest
leaves the registry, every kept release's digests still answer, a rollback to a kept release and
a later deploy of the collected version still work, and a host that cannot be reached (or a dry
run) deletes nothing. The lab is left serving v1, as the other tests expect."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.deploy import ReleaseStore
from ops.images.local_registry import LocalRegistry, parse_pull_ref
from ops.images.registry_api import RegistryApi
from ops.transport import Fleet
from tests.integration.conftest import ProvisionedLab, http_get, opskit

pytestmark = pytest.mark.integration

GC_ENV = "itestgc"  # the lab's hosts and project, keeping 2 releases instead of 5
DOWN_ENV = "itestgcdown"  # the same plus a host nobody answers on


def version_on(lab: ProvisionedLab, index: int) -> str:
    status, body = http_get(lab.spec.http_port(index), "/version")
    assert status == 200, body
    return str(json.loads(body)["version"])


def run(lab: ProvisionedLab, *args: str) -> str:
    done = opskit(lab.root, *args)
    assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
    return done.stdout


def kept(lab: ProvisionedLab) -> dict[str, list[tuple[str, dict[str, str]]]]:
    """host -> [(version, digests)] of its kept releases, oldest first."""
    with Fleet.connect(lab.env) as fleet:
        return {
            host.name: [(r.version, r.digests) for r in ReleaseStore(host, lab.env.project).list()]
            for host in fleet.hosts
        }


def answers(api: RegistryApi, ref: str) -> bool:
    """HEAD on the registry for the manifest a release pins: 200, not 404."""
    _, repository, digest = parse_pull_ref(ref)
    return api.manifest(repository, digest) is not None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def gc_env(deployed_lab: ProvisionedLab) -> Iterator[Path]:
    env_dir = deployed_lab.root / "env"
    text = (env_dir / "itestp.env").read_text()
    copy = env_dir / f"{GC_ENV}.env"
    copy.write_text(f"{text}KEEP_RELEASES=2\n")
    yield copy
    for name in (GC_ENV, DOWN_ENV):
        (env_dir / f"{name}.env").unlink(missing_ok=True)


def test_gc_collects_what_no_kept_release_pins_and_nothing_else(deployed_lab: ProvisionedLab, gc_env: Path) -> None:
    lab = deployed_lab
    api = RegistryApi(LocalRegistry(lab.root).url)
    assert run(lab, "deploy", "--env", "itestp", "--version", "v1")  # whatever an earlier test left
    assert [version_on(lab, i) for i in (1, 2)] == ["v1", "v1"]
    v1_web = next(digests["web"] for version, digests in reversed(next(iter(kept(lab).values()))) if version == "v1")
    assert answers(api, v1_web)

    for version in ("v2", "v3"):  # keeping 2: v1's release is pruned on every host
        run(lab, "deploy", "--env", GC_ENV, "--version", version)
    releases = kept(lab)
    assert all([version for version, _ in host] == ["v2", "v3"] for host in releases.values()), releases
    pinned = {ref for host in releases.values() for _, digests in host for ref in digests.values()}
    assert v1_web not in pinned and len(pinned) >= 4  # web v2, web v3 and the unchanged proxy and redis

    # A dry run shows v1's web manifest going and deletes nothing.
    plan = json.loads(run(lab, "images.gc", "--env", GC_ENV, "--dry-run", "--json"))
    assert plan["dry_run"] and v1_web in plan["manifests_deleted"], plan
    assert not set(plan["manifests_deleted"]) & pinned
    assert answers(api, v1_web)

    # A host that cannot be reached: what it pins is unknown, so nothing is deleted.
    down = gc_env.parent / f"{DOWN_ENV}.env"
    text = gc_env.read_text()
    hosts = next(line for line in text.splitlines() if line.startswith("HOSTS="))
    down.write_text(text.replace(hosts, f"{hosts},127.0.0.1:{free_port()}"))
    refused = opskit(lab.root, "images.gc", "--env", DOWN_ENV)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "nothing was deleted" in lines[0], refused.stderr
    print(f"\nhost down: {lines[0]}")
    assert answers(api, v1_web) and all(answers(api, ref) for ref in pinned)
    down.unlink()

    collected = json.loads(run(lab, "images.gc", "--env", GC_ENV, "--json"))
    assert v1_web in collected["manifests_deleted"], collected
    assert not set(collected["manifests_deleted"]) & pinned
    assert collected["blobs_deleted"] >= 1 and collected["bytes_freed"] > 0, collected
    assert collected["local_names_removed"], collected  # the tag and digest push_image left here
    keys = ("manifests_deleted", "blobs_deleted", "bytes_before", "bytes_after", "bytes_freed", "seconds")
    print("collected:", {key: collected[key] for key in keys})
    assert not answers(api, v1_web)
    assert all(answers(api, ref) for ref in pinned)  # every kept release's digests still answer
    summary = run(lab, "images.gc", "--env", GC_ENV).strip().splitlines()[-1]
    assert summary.startswith("images.gc: deleted 0 manifests"), summary
    print(summary)

    # A rollback to a kept release still works.
    run(lab, "rollback", "--env", GC_ENV, "--to", "v2", "--yes")
    assert [version_on(lab, i) for i in (1, 2)] == ["v2", "v2"]

    # The collected version deploys again: a host without its image gets it pushed and pulled anew
    # (the registry was restarted after its garbage-collect, so it does not claim the collected
    # config blob still exists). This also leaves the lab at v1 for the other tests.
    with Fleet.connect(lab.env) as fleet:
        fleet.hosts[0].run("docker image rm opskit-demo/web:v1 >/dev/null 2>&1; true")
    deployed = json.loads(run(lab, "deploy", "--env", "itestp", "--version", "v1", "--json"))
    assert deployed["ok"], deployed
    assert [version_on(lab, i) for i in (1, 2)] == ["v1", "v1"]
    again = kept(lab)
    v1_again = {digests["web"] for host in again.values() for version, digests in host if version == "v1"}
    assert v1_again and all(answers(api, ref) for ref in v1_again)
