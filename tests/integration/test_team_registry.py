"""The team registry on the lab: a Distribution registry container with htpasswd auth and TLS from a
lab CA, on a docker network of the test's own that this machine's engine and the lab hosts both
reach. Provisioning installs the CA on the hosts; deploy pushes here and the hosts pull by digest;
the password shows up nowhere; a wrong password and a stopped registry are one line, exit 1, and
the running release keeps serving."""

from __future__ import annotations

import datetime
import io
import ipaddress
import json
import os
import secrets
import ssl
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import docker
import pytest

from ops.config import load_environment
from ops.console import CHANGED, OK, RecordingReporter
from ops.errors import DeployError
from ops.images import TeamRegistry as TeamImages
from ops.images.local_registry import REGISTRY_IMAGE, ensure_registry_image
from ops.provision import provision
from ops.transport import Fleet
from tests.integration.conftest import ProvisionedLab, http_get, opskit

pytestmark = pytest.mark.integration

# A version no earlier test deployed: every host lacks its web image, so it is pulled from the team
# registry (an image a host already has is not pulled again, and has no digest from there).
TEAM_VERSION = "v2-team"

PORT = 5443
USER = "opskit-ci"
ENV = "itestteam"
WRONG_ENV = "itestteamwrong"
LABEL = "opskit.itest.team-registry"

REGISTRY_CONFIG = f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: /var/lib/docker-registry
http:
  addr: :{PORT}
  secret: {{secret}}
  tls:
    certificate: /certs/server.crt
    key: /certs/server.key
auth:
  htpasswd:
    realm: opskit-itest
    path: /certs/htpasswd
"""


@dataclass
class TeamRegistry:
    lab: ProvisionedLab
    name: str  # the container and the network
    ip: str
    password: str
    ca_pem: bytes

    @property
    def address(self) -> str:
        return f"{self.ip}:{PORT}"

    @property
    def certs_dir(self) -> Path:
        """Where this machine's engine looks for the registry's CA (read per request: no restart)."""
        return Path("/etc/docker/certs.d") / self.address


# ---------------------------------------------------------------- certificates and passwords


def lab_ca_and_server_cert(ip: str) -> tuple[bytes, bytes, bytes]:
    """(CA cert, server cert, server key) in PEM: a lab CA, and a server cert for the IP (SAN)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "opskit itest team registry CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )  # digital_signature, key_cert_sign, crl_sign
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ip)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca.public_bytes(pem), server.public_bytes(pem), key_pem


def htpasswd_line(user: str, password: str) -> bytes:
    # bcrypt comes with paramiko; cost 4 (the least): the registry checks it on every request.
    return user.encode() + b":" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)) + b"\n"


def tar_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in {"certs/": b"", **files}.items():
            info = tarfile.TarInfo(name.rstrip("/"))
            if name.endswith("/"):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            else:
                info.size, info.mode = len(data), 0o644  # read by the registry's own user (lab only)
            tar.addfile(info, io.BytesIO(data) if not name.endswith("/") else None)
    return buffer.getvalue()


# ---------------------------------------------------------------- the network


def free_subnet(client: docker.DockerClient, lab: ProvisionedLab) -> ipaddress.IPv4Network:
    """A /24 in 10.213.0.0/16 that no docker network here and no route on a lab host (its inner
    Docker's networks) uses: the hosts must route the registry's address to our network."""
    used = []
    for network in client.networks.list():
        for config in (network.attrs.get("IPAM") or {}).get("Config") or []:
            if config.get("Subnet") and ":" not in config["Subnet"]:
                used.append(ipaddress.ip_network(config["Subnet"], strict=False))
    for index in range(1, lab.spec.hosts + 1):
        _, output = client.containers.get(lab.spec.container(index)).exec_run(["ip", "-4", "route"])
        for line in output.decode().splitlines():
            word = line.split()[0] if line.split() else ""
            if "/" in word:
                used.append(ipaddress.ip_network(word, strict=False))
    start = int.from_bytes(os.urandom(1), "big")
    for offset in range(256):
        candidate = ipaddress.IPv4Network(f"10.213.{(start + offset) % 256}.0/24")
        if not any(candidate.overlaps(other) for other in used):
            return candidate
    raise AssertionError("no free /24 in 10.213.0.0/16")


def wait_answering(url: str, ca_pem: bytes, timeout: float = 60) -> None:
    context = ssl.create_default_context(cadata=ca_pem.decode())
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2, context=context):
                return
        except urllib.error.HTTPError as error:
            with error:
                if error.code == 401:  # the registry, asking for a login
                    return
            raise
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@pytest.fixture(scope="module")
def team(deployed_lab: ProvisionedLab) -> Iterator[TeamRegistry]:
    """The registry container on a network of its own with the lab hosts attached, this machine's
    engine trusting its CA, and env files for it; every one of them removed afterwards."""
    lab = deployed_lab
    client = docker.from_env(version="auto")
    name = f"opskit-itest-team-{os.urandom(3).hex()}"
    password = "Pw-" + secrets.token_urlsafe(18)
    env_dir = lab.root / "env"
    made_files: list[Path] = []
    network: Any = None
    container: Any = None
    certs_dir: Path | None = None
    made_certs_d = False
    address = ""
    try:
        ensure_registry_image(client, RecordingReporter())
        subnet = free_subnet(client, lab)
        ip = str(subnet.network_address + 10)
        address = f"{ip}:{PORT}"
        network = client.networks.create(
            name,
            driver="bridge",
            ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=str(subnet))]),
            labels={LABEL: "1"},
        )
        ca_pem, cert_pem, key_pem = lab_ca_and_server_cert(ip)
        container = client.containers.create(
            REGISTRY_IMAGE,
            command=["/usr/bin/docker-registry", "serve", "/certs/config.yml"],
            name=name,
            detach=True,
            init=True,
            labels={LABEL: "1"},
            network=name,
            networking_config={name: client.api.create_endpoint_config(ipv4_address=ip)},
        )
        files = {
            "certs/config.yml": REGISTRY_CONFIG.replace("{secret}", secrets.token_hex(16)).encode(),
            "certs/server.crt": cert_pem,
            "certs/server.key": key_pem,
            "certs/htpasswd": htpasswd_line(USER, password),
        }
        container.put_archive("/", tar_of(files))
        container.start()
        for index in range(1, lab.spec.hosts + 1):
            network.connect(lab.spec.container(index))
        registry = TeamRegistry(lab, name, ip, password, ca_pem)
        certs_dir = registry.certs_dir
        made_certs_d = not certs_dir.parent.exists()  # /etc/docker/certs.d itself, when we make it
        certs_dir.mkdir(parents=True, exist_ok=False)
        (certs_dir / "ca.crt").write_bytes(ca_pem)
        wait_answering(f"https://{registry.address}/v2/", ca_pem)

        # The environments: the lab's, plus the team registry (and a wrong password for one).
        base = (env_dir / "itestp.env").read_text()
        ca_file = lab.root / "team-registry-ca.crt"
        ca_file.write_bytes(ca_pem)
        made_files.append(ca_file)
        for env_name, secret in ((ENV, password), (WRONG_ENV, password[::-1])):
            env_file = env_dir / f"{env_name}.env"
            env_file.write_text(
                base + f"REGISTRY={registry.address}/team\nREGISTRY_USER={USER}\nREGISTRY_CA={ca_file.name}\n"
            )
            secrets_file = env_dir / f"{env_name}.secrets.env"
            secrets_file.write_text(f"REGISTRY_PASSWORD={secret}\n")
            secrets_file.chmod(0o600)
            made_files += [env_file, secrets_file]
        yield registry
    finally:
        for path in made_files:
            path.unlink(missing_ok=True)
        if certs_dir is not None and certs_dir.exists():
            (certs_dir / "ca.crt").unlink(missing_ok=True)
            certs_dir.rmdir()
            if made_certs_d and not any(certs_dir.parent.iterdir()):
                certs_dir.parent.rmdir()
        if container is not None:
            container.remove(force=True, v=True)  # v: the registry's anonymous blob volume
        if network is not None:
            network.reload()
            for attached in network.containers:
                network.disconnect(attached, force=True)
            network.remove()
        # The tags push_image left on this machine's engine for the team registry.
        if address:
            for image in client.images.list():
                for tag in image.tags:
                    if tag.startswith(f"{address}/"):
                        client.images.remove(tag)
        client.close()


# ---------------------------------------------------------------- what a user sees


def version_on(lab: ProvisionedLab, index: int) -> str:
    status, body = http_get(lab.spec.http_port(index), "/version")
    assert status == 200, body
    return str(json.loads(body)["version"])


def on_host(lab: ProvisionedLab, index: int, script: str) -> str:
    client = docker.from_env(version="auto")
    try:
        code, output = client.containers.get(lab.spec.container(index)).exec_run(["sh", "-c", script])
    finally:
        client.close()
    assert code == 0, output
    return str(output.decode(errors="replace"))


class CommandLines:
    """Every command line `ps` shows on this machine and on the lab hosts, sampled while a block runs."""

    def __init__(self, lab: ProvisionedLab):
        self.lab = lab
        self.seen: set[str] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ps-sampler", daemon=True)

    def _watch(self) -> None:
        client = docker.from_env(version="auto")
        hosts = [client.containers.get(self.lab.spec.container(i)) for i in range(1, self.lab.spec.hosts + 1)]
        try:
            while not self._stop.is_set():
                local = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
                self.seen.update(local.splitlines())
                for host in hosts:
                    _, output = host.exec_run(["ps", "-eo", "args"])
                    self.seen.update(output.decode(errors="replace").splitlines())
                self.samples += 1
                self._stop.wait(0.2)
        finally:
            client.close()

    def __enter__(self) -> CommandLines:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.strip()]


def lock_free(lab: ProvisionedLab) -> bool:
    status = opskit(lab.root, "lock.status", "--env", ENV, "--json")
    return all(not row["locked"] for row in json.loads(status.stdout).values())


def current_release(lab: ProvisionedLab, index: int) -> dict[str, Any]:
    return dict(json.loads(on_host(lab, index, "cat /opt/demo/current/release.json")))


# ---------------------------------------------------------------- the tests


def test_provisioning_installs_the_registry_ca_once(team: TeamRegistry) -> None:
    lab = team.lab
    env = load_environment(ENV, lab.root, {})
    first = provision(env, RecordingReporter())
    assert first.ok, [(r.failed_step, str(r.error), r.output) for r in first.failed]
    path = f"/etc/docker/certs.d/{team.address}/ca.crt"
    for report in first.hosts:
        step = [e for e in report.events if e.step == "registry ca"]
        assert [(e.status, e.detail) for e in step] == [
            (CHANGED, f"install REGISTRY_CA as {path} (trusted for {team.address})")
        ]
    for index in (1, 2):
        assert (
            on_host(lab, index, f"stat -c '%a %U:%G' {path} && cat {path}") == "644 root:root\n" + team.ca_pem.decode()
        )

    again = provision(env, RecordingReporter())
    assert again.ok
    for report in again.hosts:
        assert [(e.status, e.detail) for e in report.events if e.step == "registry ca"] == [
            (OK, f"{path} holds REGISTRY_CA")
        ]


def test_deploy_goes_through_the_team_registry_and_the_password_shows_nowhere(team: TeamRegistry) -> None:
    lab = team.lab
    with CommandLines(lab) as commands:
        done = opskit(lab.root, "deploy", "--env", ENV, "--version", TEAM_VERSION)
    assert done.returncode == 0, done.stdout + done.stderr
    print("\n" + "\n".join(line for line in done.stdout.splitlines() if "registry" in line or "images" in line))
    print(f"ps: {commands.samples} samples, {len(commands.seen)} distinct command lines")
    assert [version_on(lab, i) for i in (1, 2)] == [TEAM_VERSION, TEAM_VERSION]

    prefix = f"{team.address}/team/demo/"
    for index in (1, 2):
        release = current_release(lab, index)
        assert release["version"] == TEAM_VERSION
        web = release["digests"]["web"]
        assert web.startswith(prefix + "web@sha256:"), release["digests"]
        # The host pulled it by that digest: the image it runs has it among its repo digests.
        digests = on_host(lab, index, "docker image inspect --format '{{json .RepoDigests}}' " + release["pins"]["web"])
        assert web in json.loads(digests)
        # No credentials left behind: no throw-away DOCKER_CONFIG, nothing in the deploy user's own.
        leftovers = on_host(lab, index, f"grep -rls {team.address} /tmp ~deploy/.docker 2>/dev/null; true")
        assert leftovers.strip() == "", leftovers
        audit = on_host(lab, index, "cat /opt/demo/audit.log")
        releases = on_host(lab, index, "cat /opt/demo/releases/*/release.json")
        assert team.password not in audit + releases

    local_audit = lab.root / ".opskit" / "audit" / f"{ENV}.jsonl"
    assert team.password not in (local_audit.read_text() if local_audit.exists() else "")
    assert team.password not in done.stdout + done.stderr
    assert "registry login" in done.stdout and "pulled" in done.stdout
    assert commands.samples > 0
    assert not [line for line in commands.seen if team.password in line]


def test_a_wrong_password_is_one_line_and_the_release_keeps_serving(team: TeamRegistry) -> None:
    lab = team.lab
    before = [current_release(lab, i)["id"] for i in (1, 2)]
    done = opskit(lab.root, "deploy", "--env", WRONG_ENV, "--version", "v3")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = error_lines(done)
    print(f"\nwrong password: {lines}")
    assert len(lines) == 1, done.stderr
    assert f"registry {team.address} refused the credentials of {USER} (login)" in lines[0]
    assert f"env/{WRONG_ENV}.secrets.env" in lines[0]
    assert team.password[::-1] not in done.stdout + done.stderr
    assert [version_on(lab, i) for i in (1, 2)] == [TEAM_VERSION, TEAM_VERSION]
    assert [current_release(lab, i)["id"] for i in (1, 2)] == before
    assert lock_free(lab)


def host_pull_fault(team: TeamRegistry, password: str) -> str:
    """The one line a host's login and pull of web's current digest fails with, by the library."""
    env = load_environment(ENV, team.lab.root, {})
    registry = TeamImages(env.registry, password, secrets_file=f"env/{ENV}.secrets.env")
    ref = current_release(team.lab, 1)["digests"]["web"]
    with Fleet.connect(env) as fleet, pytest.raises(DeployError) as raised:
        registry.pull(fleet.hosts[0], {ref: "opskit-itest/never:1"}, RecordingReporter())
    return raised.value.one_line()


def test_a_hosts_login_with_a_wrong_password_is_one_line(team: TeamRegistry) -> None:
    line = host_pull_fault(team, team.password[::-1])
    print(f"\nhost login, wrong password: {line}")
    assert f"registry {team.address} refused the credentials of {USER} (login)" in line, line
    assert team.password[::-1] not in line and "\n" not in line
    assert on_host(team.lab, 1, f"grep -rls {team.address} /tmp ~deploy/.docker 2>/dev/null; true").strip() == ""


def test_a_stopped_registry_is_one_line_and_the_release_keeps_serving(team: TeamRegistry) -> None:
    lab = team.lab
    client = docker.from_env(version="auto")
    try:
        client.containers.get(team.name).stop(timeout=5)
    finally:
        client.close()
    before = [current_release(lab, i)["id"] for i in (1, 2)]
    done = opskit(lab.root, "deploy", "--env", ENV, "--version", "v3")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = error_lines(done)
    print(f"\nregistry stopped: {lines}")
    assert len(lines) == 1, done.stderr
    assert f"registry {team.address} is unreachable from this machine (login)" in lines[0]
    assert [version_on(lab, i) for i in (1, 2)] == [TEAM_VERSION, TEAM_VERSION]
    assert [current_release(lab, i)["id"] for i in (1, 2)] == before
    assert lock_free(lab)
    # A host that cannot reach it says so the same way.
    line = host_pull_fault(team, team.password)
    print(f"host login, registry stopped: {line}")
    assert f"registry {team.address} is unreachable from the host (login)" in line, line
