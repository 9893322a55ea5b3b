"""The local lab: containers that behave like fresh Debian 13 servers, reachable over SSH.

Each lab is named after its checkout (and its own name), so two checkouts on one machine never
share containers, ports or volumes. Hosts start bare (sshd only, root key login, pinned host
keys); `inv provision.lab` turns them into Docker hosts. Talks only to the local engine.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ops.config.envfile import set_keys
from ops.console import CHANGED, OK, Reporter
from ops.errors import LabError
from ops.provision.facts import BOOT_DIR
from ops.transport.docker import (
    build_recipe_image,
    find_image,
    local_client,
    machine_lock,
    published_ports,
    recipe_image,
)
from ops.transport.loopback import port_block, port_free_soon

if TYPE_CHECKING:
    import docker

BASE_IMAGE = "opskit/debian:trixie"
BASE_ALIASES = ("debian:trixie-slim", "debian:trixie")
HOST_IMAGE = "opskit/lab-host:trixie"
SUITE = "trixie"
MAX_HOSTS = 9
LABEL = "opskit.lab"
BOOT_LOG = "/var/log/opskit-boot.log"

# A lab host boots as a server without systemd would: what provisioning enabled starts (its boot
# scripts, in order, each bounded so a broken one cannot keep SSH away), then sshd.
HOST_INIT = f"""#!/bin/sh
# PID 1 of a lab host (under docker-init): host keys made on first boot, the services provisioning
# enabled ({BOOT_DIR}/*, in order), then sshd in the foreground.
set -e
mkdir -p /run/sshd
[ -s /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -A >/dev/null
for script in {BOOT_DIR}/*; do
  [ -x "$script" ] || continue
  echo "lab-init: $script" >>{BOOT_LOG}
  timeout 60 "$script" >>{BOOT_LOG} 2>&1 </dev/null || echo "lab-init: $script failed, see {BOOT_LOG}" >&2
done
exec /usr/sbin/sshd -D -e
"""

HOST_DOCKERFILE = f"""FROM {BASE_IMAGE}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
      openssh-server sudo ca-certificates iproute2 procps \\
 && rm -f /etc/ssh/ssh_host_* \\
 && rm -rf /var/lib/apt/lists/* \\
 && printf '%s\\n' '# Every lab connection comes from one address (the bridge gateway behind the published' \\
      '# port): per-source penalties for refused root logins would lock the operator out.' \\
      'PerSourcePenalties no' > /etc/ssh/sshd_config.d/90-lab.conf
COPY lab-init /usr/local/sbin/lab-init
RUN chmod 755 /usr/local/sbin/lab-init
EXPOSE 22 80
CMD ["/usr/local/sbin/lab-init"]
"""
# A change to the recipe rebuilds the image once; otherwise it is reused.
RECIPE_VERSION = hashlib.sha256((HOST_INIT + HOST_DOCKERFILE).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class LabSpec:
    """Which lab: its name, the checkout it belongs to, how many hosts, where its env file goes."""

    name: str
    checkout: Path
    hosts: int = 2
    env_root: Path | None = None
    swarm: bool = False  # the env file says ORCHESTRATOR=swarm: host 1 the manager, the others workers

    @property
    def lab_id(self) -> str:
        digest = hashlib.sha256(f"{self.checkout.resolve()}:{self.name}".encode()).hexdigest()
        return f"{self.name}-{digest[:6]}"

    @property
    def port_base(self) -> int:
        return port_block(f"{self.checkout.resolve()}:{self.name}")

    @property
    def state_dir(self) -> Path:
        return self.checkout / ".lab" / self.name

    @property
    def env_file(self) -> Path:
        return (self.env_root or self.checkout) / "env" / f"{self.name}.env"

    def container(self, index: int) -> str:
        return f"opskit-{self.lab_id}-{index}"

    def volume(self, index: int) -> str:
        return f"opskit-{self.lab_id}-{index}-docker"

    def ssh_port(self, index: int) -> int:
        return self.port_base + index

    def http_port(self, index: int) -> int:
        return self.port_base + 10 + index


@dataclass(frozen=True)
class LabHost:
    """One lab host as the local engine sees it."""

    index: int
    container: str
    state: str
    ssh_port: int
    http_port: int
    address: str = "127.0.0.1"

    @property
    def target(self) -> str:
        return f"root@{self.address}:{self.ssh_port}"


# ---------------------------------------------------------------- the local engine


def _engine_answers() -> bool:
    try:
        client = local_client()
        client.ping()
        client.close()
    except Exception:
        return False
    return True


def _apt_install(packages: list[str]) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise LabError(
                f"`{' '.join(command)}` failed: {tail[0]}",
                hint="the lab needs root and Debian's package archive",
            )


def ensure_engine(reporter: Reporter, log_file: Path = Path("/var/log/opskit-dockerd.log")) -> None:
    """Install and start the local Docker engine when it is missing; wait until it answers."""
    if _engine_answers():
        reporter.step("local", "docker engine", OK, "running")
        return
    with machine_lock("engine"):
        if _engine_answers():  # started by another process while this one waited
            reporter.step("local", "docker engine", OK, "running")
            return
        _start_engine(reporter, log_file)


def _start_engine(reporter: Reporter, log_file: Path) -> None:
    if not shutil.which("dockerd"):
        reporter.step("local", "docker engine", CHANGED, "installing docker.io")
        _apt_install(["docker.io"])
    if Path("/run/systemd/system").is_dir() and shutil.which("systemctl"):
        subprocess.run(["systemctl", "start", "docker"], capture_output=True)
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as log:
            subprocess.Popen(["dockerd"], stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if _engine_answers():
            reporter.step("local", "docker engine", CHANGED, "started")
            return
        time.sleep(0.5)
    raise LabError("the local Docker engine did not answer within 60 s", hint=f"see {log_file}")


# ---------------------------------------------------------------- images


def _debian_mirror() -> str:
    """The Debian mirror apt already uses here (never a hard-coded host)."""
    candidates: list[str] = []
    sources_dir = Path("/etc/apt/sources.list.d")
    for path in sorted(sources_dir.glob("*.sources")) if sources_dir.is_dir() else []:
        for line in path.read_text().splitlines():
            if line.startswith("URIs:"):
                candidates.extend(line.split()[1:])
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb":
                candidates.append(next(p for p in parts[1:] if "://" in p))
    for uri in candidates:
        if "security" not in uri and "debian" in uri:
            return uri
    raise LabError("no Debian mirror found in apt's sources", hint="configure apt (/etc/apt/sources.list.d)")


def ensure_base_image(client: docker.DockerClient, reporter: Reporter) -> None:
    """debian:trixie-slim made locally with debootstrap (no registry), imported once."""
    image = find_image(client, BASE_IMAGE)
    if image is None:
        with machine_lock("base-image"):
            if find_image(client, BASE_IMAGE) is None:  # or another process made it while this one waited
                _debootstrap_base_image(client, reporter)
        image = client.images.get(BASE_IMAGE)
    else:
        reporter.step("local", "base image", OK, BASE_IMAGE)
    for alias in BASE_ALIASES:
        current = find_image(client, alias)
        if current is None or current.id != image.id:
            image.tag(*alias.split(":"))


def _debootstrap_base_image(client: docker.DockerClient, reporter: Reporter) -> None:
    if not shutil.which("debootstrap"):
        reporter.step("local", "base image", CHANGED, "installing debootstrap")
        _apt_install(["debootstrap"])
    mirror = _debian_mirror()
    reporter.step("local", "base image", CHANGED, f"debootstrap {SUITE} from {mirror} (about a minute)")
    # A fresh 0700 directory made by mkdtemp; /var/tmp because the rootfs is too big for a tmpfs.
    with tempfile.TemporaryDirectory(prefix="opskit-rootfs-", dir="/var/tmp") as rootfs:  # nosec B108
        done = subprocess.run(
            ["debootstrap", "--variant=minbase", SUITE, rootfs, mirror], capture_output=True, text=True
        )
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
            raise LabError(f"debootstrap failed: {tail[0]}", hint="check network access to the Debian mirror")
        with subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE) as tar:
            assert tar.stdout is not None
            client.api.import_image_from_stream(tar.stdout, repository=BASE_IMAGE.split(":")[0], tag=SUITE)
        if tar.returncode != 0:
            raise LabError("packing the debootstrapped rootfs failed")


def ensure_host_image(client: docker.DockerClient, reporter: Reporter) -> None:
    if recipe_image(client, HOST_IMAGE, RECIPE_VERSION) is not None:
        reporter.step("local", "host image", OK, HOST_IMAGE)
        return
    reporter.step("local", "host image", CHANGED, f"building {HOST_IMAGE}")
    files: dict[str, str | tuple[str, int]] = {"Dockerfile": HOST_DOCKERFILE, "lab-init": (HOST_INIT, 0o755)}
    build_recipe_image(client, HOST_IMAGE, files, RECIPE_VERSION, error=LabError, hint="")


# ---------------------------------------------------------------- keys


def ensure_keypair(state_dir: Path) -> tuple[Path, str]:
    """The lab's SSH key pair (ed25519, made once); returns (private key path, public line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = state_dir / "id_ed25519"
    public = state_dir / "id_ed25519.pub"
    if not private.exists() or not public.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        public.write_text(line.decode() + " opskit-lab\n")
    return private, public.read_text().strip()


# ---------------------------------------------------------------- hosts


def _wait_for_ssh(port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
                if conn.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise LabError(f"sshd on 127.0.0.1:{port} did not answer within {timeout:.0f} s")


def _exec(container: Any, script: str, **environment: str) -> str:
    code, output = container.exec_run(["sh", "-c", script], environment=environment)
    text = output.decode(errors="replace") if output else ""
    if code != 0:
        raise LabError(f"{container.name}: `{script[:50]}` failed: {text.strip()[-200:]}")
    return text


def _run_host(client: docker.DockerClient, spec: LabSpec, index: int) -> Any:
    return client.containers.run(
        HOST_IMAGE,
        name=spec.container(index),
        hostname=f"{spec.name}{index}",
        detach=True,
        init=True,
        ports={"22/tcp": ("127.0.0.1", spec.ssh_port(index)), "80/tcp": ("127.0.0.1", spec.http_port(index))},
        # Full privileges minus one the machine lacks (see LAB-NOTES): a host that can run Docker.
        cap_add=["ALL"],
        cap_drop=["SYS_RESOURCE"],
        security_opt=["seccomp=unconfined", "apparmor=unconfined"],
        device_cgroup_rules=["a *:* rwm"],
        cgroupns="host",
        # The lab host's own /tmp (a tmpfs inside its container), not a temp file of this machine.
        tmpfs={"/run": "", "/tmp": ""},  # noqa: S108  # nosec B108
        volumes={
            "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
            spec.volume(index): {"bind": "/var/lib/docker", "mode": "rw"},
        },
        labels={LABEL: spec.lab_id, "opskit.checkout": str(spec.checkout.resolve()), "opskit.index": str(index)},
    )


def _host_keys(container: Any, port: int) -> list[str]:
    lines = []
    for kind in ("ed25519", "ecdsa", "rsa"):
        text = _exec(container, f"cat /etc/ssh/ssh_host_{kind}_key.pub 2>/dev/null || true").strip()
        if text:
            key_type, key = text.split()[:2]
            lines.append(f"[127.0.0.1]:{port} {key_type} {key}")
    if not lines:
        raise LabError(f"{container.name}: no SSH host keys found")
    return lines


def _write_if_changed(path: Path, text: str, mode: int = 0o644) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)
    return True


# The keys lab.up owns in env/<name>.env: where the hosts are and how to log in. Every other line is
# the user's (STACK_DIR, PROJECT, SECRETS, ...) and survives each lab.up.
OWNED_KEYS = ("HOSTS", "DEPLOY_USER", "BOOTSTRAP_USER", "SSH_IDENTITY_FILE", "SSH_KNOWN_HOSTS", "ORCHESTRATOR")
_LEGACY_HEADER = "# Written by `inv lab.up`"


def _shown(spec: LabSpec, path: Path) -> str:
    try:
        return str(path.relative_to(spec.env_root or spec.checkout))
    except ValueError:
        return str(path)


def lab_env_values(spec: LabSpec, identity: Path) -> dict[str, str]:
    """The values of the keys lab.up owns, for this lab. A swarm lab (--swarm) has host 1 as its
    manager and the others as workers; each node advertises its address on the lab's network (its
    default route), found by provisioning. The lab's kernel has no IPVS: see the doctor."""

    def role(index: int) -> str:
        if not spec.swarm:
            return ""
        return "/manager" if index == 1 else "/worker"

    return {
        "HOSTS": ",".join(f"127.0.0.1:{spec.ssh_port(i)}{role(i)}" for i in range(1, spec.hosts + 1)),
        "DEPLOY_USER": "deploy",
        "BOOTSTRAP_USER": "root",
        "SSH_IDENTITY_FILE": _shown(spec, identity),
        "SSH_KNOWN_HOSTS": _shown(spec, spec.state_dir / "known_hosts"),
        "ORCHESTRATOR": "swarm" if spec.swarm else "compose",
    }


def _env_header(spec: LabSpec) -> str:
    return (
        f"# The local lab {spec.lab_id}: `inv lab.up` sets {', '.join(OWNED_KEYS)}\n"
        "# and keeps every other line: add your own keys (STACK_DIR, PROJECT, SECRETS...) below.\n"
    )


def update_lab_env(spec: LabSpec, identity: Path) -> tuple[str, ...]:
    """Set the keys lab.up owns in the lab's env file, keeping every other line; the keys changed.

    A missing file is written with those keys (and the demo stack in opskit's own checkout)."""
    values = lab_env_values(spec, identity)
    if spec.env_file.exists():
        current = spec.env_file.read_text()
        lines = current.splitlines(keepends=True)
        if lines and lines[0].startswith(_LEGACY_HEADER):  # "lab.up rewrites it" no longer holds
            lines[0:1] = [_env_header(spec)]
        edit = set_keys("".join(lines), values)
        if edit.text != current:  # atomically, with the file's own mode
            _write_if_changed(spec.env_file, edit.text, mode=spec.env_file.stat().st_mode & 0o777)
        return edit.changed
    # A swarm lab runs the demo's swarm variant (no IPVS in the lab: see stacks/demo-swarm).
    stack = spec.checkout / "stacks" / ("demo-swarm" if spec.swarm else "demo")
    if stack.is_dir():
        values |= {"STACK_DIR": _shown(spec, stack), "PROJECT": "demo"}
    _write_if_changed(spec.env_file, _env_header(spec) + "".join(f"{key}={value}\n" for key, value in values.items()))
    return tuple(values)


def lab_up(spec: LabSpec, reporter: Reporter) -> list[LabHost]:
    """Start (or resume) the lab's hosts; anything already right is left as it is."""
    if not 1 <= spec.hosts <= MAX_HOSTS:
        raise LabError(f"--hosts {spec.hosts} is outside 1-{MAX_HOSTS}")
    import docker

    ensure_engine(reporter)
    client = local_client()
    ensure_base_image(client, reporter)
    ensure_host_image(client, reporter)
    identity, public_key = ensure_keypair(spec.state_dir)
    host_image = client.images.get(HOST_IMAGE)
    known: list[str] = []
    for index in range(1, spec.hosts + 1):
        name = spec.container(index)
        try:
            container = client.containers.get(name)
        except docker.errors.NotFound:
            container = None
        if container is not None and container.image.id != host_image.id:
            reporter.step(name, "host", CHANGED, "image changed: recreating")
            container.remove(force=True)
            container = None
        if container is not None and published_ports(container) != {spec.ssh_port(index), spec.http_port(index)}:
            reporter.step(name, "host", CHANGED, "its ports moved (an older opskit): recreating, provision it again")
            container.remove(force=True)
            container = None
        if container is None:
            for port in (spec.ssh_port(index), spec.http_port(index)):
                if not port_free_soon(port):
                    raise LabError(
                        f"port 127.0.0.1:{port} is taken by another program",
                        hint="stop it, or run the lab from another checkout path",
                    )
            container = _run_host(client, spec, index)
            reporter.step(name, "host", CHANGED, f"created, ssh on 127.0.0.1:{spec.ssh_port(index)}")
        elif container.status != "running":
            container.start()
            reporter.step(name, "host", CHANGED, "started")
        else:
            reporter.step(name, "host", OK, f"running, ssh on 127.0.0.1:{spec.ssh_port(index)}")
        container.reload()
        _wait_for_ssh(spec.ssh_port(index))
        has_key = _exec(
            container, 'grep -qxF "$KEY" /root/.ssh/authorized_keys 2>/dev/null && echo yes || echo no', KEY=public_key
        ).strip()
        if has_key != "yes":
            _exec(
                container,
                'install -d -m 700 /root/.ssh && printf "%s\\n" "$KEY" >> /root/.ssh/authorized_keys'
                " && chmod 600 /root/.ssh/authorized_keys",
                KEY=public_key,
            )
            reporter.step(name, "authorized key", CHANGED, "lab key installed for root")
        known.extend(_host_keys(container, spec.ssh_port(index)))
    if _write_if_changed(spec.state_dir / "known_hosts", "\n".join(known) + "\n"):
        reporter.step("local", "host keys", CHANGED, f"pinned in {spec.state_dir / 'known_hosts'}")
    else:
        reporter.step("local", "host keys", OK, "pinned")
    existed, shown = spec.env_file.exists(), _shown(spec, spec.env_file)
    changed = update_lab_env(spec, identity)
    if not existed:
        reporter.step("local", "env file", CHANGED, f"wrote {shown}")
    elif changed:
        reporter.step("local", "env file", CHANGED, f"set {', '.join(changed)} in {shown}, other lines kept")
    else:
        reporter.step("local", "env file", OK, f"{shown} up to date")
    client.close()
    return lab_status(spec)


def lab_status(spec: LabSpec) -> list[LabHost]:
    """The lab's hosts as the local engine reports them (empty when the lab is not up)."""
    if not _engine_answers():
        return []
    client = local_client()
    hosts = []
    for container in client.containers.list(all=True, filters={"label": f"{LABEL}={spec.lab_id}"}):
        index = int(container.labels.get("opskit.index", "0"))
        hosts.append(LabHost(index, container.name, container.status, spec.ssh_port(index), spec.http_port(index)))
    client.close()
    return sorted(hosts, key=lambda host: host.index)


def lab_down(spec: LabSpec, reporter: Reporter, purge: bool = False) -> None:
    """Stop the lab's hosts (kept for the next lab.up); with purge, remove them and their state."""
    import docker

    if not _engine_answers():
        reporter.step("local", "docker engine", OK, "not running: nothing to stop")
        if not purge:
            return
    else:
        client = local_client()
        for container in client.containers.list(all=True, filters={"label": f"{LABEL}={spec.lab_id}"}):
            if purge:
                container.remove(force=True, v=True)
                reporter.step(container.name, "host", CHANGED, "removed")
            elif container.status == "running":
                container.stop(timeout=5)
                reporter.step(container.name, "host", CHANGED, "stopped")
            else:
                reporter.step(container.name, "host", OK, container.status)
        if purge:
            for volume in client.volumes.list(filters={"name": f"opskit-{spec.lab_id}-"}):
                try:
                    volume.remove(force=True)
                    reporter.step("local", "volume", CHANGED, f"removed {volume.name}")
                except docker.errors.APIError as error:
                    reporter.step("local", "volume", OK, f"kept {volume.name}: {error.explanation}")
        client.close()
    if purge:
        if spec.state_dir.exists():
            shutil.rmtree(spec.state_dir)
            reporter.step("local", "lab state", CHANGED, f"removed {spec.state_dir}")
        if spec.env_file.exists():
            spec.env_file.unlink()
            reporter.step("local", "env file", CHANGED, f"removed {spec.env_file}")
