"""Provisioning against brand-new lab hosts: real SSH, real apt, real Docker (about 90 s).

The tests run in file order on one module-scoped lab: dry run on fresh hosts, the first run,
Docker for the deploy user, the second run, the hardened sshd, then bad input.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import paramiko
import pytest

from ops.config import Environment, HostSpec, load_environment
from ops.console import CHANGED, FAILED, WOULD_CHANGE, RecordingReporter
from ops.lab import LabSpec, lab_down, lab_up
from ops.provision import ProvisionResult, provision
from ops.transport import Host, SSHRunner

pytestmark = pytest.mark.integration

CHECKOUT = Path(__file__).resolve().parents[2]
SNAPSHOT = r"""
dpkg -l | sha256sum
cat /etc/passwd /etc/group /etc/shadow | sha256sum
find /etc/ssh /etc/docker /etc/apt /etc/sudoers.d /etc/sysctl.d /etc/fail2ban /etc/ufw /opt /home \
  -xdev 2>/dev/null | sort | xargs -d '\n' stat -c '%n %U %a %s %Y' 2>/dev/null | sha256sum
pidof dockerd fail2ban-server || true
"""


@dataclass
class Lab:
    spec: LabSpec
    env: Environment
    results: dict[str, ProvisionResult]

    def host(self, index: int, user: str) -> Host:
        spec = self.env.hosts[index].as_user(user)
        return Host(spec, self.runner(spec))

    def runner(self, spec: HostSpec, identity: Path | None = None) -> SSHRunner:
        return SSHRunner(
            spec,
            known_hosts=self.env.known_hosts,
            identity_file=identity or self.env.identity_file,
            connect_timeout=10,
            env_name=self.env.name,
        )


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    spec = LabSpec("prov", checkout=CHECKOUT, hosts=2, env_root=CHECKOUT / ".lab" / "prov")
    reporter = RecordingReporter()
    lab_down(spec, reporter, purge=True)  # brand-new hosts, every time
    lab_up(spec, reporter)
    assert spec.env_root is not None
    env = load_environment("prov", spec.env_root, os.environ)
    yield Lab(spec, env, {})
    lab_down(spec, RecordingReporter(), purge=True)


def snapshot(host: Host) -> str:
    return host.sudo(SNAPSHOT).stdout


def test_dry_run_on_fresh_hosts_lists_the_changes_and_changes_nothing(lab: Lab) -> None:
    hosts = [lab.host(i, "root") for i in range(2)]
    before = [snapshot(h) for h in hosts]

    result = provision(lab.env, RecordingReporter(), dry_run=True)

    assert result.ok, [h.error for h in result.failed]
    assert result.count(CHANGED) == 0
    for report in result.hosts:
        would = {e.step: e.detail for e in report.events if e.status == WOULD_CHANGE}
        assert "docker.io docker-cli docker-compose" in would["docker packages"]
        assert "create user deploy" in would["deploy user"]
        assert "PermitRootLogin no" in would["ssh hardening"]
    assert [snapshot(h) for h in hosts] == before
    for h in hosts:
        h.close()


def test_first_run_changes_the_hosts(lab: Lab) -> None:
    reporter = RecordingReporter()
    result = provision(lab.env, reporter)
    lab.results["first"] = result

    assert result.ok, [(h.failed_step, str(h.error), h.output) for h in result.failed]
    for report in result.hosts:
        changed = {e.step for e in report.events if e.status == CHANGED}
        assert {"docker packages", "docker engine", "deploy user", "firewall", "ssh hardening"} <= changed
        assert report.user == "root"
    assert reporter.count(FAILED) == 0


def test_docker_and_compose_work_for_the_deploy_user(lab: Lab) -> None:
    deploy = lab.host(0, "deploy")
    # No registry: a 1 MB image from the host's own static busybox.
    deploy.run(
        "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static >/dev/null", timeout=300
    )
    deploy.run(
        "set -e; d=$(mktemp -d); cp /bin/busybox $d/; "
        'printf \'FROM scratch\\nCOPY busybox /bin/busybox\\nCMD ["/bin/busybox", "true"]\\n\' > $d/Dockerfile; '
        "DOCKER_BUILDKIT=0 docker build -q -t opskit/busybox:test $d >/dev/null; rm -rf $d",
        timeout=120,
    )

    output = deploy.docker().containers.run(
        "opskit/busybox:test", ["/bin/busybox", "echo", "hello from deploy"], remove=True
    )
    assert output.strip() == b"hello from deploy"

    compose = (
        "services:\n  web:\n    image: opskit/busybox:test\n"
        '    command: ["/bin/busybox", "httpd", "-f", "-p", "8080"]\n'
    )
    work = f"/opt/{lab.env.project}/t"
    deploy.run(f"mkdir -p {work} && cat > {work}/compose.yaml", stdin=compose)
    up = deploy.run(
        f"cd {work} && docker compose -p t up -d --wait && docker compose -p t ps --format '{{{{.State}}}}'",
        timeout=120,
    )
    assert up.stdout.strip().splitlines()[-1] == "running"
    deploy.run(f"cd {work} && docker compose -p t down -t 1 && rm -rf {work}", timeout=60)
    # The engine's config is what we wrote: log rotation and live-restore.
    info = deploy.docker().info()
    assert info["LiveRestoreEnabled"] is True and info["LoggingDriver"] == "json-file"
    deploy.close()


def test_second_run_changes_nothing(lab: Lab) -> None:
    result = provision(lab.env, RecordingReporter())

    assert result.ok, [(h.failed_step, str(h.error)) for h in result.failed]
    assert result.changed == 0, [
        (e.host, e.step, e.detail) for h in result.hosts for e in h.events if e.status == CHANGED
    ]
    for report in result.hosts:
        # Root login is closed now: provisioning reaches the host as the deploy user with sudo.
        assert report.user == "deploy"


def test_sshd_refuses_root_and_passwords_and_lets_deploy_in(lab: Lab) -> None:
    deploy = lab.host(0, "deploy")
    effective = deploy.sudo("sshd -T").stdout.splitlines()
    assert "passwordauthentication no" in effective
    assert "kbdinteractiveauthentication no" in effective
    assert "permitrootlogin no" in effective
    assert deploy.run("id -nG").stdout.split().count("docker") == 1
    assert deploy.run(f"stat -c %U:%a /opt/{lab.env.project}").stdout.strip() == "deploy:750"
    deploy.close()

    spec = lab.env.hosts[0]
    root = lab.runner(spec.as_user("root"))
    with pytest.raises(Exception, match="authentication as root failed"):
        root.run("true")
    root.close()

    # Password authentication is not even offered, and an actual attempt is rejected.
    known = paramiko.HostKeys(str(lab.env.known_hosts))
    sock = socket.create_connection((spec.address, spec.port), timeout=10)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=10)
        server_key = transport.get_remote_server_key()
        assert known.check(f"[{spec.address}]:{spec.port}", server_key)
        with pytest.raises(paramiko.BadAuthenticationType) as offered:
            transport.auth_none("deploy")
        assert offered.value.allowed_types == ["publickey"]
        with pytest.raises((paramiko.BadAuthenticationType, paramiko.AuthenticationException)):
            transport.auth_password("deploy", "not-the-password")
    finally:
        transport.close()


def test_bad_input_fails_that_host_with_the_step_and_the_others_go_on(lab: Lab, tmp_path: Path) -> None:
    good, other = lab.env.hosts
    root_of_other = lab.host(1, "deploy")
    # An apt failure on one host only: a malformed source, and a cache old enough to refresh.
    root_of_other.sudo("echo 'deb broken' > /etc/apt/sources.list.d/broken.list")
    settings = {**lab.env.settings, "APT_CACHE_MAX_AGE": 0}
    unreachable = HostSpec("127.0.0.1", 1, "deploy")
    env = replace(lab.env, hosts=(good, other, unreachable), settings=settings)
    try:
        result = provision(env, RecordingReporter())
    finally:
        root_of_other.sudo("rm -f /etc/apt/sources.list.d/broken.list")
    reports = {r.host: r for r in result.hosts}

    assert reports[good.name].ok and reports[good.name].count(CHANGED) == 1  # only the apt cache refresh
    broken = reports[other.name]
    assert broken.failed_step == "apt cache"
    assert "broken.list" in broken.output and broken.error is not None
    assert f"{other.name} [apt cache]" in broken.error.one_line()
    assert reports[unreachable.name].failed_step == "connect"
    assert "unreachable" in str(reports[unreachable.name].error)

    # A wrong key: neither root nor deploy gets in.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    wrong = tmp_path / "wrong_key"
    wrong.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
    )
    result = provision(replace(lab.env, identity_file=wrong, hosts=(good,)), RecordingReporter())
    (report,) = result.hosts
    assert report.failed_step == "connect" and "authentication as root failed" in str(report.error)

    # A bootstrap user without sudo: refused before anything runs.
    root_of_other.sudo(
        "id nosudo >/dev/null 2>&1 || useradd -m -p '*' nosudo; install -d -m 700 -o nosudo -g nosudo "
        "/home/nosudo/.ssh && install -m 600 -o nosudo -g nosudo /home/deploy/.ssh/authorized_keys "
        "/home/nosudo/.ssh/authorized_keys"
    )
    result = provision(replace(lab.env, bootstrap_user="nosudo", hosts=(other,)), RecordingReporter())
    (report,) = result.hosts
    assert report.failed_step == "connect"
    assert "nosudo cannot use sudo without a password" in str(report.error)
    root_of_other.close()
